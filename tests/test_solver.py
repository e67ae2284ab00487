"""crossbar.solver: analytic limits, agreement between methods, badcrossbar and ngspice goldens."""

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from crossbar.solver import CircuitConfig, effective_matrix, ideal_currents, solve

GOLDENS = Path(__file__).parent / "goldens" / "crossbar"
RTOL = 1e-6  # issue: agreement with ngspice / badcrossbar to 1e-6 relative


def _tile(rng, rows, cols):
    return np.exp(rng.uniform(np.log(1e-6), np.log(1e-4), (rows, cols))), rng.uniform(0, 0.2, rows)


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_zero_wire_resistance_is_gv():
    rng = np.random.default_rng(0)
    g, v = _tile(rng, 12, 7)
    c = CircuitConfig(r_wire_row_ohm=0.0, r_wire_col_ohm=0.0)
    np.testing.assert_allclose(solve(g, v, c).i_out_a, g.T @ v, rtol=1e-13)
    np.testing.assert_allclose(effective_matrix(g, c)[0], g, rtol=1e-13)


def test_single_column_is_voltage_divider():
    # one cell, one column: v -> r_source + r_row -> 1/g -> r_col + r_sense -> 0 V
    g = np.array([[1e-4]])
    c = CircuitConfig(r_wire_row_ohm=3.0, r_wire_col_ohm=4.0, r_source_ohm=100.0, r_sense_ohm=50.0)
    i = solve(g, np.array([0.2]), c).i_out_a
    np.testing.assert_allclose(i, [0.2 / (1e4 + 3 + 4 + 100 + 50)], rtol=1e-13)
    # one column with ideal word lines: cells in parallel feeding a resistive bit line
    g = np.array([[1e-3], [2e-3]])
    c = CircuitConfig(r_wire_row_ohm=0.0, r_wire_col_ohm=10.0)
    # nodes: B0 -10ohm- B1 -10ohm- 0; cells from 1 V: solve the 2x2 nodal system by hand
    a = np.array([[1e-3 + 0.1, -0.1], [-0.1, 2e-3 + 0.2]])
    b = np.linalg.solve(a, [1e-3, 2e-3])
    np.testing.assert_allclose(solve(g, np.ones(2), c).i_out_a, [b[1] / 10.0], rtol=1e-12)


@pytest.mark.parametrize(
    "circ",
    [
        CircuitConfig(r_wire_row_ohm=2.5, r_wire_col_ohm=2.5),
        CircuitConfig(r_wire_row_ohm=1.0, r_wire_col_ohm=4.0, r_source_ohm=30.0, r_sense_ohm=10.0, drive="both_sides"),
        CircuitConfig(r_wire_row_ohm=0.0, r_wire_col_ohm=3.0, r_source_ohm=20.0),
        CircuitConfig(r_wire_row_ohm=2.0, r_wire_col_ohm=0.0, r_sense_ohm=5.0),
    ],
)
def test_methods_agree_and_batch(circ):
    rng = np.random.default_rng(1)
    g = np.stack([_tile(rng, 9, 11)[0] for _ in range(3)])
    v = rng.uniform(0, 0.2, (3, 9, 5))
    ref = solve(g, v, circ, method="direct").i_out_a
    assert ref.shape == (3, 11, 5)
    for method in ("block",) + (("pcg",) if circ.r_wire_row_ohm > 0 and circ.r_wire_col_ohm > 0 else ()):
        np.testing.assert_allclose(solve(g, v, circ, method=method).i_out_a, ref, rtol=1e-9, atol=1e-18)
    m = effective_matrix(g, circ)
    np.testing.assert_allclose(np.einsum("trk,trc->tck", v, m), ref, rtol=1e-9, atol=1e-18)
    one = solve(g[1], v[1, :, 0], circ)
    np.testing.assert_allclose(one.i_out_a, ref[1, :, 0], rtol=1e-9)


def test_nodes_and_kcl():
    rng = np.random.default_rng(2)
    g, v = _tile(rng, 10, 8)
    c = CircuitConfig(r_wire_row_ohm=5.0, r_wire_col_ohm=5.0)
    s = solve(g, v, c, return_nodes=True)
    # the last bit-line segment carries the whole column current
    np.testing.assert_allclose(s.v_bit_v[-1] / 5.0, s.i_out_a, rtol=1e-9)
    assert np.all(s.v_word_v <= v[:, None] + 1e-15)


def test_matches_badcrossbar():
    badcrossbar = pytest.importorskip("badcrossbar")
    import logging

    rng = np.random.default_rng(3)
    g, _ = _tile(rng, 48, 40)
    v = rng.uniform(0, 0.2, (48, 3))
    logging.disable(logging.INFO)
    try:
        ref = badcrossbar.compute(v, 1.0 / g, r_i_word_line=2.5, r_i_bit_line=2.5).currents.output.T
    finally:
        logging.disable(logging.NOTSET)
    i = solve(g, v, CircuitConfig(r_wire_row_ohm=2.5, r_wire_col_ohm=2.5)).i_out_a
    assert _rel(i, ref) < RTOL


