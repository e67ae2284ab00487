"""Regenerate the ngspice goldens of crossbar tiles (run from the repository root):

    .venv/bin/python tests/goldens/crossbar/make_goldens.py

For each case: the deck ``<name>.cir.gz`` (written by device.spice.crossbar.crossbar_netlist,
17 significant digits) and ``<name>.json`` with the inputs' seed, circuit, the ngspice version and
the bit-line currents i(vsense<j>) from ngspice's .op. The conductances and inputs are
re-derived from the deck by the test, so the deck is the single source of truth.
"""

import gzip
import json
from pathlib import Path

import numpy as np

from device.spice.crossbar import crossbar_netlist
from device.spice.runner import ngspice_version, run_netlist

HERE = Path(__file__).resolve().parent
CASES = [
    # name, rows, cols, circuit, seed
    ("tile8x6_both_sides", 8, 6, dict(r_wire_row_ohm=2.0, r_wire_col_ohm=3.0, r_source_ohm=50.0, r_sense_ohm=20.0, drive="both_sides"), 1),
    ("tile16_r5", 16, 16, dict(r_wire_row_ohm=5.0, r_wire_col_ohm=5.0), 2),
    ("tile32_r2.5", 32, 32, dict(r_wire_row_ohm=2.5, r_wire_col_ohm=2.5), 3),
    ("tile64_r5", 64, 64, dict(r_wire_row_ohm=5.0, r_wire_col_ohm=5.0), 4),
]


def main() -> None:
    for name, rows, cols, circuit, seed in CASES:
        rng = np.random.default_rng(seed)
        g = np.exp(rng.uniform(np.log(1e-6), np.log(1e-4), (rows, cols)))
        v = rng.uniform(0.0, 0.2, rows)
        deck = crossbar_netlist(g, v, **circuit, title=f"golden {name}")
        res = run_netlist(deck)
        i_out = [float(res.vectors[f"i(vsense{j})"][0]) for j in range(cols)]
        with gzip.open(HERE / f"{name}.cir.gz", "wt") as fh:
            fh.write(deck)
        (HERE / f"{name}.json").write_text(json.dumps(
            {"rows": rows, "cols": cols, "circuit": circuit, "seed": seed, "ngspice_version": ngspice_version(),
             "i_out_a": i_out}, indent=1))
        print(name, "done")


if __name__ == "__main__":
    main()
