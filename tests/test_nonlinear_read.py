"""Nonlinear (sinh) cell read in the engine (``circuit.cell_v0_v > 0``, crossbar.read.cell_code_map).

Analytic limits (large v0 is linear; full-scale codes and bit-serial reads are the linear read;
odd symmetry; sinh current above the small-signal line), the engine's currents against the
Newton solver (exact with ideal wires, the stated tolerance with wires), ngspice goldens of sinh
tiles read at several multi-bit DAC levels (tests/goldens/nonlinear_read, with their decks and
make_goldens.py), and batch independence.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from crossbar.engine import CrossbarConfig, program_matrix
from crossbar.quant import q_max
from crossbar.pipeline import chord_ratio
from crossbar.read import apply_code_map, cell_code_map
from crossbar.solver import CircuitConfig, effective_matrix, solve
from device.compact import read_to_small_signal_s, small_signal_to_read_s
from device.faults import FaultConfig
from device.programming import LevelTable

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = Path(__file__).parent / "goldens" / "nonlinear_read"
V0 = 0.25  # Stanford-PKU


def _rel(a, ref):
    """RMS error relative to the RMS reference (the issue's metric)."""
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.sqrt(np.mean((a - ref) ** 2) / np.mean(ref**2)))


def _levels(bits=2, sigma_rel=0.05):
    return LevelTable.synthetic(bits_per_cell=bits, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=sigma_rel,
                                rng=np.random.default_rng(3))


def _newton_currents(g_read, codes, cfg, circuit):
    """Bit-line currents ``(cols, k)`` of sinh cells whose read conductance at ``v_read_v`` is
    ``g_read``, driven with ``v_read_v * codes / q_max`` (the exact nodal solution)."""
    v = cfg.v_read_v * np.asarray(codes, float) / q_max(cfg.input_bits)
    g_ss = read_to_small_signal_s(g_read, cfg.v_read_v, circuit.cell_v0_v)
    return solve(g_ss, v, circuit, method="direct").i_out_a


# --------------------------------------------------------------------------------------------
# the code map: analytic limits


@pytest.mark.parametrize("v_read", [0.1, 0.2, 0.3, 0.5])
def test_code_map_limits(v_read):
    cfg = CrossbarConfig(v_read_v=v_read)
    qm = q_max(cfg.input_bits)
    e = cell_code_map(cfg, V0)
    c = torch.arange(-qm, qm + 1, dtype=torch.float64)
    assert e.shape == c.shape
    assert torch.equal(e, -e.flip(0))  # odd: a negative word-line voltage reads the mirror current
    assert e[qm] == 0 and e[-1] == qm and e[0] == -qm  # zero and full scale exactly
    inner = (c != 0) & (c.abs() < qm)
    assert bool((e[inner].abs() < c[inner].abs()).all())  # the chord rises with the voltage
    assert bool((torch.diff(e) > 0).all())  # monotone: a larger code never reads less
    # the map is exactly the sinh chord ratio h(V) / h(v_read)
    x = v_read * c[inner] / qm / V0
    xr = v_read / V0
    np.testing.assert_allclose(e[inner], c[inner] * (torch.sinh(x) / x) / (np.sinh(xr) / xr), rtol=1e-13)
    # large v0: the linear read, to the leading order (v_read / v0)^2 / 6 of sinh(x)/x
    big = cell_code_map(cfg, 100.0)
    np.testing.assert_allclose(big, c, rtol=(v_read / 100.0) ** 2 / 6 * 1.01, atol=0)
    assert float((big - c).abs().max()) > 0  # ... but not bit for bit: the map is applied
    assert cell_code_map(cfg, 0.0) is None
    assert cell_code_map(CrossbarConfig(dac="bit_serial", v_read_v=v_read), V0) is None
    codes = torch.tensor([[-qm, 0, 3], [qm, -5, 1]], dtype=torch.float32)
    out = apply_code_map(codes, e)
    assert out.dtype == torch.float32 and torch.equal(out[0, 0], torch.tensor(-float(qm)))
    assert apply_code_map(codes, None) is codes