def _parse_deck(text):
    vin = {int(m[1]): float(m[2]) for m in re.finditer(r"^Vin(\d+) in\d+ 0 DC (\S+)$", text, re.M)}
    cells = {(int(m[1]), int(m[2])): 1.0 / float(m[3]) for m in re.finditer(r"^Rc(\d+)_(\d+) \S+ \S+ (\S+)$", text, re.M)}
    rows, cols = max(vin) + 1, max(j for _, j in cells) + 1
    g = np.zeros((rows, cols))
    for (i, j), val in cells.items():
        g[i, j] = val
    return g, np.array([vin[i] for i in range(rows)])


@pytest.mark.parametrize("name", sorted(p.name[:-5] for p in GOLDENS.glob("*.json")))
def test_ngspice_goldens(name):
    meta = json.loads((GOLDENS / f"{name}.json").read_text())
    with gzip.open(GOLDENS / f"{name}.cir.gz", "rt") as fh:
        g, v = _parse_deck(fh.read())
    assert g.shape == (meta["rows"], meta["cols"])
    c = CircuitConfig(**meta["circuit"])
    assert _rel(solve(g, v, c).i_out_a, np.array(meta["i_out_a"])) < RTOL
    assert _rel(v @ effective_matrix(g, c)[0], np.array(meta["i_out_a"])) < RTOL


