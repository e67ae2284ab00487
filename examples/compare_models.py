"""Several models (or studies) side by side along one sweep axis, from their study CSVs.

    python examples/compare_models.py --axis levels.sigma_rel \
        normal=results/paper2_dva_crossbar/normal/results.csv \
        crossbar-DVA=results/paper2_dva_crossbar/crossbar_dva/results.csv

Prints a markdown table: per axis value, each model's mean score over its simulated trials,
+- the standard deviation across trials, and in parentheses the change against the model's own
digital score (the accuracy it *loses* on the chip). ``--method`` picks one method of each CSV
(default: the only one, else an error naming them); ``--task`` likewise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import numpy as np

from nn.evaluate import read_results


def _get(d, path):
    for k in path.split("."):
        d = d[k]
    return d


def _only(values: set, what: str, path: str, chosen: str | None) -> str:
    if chosen is not None:
        if chosen not in values:
            raise SystemExit(f"error: {path} has no {what} {chosen!r} (it has {sorted(values)})")
        return chosen
    if len(values) != 1:
        raise SystemExit(f"error: {path} holds {what}s {sorted(values)}; pick one with --{what}")
    return next(iter(values))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--axis", required=True, help="sim config key path swept in the studies")
    ap.add_argument("--method", default=None, help="method to take from every CSV")
    ap.add_argument("--task", default=None, help="task to take from every CSV")
    ap.add_argument("models", nargs="+", help="LABEL=path/to/results.csv")
    args = ap.parse_args(argv)

    table: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    digital: dict[str, float] = {}
    labels = []
    for item in args.models:
        label, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {item!r} is not LABEL=path")
        rows = read_results(path)
        task = _only({r["task"] for r in rows}, "task", path, args.task)
        method = _only({r["method"] for r in rows if r["task"] == task}, "method", path, args.method)
        labels.append(label)
        for r in rows:
            if r["task"] != task or r["method"] != method:
                continue
            if r["mode"] == "digital":
                digital[label] = r["score"]
            else:
                table[float(_get(json.loads(r["sim_config"]), args.axis))][label].append(r["score"])

    print(f"| {args.axis} | " + " | ".join(labels) + " |")
    print("|---:|" + "---:|" * len(labels))
    print("| digital | " + " | ".join(f"{digital.get(lb, float('nan')):.4f}" for lb in labels) + " |")
    for v in sorted(table):
        cells = []
        for lb in labels:
            s = table[v].get(lb)
            if not s:
                cells.append("-")
                continue
            m = float(np.mean(s))
            sd = float(np.std(s, ddof=1)) if len(s) > 1 else 0.0
            cells.append(f"{m:.4f} +- {sd:.4f} ({m - digital.get(lb, float('nan')):+.4f})")
        print(f"| {v:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
