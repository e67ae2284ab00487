"""`reram-cosim device iv|pulse|program|faults`: the device layer's command group.

Each command prints a short human summary and writes a self-describing HDF5 table (atomically:
a failed run leaves no file). Bad input (an unknown preset or ``--set`` key, a value out of
range, a read voltage that would switch the cell, an unwritable output path, a fault map larger
than the free memory) raises a :class:`device.errors.UserError` that the ``reram-cosim`` entry
point prints as ``error: ...`` with exit status 2.
Physical quantities are SI (V, s, ohm, S, m) unless an option's help says otherwise.

Light at import (numpy only): matplotlib, scipy and PySpice are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import os

from device.errors import UserError

from cli.options import check_count, device_params, model_options, seeded_rng

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``device`` command and its subcommands to ``subparsers``."""
    p = subparsers.add_parser(
        "device",
        help="single-cell physics: I-V sweeps, pulses, multi-level programming, stuck-at fault maps",
        description=(
            "Device layer: the Stanford-PKU filament-gap compact model (Guan, Yu, Wong, IEEE EDL 2012) "
            "vectorized over many cells with device-to-device and cycle-to-cycle variation. "
            "All quantities in SI units (V, s, ohm, S, m)."
        ),
    )
    sub = p.add_subparsers(dest="device_cmd", required=True, metavar="{iv,pulse,program,faults,calibrate,levels}")

    iv = sub.add_parser(
        "iv", help="DC voltage sweep showing SET/RESET hysteresis",
        description="Triangular DC sweep 0 -> +V_set -> 0 -> -V_reset -> 0 of one or more cells, starting in HRS. "
        "Writes an 'iv' table: t_s (s), v_v (V), i_a (A), gap_m (m), temperature_k (K), r_read_ohm (ohm).",
    )
    iv.add_argument("--out", required=True, help="output HDF5 file")
    iv.add_argument("--plot", default=None, help="also write an I-V plot (PNG)")
    model_options(iv)
    iv.add_argument("--devices", type=int, default=4, help="cells swept together, each with its own variation (default: %(default)s)")
    iv.add_argument("--v-set-max", type=float, default=1.5, help="positive sweep amplitude, V (default: %(default)s)")
    iv.add_argument("--v-reset-max", type=float, default=1.5, help="negative sweep amplitude, |V| (default: %(default)s)")
    iv.add_argument("--sweep-rate", type=float, default=1.0, help="|dV/dt|, V/s (default: %(default)s)")
    iv.add_argument("--points", type=int, default=601, help="output points (default: %(default)s)")
    iv.add_argument("--v-read", type=float, default=0.1, help="read voltage for r_read_ohm, V (default: %(default)s)")
    iv.set_defaults(func=_cmd_iv)

    pu = sub.add_parser(
        "pulse", help="pulse train: gap and resistance vs time",
        description="SET pulses then RESET pulses (trapezoids) starting in HRS; the resistance is read at --v-read after "
        "each pulse. Writes a 'pulse' table (t_s s, v_v V, i_a A, gap_m m, r_read_ohm ohm).",
    )
    pu.add_argument("--out", required=True, help="output HDF5 file")
    pu.add_argument("--plot", default=None, help="also write a plot (PNG)")
    model_options(pu)
    pu.add_argument("--devices", type=int, default=4, help="cells (default: %(default)s)")
    pu.add_argument("--v-set", type=float, default=1.5, help="SET pulse amplitude, V (default: %(default)s)")
    pu.add_argument("--v-reset", type=float, default=1.3, help="RESET pulse amplitude, |V| (default: %(default)s)")
    pu.add_argument("--set-pulses", type=int, default=5, help="number of SET pulses (default: %(default)s)")
    pu.add_argument("--reset-pulses", type=int, default=5, help="number of RESET pulses (default: %(default)s)")
    pu.add_argument("--width", type=float, default=50e-9, help="flat-top pulse width, s (default: %(default)s)")
    pu.add_argument("--edge", type=float, default=1e-9, help="rise/fall time, s (default: %(default)s)")
    pu.add_argument("--spacing", type=float, default=50e-9, help="0 V time before each pulse, s (default: %(default)s)")
    pu.add_argument("--v-read", type=float, default=0.1, help="read voltage, V (default: %(default)s)")
    pu.set_defaults(func=_cmd_pulse)

    pr = sub.add_parser(
        "program", help="write-verify multi-level programming and level statistics",
        description="Program --devices cells per level into 2**B levels between --r-lrs-ohm and --r-hrs-ohm with "
        "incremental-step SET/RESET pulses and a read after each (write-verify). Writes a 'levels' table: "
        "g_target_s (S), g_s (S), r_ohm (ohm), pulses, fits and read-out error rates.",
    )
    pr.add_argument("--bits-per-cell", type=int, required=True, help="bits per cell, 1..4")
    pr.add_argument("--devices", type=int, default=256, help="cells per level (default: %(default)s)")
    pr.add_argument("--out", required=True, help="output HDF5 file")
    pr.add_argument("--plot", default=None, help="also write level histograms with fitted densities (PNG)")
    model_options(pr)
    pr.add_argument("--r-lrs-ohm", type=float, default=None, help="LRS target resistance, ohm (default 10e3)")
    pr.add_argument("--r-hrs-ohm", type=float, default=None, help="HRS target resistance, ohm (default 100e3)")
    pr.add_argument("--tolerance-rel", type=float, default=None, help="verify window, fraction of the target conductance (default 0.03)")
    pr.add_argument("--v-read", type=float, default=None, help="verify/read voltage, V (default 0.1)")
    pr.add_argument(
        "--program-set", dest="program_overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a write-verify setting (ProgrammingConfig, e.g. t_pulse_s=5e-8, read_noise_rel=0.02); repeatable",
    )
    pr.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    pr.add_argument("--engine", default="python", choices=("python", "spice"),
                    help="python: the compact model; spice: every pulse and read an ngspice transient (small populations; "
                    "no cycle-to-cycle term) (default: %(default)s)")
    pr.add_argument("--processes", type=int, default=2, help="--engine spice: worker processes (default: %(default)s)")
    pr.add_argument("--cache-dir", default=None, help="--engine spice: keep finished transients here; a rerun resumes")
    pr.add_argument("--allow-unconverged", action="store_true",
                    help="write the table even when more than max_unconverged_fraction (default 0.02, --program-set) of "
                    "a level's cells did not converge within max_pulses; the table records it (attribute "
                    "unconverged_allowed) and a warning is printed. Without it such a run is an error (exit 2, no table)")
    pr.set_defaults(func=_cmd_program)

    fa = sub.add_parser(
        "faults", help="sample a stuck-at fault map (SA0 = stuck at HRS, SA1 = stuck at LRS)",
        description="Sample a stuck-at fault map of one R x C crossbar. Writes a 'faults' table (int8 codes: "
        "0 none, 1 SA0 stuck at HRS, 2 SA1 stuck at LRS).",
    )
    fa.add_argument("--rows", type=int, required=True, help="word lines")
    fa.add_argument("--cols", type=int, required=True, help="bit lines")
    fa.add_argument("--rate", type=float, required=True, help="fault rate in [0, 1] (cells, or lines for rows/cols)")
    fa.add_argument("--sa0-fraction", type=float, default=0.5, help="fraction of faults that are SA0, in [0, 1] (default: %(default)s)")
    fa.add_argument("--pattern", default="random", choices=("random", "clustered", "rows", "cols"), help="spatial pattern (default: %(default)s)")
    fa.add_argument("--cluster-size", type=float, default=8.0, help="mean cells per cluster for --pattern clustered (default: %(default)s)")
    fa.add_argument("--seed", type=int, default=0, help="seed of the numpy generator (default: %(default)s)")
    fa.add_argument("--out", required=True, help="output HDF5 file")
    fa.set_defaults(func=_cmd_faults)

    from cli.calibrate import register as register_calibrate
    from cli.levels import register as register_levels

    register_calibrate(sub)
    register_levels(sub)


