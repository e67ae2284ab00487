"""The tile engine: exact integer arithmetic in the ideal limit, device statistics, IR drop, bad input.

Statistical checks use seeded generators and k = 5 sigma bounds (a correct engine fails one
with probability below 1e-6).
"""

import itertools

import numpy as np
import pytest
import torch

from crossbar.engine import (
    NEG,
    POS,
    CrossbarConfig,
    default_layout,
    program_matrix,
)
from crossbar.quant import q_max
from device.config import ConfigError
from device.faults import Fault, FaultConfig
from device.programming import LevelTable

K = 5.0


def _integer_reference(pm, x):
    """``sum over tiles of step_x * step_w * (x_codes @ w_codes.T)`` in float64 (exact integers)."""
    xq, sx = pm.dac(x)
    w = pm.qweight.q.to(torch.float64) * pm.qweight.scale_full(torch.float64)
    return (xq.to(torch.float64) * sx.to(torch.float64)) @ w.T, xq


def ideal_levels(bits_per_cell: int) -> LevelTable:
    """Evenly spaced levels, no programming variation (the 'ideal devices' of the exact checks)."""
    return LevelTable.synthetic(bits_per_cell=bits_per_cell, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=0.0,
                                rng=np.random.default_rng(0))


def _rand(shape, seed, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------
# exact integer matmul in the ideal limit


@pytest.mark.parametrize(
    "bits_per_cell,weight_bits,mapping,dac",
    list(itertools.product([1, 2, 3, 4], [4, 6, 8], ["differential", "offset"], ["bit_serial", "multi_bit"])),
)
def test_ideal_devices_give_the_integer_matmul_exactly(bits_per_cell, weight_bits, mapping, dac):
    cfg = CrossbarConfig(
        tile_rows=24, tile_cols=32, weight_bits=weight_bits, bits_per_cell=bits_per_cell, mapping=mapping,
        dac=dac, input_bits=6, adc_bits=24, adc_scope="column",
    )
    w = _rand((19, 53), 1)
    x = _rand((7, 53), 2)
    pm = program_matrix(w, cfg, ideal_levels(bits_per_cell), None, np.random.default_rng(0), dtype=torch.float64)
    ref, _ = _integer_reference(pm, x)
    assert float(pm.adc_step.max()) == 1.0  # enough ADC bits: one ADC step = one level step
    y = pm.matvec(x)
    assert torch.equal(y, ref)
    # the same with the ADC on the tile partial sums, and with an ideal ADC (to float round-off)
    pm_t = program_matrix(w, cfg.replace(adc_scope="tile", adc_bits=30), ideal_levels(bits_per_cell), None,
                          np.random.default_rng(0), dtype=torch.float64)
    assert torch.equal(pm_t.matvec(x), ref)
    pm_i = program_matrix(w, cfg.replace(adc_bits=None), ideal_levels(bits_per_cell), None, np.random.default_rng(0),
                          dtype=torch.float64)
    torch.testing.assert_close(pm_i.matvec(x), ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


def test_exact_with_per_tile_formats_and_batch_shapes():
    cfg = CrossbarConfig(
        tile_rows=16, tile_cols=16, weight_bits=8, bits_per_cell=2, weight_granularity="tile",
        input_granularity="tile", adc_bits=20, dac="bit_serial",
    )
    w = _rand((21, 40), 3)
    w[:4] *= 10.0  # tiles with a 10x range get their own binary point
    x = _rand((2, 3, 40), 4)
    # per-row-block input steps are fixed once on calibration data (never from the read's batch)
    pm = program_matrix(w, cfg, ideal_levels(2), None, np.random.default_rng(0), dtype=torch.float64).calibrate(x)
    assert pm.qweight.frac_bits.numel() > 1 and int(pm.qweight.frac_bits.max()) > int(pm.qweight.frac_bits.min())
    y = pm.matvec(x)
    assert y.shape == (2, 3, 21)
    ref, _ = _integer_reference(pm, x.reshape(-1, 40))
    assert torch.equal(y.reshape(-1, 21), ref)


def test_float32_default_close_to_float_matmul():
    cfg = CrossbarConfig(tile_rows=64, tile_cols=64, weight_bits=8, bits_per_cell=2)
    w = _rand((96, 200), 5, torch.float32) / 14
    x = _rand((33, 200), 6, torch.float32)
    pm = program_matrix(w, cfg, ideal_levels(2), None, np.random.default_rng(0))
    y = pm.matvec(x)
    assert y.dtype == torch.float32
    rel = float((y - x @ w.T).norm() / (x @ w.T).norm())
    assert rel < 0.04  # 8-bit power-of-two DFP: ~1.6 % from the weights, ~1.8 % from the inputs


# ------------------------------------------------------------------------------------------
# programming statistics


def test_fault_rates_and_stuck_conductances_match_the_config():
    cfg = CrossbarConfig(tile_rows=64, tile_cols=64, weight_bits=8, bits_per_cell=2)
    lv = ideal_levels(2)
    w = _rand((128, 256), 7)
    fc = FaultConfig(rate=0.04, sa0_fraction=0.7)
    pm = program_matrix(w, cfg, lv, fc, np.random.default_rng(11), keep_conductances=True)
    st = pm.tile_state()
    n = st.faults.size
    for code, p in ((Fault.SA0, 0.04 * 0.7), (Fault.SA1, 0.04 * 0.3)):
        k = int((st.faults == code).sum())
        assert abs(k / n - p) <= K * np.sqrt(p * (1 - p) / n)
    assert np.all(st.g_s[st.faults == Fault.SA0] == lv.g_sa0_s)
    assert np.all(st.g_s[st.faults == Fault.SA1] == lv.g_sa1_s)
    ok = st.faults == Fault.NONE
    assert np.all(st.g_s[ok] == np.asarray(lv.g_target_s)[st.levels[ok]])
    # per-tile counts kept without the maps, and a re-draw from the seed is bit-identical
    assert np.array_equal(pm.fault_counts.sum(0), [ok.sum(), (st.faults == 1).sum(), (st.faults == 2).sum()])
    pm2 = program_matrix(w, cfg, lv, fc, np.random.default_rng(11))
    st2 = pm2.tile_state([0, 3])
    assert np.array_equal(st2.g_s, st.g_s[[0, 3]]) and np.array_equal(st2.faults, st.faults[[0, 3]])


def test_programming_variation_matches_the_level_distributions():
    b = 2
    lv = LevelTable.synthetic(bits_per_cell=b, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=0.1,
                                     rng=np.random.default_rng(3))
    cfg = CrossbarConfig(tile_rows=64, tile_cols=64, weight_bits=8, bits_per_cell=b)
    w = _rand((128, 256), 8)
    pm = program_matrix(w, cfg, lv, None, np.random.default_rng(12), keep_conductances=True)
    st = pm.tile_state()
    samples = np.asarray(lv.g_samples_s)
    for d in range(2**b):
        g = st.g_s[st.levels == d]
        mu, sd = samples[d].mean(), samples[d].std()
        assert g.size > 1000
        assert abs(g.mean() - mu) <= K * sd / np.sqrt(g.size)
        # sample std: relative standard error ~ sqrt((kurtosis - 1) / 4n); lognormal 0.1 is near-Gaussian
        assert abs(g.std() / sd - 1) <= K * np.sqrt(1.0 / g.size) + 0.01


def test_read_noise_has_the_predicted_variance():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, weight_bits=6, bits_per_cell=2, read_noise_sigma_rel=0.05)
    w = _rand((24, 60), 9)
    x = _rand((400, 60), 10)
    pm = program_matrix(w, cfg, ideal_levels(2), None, np.random.default_rng(0), dtype=torch.float64)
    quiet = program_matrix(w, cfg.replace(read_noise_sigma_rel=0.0), ideal_levels(2), None, np.random.default_rng(0),
                           dtype=torch.float64)
    y0 = quiet.matvec(x)
    y = pm.matvec(x, generator=torch.Generator().manual_seed(0))
    # predicted per-read sigma from the cells: sigma_rel * G per cell, differential pair, slices
    xq, sx = pm.dac(x)
    st = pm.tile_state()
    lv = ideal_levels(2)
    dg = (lv.g_target_s[-1] - lv.g_target_s[0]) / 3
    var_w = np.zeros((24, 60))
    lay = pm.layout
    for r in range(lay.n_row_blocks):
        for c in range(lay.n_col_blocks):
            g = st.g_s[lay.tile_index(r, c)] / dg
            for j in range(lay.tile_cols):
                o, s = lay.col_out[c, j], lay.col_slice[c, j]
                if lay.col_role[c, j] in (POS, NEG):
                    rows = lay.row_in[r] >= 0
                    var_w[o, lay.row_in[r][rows]] += 0.05**2 * g[rows, j] ** 2 * 16.0**s
    step = float(pm.qweight.scale())
    var = ((xq * sx) ** 2).numpy() @ var_w.T * step**2
    z = ((y - y0).numpy() / np.sqrt(var)).ravel()
    n = z.size
    assert abs(z.mean()) <= K / np.sqrt(n)
    assert abs(z.var() - 1) <= K * np.sqrt(2 / n)
    # same generator seed -> bit-identical reads; missing generator -> a clear error
    assert torch.equal(y, pm.matvec(x, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="torch.Generator"):
        pm.matvec(x)


def test_reprogram_keeps_the_quantization_and_is_seeded():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32)
    lv = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=0.1,
                                     rng=np.random.default_rng(0))
    w = _rand((40, 50), 11, torch.float32)
    x = _rand((5, 50), 12, torch.float32)
    pm = program_matrix(w, cfg, lv, FaultConfig(rate=0.01), np.random.default_rng(1))
    a = pm.reprogram(np.random.default_rng(5))
    b = pm.reprogram(np.random.default_rng(5))
    assert a.qweight is pm.qweight
    assert torch.equal(a.matvec(x), b.matvec(x))
    c = pm.reprogram(np.random.default_rng(5), faults=FaultConfig(rate=0.0))
    assert c.fault_counts[:, 1:].sum() == 0


