"""`reram-cosim device levels optimize`: level placement against a device's relaxation.

Chooses where the levels of a ``--bits-per-cell`` cell sit (digit 0 and the top level; the levels
in between equally spaced in conductance, so the analog sum stays linear) so that a layer read
``--time-s`` after programming is closest to its weights under the relaxation model
``--relaxation`` (:mod:`crossbar.placement`), then programs those levels by the project's
write-verify (:func:`device.programming.program_levels`, the same settings as ``device
program``) and writes the level table, with what was chosen and why in its attributes. A level
table for ``--set levels.table_path=PATH``.
"""

from __future__ import annotations

import argparse

from device.errors import UserError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``levels`` and its subcommands to the ``device`` command's subparsers ``sub``."""
    from cli.options import model_options

    p = sub.add_parser("levels", help="level tables placed for a device's relaxation",
                       description="Level tables chosen for a device: placement against conductance relaxation.")
    ls = p.add_subparsers(dest="levels_cmd", required=True, metavar="{optimize}")
    o = ls.add_parser(
        "optimize", help="choose the level window that minimises a layer's error at read time T, then write-verify it",
        description="Searches the window of equally spaced levels (digit 0 at g_lo, the top level at g_hi) that "
        "minimises the expected relative MVM error of a layer (a Gaussian 384x384 layer, or the crossbar layers of "
        "--weights-from) read --time-s after programming, under the relaxation table --relaxation (exact moments of its "
        "quantiles), the write-verify spread and the read noise; then programs those levels by write-verify "
        "(--devices cells per level) and writes the level table. Prints the chosen window and the predicted error "
        "against the naive 10-100 uS window.",
    )
    o.add_argument("--relaxation", required=True, help="relaxation table (device calibrate relaxation)")
    o.add_argument("--bits-per-cell", type=int, required=True, help="bits per cell, 1..4")
    o.add_argument("--time-s", required=True,
                   help="read time(s) since programming, s, comma-separated (e.g. 1,10,100,1000,10000): the RMS of the "
                   "errors at these times is minimised")
    o.add_argument("--window", default=None, metavar="LO,HI",
                   help="allowed programmed conductances, S (default: the relaxation model's fitted range and the device's)")
    o.add_argument("--min-on-off", type=float, default=1.0, help="g_hi / g_lo at least this (default: %(default)s)")
    o.add_argument("--compensation", default="none", choices=("none", "global", "column"),
                   help="optimise for a chip read with this drift compensation (crossbar.retention.compensation)")
    o.add_argument("--weights-from", default=None, metavar="MODEL",
                   help="a fine-tuned model directory: the weight codes of its crossbar layers (default preset, "
                   "--bits-per-cell) are the code distribution; default: a Gaussian 384x384 layer")
    o.add_argument("--chip-set", dest="chip_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a sim config override of the chip the layer runs on (as eval's --set: crossbar.weight_format, "
                   "crossbar.weight_granularity, crossbar.mapping ...): its slicing and weight codes; repeatable")
    o.add_argument("--devices", type=int, default=512, help="cells per level programmed for the table (default: %(default)s)")
    o.add_argument("--grid", type=int, default=40, help="search grid points per window end (default: %(default)s)")
    o.add_argument("--out", required=True, help="output HDF5 level table")
    o.add_argument("--plot", default=None, help="also write the chosen levels against the naive ones and the search (PNG)")
    model_options(o)
    o.add_argument("--program-set", dest="program_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a write-verify setting (ProgrammingConfig, as for device program); repeatable")
    o.set_defaults(func=_cmd_optimize)


def _floats(text: str, flag: str) -> list[float]:
    import math

    try:
        v = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r} is invalid: comma-separated numbers expected") from None
    if not v or not all(math.isfinite(x) for x in v):
        raise UserError(f"{flag} {text!r} is invalid: finite numbers expected")
    return v


