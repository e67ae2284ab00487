"""Seed paper 1's headline from the fault studies: the stuck-at fault rate each protection
tolerates before the score drops 1 (and 5) points below its own fault-free score, and the ratio to
the unprotected dense model, over every task studied.

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


if __name__ == "__main__":
    main()
