"""`reram-cosim crossbar mvm`: run a random layer through the tile engine and show each effect's error."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
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
            "outputs) on tiles and reads a random batch. Effects are switched on one at a time, each row "
            "adding one to the previous: quantization (weights and DAC) on ideal devices, the ADC, "
            "programming variation, stuck-at faults, IR drop, read noise. Errors are RMS(y - x @ W.T) "
            "relative to RMS(x @ W.T)."
        ),
    )
    m.add_argument("--rows", type=int, default=128, help="inputs (word lines used), default 128")
    m.add_argument("--cols", type=int, default=128, help="outputs, default 128")
    m.add_argument("--bits-per-cell", type=int, default=2, help="bits per cell, 1..4 (default 2)")
    m.add_argument("--weight-bits", type=int, default=8, help="signed weight bits, sign included (default 8)")
    m.add_argument("--adc-bits", type=int, default=None, help="ADC bits (signed); omit for an ideal ADC")
    m.add_argument("--ir-drop", choices=("ideal", "table", "exact"), default="ideal", help="IR-drop model")
    m.add_argument("--fault-rate", type=float, default=0.0, help="fraction of stuck cells (half SA0, half SA1)")
    m.add_argument("--seed", type=int, default=0, help="seed of weights, inputs, variation, faults and noise")
    m.add_argument("--tile", type=int, nargs=2, default=(128, 128), metavar=("ROWS", "COLS"), help="tile size")
    m.add_argument("--input-bits", type=int, default=8, help="signed DAC input bits (default 8)")
    m.add_argument("--dac", choices=("multi_bit", "bit_serial"), default="multi_bit")
    m.add_argument("--mapping", choices=("differential", "offset"), default="differential")
    m.add_argument("--sigma-rel", type=float, default=0.0,
                   help="programming variation (lognormal relative sigma) of the default synthetic levels")
    m.add_argument("--read-noise", type=float, default=0.0, help="read noise, relative sigma per cell per read")
    m.add_argument("--levels", default=None, help="level table file (LevelTable.load) instead of synthetic levels")
    m.add_argument("--irdrop-table", default=None, help="IR-drop table file for --ir-drop table")
    m.add_argument("--batch", type=int, default=64, help="input vectors (default 64)")
    m.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other CrossbarConfig field, e.g. --set adc_scope=tile (repeatable)")
    m.set_defaults(func=_cmd_mvm)


def _cmd_mvm(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from crossbar.engine import DEFAULT_G_OFF_S, DEFAULT_G_ON_S, CrossbarConfig, program_matrix
    from device.config import apply_overrides
    from device.faults import FaultConfig
    from device.programming import LevelTable

    if args.rows < 1 or args.cols < 1 or args.batch < 1:
        raise ValueError(f"--rows, --cols and --batch must be >= 1 (got {args.rows}, {args.cols}, {args.batch})")
    cfg = CrossbarConfig(
        tile_rows=args.tile[0], tile_cols=args.tile[1], weight_bits=args.weight_bits, bits_per_cell=args.bits_per_cell,
        adc_bits=args.adc_bits, ir_drop=args.ir_drop, input_bits=args.input_bits, dac=args.dac, mapping=args.mapping,
        read_noise_sigma_rel=args.read_noise,
    )
    cfg = apply_overrides(cfg, args.overrides)
    faults = FaultConfig(rate=args.fault_rate)
    b = cfg.bits_per_cell
    if args.levels:
        levels = LevelTable.load(args.levels)
        g_off, g_on = float(levels.g_target_s[0]), float(levels.g_target_s[-1])
    else:
        g_off, g_on = DEFAULT_G_OFF_S, DEFAULT_G_ON_S
        levels = LevelTable.synthetic(bits_per_cell=b, g_on_s=g_on, g_off_s=g_off, sigma_rel=args.sigma_rel,
                                      rng=np.random.default_rng(args.seed + 1))
    ideal = LevelTable.synthetic(bits_per_cell=b, g_on_s=g_on, g_off_s=g_off, sigma_rel=0.0,
                                 rng=np.random.default_rng(0))
    gen = torch.Generator().manual_seed(args.seed)
    w = torch.randn(args.cols, args.rows, generator=gen) / args.rows**0.5
    x = torch.randn(args.batch, args.rows, generator=gen)
    y_ref = x @ w.T
    ref_rms = float(y_ref.pow(2).mean().sqrt())

    varied = args.levels is not None or args.sigma_rel > 0
    steps = [
        ("quantization (ideal devices, ideal ADC)", dict(adc_bits=None, ir_drop="ideal", read_noise_sigma_rel=0.0), ideal, None),
        (f"+ ADC {cfg.adc_bits}-bit {cfg.adc_range}", dict(ir_drop="ideal", read_noise_sigma_rel=0.0), ideal, None)
        if cfg.adc_bits is not None else None,
        ("+ programming variation", dict(ir_drop="ideal", read_noise_sigma_rel=0.0), levels, None) if varied else None,
        (f"+ stuck-at faults (rate {args.fault_rate:g})", dict(ir_drop="ideal", read_noise_sigma_rel=0.0), levels, faults)
        if args.fault_rate > 0 else None,
        (f"+ IR drop ({cfg.ir_drop})", dict(read_noise_sigma_rel=0.0), levels, faults) if cfg.ir_drop != "ideal" else None,
        (f"+ read noise (sigma {cfg.read_noise_sigma_rel:g})", {}, levels, faults) if cfg.read_noise_sigma_rel > 0 else None,
    ]
    print(f"layer {args.cols}x{args.rows} (out x in), batch {args.batch}, seed {args.seed}")
    print(f"{'effects':<44} {'rel. RMS error':>14} {'max |err|':>10}")
    pm = None
    for step in steps:
        if step is None:
            continue
        label, change, lv, fl = step
        c = cfg.replace(**change)
        pm = program_matrix(w, c, lv, fl, np.random.default_rng(args.seed), irdrop=args.irdrop_table)
        if c.adc_bits is not None and c.adc_range == "calibrated":
            pm = pm.calibrate(x)
        y = pm.matvec(x, generator=torch.Generator().manual_seed(args.seed))
        err = y - y_ref
        print(f"{label:<44} {float(err.pow(2).mean().sqrt()) / ref_rms:>14.4%} {float(err.abs().max()):>10.4g}")
    assert pm is not None
    print()
    print(pm.summary())
    return 0