# ------------------------------------------------------------------------------------------
# IR drop


def _decode_columns(pm, i_cols, v_lsb):
    """Digital decode of physical column currents (A) -> outputs, the way the engine folds it."""
    cfg, lay = pm.cfg, pm.layout
    lv = pm.levels
    dg = (lv.g_target_s[-1] - lv.g_target_s[0]) / (2**cfg.bits_per_cell - 1)
    out = np.zeros(i_cols.shape[:-2] + (pm.out_features,))
    for c in range(lay.n_col_blocks):
        for j in range(lay.tile_cols):
            if lay.col_role[c, j] in (POS, NEG):
                sgn = 1.0 if lay.col_role[c, j] == POS else -1.0
                out[..., lay.col_out[c, j]] += sgn * 2.0 ** (cfg.bits_per_cell * lay.col_slice[c, j]) * i_cols[..., c, j]
    return out / (dg * v_lsb)


def test_exact_ir_drop_equals_the_circuit_solver_on_the_same_tile():
    from crossbar.solver import CircuitConfig, effective_matrix, solve

    circuit = CircuitConfig(r_wire_row_ohm=2.0, r_wire_col_ohm=2.0)
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, weight_bits=6, bits_per_cell=2, ir_drop="exact", input_bits=6)
    w = _rand((6, 16), 13)  # one tile: 16 rows, 6 outputs x 3 slices x 2 = 36 > 16 -> 2 column blocks
    x = _rand((3, 16), 14)
    lv = ideal_levels(2)
    pm = program_matrix(w, cfg, lv, FaultConfig(rate=0.05), np.random.default_rng(2), circuit=circuit,
                        dtype=torch.float64, keep_conductances=True)
    st = pm.tile_state()
    np.testing.assert_allclose(st.m_s, effective_matrix(st.g_s, circuit), rtol=1e-12, atol=0)
    # an independent path: solve each tile's circuit for the DAC voltages, decode digitally
    xq, sx = pm.dac(x)
    v_lsb = cfg.v_read_v / q_max(cfg.input_bits)
    v = (xq.numpy() * v_lsb).T  # (rows, batch)
    i_cols = np.stack([solve(st.g_s[t], v, circuit).i_out_a.T for t in range(pm.n_tiles)], axis=1)  # (batch, tiles, cols)
    y_solver = _decode_columns(pm, i_cols, v_lsb) * sx.numpy() * float(pm.qweight.scale())  # sx: (batch, 1) per vector
    y = pm.matvec(x).numpy()
    np.testing.assert_allclose(y, y_solver, rtol=1e-9, atol=1e-12 * np.abs(y_solver).max())
    # the IR drop is really there: the ideal-wire result differs by more than round-off
    ideal = program_matrix(w, cfg.replace(ir_drop="ideal"), lv, FaultConfig(rate=0.05), np.random.default_rng(2),
                           dtype=torch.float64).matvec(x).numpy()
    assert np.abs(ideal - y).max() > 1e-3 * np.abs(ideal).max()
    # inspection: column currents equal the solver's
    cc = pm.column_currents(x)
    np.testing.assert_allclose(cc[0], i_cols, rtol=1e-9, atol=1e-15)


