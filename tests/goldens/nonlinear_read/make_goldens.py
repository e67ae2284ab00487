"""Regenerate the ngspice goldens of sinh-cell tile reads (run from the repository root):

    .venv/bin/python tests/goldens/nonlinear_read/make_goldens.py

Each case is one tile of cells drawn from a shipped level table, with the compact model's read I-V ``I = g v0 sinh(V / v0)`` (``v0`` =
0.25 V, Stanford-PKU; ``g`` the small-signal conductance,
:func:`device.compact.read_to_small_signal_s`) defined as the table verified them: the table's
conductances are chords ``I(V)/V`` at the *table's* read voltage (``LevelTable.v_read_v``,
0.1 V for the shipped write-verify tables), which is not the chip's read voltage ``v_read_v``
(0.2 / 0.3 V here); read through an 8-bit multi-bit DAC: input
vectors of codes at several DAC levels (full scale, half, small, zero, both signs), word-line
voltage ``v_read_v * code / 127``. For each case and input vector ``k``: the deck
``<name>_v<k>.cir.gz`` (written by :func:`device.spice.crossbar.crossbar_netlist`, ngspice
B-sources ``I = g*v0*sinh(V/v0)``, 17 significant digits) and, in ``<name>.json``, the codes, the
circuit, the ngspice version and the bit-line currents ``i(vsense<j>)`` of every vector. The
small-signal conductances and the voltages are re-derived from the decks by the test
(``tests/test_nonlinear_read.py``), so the decks are the single source of truth.

The ``engine*`` cases are one tile of a matrix programmed by the engine itself
(``crossbar.engine.program_matrix``, a zero-spread level table with the shipped 2-bit table's
targets and its read voltage 0.1 V, seed in the JSON): the deck's cells are the table's
conductances at 0.1 V made small-signal, its inputs the DAC codes of the stored input vectors;
the test re-programs the same chip and compares the engine's column currents with ngspice's.
"""

import gzip
import json
from pathlib import Path

import numpy as np

from device.compact import read_to_small_signal_s
from device.programming import LevelTable
from device.spice.crossbar import crossbar_netlist
from device.spice.runner import ngspice_version, run_netlist

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
V0 = 0.25
QM = 127
TABLE_V_READ = 0.1  # the shipped tables' verify read voltage (ProgrammingConfig.v_read_v)
DAC_LEVELS = np.array([-127, -96, -64, -31, -8, -1, 0, 1, 8, 31, 64, 96, 127])
CASES = [
    # name, rows, cols, wire ohm per segment, v_read_v, bits per cell, vectors, seed
    ("sinh16_ideal_v0.2", 16, 16, 0.0, 0.2, 2, 4, 11),
    ("sinh16_r2.5_v0.2", 16, 16, 2.5, 0.2, 2, 4, 12),
    ("sinh24_r1_v0.3", 24, 20, 1.0, 0.3, 4, 3, 13),
]
ENGINE_CASES = [
    # name, wire ohm per segment, chip v_read_v, seed
    ("engine16_ideal_v0.3", 0.0, 0.3, 21),
    ("engine16_r1_v0.2", 1.0, 0.2, 22),
]