def test_sinh_current_exceeds_the_small_signal_line_and_is_odd():
    """Newton with sinh cells: above the line of the small-signal conductance for V > 0, equal
    and opposite for the negated inputs; below the line of the read conductance at v_read for
    0 < V < v_read (what the code map encodes)."""
    rng = np.random.default_rng(0)
    g = _levels(sigma_rel=0.0).sample(rng.integers(0, 4, (6, 5)), rng)
    c = CircuitConfig(r_wire_row_ohm=0.0, r_wire_col_ohm=0.0, cell_v0_v=V0)
    v = rng.uniform(0.02, 0.3, 6)
    i_p = solve(g, v, c, method="direct").i_out_a
    i_n = solve(g, -v, c, method="direct").i_out_a
    np.testing.assert_allclose(i_n, -i_p, rtol=1e-12)
    assert np.all(i_p > v @ g)
    cfg = CrossbarConfig(v_read_v=0.3)
    codes = np.round(v / 0.3 * 127)
    i_chord = _newton_currents(g, codes, cfg, c)
    assert np.all(i_chord < (0.3 * codes / 127) @ g)


# --------------------------------------------------------------------------------------------
# the engine against the Newton solver


@pytest.mark.parametrize("v_read", [0.2, 0.3])
def test_engine_currents_equal_newton_with_ideal_wires(v_read):
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, v_read_v=v_read, input_bits=8)
    circ = CircuitConfig(r_wire_row_ohm=0.0, r_wire_col_ohm=0.0, cell_v0_v=V0)
    w = torch.randn(6, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) / 4
    x = torch.randn(5, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pm = program_matrix(w, cfg, _levels(), rng=np.random.default_rng(4), circuit=circ, dtype=torch.float64,
                        keep_conductances=True)
    got = pm.column_currents(x)[0]  # (n, tiles, cols)
    st = pm.tile_state()
    xq, _ = pm.dac(x)
    gather = pm.row_gather().numpy().reshape(pm.layout.n_row_blocks, -1)
    codes = np.concatenate([xq.numpy(), np.zeros((5, 1))], axis=1)
    for t in range(pm.n_tiles):
        rows = gather[t // pm.layout.n_col_blocks]
        ref = _newton_currents(st.g_s[t], codes[:, rows].T, cfg, circ).T  # (n, cols)
        assert _rel(got[:, t], ref) < 1e-9


@pytest.mark.parametrize("r_ohm,v_read,tol", [(1.0, 0.2, 5e-4), (2.5, 0.3, 3e-3)])  # measured 1.9e-4, 9.8e-4
def test_engine_currents_against_newton_with_wires(r_ohm, v_read, tol):
    """With wires the engine keeps the code map and the linear effective matrix: an
    approximation; its RMS error relative to the RMS actual current on 16 x 16 tiles is below
    ``tol`` and far below the error of ignoring the nonlinearity. It grows with the tile's IR
    drop (bench/bench_nonlinear_read.py: up to 2 % at 64 x 64 and 1 ohm, 4.4 % at 2.5 ohm)."""
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, v_read_v=v_read, ir_drop="exact")
    circ = CircuitConfig(r_wire_row_ohm=r_ohm, r_wire_col_ohm=r_ohm, cell_v0_v=V0)
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) / 4
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pm = program_matrix(w, cfg, _levels(), rng=np.random.default_rng(4), circuit=circ, dtype=torch.float64,
                        keep_conductances=True)
    lin = program_matrix(w, cfg, _levels(), rng=np.random.default_rng(4),
                         circuit=CircuitConfig(r_wire_row_ohm=r_ohm, r_wire_col_ohm=r_ohm), dtype=torch.float64)
    got = pm.column_currents(x)[0, :, 0]  # one tile
    xq, _ = pm.dac(x)
    ref = _newton_currents(pm.tile_state().g_s[0], xq.numpy().T, cfg, circ).T
    err = _rel(got, ref)
    assert err < tol
    assert err < _rel(lin.column_currents(x)[0, :, 0], ref) / 20  # linear cells: 7.5 % and 17 % off


# --------------------------------------------------------------------------------------------
# ngspice goldens