def test_table_ir_drop_is_within_its_measured_lut_error(tmp_path):
    irdrop = pytest.importorskip("crossbar.irdrop")
    from crossbar.solver import CircuitConfig

    size = 16
    tc = irdrop.TabulateConfig(sizes=(size,), r_wire_ohm=(2.0,), holdout=2, inputs_per_tile=4)
    path = tmp_path / "ir.h5"
    irdrop.tabulate(tc, path, progress=False)
    table = irdrop.IRDropTable.load(path)
    circuit = CircuitConfig(r_wire_row_ohm=2.0, r_wire_col_ohm=2.0)
    cfg = CrossbarConfig(tile_rows=size, tile_cols=size, weight_bits=6, bits_per_cell=2, ir_drop="table")
    w = _rand((10, 30), 15)
    lv = LevelTable.synthetic(bits_per_cell=2, g_on_s=1e-4, g_off_s=1e-5, sigma_rel=0.05,
                                     rng=np.random.default_rng(0))
    kw = dict(circuit=circuit, dtype=torch.float64, keep_conductances=True)
    pt = program_matrix(w, cfg, lv, None, np.random.default_rng(4), irdrop=table, **kw)
    pe = program_matrix(w, cfg.replace(ir_drop="exact"), lv, None, np.random.default_rng(4), **kw)
    mt, me = pt.tile_state().m_s, pe.tile_state().m_s
    # the table's error is measured as RMS column-current error / RMS actual column current;
    # compare the effective matrices under half-driven random inputs
    rng = np.random.default_rng(0)
    v = rng.uniform(0, 1, (64, size)) * (rng.random((64, size)) < 0.5)
    err = np.einsum("ni,tij->ntj", v, mt - me)
    rel = np.sqrt(np.mean(err**2) / np.mean(np.einsum("ni,tij->ntj", v, me) ** 2))
    assert rel <= 3 * float(table.rms_error_rel.max()) + 1e-4


