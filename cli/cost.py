"""``reram-cosim cost``: energy, latency and area per inference of a model on its chip.

The chip is given as for ``reram-cosim eval`` (``--preset NAME`` and typed ``--set KEY=VALUE``
overrides of :class:`nn.sim.SimConfig`, fault-map-aware mapping through ``--set faultaware.*``),
a protection by ``--method`` (a bundle of :data:`nn.protect.PROTECTION_METHODS`) and
``--protection-set``, the technology it is priced with by ``--tech`` (a preset of
:data:`mapping.technology.TECH_PRESETS`) and ``--tech-set`` overrides of its
:class:`mapping.technology.TechConfig`. The library call is :func:`nn.cost.cost_from_dir`.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from cli.evaluate import GLUE_HELP, PresetNames, sim_args

    p = subparsers.add_parser(
        "cost",
        help="energy, latency and area per inference of a model on its simulated chip",
        description=(
            "Programs one chip (--preset/--set, as for `eval`), runs the model digitally on --sentences real "
            "sentences of --task padded to --seq-len tokens to get the DAC drive of every crossbar layer, and "
            "prices every read with the technology --tech: per layer and per component (cell array, row "
            "drivers, ADC, shift-and-add, accumulation, buffers, voting, MSB decode; attention matmuls in "
            "digital apart). Prints a table, or with --json one JSON object whose top level holds energy_j, "
            "latency_s, area_m2 and tops_per_w per inference (SI units), and layers / components."
        ),
    )
    p.add_argument("--model", required=True, help="classifier directory or hub id (with --random-init: its config only)")
    p.add_argument("--task", default="sst2", help="GLUE task whose dev sentences drive the inputs (default sst2)")
    p.add_argument("--glue-dir", default=None, help=GLUE_HELP)
    sim_args(p)
    p.add_argument("--method", default="unprotected", metavar="NAME",
                   choices=PresetNames("nn.protect", "PROTECTION_METHODS"),
                   help="protection bundle, one of %(choices)s (default unprotected); prune reads the masks "
                        "beside the model")
    p.add_argument("--protection-set", dest="protection_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a protection field, e.g. n_copies=2 (repeatable)")
    p.add_argument("--tech", default="neurosim_22nm", choices=PresetNames("mapping.technology", "TECH_PRESETS"),
                   metavar="NAME", help="technology preset, one of %(choices)s (default neurosim_22nm)")
    p.add_argument("--tech-set", dest="tech_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a technology field, e.g. vdd_v=0.9, adc_model=walden (repeatable)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per inference (default 128)")
    p.add_argument("--sentences", type=int, default=64, help="real sentences measured for the drive (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the chip and of the sentence draw (default 0)")
    p.add_argument("--random-init", action="store_true",
                   help="freshly initialized weights of the model's config (shapes only; seeded)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", default=None, help="also write the JSON object to this file")
    p.add_argument("--plot", default=None, help="write the per-layer energy and area breakdown to this image (png/pdf/svg)")
    p.add_argument("--accuracy-csv", default=None, metavar="CSV",
                   help="a results file (eval / study): cost the chip of every (method, --axis value) of its "
                        "simulated rows and print accuracy against energy per inference (with --plot: that plot)")
    p.add_argument("--axis", default=None, metavar="KEY",
                   help="the sim config key the --accuracy-csv rows vary, e.g. crossbar.adc_bits")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.set_defaults(func=_cmd_cost)


def _cmd_cost(args: argparse.Namespace) -> int:
    import json

    from cli.evaluate import glue_dir_arg, sim_config_from_args
    from device.config import apply_overrides
    from device.errors import UserError
    from device.io import atomic_write_text, check_writable
    from mapping.technology import get_tech
    from nn.protect import method_protection

    for flag, v, lo in (("--seq-len", args.seq_len, 8), ("--sentences", args.sentences, 1), ("--seed", args.seed, 0)):
        if v < lo:
            raise UserError(f"{flag} {v} is invalid: must be >= {lo}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads} is invalid: must be >= 1")
    sim = sim_config_from_args(args)
    tech = apply_overrides(get_tech(args.tech), args.tech_overrides, flag="--tech-set")
    prot = method_protection(args.method, ["protection." + o for o in args.protection_overrides])
    for path in (args.out, args.plot):
        if path is not None:
            check_writable(path)
    if args.plot is not None:
        from mapping.cost_plots import check_plot_path

        check_plot_path(args.plot)
    if (args.accuracy_csv is None) != (args.axis is None):
        raise UserError("--accuracy-csv and --axis go together")
    if args.accuracy_csv is not None:
        from pathlib import Path

        if not Path(args.accuracy_csv).is_file():
            raise UserError(f"--accuracy-csv {args.accuracy_csv} is not a file")
        if prot is not None and prot.any:
            raise UserError("--method/--protection-set do not apply with --accuracy-csv (each row's method does)")
    glue = glue_dir_arg(args.glue_dir)
    import torch

    from nn.cost import cost_from_dir

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.accuracy_csv is not None:
        return _accuracy(args, tech, glue)
    rep = cost_from_dir(args.model, sim, tech, task=args.task, glue_dir=glue, seq_len=args.seq_len,
                        n_sentences=args.sentences, protection=prot, seed=args.seed, random_init=args.random_init)
    rep.meta.update(preset=args.preset, overrides=list(args.overrides), method=args.method, tech_name=args.tech,
                    tech_overrides=list(args.tech_overrides))
    d = rep.to_dict()
    text = json.dumps(d, indent=1, default=float)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
    if args.plot is not None:
        from mapping.cost_plots import plot_breakdown

        plot_breakdown(rep, args.plot)
    if args.json:
        print(text)
    else:
        print(rep.table())
        for path in (args.out, args.plot):
            if path is not None:
                print(f"wrote {path}")
    return 0


def _accuracy(args: argparse.Namespace, tech, glue) -> int:
    """``--accuracy-csv CSV --axis KEY``: accuracy against energy per inference."""
    import json

    from device.io import atomic_write_text
    from nn.cost import accuracy_energy_from_results

    points, digital = accuracy_energy_from_results(
        args.accuracy_csv, args.axis, args.model, tech, task=args.task,
        glue_dir=glue, seq_len=args.seq_len, n_sentences=args.sentences, seed=args.seed, progress=not args.json)
    d = {"axis": args.axis, "digital": digital, "points": points, "tech": tech.to_dict()}
    text = json.dumps(d, indent=1, default=float)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
    if args.plot is not None:
        from mapping.cost_plots import plot_accuracy_energy

        plot_accuracy_energy(points, args.plot, axis=args.axis, digital=digital)
    if args.json:
        print(text)
        return 0
    print(f"{'method':<24} {args.axis:>24} {'energy uJ':>10} {'score':>8} {'sd':>7} {'chips':>5}")
    for p in points:
        print(f"{p['method']:<24} {str(p['value']):>24} {p['energy_j'] * 1e6:>10.4g} {p['mean']:>8.4f} {p['std']:>7.4f} {p['n']:>5}")
    if digital is not None:
        print(f"digital: {digital:.4f}")
    for path in (args.out, args.plot):
        if path is not None:
            print(f"wrote {path}")
    return 0