def _parse_deck(text):
    vin = {int(m[1]): float(m[2]) for m in re.finditer(r"^Vin(\d+) in\d+ 0 DC (\S+)$", text, re.M)}
    v0 = {float(m[1]) for m in re.finditer(r"^Bc\d+_\d+ .*/(\S+)\)$", text, re.M)}
    cells = {(int(m[1]), int(m[2])): float(m[3]) for m in re.finditer(r"^Bc(\d+)_(\d+) \S+ \S+ I=(\S+)\*sinh", text, re.M)}
    (v0,) = v0
    rows, cols = max(vin) + 1, max(j for _, j in cells) + 1
    g = np.zeros((rows, cols))
    for (i, j), a in cells.items():
        g[i, j] = a / v0  # I = g v0 sinh(V / v0): the small-signal conductance
    return g, np.array([vin[i] for i in range(rows)]), v0


def _golden(name):
    """(meta, codes (k, rows), small-signal g (rows, cols), voltages (rows, k), v0) of a golden."""
    meta = json.loads((GOLDENS / f"{name}.json").read_text())
    codes = np.array(meta["codes"], float)
    g_ss = None
    vs = []
    for k in range(codes.shape[0]):
        with gzip.open(GOLDENS / f"{name}_v{k}.cir.gz", "rt") as fh:
            g_k, v, v0 = _parse_deck(fh.read())
        assert g_ss is None or np.array_equal(g_k, g_ss)  # one tile, several input vectors
        g_ss = g_k
        vs.append(v)
    return meta, codes, g_ss, np.stack(vs, 1), v0


@pytest.mark.parametrize("name", sorted(p.name[:-5] for p in GOLDENS.glob("sinh*.json")))
def test_ngspice_goldens(name):
    """Cells defined as the level table verified them (chords at the table's 0.1 V); the engine's
    read: the chord converted to the chip's read voltage (chord_ratio), the code map, the linear
    effective matrix of the chords."""
    meta, codes, g_ss, v, v0 = _golden(name)
    ref = np.array(meta["i_out_a"])  # (k, cols)
    cfg = CrossbarConfig(v_read_v=meta["v_read_v"], input_bits=meta["input_bits"])
    np.testing.assert_allclose(v, cfg.v_read_v * codes.T / 127, rtol=1e-15, atol=1e-18)
    circ = CircuitConfig(**meta["circuit"])
    assert circ.cell_v0_v == v0
    # the Newton solver: exact
    assert _rel(solve(g_ss, v, circ, method="direct").i_out_a.T, ref) < 1e-9
    v_tab = meta["table_v_read_v"]
    g_table = small_signal_to_read_s(g_ss, v_tab, v0)  # what the level table records
    g_chip = g_table * chord_ratio(v_tab, cfg.v_read_v, v0)
    lin = CircuitConfig(**{**meta["circuit"], "cell_v0_v": 0.0})
    e = apply_code_map(torch.from_numpy(codes), cell_code_map(cfg, v0)).numpy()

    def read(g):
        m = g if circ.r_wire_row_ohm == 0 else effective_matrix(g, lin)[0]
        return (cfg.v_read_v * e / 127) @ m

    eng = read(g_chip)
    # with wires: the approximation (measured 0.19 % at 16x16 2.5 ohm 0.2 V, 0.35 % at 24x20 1 ohm 0.3 V)
    tol = 1e-9 if circ.r_wire_row_ohm == 0 else 6e-3
    assert _rel(eng, ref) < tol
    # the table's conductance taken as the chord at the chip's voltage: 7.6 % (0.2 V) / 18 % (0.3 V) low
    assert _rel(read(g_table), ref) > 0.06
    if circ.r_wire_row_ohm > 0:
        m = effective_matrix(g_chip, lin)[0]
        assert _rel(eng, ref) < _rel((cfg.v_read_v * codes / 127) @ m, ref) / 10  # linear cells: 5-7 % off