def main() -> None:
    for name, rows, cols, r, v_read, bits, k, seed in CASES:
        rng = np.random.default_rng(seed)
        tab = LevelTable.load(ROOT / "data" / f"levels_b{bits}.h5")
        g_table = tab.sample(rng.integers(0, 2**bits, (rows, cols)), rng)  # chords at the table's 0.1 V
        assert tab.v_read_v == TABLE_V_READ
        g_ss = read_to_small_signal_s(g_table, TABLE_V_READ, V0)
        codes = rng.choice(DAC_LEVELS, (k, rows))
        codes[0, 0], codes[-1, -1] = QM, -QM  # full scale both ways in every case
        circuit = dict(r_wire_row_ohm=r, r_wire_col_ohm=r, cell_v0_v=V0)
        i_out = []
        for j in range(k):
            deck = crossbar_netlist(g_ss, v_read * codes[j] / QM, **circuit, title=f"golden {name} vector {j}")
            res = run_netlist(deck)
            i_out.append([float(res.vectors[f"i(vsense{c})"][0]) for c in range(cols)])
            with gzip.open(HERE / f"{name}_v{j}.cir.gz", "wt") as fh:
                fh.write(deck)
        (HERE / f"{name}.json").write_text(json.dumps(
            {"rows": rows, "cols": cols, "circuit": circuit, "v_read_v": v_read, "table_v_read_v": TABLE_V_READ, "input_bits": 8, "bits_per_cell": bits,
             "seed": seed, "codes": codes.tolist(), "ngspice_version": ngspice_version(), "i_out_a": i_out}, indent=1))
        print(name, "done")
    for name, r, v_read, seed in ENGINE_CASES:
        engine_case(name, r, v_read, seed)
        print(name, "done")


def engine_levels():
    """Zero-spread 2-bit table at the shipped table's targets, read voltage 0.1 V (as verified)."""
    import dataclasses

    tab = LevelTable.load(ROOT / "data" / "levels_b2.h5")
    t = np.asarray(tab.g_target_s, float)
    return LevelTable(bits_per_cell=2, g_target_s=t, g_samples_s=np.repeat(t[:, None], 2, 1), g_sa0_s=float(t[0]),
                      g_sa1_s=float(t[-1]), source="golden", v_read_v=TABLE_V_READ)


def engine_matrix(r, v_read, seed):
    """The engine's chip of an engine case: (ProgrammedMatrix, x)."""
    import torch

    from crossbar.engine import CrossbarConfig, program_matrix
    from crossbar.solver import CircuitConfig

    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, v_read_v=v_read, input_bits=8, bits_per_cell=2,
                         ir_drop="ideal" if r == 0 else "exact")
    circ = CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r, cell_v0_v=V0)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(2, 16, generator=gen, dtype=torch.float64) / 4
    x = torch.randn(3, 16, generator=gen, dtype=torch.float64)
    pm = program_matrix(w, cfg, engine_levels(), rng=np.random.default_rng(seed), circuit=circ, dtype=torch.float64,
                        keep_conductances=True)
    return pm, x


def engine_case(name, r, v_read, seed):
    pm, x = engine_matrix(r, v_read, seed)
    st = pm.tile_state()
    g_table = np.asarray(engine_levels().g_target_s)[st.levels[0].astype(int)]
    g_ss = read_to_small_signal_s(g_table, TABLE_V_READ, V0)
    xq, _ = pm.dac(x)
    rows = pm.row_gather().numpy()
    codes = np.concatenate([xq.numpy(), np.zeros((x.shape[0], 1))], axis=1)[:, rows]
    i_out = []
    for j in range(codes.shape[0]):
        deck = crossbar_netlist(g_ss, v_read * codes[j] / QM, r_wire_row_ohm=r, r_wire_col_ohm=r, cell_v0_v=V0,
                                title=f"golden {name} vector {j}")
        res = run_netlist(deck)
        i_out.append([float(res.vectors[f"i(vsense{c})"][0]) for c in range(g_ss.shape[1])])
        with gzip.open(HERE / f"{name}_v{j}.cir.gz", "wt") as fh:
            fh.write(deck)
    (HERE / f"{name}.json").write_text(json.dumps(
        {"rows": 16, "cols": 16, "circuit": dict(r_wire_row_ohm=r, r_wire_col_ohm=r, cell_v0_v=V0), "v_read_v": v_read,
         "table_v_read_v": TABLE_V_READ, "input_bits": 8, "bits_per_cell": 2, "seed": seed, "engine": True,
         "codes": codes.tolist(), "ngspice_version": ngspice_version(), "i_out_a": i_out}, indent=1))


if __name__ == "__main__":
    main()
