"""``reram-cosim plot RESULTS.csv --x KEY``: the score against a swept setting from any results
file (``eval`` or ``study``), drawn by :func:`nn.plots.plot_results`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``plot`` subcommand to the ``reram-cosim`` parser."""
    p = sub.add_parser(
        "plot",
        help="plot the score of a results file against a swept setting",
        description=(
            "Mean score of the chips (95 %% confidence interval, n in the legend) against the configuration key "
            "--x, one line per method and per combination of the other keys that vary (pick one with --where), "
            "one panel per task, with the digital score and the majority-class score (the chance line). Axis "
            "names and units come from the configuration fields' documentation; rates and times get a log axis."
        ),
    )
    p.add_argument("results", help="a results CSV written by eval or study (a study's: <out>/results.csv)")
    p.add_argument("--x", required=True, metavar="KEY", help="the configuration key on the x axis, e.g. faults.rate")
    p.add_argument("--out", default=None, help="figure file (.png, .pdf, .svg; default: RESULTS beside it, _KEY.png)")
    p.add_argument("--metric", default="score",
                   choices=("score", "accuracy", "f1", "mcc", "pearson", "spearman"), help="y (default: score)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only rows whose configuration has KEY=VALUE (repeatable)")
    p.add_argument("--task", action="append", default=[], help="only these tasks (repeatable)")
    p.add_argument("--method", action="append", default=[], help="only these methods (repeatable)")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--glue-dir", default=None,
                   help="GLUE data, for files written before rows held the majority-class score (default: $GLUE_DIR)")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from device.io import check_writable
    from nn.evaluate import read_results
    from nn.plots import parse_where, plot_results

    src = Path(args.results)
    out = Path(args.out) if args.out else src.with_name(f"{src.stem}_{args.x.replace('.', '_')}.png")
    check_writable(out)
    where = parse_where(args.where)
    rows = read_results(src)
    if args.task:
        rows = [r for r in rows if r["task"] in args.task]
    if args.method:
        rows = [r for r in rows if r["method"] in args.method]
    import sys

    from nn.glue import default_glue_dir
    from nn.results import fill_majority

    for note in fill_majority(rows, args.glue_dir or default_glue_dir()):
        print(f"note: {note}", file=sys.stderr)
    paths = plot_results(rows, args.x, out, metric=args.metric, where=where, title=args.title)
    for p in paths:
        print(f"plot: {p}")
    return 0
