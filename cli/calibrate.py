"""`reram-cosim device calibrate levels|relaxation|pulses`: fit the toolkit to measured data.

Inputs are tidy CSV files (one measurement a row, units in the column names; see the README
section "Calibrating to your own device"). Each command prints a short summary and writes its
output atomically (a failed run leaves no file); bad input is a ``UserError`` (``error: ...``,
exit status 2). Light at import: numpy, scipy and matplotlib are imported inside the handlers.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``calibrate`` and its subcommands to the ``device`` command's subparsers ``sub``."""
    p = sub.add_parser(
        "calibrate", help="fit level tables, relaxation models and compact-model presets to measured data",
        description="Calibration to measured data from tidy CSV files (one measurement a row, SI units in the "
        "column names: g_s in S, r_ohm in ohm, time_s in s).",
    )
    cs = p.add_subparsers(dest="calibrate_cmd", required=True, metavar="{levels,relaxation,pulses}")

    lv = cs.add_parser(
        "levels", help="level table (LevelTable) from measured conductances per programmed level",
        description="Columns: level (the programmed state's label) and g_s (S) or r_ohm (ohm), optional cell (which "
        "cell a read is of: cells read more than once give the read noise, and count once, at their mean read); "
        "other columns are ignored. Writes a 'levels' table usable with --set levels.table_path=PATH: levels ordered by increasing "
        "mean conductance (digit 0 = lowest), the labels recorded, every sample kept, normal and lognormal fits "
        "with KS statistics, the empirical read-out error between adjacent levels with Clopper-Pearson intervals.",
    )
    lv.add_argument("--in", dest="inp", required=True, help="tidy CSV file (level, g_s or r_ohm)")
    lv.add_argument("--out", required=True, help="output HDF5 level table")
    lv.add_argument("--plot", default=None, help="also write level histograms with the fits (PNG)")
    lv.add_argument("--levels", default=None, help="comma-separated labels to keep (the count must be a power of two)")
    lv.add_argument("--bits-per-cell", type=int, default=None, help="check the level count against this (default: from the data)")
    lv.add_argument("--thresholds", default="midpoint", choices=("midpoint", "optimal"),
                    help="read-out thresholds for the error report (default: %(default)s)")
    lv.add_argument("--confidence", type=float, default=0.95, help="confidence of the error intervals (default: %(default)s)")
    lv.add_argument("--read-noise-rel", type=float, default=None,
                    help="relative sigma of one read, stored as the table's read_noise_rel (what eval reads with); "
                    "default: from repeated reads of a cell (cell column) if the data have them, else 0")
    lv.set_defaults(func=_cmd_levels)

    rx = cs.add_parser(
        "relaxation", help="conductance relaxation model g(t) | g0 from reads after programming",
        description="Columns: cell, time_s (time since programming, s), g_s (S) or r_ohm (ohm), optional g0_s "
        "(programmed conductance; else the cell's earliest read). Writes a 'relaxation' table "
        "(device.relaxation.RelaxationModel): quantiles of g(t) - g0 per programmed-conductance bin and "
        "measured time, plus the mean drift and spread.",
    )
    rx.add_argument("--in", dest="inp", required=True, help="tidy CSV file (cell, time_s, g_s or r_ohm[, g0_s])")
    rx.add_argument("--out", required=True, help="output HDF5 relaxation table")
    rx.add_argument("--plot", default=None, help="also write mean drift and spread versus time (PNG)")
    rx.add_argument("--min-cells-per-bin", type=int, default=200, help="cells per g0 bin at least (default: %(default)s)")
    rx.add_argument("--max-bins", type=int, default=64, help="g0 bins at most (default: %(default)s)")
    rx.add_argument("--drop-invalid", action="store_true",
                    help="leave out every cell with an invalid read (negative, zero, non-finite or non-numeric "
                    "conductance or time) instead of refusing the file; says how many and records it in the table")
    rx.set_defaults(func=_cmd_relaxation)

    from device.calibrate_pulses import register_cli as register_pulses

    register_pulses(cs)


def _cmd_levels(args: argparse.Namespace) -> int:
    from device.calibrate import calibrate_levels_csv, levels_summary, plot_level_table
    from device.io import check_writable
    from device.tables import check_out

    check_out(args.out, "levels")
    if args.plot:
        check_writable(args.plot)
    select = [s for s in args.levels.split(",") if s.strip()] if args.levels else None
    table = calibrate_levels_csv(args.inp, select=select, bits_per_cell=args.bits_per_cell, read_noise_rel=args.read_noise_rel)
    table.save(args.out, config={"command": "device calibrate levels", "input": str(args.inp), "levels": select,
                                 "thresholds": args.thresholds, "confidence": args.confidence,
                                 "read_noise_rel": args.read_noise_rel},
               attrs={"thresholds": args.thresholds})
    print(levels_summary(table, thresholds=args.thresholds, confidence=args.confidence))
    if args.plot:
        plot_level_table(table, args.plot)
    print(f"  wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _cmd_relaxation(args: argparse.Namespace) -> int:
    from device.io import check_writable
    from device.tables import check_out
    from device.relaxation import RelaxationModel, plot_relaxation

    check_out(args.out, "relaxation")
    if args.plot:
        check_writable(args.plot)
    model = RelaxationModel.fit_csv(args.inp, min_cells_per_bin=args.min_cells_per_bin, max_bins=args.max_bins,
                                    drop_invalid=args.drop_invalid)
    if model.dropped_cells:
        print(f"dropped {model.dropped_cells} cell(s) ({model.dropped_reads} reads) with an invalid read (--drop-invalid)")
    model.save(args.out, config={"command": "device calibrate relaxation", "input": str(args.inp),
                                 "min_cells_per_bin": args.min_cells_per_bin, "max_bins": args.max_bins,
                                 "drop_invalid": bool(args.drop_invalid)})
    print(model.summary(range(0, model.g0_bin_s.size, max(1, model.g0_bin_s.size // 8))))
    if args.plot:
        plot_relaxation(model, args.plot)
    print(f"  wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0