# ------------------------------------------------------------------------------------------
# bad input


def test_bad_configs_give_one_clear_error():
    with pytest.raises(ConfigError, match="bits_per_cell=3 does not divide the 7 magnitude bits"):
        CrossbarConfig(weight_bits=8, bits_per_cell=3, partial_slice="error")
    CrossbarConfig(weight_bits=8, bits_per_cell=3)  # default: the MSB slice holds the rest
    assert CrossbarConfig(weight_bits=8, bits_per_cell=3).slice_bits == (3, 3, 1)
    assert CrossbarConfig(weight_bits=8, bits_per_cell=3, mapping="offset").slice_bits == (3, 3, 2)
    with pytest.raises(ConfigError, match="adc_bits=2 is invalid: .*level step of a 2-bit cell"):
        CrossbarConfig(bits_per_cell=2, adc_bits=2)
    with pytest.raises(ConfigError, match="tile_cols=4 is invalid"):
        CrossbarConfig(tile_cols=4, weight_bits=8, bits_per_cell=2)
    with pytest.raises(ConfigError, match="ir_drop"):
        CrossbarConfig(ir_drop="spice")
    with pytest.raises(ConfigError, match="unknown key"):
        CrossbarConfig.from_dict({"adc_bitz": 4})


def test_bad_inputs_give_one_clear_error():
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16)
    w = _rand((8, 20), 0, torch.float32)
    pm = program_matrix(w, cfg, ideal_levels(2), None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="last dimension must be in_features=20"):
        pm.matvec(torch.zeros(3, 21))
    with pytest.raises(ValueError, match="2-D weight matrix"):
        program_matrix(torch.zeros(3, 4, 5), cfg, ideal_levels(2), None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="NaN"):
        program_matrix(torch.full((3, 4), float("nan")), cfg, ideal_levels(2), None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="level table has 3 bit"):
        program_matrix(w, cfg, ideal_levels(3), None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs rng"):
        program_matrix(w, cfg, ideal_levels(2), None, None)
    with pytest.raises(ValueError, match="layout tiles are 16x16"):
        program_matrix(w, cfg.replace(tile_rows=32), ideal_levels(2), None, np.random.default_rng(0),
                       layout=default_layout(8, 20, cfg))
    pc = program_matrix(w, cfg.replace(adc_bits=6, adc_range="calibrated"), ideal_levels(2), None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="calibrate"):
        pc.matvec(torch.zeros(2, 20))
    pc = pc.calibrate(_rand((50, 20), 1, torch.float32))
    assert pc.matvec(torch.zeros(2, 20)).shape == (2, 8)


def test_ir_drop_table_with_other_tile_size_is_refused(tmp_path):
    irdrop = pytest.importorskip("crossbar.irdrop")
    irdrop.build_table(irdrop.TabulateConfig(sizes=(16,), r_wire_ohm=(1.0,))).save(tmp_path / "ir.h5")
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, ir_drop="table")
    with pytest.raises(ValueError, match="sizes \\[16\\] but the crossbar config uses 32x32"):
        program_matrix(_rand((4, 8), 0), cfg, ideal_levels(2), None, np.random.default_rng(0), irdrop=tmp_path / "ir.h5")


