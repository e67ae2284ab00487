"""Refit the shipped IR-drop table (data/irdrop_default.h5) and print its held-out error.

    RERAM_COSIM_NUM_THREADS=1 .venv/bin/python bench/fit_irdrop_table.py [--out data/irdrop_default.h5] [--holdout 2]

Builds the homogenized-lines model of ``crossbar.irdrop`` (exact homogeneous tiles on a grid of
``rho = r_wire * mean(g)``: seconds), then measures its error on held-out tiles drawn from every
shipped level table (data/levels_b1..4.h5), uniform, LRS-heavy and structured codes
(``crossbar.irdrop.CODE_MIXES``), signed inputs U(-1, 1) V driving 10 %,
50 % and 100 % of the word lines, at 64x64 and 128x128 and 0.5-5 ohm per segment, against the
exact solver. The error is the RMS column-current error over the RMS actual column current; the
same figures for ideal ``G`` (no IR-drop model) and the decoupled lines alone are printed beside.
About a minute on one core. ``reram-cosim circuit tabulate`` runs the same fit.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from crossbar.irdrop import TabulateConfig, format_errors, heldout_errors, lines_attenuation, tabulate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "irdrop_default.h5"))
    ap.add_argument("--holdout", type=int, default=2, help="held-out tiles per (size, r, level table, code mix)")
    ap.add_argument("--baselines", action="store_true", help="also measure ideal G and the decoupled lines")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = TabulateConfig(holdout=args.holdout)
    t0 = time.perf_counter()
    table = tabulate(cfg, args.out, progress=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - t0:.0f} s")
    print("held-out RMS column-current error, % of the RMS actual column current:")
    print(format_errors(table))
    if args.baselines:
        for name, fn in (("ideal G", lambda g, r: g.numpy()),
                         ("lines only", lambda g, r: (g * lines_attenuation(g.clone(), r, r)).numpy())):
            h = heldout_errors(fn, cfg)
            print(f"{name}: pooled " + "; ".join(
                f"{s}: " + " ".join(f"{100 * x:.2f}%" for x in h["rel"][si]) for si, s in enumerate(cfg.sizes)))
            print(f"{name}: worst sparse " + "; ".join(
                f"{s}: " + " ".join(f"{100 * x:.2f}%" for x in h["detail"][si, :, :, :, 0].reshape(len(cfg.r_wire_ohm), -1).max(1))
                for si, s in enumerate(cfg.sizes)))
    np.set_printoptions(precision=4)


if __name__ == "__main__":
    main()