@pytest.mark.spice
@pytest.mark.parametrize("circ", [
    CircuitConfig(r_wire_row_ohm=2.5, r_wire_col_ohm=2.5),
    CircuitConfig(r_wire_row_ohm=1.0, r_wire_col_ohm=2.0, r_source_ohm=40.0, r_sense_ohm=15.0, drive="both_sides"),
    CircuitConfig(r_wire_row_ohm=5.0, r_wire_col_ohm=5.0, cell_v0_v=0.25),
])
def test_live_ngspice(circ):
    from device.spice import runner

    if not runner.spice_available():
        pytest.skip("PySpice or libngspice not available")
    from device.spice.crossbar import run_crossbar

    rng = np.random.default_rng(4)
    g, v = _tile(rng, 16, 12)
    v = v * 2.5  # up to 0.5 V: the sinh cells are clearly nonlinear
    ref = run_crossbar(g, v, return_nodes=True, **circ.to_dict())
    s = solve(g, v, circ, return_nodes=True)
    assert _rel(s.i_out_a, ref["i_out_a"]) < RTOL
    np.testing.assert_allclose(s.v_word_v, ref["v_word_v"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s.v_bit_v, ref["v_bit_v"], rtol=0, atol=1e-9)
    if not circ.linear:
        assert _rel(s.i_out_a, ideal_currents(g, v)) > 1e-2  # the nonlinearity is visible


def test_bad_inputs():
    with pytest.raises(ValueError, match="r_wire_row_ohm"):
        CircuitConfig(r_wire_row_ohm=-1.0)
    with pytest.raises(ValueError, match="v_in_v"):
        solve(np.ones((3, 2)) * 1e-5, np.ones(4))
    with pytest.raises(ValueError, match="linear"):
        effective_matrix(np.ones((3, 2)) * 1e-5, CircuitConfig(cell_v0_v=0.25))


# ------------------------------------------------------------------------------------------
# batched exact effective matrices (torch) and the cached line-ordered PCG


@pytest.mark.parametrize(
    "circ",
    [
        CircuitConfig(r_wire_row_ohm=2.5, r_wire_col_ohm=2.5),
        CircuitConfig(r_wire_row_ohm=1.0, r_wire_col_ohm=4.0, r_source_ohm=30.0, r_sense_ohm=10.0, drive="both_sides"),
        CircuitConfig(r_wire_row_ohm=0.0, r_wire_col_ohm=3.0, r_source_ohm=20.0),
        CircuitConfig(r_wire_row_ohm=2.0, r_wire_col_ohm=0.0, r_sense_ohm=5.0),
        CircuitConfig(r_wire_row_ohm=0.0, r_wire_col_ohm=0.0),
    ],
)
def test_effective_matrices_batched_match_block_elimination(circ):
    torch = pytest.importorskip("torch")
    from crossbar.solver import effective_matrices

    rng = np.random.default_rng(5)
    wired = circ.r_wire_row_ohm > 0 and circ.r_wire_col_ohm > 0
    methods = ("auto", "block", "nested") if wired else ("auto", "block")
    # 150 columns: the recursive block inverse; 1x1, 2x2, one row / column: nested dissection's
    # edge cases (every node kept, both drivers on one node)
    for shape in [(5, 9, 11), (2, 1, 6), (3, 7, 1), (2, 5, 150), (2, 1, 1), (2, 2, 2), (2, 33, 40)]:
        g = np.exp(rng.uniform(np.log(1e-6), np.log(1e-4), shape))
        ref = effective_matrix(g, circ)
        for method in methods:
            m = effective_matrices(torch.from_numpy(g), circ, tiles_per_call=2, method=method)
            assert isinstance(m, torch.Tensor) and m.dtype == torch.float64 and m.shape == shape
            np.testing.assert_allclose(m.numpy(), ref, rtol=1e-10, atol=1e-20, err_msg=method)


@pytest.mark.parametrize("r_wire_ohm", [0.1, 1.0, 5.0])
def test_nested_dissection_on_signed_inputs(r_wire_ohm):
    # the engine's tile (128 x 128, the levels' 9-106 uS) driven by signed inputs, as LayerNorm
    # outputs drive it: nested dissection (the default there) against the numpy sweep. Both are
    # direct eliminations, so the tolerance is rounding's: 1e-9 of the RMS column current.
    torch = pytest.importorskip("torch")
    from crossbar.solver import effective_matrices

    rng = np.random.default_rng(7)
    g = rng.uniform(9e-6, 1.06e-4, (1, 128, 128))
    g[0, :64] = 1.06e-4  # half the rows at the top level: the structured tile of issue 21
    c = CircuitConfig(r_wire_row_ohm=r_wire_ohm, r_wire_col_ohm=r_wire_ohm)
    m = effective_matrices(torch.from_numpy(g), c).numpy()
    ref = effective_matrix(g, c)
    v = rng.uniform(-1, 1, (32, 128)) * (rng.random((32, 128)) < 0.5)
    i_ref = v @ ref[0]
    assert np.max(np.abs(v @ m[0] - i_ref)) < 1e-9 * np.sqrt(np.mean(i_ref**2))
    np.testing.assert_allclose(m, ref, rtol=1e-9, atol=0)


def test_effective_matrices_single_column_divider():
    # one column, ideal word lines: the bit line is a ladder; compare with the hand solution
    torch = pytest.importorskip("torch")
    from crossbar.solver import effective_matrices

    g = torch.tensor([[[1e-3], [2e-3]]], dtype=torch.float64)
    c = CircuitConfig(r_wire_row_ohm=0.0, r_wire_col_ohm=10.0)
    a = np.array([[1e-3 + 0.1, -0.1], [-0.1, 2e-3 + 0.2]])
    m = effective_matrices(g, c)[0, :, 0].numpy()
    for i, gi in enumerate((1e-3, 2e-3)):
        b = np.linalg.solve(a, np.eye(2)[i] * gi)
        np.testing.assert_allclose(m[i], b[1] / 10.0, rtol=1e-12)


def test_effective_matrices_bad_inputs():
    torch = pytest.importorskip("torch")
    from crossbar.solver import effective_matrices
    from device.config import ConfigError
    from device.errors import InputError

    with pytest.raises(InputError):
        effective_matrices(np.ones((1, 2, 2)) * 1e-5)
    with pytest.raises(InputError):
        effective_matrices(torch.ones(1, 2, 2) * 1e-5)  # float32
    with pytest.raises(InputError):
        effective_matrices(torch.full((1, 2, 2), -1e-5, dtype=torch.float64))
    with pytest.raises(ConfigError, match="linear"):
        effective_matrices(torch.full((1, 2, 2), 1e-5, dtype=torch.float64), CircuitConfig(cell_v0_v=0.25))
    with pytest.raises(ConfigError, match="method"):
        effective_matrices(torch.full((1, 2, 2), 1e-5, dtype=torch.float64), method="lu")
    with pytest.raises(ConfigError, match="resistive"):
        effective_matrices(torch.full((1, 2, 2), 1e-5, dtype=torch.float64), CircuitConfig(r_wire_row_ohm=0.0), method="nested")


def test_pcg_cache_never_goes_stale():
    rng = np.random.default_rng(6)
    g, v = _tile(rng, 20, 16)
    c = CircuitConfig(r_wire_row_ohm=3.0, r_wire_col_ohm=3.0, r_sense_ohm=7.0)
    first = solve(g, v, c, method="pcg").i_out_a
    np.testing.assert_allclose(solve(g, v, c, method="pcg", cache=False).i_out_a, first, rtol=1e-12)
    g[3, 4] *= 5.0  # in place: the cached operator must not be reused
    ref = solve(g, v, c, method="direct").i_out_a
    np.testing.assert_allclose(solve(g, v, c, method="pcg").i_out_a, ref, rtol=1e-9)
    # a looser tolerance is still accurate to ~1e-9
    assert _rel(solve(g, v, c, method="pcg", rtol=1e-10, cache=False).i_out_a, ref) < 1e-8
