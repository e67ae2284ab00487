"""crossbar.irdrop: tabulation, HDF5 round trip, numpy/torch agreement, fidelity on held-out tiles."""

from pathlib import Path

import numpy as np
import pytest

from crossbar.irdrop import IRDropTable, TabulateConfig, first_order_predictor, sample_inputs, sample_tiles, tabulate
from crossbar.solver import CircuitConfig, effective_matrix
from device import tables

DEFAULT = Path(__file__).resolve().parent.parent / "data" / "irdrop_default.h5"


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("ir") / "ir.h5"
    cfg = TabulateConfig(sizes=(16, 24), r_wire_ohm=(1.0, 5.0), samples=3, holdout=2, chunk=2, seed=1)
    return tabulate(cfg, out, workers=1, progress=False), out


def test_round_trip(small_table):
    table, out = small_table
    tables.validate(out, kind="irdrop")
    back = IRDropTable.load(out)
    assert back.sizes == (16, 24) and back.model == table.model
    np.testing.assert_array_equal(back.r_wire_ohm, [1.0, 5.0])
    np.testing.assert_allclose(back.rms_error_fullscale, table.rms_error_fullscale)
    g = sample_tiles(TabulateConfig(), 16, 16, 2, np.random.default_rng(0))
    np.testing.assert_allclose(back.attenuation(g, 2.0), table.attenuation(g, 2.0), rtol=1e-12)
    assert not out.with_name(out.name + ".parts").exists()


def test_first_order_is_first_order():
    # for tiny r the exact attenuation is 1 - x + O(r^2)
    g = sample_tiles(TabulateConfig(), 8, 8, 1, np.random.default_rng(0))[0]
    r = 1e-3
    a = effective_matrix(g, CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r))[0] / g
    x = first_order_predictor(g, r, r)
    assert np.max(np.abs(a - (1 - x))) < 10 * np.max(x) ** 2 + 1e-12


def test_range_errors(small_table):
    table, _ = small_table
    g = np.full((32, 32), 1e-5)
    with pytest.raises(ValueError, match="sizes"):
        table.attenuation(g, 2.0)
    with pytest.raises(ValueError, match="outside the tabulated range"):
        table.attenuation(np.full((16, 16), 1e-5), 7.0)


def test_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    table = IRDropTable.load(DEFAULT)
    g = sample_tiles(TabulateConfig(), 64, 64, 3, np.random.default_rng(1))
    a_np = table.attenuation(g, 3.0)
    a_t = table.attenuation(torch.as_tensor(g), 3.0)
    assert isinstance(a_t, torch.Tensor)
    np.testing.assert_allclose(a_t.numpy(), a_np, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("r", [1.0, 5.0])
def test_default_table_fidelity_held_out(r):
    # held-out tiles (a seed the table never used), inputs from the stated statistics; the issue
    # asks for 1 % RMS of full-scale current at 64x64 with up to 5 ohm per segment
    table = IRDropTable.load(DEFAULT)
    cfg = TabulateConfig()
    rng = np.random.default_rng(12345)
    g = sample_tiles(cfg, 64, 64, 2, rng)
    m = effective_matrix(g, CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r))
    v = np.stack([sample_inputs(cfg, 64, 8, rng) for _ in range(2)])
    i_true = np.einsum("trk,trc->tck", v, m)
    i_mod = np.einsum("trk,trc->tck", v, table.effective_matrix(g, r))
    i_fs = 64 * cfg.g_max_s * cfg.v_read_v
    err = np.sqrt(np.mean((i_mod - i_true) ** 2)) / i_fs
    err_ideal = np.sqrt(np.mean((np.einsum("trk,trc->tck", v, g) - i_true) ** 2)) / i_fs
    assert err < 0.01
    assert err < err_ideal / 5


def test_default_table_meta():
    table = IRDropTable.load(DEFAULT)
    assert set(table.sizes) == {64, 128}
    assert table.r_wire_ohm[0] <= 0.5 and table.r_wire_ohm[-1] >= 5.0
    assert np.all(table.rms_error_fullscale < 0.01)
    assert DEFAULT.stat().st_size < 1 << 20
