"""Regenerate the ngspice goldens of sinh-cell tile reads (run from the repository root):

    .venv/bin/python tests/goldens/nonlinear_read/make_goldens.py

Each case is one tile of cells drawn from a shipped level table (read conductances at the read
voltage ``v_read_v``), with the compact model's read I-V ``I = g v0 sinh(V / v0)`` (``v0`` =
0.25 V, Stanford-PKU; ``g`` the small-signal conductance,
:func:`device.compact.read_to_small_signal_s`), read through an 8-bit multi-bit DAC: input
vectors of codes at several DAC levels (full scale, half, small, zero, both signs), word-line
voltage ``v_read_v * code / 127``. For each case and input vector ``k``: the deck
``<name>_v<k>.cir.gz`` (written by :func:`device.spice.crossbar.crossbar_netlist`, ngspice
B-sources ``I = g*v0*sinh(V/v0)``, 17 significant digits) and, in ``<name>.json``, the codes, the
circuit, the ngspice version and the bit-line currents ``i(vsense<j>)`` of every vector. The
small-signal conductances and the voltages are re-derived from the decks by the test
(``tests/test_nonlinear_read.py``), so the decks are the single source of truth.
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
DAC_LEVELS = np.array([-127, -96, -64, -31, -8, -1, 0, 1, 8, 31, 64, 96, 127])
CASES = [
    # name, rows, cols, wire ohm per segment, v_read_v, bits per cell, vectors, seed
    ("sinh16_ideal_v0.2", 16, 16, 0.0, 0.2, 2, 4, 11),
    ("sinh16_r2.5_v0.2", 16, 16, 2.5, 0.2, 2, 4, 12),
    ("sinh24_r1_v0.3", 24, 20, 1.0, 0.3, 4, 3, 13),
]


def main() -> None:
    for name, rows, cols, r, v_read, bits, k, seed in CASES:
        rng = np.random.default_rng(seed)
        tab = LevelTable.load(ROOT / "data" / f"levels_b{bits}.h5")
        g_read = tab.sample(rng.integers(0, 2**bits, (rows, cols)), rng)
        g_ss = read_to_small_signal_s(g_read, v_read, V0)
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
            {"rows": rows, "cols": cols, "circuit": circuit, "v_read_v": v_read, "input_bits": 8, "bits_per_cell": bits,
             "seed": seed, "codes": codes.tolist(), "ngspice_version": ngspice_version(), "i_out_a": i_out}, indent=1))
        print(name, "done")


if __name__ == "__main__":
    main()
