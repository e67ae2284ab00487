"""Several models (or studies) side by side along one sweep axis, from their study CSVs.

    python examples/compare_models.py --axis levels.sigma_rel \
        normal=results/paper2_dva_crossbar/normal/results.csv \
        crossbar-DVA=results/paper2_dva_crossbar/crossbar_dva/results.csv

Prints a markdown table: per axis value, each model's mean score over its simulated trials,
+- the standard deviation across trials, and in parentheses the change against the model's own
digital score (the accuracy it *loses* on the chip). ``--method`` picks one method of each CSV
(default: the only one, else an error naming them), ``path#method`` one per entry; ``--task``
likewise. ``--plot out.png``
also draws the mean score against the axis (log x for a rate axis) with a +-1 std band per model
and each model's digital score as a dashed line.
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
    ap.add_argument("--plot", default=None, help="also draw the comparison to this PNG")
    ap.add_argument("models", nargs="+", help="LABEL=path/to/results.csv[#method] (#method overrides --method)")
    args = ap.parse_args(argv)

    table: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    digital: dict[str, float] = {}
    labels = []
    for item in args.models:
        label, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {item!r} is not LABEL=path[#method]")
        path, _, own_method = path.partition("#")
        rows = read_results(path)
        task = _only({r["task"] for r in rows}, "task", path, args.task)
        method = _only({r["method"] for r in rows if r["task"] == task}, "method", path, own_method or args.method)
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
    if args.plot:
        _plot(args.plot, args.axis, labels, table, digital, task)


def _plot(path: str, axis: str, labels: list[str], table, digital: dict[str, float], task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from device.plots import save_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    xs_all = sorted(table)
    for i, lb in enumerate(labels):
        xs = [x for x in xs_all if table[x].get(lb)]
        m = np.array([np.mean(table[x][lb]) for x in xs])
        sd = np.array([np.std(table[x][lb], ddof=1) if len(table[x][lb]) > 1 else 0.0 for x in xs])
        (line,) = ax.plot(xs, m, "o-", label=lb, color=f"C{i}")
        ax.fill_between(xs, m - sd, m + sd, color=line.get_color(), alpha=0.15)
        if lb in digital:
            ax.axhline(digital[lb], ls="--", lw=0.8, color=line.get_color())
    if "rate" in axis and any(x > 0 for x in xs_all):
        lin = min(x for x in xs_all if x > 0)
        ax.set_xscale("symlog", linthresh=lin)
        ax.set_xlim(left=-0.3 * lin)
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{task} score")
    ax.set_title(f"{task}: mean of the chips +- 1 std; dashed: digital", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for p in save_figure(fig, path):
        print(f"plot: {p}")


if __name__ == "__main__":
    sys.exit(main())