@pytest.mark.parametrize("name", sorted(p.name[:-5] for p in GOLDENS.glob("engine*.json")))
def test_engine_reads_the_ngspice_goldens(name):
    """The engine itself (program_matrix with a level table verified at 0.1 V, read at 0.2 / 0.3 V)
    against ngspice decks of the same cells defined as the table verified them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_goldens", GOLDENS / "make_goldens.py")
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)
    meta, codes, g_ss, v, v0 = _golden(name)
    ref = np.array(meta["i_out_a"])
    r = meta["circuit"]["r_wire_row_ohm"]
    pm, x = mg.engine_matrix(r, meta["v_read_v"], meta["seed"])
    st = pm.tile_state()
    g_table = np.asarray(mg.engine_levels().g_target_s)[st.levels[0]]
    np.testing.assert_allclose(read_to_small_signal_s(g_table, meta["table_v_read_v"], v0), g_ss, rtol=1e-15)
    got = pm.column_currents(x)[0, :, 0]  # (k, cols)
    # measured 1.0e-11 (ideal wires, 0.3 V) and 2.4e-4 (1 ohm, 0.2 V); without the read-voltage
    # conversion 18 % and 7.5 % off
    assert _rel(got, ref) < (1e-9 if r == 0 else 1e-3)


# --------------------------------------------------------------------------------------------
# reads of programmed matrices


def _pm(cfg, v0, w, **kw):
    circ = CircuitConfig(r_wire_row_ohm=1.0, r_wire_col_ohm=1.0, cell_v0_v=v0)
    return program_matrix(w, cfg, _levels(), FaultConfig(rate=0.01), np.random.default_rng(5), circuit=circ, **kw)


@pytest.mark.parametrize("ir_drop", ["ideal", "exact"])
def test_bit_serial_read_is_the_linear_read(ir_drop):
    """A bit-serial DAC drives only v_read_v, where every cell reads its table conductance."""
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, dac="bit_serial", adc_bits=6, ir_drop=ir_drop)
    w = torch.randn(20, 40, generator=torch.Generator().manual_seed(1)) / 8
    x = torch.randn(9, 40, generator=torch.Generator().manual_seed(2))
    assert torch.equal(_pm(cfg, V0, w)(x), _pm(cfg, 0.0, w)(x))


@pytest.mark.parametrize("adc_bits", [None, 8])
def test_multi_bit_limits(adc_bits):
    # "scaled" inputs: each vector's largest |x| is code q_max, the full-scale voltage
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, adc_bits=adc_bits, input_format="scaled")
    w = torch.randn(20, 40, generator=torch.Generator().manual_seed(1)) / 8
    x = torch.randn(9, 40, generator=torch.Generator().manual_seed(2))
    lin, nl, big = _pm(cfg, 0.0, w), _pm(cfg, V0, w), _pm(cfg, 100.0, w)
    # full-scale and zero codes only: the reference voltage, exactly the linear read
    xs = torch.sign(x) * (x.abs() > 0.7)
    xs[:, 0] = 1.0
    assert torch.equal(nl(xs), lin(xs))
    # large v0: the linear read to 1e-6 (ideal ADC; an ADC may round a code differently)
    y_lin, y_big = lin(x), big(x)
    if adc_bits is None:
        assert _rel(y_big.double(), y_lin.double()) < 1e-6
    # the nonlinearity is visible and reads less than linear for inputs below full scale
    y_nl = nl(x)
    assert _rel(y_nl.double(), y_lin.double()) > 1e-2
    # ideal ADC: exactly the folded readout applied to the mapped codes
    if adc_bits is None:
        xq, sx = nl.dac(x)
        ref = torch.nn.functional.linear(apply_code_map(xq, nl.code_map) * sx.float(), nl.readout)
        torch.testing.assert_close(y_nl, ref, rtol=1e-6, atol=1e-6)


def test_summary_names_the_sinh_cells():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32)
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    assert "sinh cells v0=0.25 V" in _pm(cfg, V0, w).summary()
    assert "sinh" not in _pm(cfg, 0.0, w).summary()


@pytest.mark.parametrize("read", [dict(adc_bits=None), dict(adc_bits=8, adc_range="calibrated"),
                                  dict(adc_bits=12, adc_scope="tile", read_noise_sigma_rel=0.0)])
def test_a_vector_reads_the_same_bits_in_any_batch(read):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, ir_drop="exact", **read)
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(1)) / 8
    x = torch.randn(40, 70, generator=torch.Generator().manual_seed(2))
    pm = _pm(cfg, V0, w)
    if cfg.needs_calibration:
        pm = pm.calibrate(torch.randn(64, 70, generator=torch.Generator().manual_seed(3)))
    full = pm(x)
    for size, n in ((1, 8), (7, 40)):
        parts = torch.cat([pm(x[i : min(n, i + size)]) for i in range(0, n, size)])
        assert torch.equal(parts, full[:n]), f"batches of {size} differ"
    loud = torch.randn(6, 70, generator=torch.Generator().manual_seed(4)) * 100
    assert torch.equal(pm(torch.cat([loud[:3], x[5:6], loud[3:]]))[3], full[5])


def test_table_mode_reads_sinh_cells_with_the_linear_table():
    """ir_drop='table' with sinh cells: the table's linear effective matrix (it refuses nonlinear
    circuits itself) and the code map; the readout is the linear cells' one."""
    cfg = CrossbarConfig(tile_rows=64, tile_cols=64, ir_drop="table")
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(1)) / 8
    lvl = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=10e-6, sigma_rel=0.02,
                               rng=np.random.default_rng(3))
    mk = lambda v0: program_matrix(w, cfg, lvl, rng=np.random.default_rng(5),  # noqa: E731
                                   circuit=CircuitConfig(r_wire_row_ohm=0.5, r_wire_col_ohm=0.5, cell_v0_v=v0))
    nl, lin = mk(V0), mk(0.0)
    assert torch.equal(nl.readout, lin.readout)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(nl(x), lin(x))