# -- helpers -----------------------------------------------------------------------------------
def check_output_path(path: str | None, what: str = "output", kind: str | None = None) -> None:
    """Refuse an output path that cannot be written, before any work is done
    (:func:`device.io.check_writable`); with a table ``kind``, also an existing file that is not
    a reram-cosim table of that kind (the output rule of ``--out``, :func:`device.tables.check_out`)."""
    if path is None:
        return
    if kind is not None:
        from device.tables import check_out

        check_out(path, kind)
        return
    from device.io import check_writable

    check_writable(path)


def available_memory_bytes() -> int | None:
    """Memory the kernel can give this process now (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_finite(args: argparse.Namespace, *dests: str) -> None:
    """Refuse NaN or infinite values of the named float options (their flags in the message)."""
    import math

    for d in dests:
        v = getattr(args, d, None)
        if v is not None and not math.isfinite(v):
            raise UserError(f"--{d.replace('_', '-')} {v} is invalid: must be a finite number")


# -- handlers ----------------------------------------------------------------------------------
def _cmd_iv(args: argparse.Namespace) -> int:
    from device.simulate import dc_sweep

    check_output_path(args.out, kind="iv")
    check_output_path(args.plot, "plot")
    check_count("--devices", args.devices)
    _check_finite(args, "v_set_max", "v_reset_max", "sweep_rate", "v_read")
    params = device_params(args)
    rng = seeded_rng(args.seed)
    res = dc_sweep(
        params, n_devices=args.devices, rng=rng, v_set_max_v=args.v_set_max, v_reset_max_v=args.v_reset_max,
        sweep_rate_v_per_s=args.sweep_rate, n_points=args.points, v_read_v=args.v_read,
    )
    cfg = {"preset": args.preset, "model": params.to_dict(), "seed": args.seed, "devices": args.devices,
           "v_set_max_v": args.v_set_max, "v_reset_max_v": args.v_reset_max,
           "sweep_rate_v_per_s": args.sweep_rate, "v_read_v": args.v_read}
    res.save(args.out, config=cfg)
    if args.plot:
        from device.plots import plot_iv

        plot_iv(res, args.plot)
    v_set, v_reset = res.thresholds_v()
    print(f"DC sweep of {args.devices} cell(s) ({args.preset}, seed {args.seed}): "
          f"R_read {res.r_read_ohm.min() / 1e3:.3g}-{res.r_read_ohm.max() / 1e3:.4g} kOhm at {args.v_read} V")
    print(f"  SET at {_fmt(v_set)} V, RESET at {_fmt(v_reset)} V, peak temperature {res.temperature_k.max():.0f} K")
    print(f"  wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _cmd_pulse(args: argparse.Namespace) -> int:
    from device.simulate import pulse_train

    check_output_path(args.out, kind="pulse")
    check_output_path(args.plot, "plot")
    check_count("--devices", args.devices)
    check_count("--set-pulses", args.set_pulses, 0)
    check_count("--reset-pulses", args.reset_pulses, 0)
    _check_finite(args, "v_set", "v_reset", "width", "edge", "spacing", "v_read")
    if args.set_pulses + args.reset_pulses == 0:
        raise UserError("--set-pulses and --reset-pulses are both 0: nothing to apply")
    params = device_params(args)
    rng = seeded_rng(args.seed)
    amps = [abs(args.v_set)] * args.set_pulses + [-abs(args.v_reset)] * args.reset_pulses
    res = pulse_train(params, amps, t_pulse_s=args.width, t_edge_s=args.edge, t_gap_s=args.spacing,
                      n_devices=args.devices, rng=rng, v_read_v=args.v_read)
    cfg = {"preset": args.preset, "model": params.to_dict(), "seed": args.seed, "devices": args.devices,
           "v_pulse_v": amps, "t_pulse_s": args.width, "t_edge_s": args.edge, "t_gap_s": args.spacing,
           "v_read_v": args.v_read}
    res.save(args.out, config=cfg)
    if args.plot:
        from device.plots import plot_pulse

        plot_pulse(res, args.plot)
    import numpy as np

    med = np.median(res.r_read_ohm, axis=1) / 1e3
    print(f"{len(amps)} pulses on {args.devices} cell(s): median R after each pulse (kOhm): "
          + " ".join(f"{x:.4g}" for x in med))
    print(f"  wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _cmd_program(args: argparse.Namespace) -> int:
    from device.config import apply_overrides
    from device.programming import ProgrammingConfig, program_levels

    check_output_path(args.out, kind="levels")
    check_output_path(args.plot, "plot")
    check_count("--devices", args.devices, 2)
    _check_finite(args, "r_lrs_ohm", "r_hrs_ohm", "tolerance_rel", "v_read")
    params = device_params(args)
    base = {"bits_per_cell": args.bits_per_cell}
    for key, val in (("r_lrs_ohm", args.r_lrs_ohm), ("r_hrs_ohm", args.r_hrs_ohm),
                     ("tolerance_rel", args.tolerance_rel), ("v_read_v", args.v_read)):
        if val is not None:
            base[key] = val
    defaults = ProgrammingConfig().to_dict()
    defaults.update(base)
    cfg = apply_overrides(ProgrammingConfig.from_dict(defaults), args.program_overrides, flag="--program-set")
    rng = seeded_rng(args.seed)
    if getattr(args, "engine", "python") == "spice":
        from device.spice.program import SpiceEngine

        with SpiceEngine(processes=args.processes, cache_dir=args.cache_dir) as eng:
            res = program_levels(cfg, params, n_devices=args.devices, rng=rng, progress=args.progress, engine=eng,
                                 allow_unconverged=args.allow_unconverged)
    else:
        res = program_levels(cfg, params, n_devices=args.devices, rng=rng, progress=args.progress,
                             allow_unconverged=args.allow_unconverged)
    res.save(args.out, seed=args.seed)
    if res.unconverged_allowed:
        import sys

        print(f"warning: {int((~res.converged).sum())} of {res.converged.size} cells did not converge (up to "
              f"{100 * res.unconverged_fraction.max():.1f} % of a level, above max_unconverged_fraction="
              f"{cfg.max_unconverged_fraction:g}); {args.out} written because of --allow-unconverged and records it",
              file=sys.stderr)
    if args.plot:
        from device.plots import plot_levels

        plot_levels(res.table, args.plot, error_rate=res.error_rate)
    print(res.summary())
    print(f"  wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _cmd_faults(args: argparse.Namespace) -> int:
    from device.faults import FaultConfig, fault_statistics, sample_bytes, sample_fault_map, save_fault_map

    check_output_path(args.out, kind="faults")
    check_count("--rows", args.rows)
    check_count("--cols", args.cols)
    cfg = FaultConfig(rate=args.rate, sa0_fraction=args.sa0_fraction, pattern=args.pattern, cluster_size=args.cluster_size)
    cells = args.rows * args.cols
    need = sample_bytes((args.rows, args.cols), cfg) + 2 * cells  # + the statistics' masks
    free = available_memory_bytes()
    if free is not None and need > free:
        raise UserError(
            f"a {args.rows}x{args.cols} fault map ({cells:.3g} cells) needs about {need / 2**30:.1f} GiB of memory "
            f"but {free / 2**30:.1f} GiB are available; use fewer --rows/--cols"
        )
    fm = sample_fault_map((args.rows, args.cols), cfg, seeded_rng(args.seed))
    save_fault_map(args.out, fm, cfg, seed=args.seed)
    s = fault_statistics(fm)
    print(f"fault map {args.rows}x{args.cols} ({args.pattern}, seed {args.seed}): {100 * s['fault_rate']:.3f} % faulty "
          f"(SA0 {100 * s['sa0_rate']:.3f} %, SA1 {100 * s['sa1_rate']:.3f} %)")
    print(f"  wrote {args.out}")
    return 0


def _fmt(x) -> str:
    import numpy as np

    x = np.asarray(x, float)
    if np.all(np.isnan(x)):
        return "n/a"
    if x.size == 1:
        return f"{float(x[0]):.3g}"
    return f"{np.nanmin(x):.3g}..{np.nanmax(x):.3g}"