def test_incompatible_table_file_is_refused(tmp_path):
    import h5py

    irdrop = pytest.importorskip("crossbar.irdrop")
    p = tmp_path / "ir.h5"
    irdrop.build_table(irdrop.TabulateConfig(sizes=(16,), r_wire_ohm=(1.0,))).save(p)
    with h5py.File(p, "r+") as f:
        f.attrs["schema_version"] = "2.0"
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, ir_drop="table")
    with pytest.raises(ValueError, match="schema version 2.0 is incompatible"):
        program_matrix(_rand((4, 8), 0), cfg, ideal_levels(2), None, np.random.default_rng(0), irdrop=p)


# ------------------------------------------------------------------------------------------
# devices, CLI


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, adc_bits=12, dac="bit_serial")
    w = _rand((40, 70), 0, torch.float32)
    x = _rand((9, 70), 1, torch.float32)
    pm = program_matrix(w, cfg, ideal_levels(2), None, np.random.default_rng(0))
    pg = program_matrix(w.cuda(), cfg, ideal_levels(2), None, np.random.default_rng(0))
    torch.testing.assert_close(pg.matvec(x.cuda()).cpu(), pm.matvec(x), rtol=1e-5, atol=1e-5)


def _run_cli(argv):
    """What cli.main.main does for our subcommand: parse, run, map ValueError to exit status 2."""
    import argparse

    from cli.crossbar import register

    parser = argparse.ArgumentParser(prog="reram-cosim")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"error: {exc}", file=__import__("sys").stderr)
        return 2


def test_cli_mvm_prints_each_effect(capsys):
    rc = _run_cli(["crossbar", "mvm", "--rows", "40", "--cols", "24", "--bits-per-cell", "2", "--weight-bits", "6",
                   "--adc-bits", "8", "--ir-drop", "exact", "--fault-rate", "0.02", "--seed", "3", "--tile", "32", "32"])
    out = capsys.readouterr().out
    assert rc == 0
    for label in ("quantization", "+ ADC 8-bit", "+ stuck-at faults", "+ IR drop (exact)", "ProgrammedMatrix 24x40"):
        assert label in out
    rc = _run_cli(["crossbar", "mvm", "--bits-per-cell", "2", "--adc-bits", "2"])
    assert rc == 2
    assert "adc_bits=2 is invalid" in capsys.readouterr().err