def _cmd_optimize(args: argparse.Namespace) -> int:
    import numpy as np

    from cli.options import check_count, device_params, seeded_rng
    from crossbar.placement import digit_matrices, gaussian_code_probs, optimize_window, plot_placement, window_error
    from device.config import ConfigError, apply_overrides, check_int_range
    from device.programming import ProgrammingConfig, program_levels
    from device.relaxation import RelaxationModel

    from device.io import check_writable
    from device.tables import check_out

    check_out(args.out, "levels")
    if args.plot:
        check_writable(args.plot)
    check_int_range("--bits-per-cell", args.bits_per_cell, 1, 4)
    check_count("--devices", args.devices, 2)
    check_count("--grid", args.grid, 4)
    times = _floats(args.time_s, "--time-s")
    window = _floats(args.window, "--window") if args.window else None
    if window is not None and (len(window) != 2 or not 0 < window[0] < window[1]):
        raise UserError(f"--window {args.window!r} is invalid: LO,HI with 0 < LO < HI (S)")
    model = RelaxationModel.load(args.relaxation)
    for t in times:
        model.quantiles_at(t)  # refuses a time outside the measured range, before any work
    params = device_params(args)
    defaults = ProgrammingConfig().to_dict()
    defaults["bits_per_cell"] = args.bits_per_cell
    base = apply_overrides(ProgrammingConfig.from_dict(defaults), args.program_overrides, flag="--program-set")
    # the device's programmable range at the verify read voltage
    lo_state, hi_state = params.model().state_bounds(params)
    g_dev = sorted((1.0 / float(params.resistance_ohm(lo_state, base.v_read_v)), 1.0 / float(params.resistance_ohm(hi_state, base.v_read_v))))
    g_min, g_max = g_dev[0] * (1 + base.tolerance_rel), g_dev[1] * (1 - base.tolerance_rel)
    if window is not None:
        g_min, g_max = max(g_min, window[0]), min(g_max, window[1])
    rng = seeded_rng(args.seed)
    # the write-verify residuals g / target - 1 of these settings (a short run in the allowed range)
    lo_r = max(g_min, min(10e-6, g_max / 10))
    hi_r = min(g_max, max(100e-6, lo_r * 10))
    probe_cfg = base.replace(r_lrs_ohm=1.0 / hi_r, r_hrs_ohm=1.0 / lo_r)
    probe = program_levels(probe_cfg, params, n_devices=64, rng=rng, allow_unconverged=True)
    if not probe.converged.any():
        raise UserError("write-verify converged on no cell of the probe run: check the device and --program-set settings")
    # every cell, converged or not: the engine draws from all the table's samples
    residual = (probe.table.g_samples_s / probe.table.g_target_s[:, None] - 1.0).ravel()
    # keep the written table inside the relaxation model's range: a quarter more room than the
    # probe's largest residual or the verify tolerance (a larger run reaches further into the tails)
    room = 1.25 * max(float(np.abs(residual).max()), base.tolerance_rel)
    g_min = max(g_min, model.g0_min_s * (1 + room))
    g_max = min(g_max, model.g0_max_s * (1 - room))
    from nn.sim import build_sim_config

    sim = build_sim_config("default", [f"crossbar.bits_per_cell={args.bits_per_cell}"] + list(args.chip_overrides))
    if sim.crossbar.bits_per_cell != args.bits_per_cell:
        raise UserError(f"--chip-set sets bits_per_cell={sim.crossbar.bits_per_cell}, but --bits-per-cell is {args.bits_per_cell}")
    cfg = sim.crossbar
    probs, source = None, "Gaussian 384x384 layer"
    if args.weights_from:
        probs, source = _model_codes(args.weights_from, sim), f"crossbar layers of {args.weights_from}"
    # choose, then write-verify; a window end that write-verify cannot reach reliably (more
    # unconverged cells than max_unconverged_fraction, e.g. digit 0 at the device's HRS limit) is
    # moved inwards by 5 % and the window chosen again
    from device.programming import UnconvergedError

    for attempt in range(40):
        try:
            pl = optimize_window(model, args.bits_per_cell, times, cfg=cfg, code_probs=probs,
                                 residual_rel=residual, read_noise_rel=base.read_noise_rel, g_min_s=g_min, g_max_s=g_max,
                                 min_on_off=args.min_on_off, compensation=args.compensation, n_grid=args.grid)
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        prog = base.replace(r_lrs_ohm=1.0 / pl.g_hi_s, r_hrs_ohm=1.0 / pl.g_lo_s, level_spacing="conductance")
        try:
            res = program_levels(prog, params, n_devices=args.devices, rng=rng)
        except UnconvergedError as exc:
            frac = 1.0 - exc.result.converged.mean(axis=1)
            bad = np.flatnonzero(frac > prog.max_unconverged_fraction)
            lo_bad, hi_bad = bad.min() <= (frac.size - 1) / 2, bad.max() >= (frac.size - 1) / 2
            print(f"write-verify leaves {100 * frac.max():.1f} % of level(s) {bad.tolist()} unconverged at "
                  f"{pl.g_lo_s * 1e6:.4g}-{pl.g_hi_s * 1e6:.4g} uS: moving the "
                  + " and ".join(w for w, b in (("lower", lo_bad), ("upper", hi_bad)) if b) + " bound inwards by 5 %")
            if lo_bad:
                g_min = pl.g_lo_s * 1.05
            if hi_bad:
                g_max = pl.g_hi_s / 1.05
            continue
        # the whole run reaches further into the residuals' tails than the probe: a written cell
        # outside the relaxation model's fitted range moves that bound inwards by the overshoot
        # (and 1 % more) and the window is chosen again
        lo_w, hi_w = float(res.table.g_samples_s.min()), float(res.table.g_samples_s.max())
        if lo_w >= model.g0_min_s and hi_w <= model.g0_max_s:
            break
        print(f"the written cells span {lo_w * 1e6:.4g}-{hi_w * 1e6:.4g} uS, beyond the relaxation model's fitted "
              f"{model.g0_min_s * 1e6:.4g}-{model.g0_max_s * 1e6:.4g} uS: moving the bound inwards")
        if lo_w < model.g0_min_s:
            g_min = pl.g_lo_s * (model.g0_min_s / lo_w) * 1.01
        if hi_w > model.g0_max_s:
            g_max = pl.g_hi_s * (model.g0_max_s / hi_w) / 1.01
    else:
        raise UserError("no window tried (40 attempts) was written inside the relaxation model's range with write-verify "
                        "converged: check the device settings")
    tab = res.table
    model.check_conductances(float(tab.g_samples_s.min()), float(tab.g_samples_s.max()), f"the table written at "
                             f"{pl.g_lo_s * 1e6:.4g}-{pl.g_hi_s * 1e6:.4g} uS")
    dm = digit_matrices(cfg)
    p_use = probs if probs is not None else gaussian_code_probs(cfg)
    written = window_error(model, pl.g_lo_s, pl.g_hi_s, pl.times_s, dm, p_use, residual_rel=residual,
                           read_noise_rel=base.read_noise_rel, compensation=args.compensation,
                           level_samples_s=[tab.level_samples(k) for k in range(tab.levels)])
    placement = {
        "relaxation_table": str(args.relaxation), "relaxation_sha256": _sha256(args.relaxation),
        "time_s": list(map(float, pl.times_s)), "objective": "RMS over the times of the expected relative layer MVM error",
        "code_distribution": source, "chip_set": list(args.chip_overrides), "compensation": args.compensation,
        "min_on_off": args.min_on_off,
        "bounds_s": list(pl.bounds_s), "g_lo_s": pl.g_lo_s, "g_hi_s": pl.g_hi_s,
        "predicted_error": list(map(float, written)),
        "naive_window_s": list(pl.naive_window_s),
        "naive_predicted_error": None if pl.naive_error is None else list(map(float, pl.naive_error)),
    }
    conf = {"command": "device levels optimize", "programming": prog.to_dict(), "seed": args.seed,
            "model": params.to_dict(), "model_name": params.model().name, "placement": placement}
    from device import tables as T

    tab.save(args.out, config=conf,
             extra={"converged": T.Array(res.converged.astype(np.int8), "1", ("level", "device"), "1 if the verify window was reached")},
             attrs={"converged_fraction": float(res.converged.mean()), "placement_g_lo_s": pl.g_lo_s,
                    "placement_g_hi_s": pl.g_hi_s, "placement_relaxation": str(args.relaxation)})
    if args.plot:
        plot_placement(pl, model, args.plot)
    print(pl.summary())
    print("  written table (its own write-verify samples): "
          + ", ".join(f"{e:.4f} at {t:g} s" for e, t in zip(written, pl.times_s)))
    print(res.summary())
    print(f"  wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _model_codes(model_dir: str, sim):
    """Code frequencies of the crossbar layers of a fine-tuned model on the chip of ``sim``."""
    from crossbar.placement import code_probs_of
    from nn.crossbar_linear import select_modules
    from nn.models import load_classifier

    model, _ = load_classifier(model_dir, None, require_finetuned=False)
    return code_probs_of([m.weight for _, m in select_modules(model, sim)], sim.crossbar)
