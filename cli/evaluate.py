"""``reram-cosim eval | study | demo``: GLUE on simulated crossbars, registered by ``cli/main.py``.

Importing this module is cheap: torch and transformers are imported by the handlers.
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

__all__ = ["register"]


class PresetNames:
    """The names of a preset registry (``module.attr``, a dict), read when argparse first needs them
    (``--help``, or a ``--preset`` given on the command line), so that the names shown and accepted
    are the registry's own while building the parser imports neither torch nor the registry."""

    def __init__(self, module: str, attr: str = "PRESETS") -> None:
        self.module, self.attr = module, attr

    def names(self) -> tuple[str, ...]:
        import importlib

        return tuple(getattr(importlib.import_module(self.module), self.attr))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


#: the simulated chips of :data:`nn.sim.PRESETS`
SIM_PRESETS = PresetNames("nn.sim")

GLUE_HELP = "local GLUE directory (default: $GLUE_DIR, else the Hugging Face hub nyu-mll/glue)"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval``, ``study`` and ``demo`` subcommands to the ``reram-cosim`` parser."""
    e = subparsers.add_parser(
        "eval",
        help="evaluate a fine-tuned classifier on a GLUE dev set, digital and on simulated crossbars",
        description=(
            "Evaluates the digital model and --trials independent simulated chips (fault and variation "
            "maps drawn from numpy default_rng([seed, trial])); appends one CSV row per evaluation with "
            "the full sim config, and skips rows already in --out (a killed run resumes)."
        ),
    )
    e.add_argument("--model", required=True, help="fine-tuned classifier directory or hub id")
    e.add_argument("--task", required=True, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    e.add_argument("--glue-dir", default=None, help=GLUE_HELP)
    sim_args(e)
    e.add_argument("--trials", type=int, default=1, help="simulated chips (default 1)")
    e.add_argument("--seed", type=int, default=0, help="seed of the chips (default 0)")
    e.add_argument("--out", required=True, help="results CSV (appended; resumable)")
    e.add_argument("--batch-size", type=int, default=64, help="examples per forward pass (default 64)")
    e.add_argument("--max-examples", type=int, default=None, help="stratified dev subset (default: all)")
    e.add_argument("--max-length", type=int, default=128, help="tokens per example (default 128)")
    e.add_argument("--split", default="dev", help="split to evaluate (default dev; MNLI: dev_matched/dev_mismatched)")
    e.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's; or $RERAM_COSIM_NUM_THREADS)")
    e.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    from nn.executor import add_executor_args

    add_executor_args(e)
    e.add_argument("--show-config", action="store_true", help="print the sim config as JSON and exit")
    e.set_defaults(func=_cmd_eval)

    s = subparsers.add_parser(
        "study",
        help="sweep physics parameters over tasks and methods; write results.csv and accuracy plots",
        description="Runs a study spec (format: nn/study.py docstring; examples/study_*.json), resumable.",
    )
    s.add_argument("--spec", required=True, help="study spec JSON")
    s.add_argument("--preset-file", default=None, metavar="FILE",
                   help="the spec's base sim config fields from a JSON file (its preset_file; JSON: all or some "
                   "fields, nested as eval --show-config prints them; applied over the spec's preset, before its set)")
    s.add_argument("--out", required=True, help="output directory (results.csv, plots/)")
    s.add_argument("--model", default=None, help="overrides the spec's model")
    s.add_argument("--glue-dir", default=None, help=GLUE_HELP)
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads of every row, on every executor (default: $RERAM_COSIM_NUM_THREADS, else 1)")
    s.add_argument("--plot-only", action="store_true", help="only redraw the plots from results.csv")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.add_argument("--device", default="cpu", help="torch device of the simulated model, e.g. cuda (default cpu)")
    add_executor_args(s)
    s.set_defaults(func=_cmd_study)

    d = subparsers.add_parser(
        "demo",
        help="device -> crossbar -> MiniLM SST-2 demo: figures, fault/variation table and plot",
        description=(
            "Device figures, IR-drop figures, then the cached (or freshly fine-tuned) MiniLM SST-2 "
            "evaluated digital and on crossbars at a few fault rates and variations."
        ),
    )
    d.add_argument("--out", required=True, help="output directory")
    d.add_argument("--glue-dir", default=None, help=GLUE_HELP)
    d.add_argument("--trials", type=int, default=2, help="chips per setting (default 2)")
    d.add_argument("--max-examples", type=int, default=None, help="SST-2 dev subset (default: all 872)")
    d.set_defaults(func=_cmd_demo)


def sim_args(p, *, preset_default: str | None = "default", preset_help: str = "simulation preset (default: default)") -> None:
    """``--preset`` and repeatable ``--set KEY=VALUE`` (into ``args.overrides``): the chip of
    :func:`nn.sim.build_sim_config`, the same flags for every command that takes one. The preset
    names are those of :data:`nn.sim.PRESETS` (:data:`SIM_PRESETS`)."""
    from cli.presets import preset_args

    preset_args(p, choices=SIM_PRESETS, default=preset_default, preset_help=preset_help,
                set_help="override a sim config field, e.g. crossbar.adc_bits=6, faults.rate=0.01 (repeatable)",
                file_help="sim config fields from a JSON file, e.g. one saved from --show-config")


def sim_config_from_args(args: argparse.Namespace, extra_overrides: Sequence[str] = ()):
    """The sim config of :func:`sim_args`' flags: ``--preset``, ``--preset-file``, then
    ``extra_overrides`` and ``--set`` (:func:`cli.presets.config_from_args`)."""
    from cli.presets import config_from_args
    from nn.sim import get_preset

    return config_from_args(args, get_preset, "default", extra_overrides)


def glue_dir_arg(arg: str | None):
    """``--glue-dir``, else ``$GLUE_DIR``, else None (the hub); a given directory must exist."""
    from nn.glue import GlueDataError, default_glue_dir

    d = arg if arg is not None else default_glue_dir()
    if d is not None and not os.path.isdir(d):
        where = "--glue-dir" if arg is not None else "$GLUE_DIR"
        raise GlueDataError(f"{where} {d} is not a directory")
    return d


def show_config(cfg) -> int:
    """``--show-config``: the resolved config as JSON on stdout."""
    import json

    print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from nn.evaluate import evaluate_glue

    cfg = sim_config_from_args(args)
    if args.show_config:
        return show_config(cfg)
    from device.errors import UserError

    from nn.evaluate import MAX_TRIALS

    for flag, v, lo in (("--trials", args.trials, 0), ("--seed", args.seed, 0), ("--batch-size", args.batch_size, 1),
                        ("--max-length", args.max_length, 8)):
        if v < lo:
            raise UserError(f"{flag} {v} is invalid: must be >= {lo}")
    if args.trials > MAX_TRIALS:
        raise UserError(f"--trials {args.trials} is invalid: must be <= {MAX_TRIALS} (each chip is a pass over the split)")
    run = evaluate_glue
    if args.executor != "serial":  # the rows as tasks on a cluster (nn.executor)
        import functools

        from nn.executor import evaluate_rows

        run = functools.partial(evaluate_rows, executor=args.executor, workers=args.workers, address=args.address)
    summary = run(
        args.model, args.task, glue_dir_arg(args.glue_dir), cfg, args.trials, args.seed, args.out,
        batch_size=args.batch_size, max_examples=args.max_examples, max_length=args.max_length, split=args.split,
        progress=not args.no_progress, num_threads=args.threads, device=args.device,
    )
    if args.executor != "serial":
        from nn.evaluate import format_summary

        print(format_summary(summary))
    print(f"rows in {args.out} (this run wrote {summary['written']})")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from nn.study import load_spec, plot_study, run_study

    spec = load_spec(args.spec)
    if args.preset_file:
        spec = spec.replace(preset_file=args.preset_file)
    if args.plot_only:
        from pathlib import Path

        from nn.study import check_study_dir, study_rows

        check_study_dir(spec, args.out)
        rows = study_rows(spec, Path(args.out) / "results.csv", model=args.model, glue_dir=args.glue_dir)
        plots = plot_study(spec, Path(args.out) / "results.csv", Path(args.out) / "plots", rows=rows)
    else:
        res = run_study(
            spec, args.out, model=args.model, glue_dir=args.glue_dir, progress=not args.no_progress,
            num_threads=args.threads, executor=args.executor, workers=args.workers, address=args.address,
            device=args.device,
        )
        plots, rows = res["plots"], res["rows"]
        print(f"results: {res['csv']} ({res['written']} new rows)")
    for p in plots:
        print(f"plot: {p}")
    if list(spec.axes) == ["faults.rate"] and 0 in spec.axes["faults.rate"] and rows:
        # a pure fault-rate sweep with a fault-free point: the tolerance table of seed paper 1,
        # from this spec's rows with today's content only
        from pathlib import Path

        from device.io import atomic_write_text
        from nn.study import fault_tolerance, format_tolerance

        table = format_tolerance(fault_tolerance(Path(args.out) / "results.csv", rows=rows))
        atomic_write_text(Path(args.out) / "tolerance.md", table)
        print(table, end="")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    run_demo(args.out, glue_dir_arg(args.glue_dir), trials=args.trials, max_examples=args.max_examples)
    return 0
