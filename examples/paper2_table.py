"""Seed paper 2's comparison from two study CSVs: static vs dynamic fixed point, normal vs
DVA-trained model, under programming variation (sigma x bits/cell x on/off ratio).

    python examples/paper2_table.py results/paper2_normal/results.csv results/paper2_dva/results.csv

Prints a markdown table of mean SST-2 dev accuracy per point and, per combination, the mean over
all points and the average relative gain of DFP + DVA over static + normal training (the paper's
"more than 20 % better computing accuracy on average").
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np

from nn.evaluate import read_results

AXES = ("levels.sigma_rel", "crossbar.bits_per_cell", "levels.on_off_ratio")


def _get(d, path):
    for k in path.split("."):
        d = d[k]
    return d


def main(normal_csv: str, dva_csv: str) -> None:
    acc: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    digital = {}
    for label, path in (("normal", normal_csv), ("dva", dva_csv)):
        for r in read_results(path):
            if r["mode"] == "digital":
                digital[label] = r["score"]
                continue
            cfg = json.loads(r["sim_config"])
            point = tuple(_get(cfg, a) for a in AXES)
            acc[point][f"{label}/{r['method']}"].append(r["score"])
    cols = ["normal/static_fp", "normal/dfp", "dva/static_fp", "dva/dfp"]
    print(f"digital accuracy: normal {digital.get('normal', float('nan')):.4f}, DVA {digital.get('dva', float('nan')):.4f}\n")
    print("| sigma | bits/cell | on/off | " + " | ".join(cols) + " |")
    print("|---:|---:|---:|" + "---:|" * len(cols))
    means = {c: [] for c in cols}
    gains = []
    for point in sorted(acc):
        vals = {c: float(np.mean(acc[point][c])) if acc[point][c] else float("nan") for c in cols}
        for c in cols:
            means[c].append(vals[c])
        gains.append(vals["dva/dfp"] / vals["normal/static_fp"] - 1.0)
        s, b, o = point
        print(f"| {s:g} | {b} | {o:g} | " + " | ".join(f"{vals[c]:.4f}" for c in cols) + " |")
    print("| mean | | | " + " | ".join(f"{np.nanmean(means[c]):.4f}" for c in cols) + " |")
    print(f"\nDFP + DVA vs static FP + normal training: mean relative accuracy gain {np.nanmean(gains) * 100:+.1f} % "
          f"(range {np.nanmin(gains) * 100:+.1f} % .. {np.nanmax(gains) * 100:+.1f} %) over {len(gains)} points")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
