"""Seed paper 1's headline from the fault studies: the stuck-at fault rate each protection
tolerates before the score drops 1 (and 5) points below its own fault-free score, and the ratio to
the unprotected dense model, over every task studied; then each task's mean score per fault rate.

    python examples/paper1_table.py

Reads the study CSVs under ``results/`` (see RESULTS.md for the commands that write them): the
dense and pruned SST-2 studies, the MRPC / STS-B studies, and the MSB re-trained models, whose
methods are labelled ``(re-trained)`` so they stay apart from the same method on the plain model.
Missing CSVs are skipped with a note.
"""

from __future__ import annotations

from pathlib import Path

from nn.study import fault_tolerance, format_tolerance

ROOT = Path(__file__).resolve().parents[1] / "results"

#: (CSV, label or None)
STUDIES = (
    ("paper1_dense", None),
    ("paper1_pruned", None),
    ("paper1_msb_qat", "re-trained"),
    ("paper1_tasks_dense", None),
    ("paper1_tasks_pruned", None),
    ("paper1_msb_qat_tasks", "re-trained"),
)


def main() -> None:
    items = []
    for name, label in STUDIES:
        csv = ROOT / name / "results.csv"
        if not csv.is_file():
            print(f"(skipped: {csv} does not exist)")
            continue
        items.append(csv if label is None else (csv, label))
    for drop in (0.01, 0.05):
        print(f"\n**Drop of {drop * 100:g} point(s)** below each method's own fault-free score "
              "(reference: dense `unprotected`):\n")
        print(format_tolerance(fault_tolerance(items, drop=drop), drop=drop))
    rows = fault_tolerance(items)
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        rates = sorted({x for r in mine for x in r["points"]})
        n = sorted({k for r in mine for _, k in r["points"].values()})
        print(f"\n**{task}: mean score per fault rate** ({'/'.join(map(str, n))} chips per point):\n")
        print("| method | " + " | ".join(f"{x:g}" for x in rates) + " |")
        print("|---|" + "---:|" * len(rates))
        for r in mine:
            cells = [f"{r['points'][x][0]:.3f}" if x in r["points"] else "-" for x in rates]
            print(f"| {r['method']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
