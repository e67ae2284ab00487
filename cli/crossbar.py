"""`reram-cosim crossbar mvm`: run a random layer through the tile engine and show each effect's error.

The chip is given exactly as for ``reram-cosim eval``: ``--preset NAME`` from the one preset
registry (:data:`nn.sim.PRESETS`) and typed ``--set KEY=VALUE`` overrides of its
:class:`nn.sim.SimConfig` (``crossbar.*``, ``faults.*``, ``levels.*``, ``circuit.*``,
``irdrop_table``); ``--show-config`` prints it. The named flags (``--adc-bits``, ``--fault-rate``
...) are shortcuts for the same keys, applied before ``--set``. The registry lives in ``nn/``
because one preset is one whole simulated chip; the command line sits above every layer, so this
module may use all four packages (and the shared ``--preset``/``--set`` flags of
:func:`cli.evaluate.sim_args`).
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from cli.evaluate import sim_args

    p = subparsers.add_parser(
        "crossbar",
        help="run weight matrices through simulated crossbar tiles",
        description="Bit-sliced crossbar tiles: quantization, programming variation, faults, IR drop, DAC/ADC.",
    )
    sub = p.add_subparsers(dest="crossbar_cmd", required=True, metavar="{mvm}")
    m = sub.add_parser(
        "mvm",
        help="program a random layer, read a random batch, print the error of each effect against float",
        description=(
            "Programs a random weight matrix W (cols x rows, i.e. `rows` inputs on word lines and `cols` "
            "outputs) on the tiles of the chip given by --preset/--set (as for `reram-cosim eval`) and reads "
            "a random batch. Effects are switched on one at a time, each row adding one to the previous: "
            "quantization (weights and DAC) on ideal devices, the ADC, programming variation, stuck-at "
            "faults, IR drop, read noise. Errors are RMS(y - x @ W.T) relative to RMS(x @ W.T)."
        ),
    )
    m.add_argument("--rows", type=int, default=128, help="inputs (word lines used), default 128")
    m.add_argument("--cols", type=int, default=128, help="outputs, default 128")
    m.add_argument("--batch", type=int, default=64, help="input vectors (default 64)")
    m.add_argument("--seed", type=int, default=0, help="seed of weights, inputs, variation, faults and noise")
    sim_args(m)
    m.add_argument("--show-config", action="store_true", help="print the chip's sim config as JSON and exit")
    m.add_argument("--fault-aware", action="store_true",
                   help="fault-map-aware mapping of the faulty chip (faultaware.reencode and faultaware.placement; "
                        "mapping.faultaware): one more row after the faults")
    m.add_argument("--json", action="store_true",
                   help="print one JSON object instead of the table: every row's rel_error and max_abs_error, and "
                        "rel_error / max_abs_error of the last row (every enabled effect)")
    s = m.add_argument_group("shortcuts", "each sets one --set key of the chip (applied before --set)")
    s.add_argument("--bits-per-cell", type=int, default=None, help="crossbar.bits_per_cell, 1..4")
    s.add_argument("--weight-bits", type=int, default=None, help="crossbar.weight_bits (signed, sign included)")
    s.add_argument("--adc-bits", type=int, default=None, help="crossbar.adc_bits (signed)")
    s.add_argument("--ir-drop", choices=("ideal", "table", "exact"), default=None, help="crossbar.ir_drop")
    s.add_argument("--fault-rate", type=float, default=None, help="faults.rate: fraction of stuck cells")
    s.add_argument("--tile", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                   help="crossbar.tile_rows and crossbar.tile_cols")
    s.add_argument("--input-bits", type=int, default=None, help="crossbar.input_bits (signed DAC input bits)")
    s.add_argument("--dac", choices=("multi_bit", "bit_serial"), default=None, help="crossbar.dac")
    s.add_argument("--mapping", choices=("differential", "offset"), default=None, help="crossbar.mapping")
    s.add_argument("--sigma-rel", type=float, default=None,
                   help="levels.source=synthetic with levels.sigma_rel: lognormal programming variation")
    s.add_argument("--read-noise", type=float, default=None, help="read noise, relative sigma per cell and read (read_noise=crossbar with crossbar.read_noise_sigma_rel); "
                   "default: the level table's (1 %% for the shipped tables)")
    s.add_argument("--levels", default=None, help="levels.source=table with levels.table_path: a level table file")
    s.add_argument("--irdrop-table", default=None, help="irdrop_table: IR-drop table file for crossbar.ir_drop=table")
    m.set_defaults(func=_cmd_mvm)


def _shortcut_overrides(args: argparse.Namespace) -> list[str]:
    import json

    out = []
    for flag, key in (("bits_per_cell", "crossbar.bits_per_cell"), ("weight_bits", "crossbar.weight_bits"),
                      ("adc_bits", "crossbar.adc_bits"), ("ir_drop", "crossbar.ir_drop"),
                      ("fault_rate", "faults.rate"), ("input_bits", "crossbar.input_bits"), ("dac", "crossbar.dac"),
                      ("mapping", "crossbar.mapping"), ("read_noise", "crossbar.read_noise_sigma_rel"),
                      ("irdrop_table", "irdrop_table")):
        v = getattr(args, flag)
        if v is not None:
            out.append(f"{key}={json.dumps(v)}")
    if args.tile is not None:
        out += [f"crossbar.tile_rows={args.tile[0]}", f"crossbar.tile_cols={args.tile[1]}"]
    if args.read_noise is not None:  # this sigma instead of the level table's, 0 included
        out.append("read_noise=crossbar")
    if args.sigma_rel is not None:
        out += ["levels.source=synthetic", f"levels.sigma_rel={args.sigma_rel!r}"]
    if args.levels is not None:
        out += ["levels.source=table", f"levels.table_path={json.dumps(args.levels)}"]
    return out


def _cmd_mvm(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from crossbar.engine import program_matrix
    from device.errors import UserError
    from device.programming import LevelTable
    from cli.evaluate import show_config
    from cli.evaluate import sim_config_from_args
    from crossbar.config import RetentionConfig
    from nn.sim import build_levels, check_relaxation_range, effective_crossbar, load_irdrop, load_relaxation

    fa_over = ["faultaware.reencode=true", "faultaware.placement=true"] if args.fault_aware else []
    sim = sim_config_from_args(args, _shortcut_overrides(args) + fa_over)
    if args.show_config:
        return show_config(sim)
    if args.rows < 1 or args.cols < 1 or args.batch < 1:
        raise UserError(f"--rows, --cols and --batch must be >= 1 (got {args.rows}, {args.cols}, {args.batch})")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} is invalid: must be >= 0")
    levels = build_levels(sim)
    cfg, faults = effective_crossbar(sim, levels), sim.faults  # the read noise of eval (the table's by default)
    irdrop = load_irdrop(sim)
    relaxation = load_relaxation(sim)  # None at read_time_s = 0
    check_relaxation_range(sim, levels)  # before any work: the table inside the model's range
    b = cfg.bits_per_cell
    g_off, g_on = float(levels.g_target_s[0]), float(levels.g_target_s[-1])
    ideal = LevelTable.synthetic(bits_per_cell=b, g_on_s=g_on, g_off_s=g_off, sigma_rel=0.0,
                                 rng=np.random.default_rng(0))
    gen = torch.Generator().manual_seed(args.seed)
    w = torch.randn(args.cols, args.rows, generator=gen) / args.rows**0.5
    x = torch.randn(args.batch, args.rows, generator=gen)
    y_ref = x @ w.T
    ref_rms = float(y_ref.pow(2).mean().sqrt())

    varied = sim.levels.source == "table" or sim.levels.sigma_rel > 0
    r = cfg.retention
    quiet = dict(ir_drop="ideal", read_noise_sigma_rel=0.0)
    fresh = dict(quiet, read_time_s=0.0, retention=RetentionConfig())  # rows before relaxation: the chip as programmed
    rap = RetentionConfig(reprogram_rounds=r.reprogram_rounds, reprogram_wait_s=r.reprogram_wait_s,
                          reverify_window_frac=r.reverify_window_frac, reverify_reads=r.reverify_reads)
    ref = rap.replace(refresh_period_s=r.refresh_period_s)
    t = cfg.read_time_s
    steps = [
        ("quantization (ideal devices, ideal ADC)", dict(fresh, adc_bits=None), ideal, None),
        (f"+ ADC {cfg.adc_bits}-bit {cfg.adc_range}", fresh, ideal, None) if cfg.adc_bits is not None else None,
        ("+ programming variation", fresh, levels, None) if varied else None,
        (f"+ stuck-at faults (rate {faults.rate:g})", fresh, levels, faults) if faults.rate > 0 else None,
        ("+ fault-aware mapping (" + "+".join(k for k in ("reencode", "placement") if getattr(sim.faultaware, k)) + ")",
         fresh, levels, faults) if faults.rate > 0 and sim.faultaware.any else None,
        (f"+ relaxation ({t:g} s after programming)", dict(quiet, retention=RetentionConfig()), levels, faults) if t > 0 else None,
        (f"+ relaxation-aware programming ({r.reprogram_rounds} x {r.reprogram_wait_s:g} s)", dict(quiet, retention=rap),
         levels, faults) if t > 0 and r.reprogram_rounds > 0 else None,
        (f"+ refresh every {r.refresh_period_s:g} s", dict(quiet, retention=ref), levels, faults)
        if t > 0 and r.refresh_period_s > 0 else None,
        (f"+ drift compensation ({r.compensation}, {r.compensation_reads} reads)", quiet, levels, faults)
        if r.compensation != "none" else None,
        (f"+ IR drop ({cfg.ir_drop})", dict(read_noise_sigma_rel=0.0), levels, faults) if cfg.ir_drop != "ideal" else None,
        (f"+ read noise (sigma {cfg.read_noise_sigma_rel:g})", {}, levels, faults) if cfg.read_noise_sigma_rel > 0 else None,
    ]
    if not args.json:
        print(f"layer {args.cols}x{args.rows} (out x in), batch {args.batch}, seed {args.seed}, preset {args.preset}")
        print(f"{'effects':<44} {'rel. RMS error':>14} {'max |err|':>10}")
    pm = None
    rows = []
    mapped = False  # rows from the fault-aware one on map the faulty chip fault-aware
    for step in steps:
        if step is None:
            continue
        label, change, lv, fl = step
        mapped = mapped or label.startswith("+ fault-aware")
        c = cfg.replace(**change)
        pm = program_matrix(w, c, lv, fl, np.random.default_rng(args.seed), circuit=sim.circuit, irdrop=irdrop,
                            read_noise="crossbar", relaxation=relaxation if c.read_time_s > 0 else None)
        if mapped:
            from mapping.faultaware import FaultAwareMapper  # the command line sits above every layer

            pm = FaultAwareMapper(sim.faultaware)(pm)
        if c.adc_bits is not None and c.adc_range == "calibrated":
            pm = pm.calibrate(x)
        y = pm.matvec(x, generator=torch.Generator().manual_seed(args.seed))
        err = y - y_ref
        rel, mx = float(err.pow(2).mean().sqrt()) / ref_rms, float(err.abs().max())
        rows.append({"effects": label, "rel_error": rel, "max_abs_error": mx})
        if not args.json:
            print(f"{label:<44} {rel:>14.4%} {mx:>10.4g}")
    if args.json:
        import json

        fc = pm.fault_counts.sum(0)
        print(json.dumps({
            "rows": args.rows, "cols": args.cols, "batch": args.batch, "seed": args.seed, "preset": args.preset,
            "rel_error": rows[-1]["rel_error"], "max_abs_error": rows[-1]["max_abs_error"], "steps": rows,
            "fault_aware": sim.faultaware.to_dict(), "cells": int(fc.sum()), "sa0_cells": int(fc[1]),
            "sa1_cells": int(fc[2]), "sim_config": sim.to_dict(),
        }))
        return 0
    print()
    print(pm.summary())
    return 0