def test_level_tables_record_their_read_voltage(tmp_path):
    """Write-verify tables record the verify read voltage (0.1 V for the shipped ones); it
    survives save/load; a table without it (synthetic) is read at the chip's voltage."""
    import dataclasses

    tab = LevelTable.load(ROOT / "data" / "levels_b2.h5")
    assert tab.v_read_v == 0.1
    t2 = dataclasses.replace(_levels(), v_read_v=0.15)
    assert LevelTable.load(t2.save(tmp_path / "l.h5")).v_read_v == 0.15
    assert _levels().v_read_v is None
    with pytest.raises(ValueError, match="v_read_v"):
        dataclasses.replace(_levels(), v_read_v=-0.1)
    # the chord ratio: sinh(x)/x at the chip's voltage over the table's (Stanford-PKU v0 = 0.25 V)
    h = lambda v: np.sinh(v / V0) / (v / V0)  # noqa: E731
    assert chord_ratio(0.1, 0.3, V0) == pytest.approx(h(0.3) / h(0.1), rel=1e-14)
    assert chord_ratio(0.1, 0.3, V0) == pytest.approx(1.225, abs=1e-3)
    assert chord_ratio(0.1, 0.2, V0) == pytest.approx(1.081, abs=1e-3)
    assert chord_ratio(0.1, 0.3, 0.0) == 1.0


@pytest.mark.parametrize("v_tab,expect", [(None, 1.0), (0.2, 1.0), (0.1, 1.0811)])
def test_programmed_cells_are_chords_at_the_chip_read_voltage(v_tab, expect):
    """program_matrix scales every cell (stuck ones too) by the chord ratio, once."""
    import dataclasses

    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, v_read_v=0.2)
    w = torch.randn(4, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lv = dataclasses.replace(_levels(), v_read_v=v_tab)
    kw = dict(rng=np.random.default_rng(4), dtype=torch.float64, keep_conductances=True, faults=FaultConfig(rate=0.05))
    g_sinh = program_matrix(w, cfg, lv, circuit=CircuitConfig(cell_v0_v=V0), **kw).tile_state().g_s
    g_lin = program_matrix(w, cfg, lv, circuit=CircuitConfig(), **dict(kw, rng=np.random.default_rng(4))).tile_state().g_s
    np.testing.assert_allclose(g_sinh / g_lin, expect, rtol=1e-4)
