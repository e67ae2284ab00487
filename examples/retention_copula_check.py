"""What relaxation-aware programming assumes about a cell that passed its re-verify, checked on
held-out tech-B cells.

The model (``device.relaxation.RelaxationModel.sample_path_torch``) continues a kept cell's
relaxation from the normal score of its change at the verify, through the table's Gaussian
copula between times (``z_corr``, the correlation of one cell's normal scores at two measured
times, per g0 bin). Fit on a random half of the cells (seed 0); in the other half, keep the cells
whose change at the verify time is inside +-window, and compare the spread of their later change
(std and 90th percentile of |dg|) with the model's, for cells selected the same way.

    python examples/retention_copula_check.py --wait 1 --window 1e-6
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wait", type=float, default=1.0, help="verify time after programming, s (a measured time)")
    ap.add_argument("--window", type=float, default=1e-6, help="verify half-window, S")
    ap.add_argument("--src", default=None, help="tech-B directory (default ../shared/data/devices/relaxation_techB)")
    args = ap.parse_args()

    from device.calibrate import techb_relaxation_csv
    from device.relaxation import RelaxationModel, read_relaxation_csv

    with tempfile.TemporaryDirectory() as d:
        data = read_relaxation_csv(techb_relaxation_csv(Path(d) / "t.csv", src=args.src))
    fit, held = data.split_cells(np.random.default_rng(0))
    model = RelaxationModel.fit(fit)
    times = [t for t in (100.0, 1e4)]
    by = {}
    for t in [args.wait] + times:
        m = np.isclose(held.time_s, t, rtol=0.5)
        by[t] = dict(zip(held.cell[m].tolist(), (held.g_s[m] - held.g0_s[m]).tolist()))
    g0_of = dict(zip(held.cell.tolist(), held.g0_s.tolist()))
    keep = [c for c in np.unique(held.cell).tolist() if all(c in by[t] for t in by)]
    g0 = np.array([g0_of[c] for c in keep])
    d1 = np.array([by[args.wait][c] for c in keep])
    print(f"kept: |g({args.wait:g} s) - g0| <= {args.window * 1e6:g} uS; held-out tech-B cells (data) vs the model "
          "(Gaussian copula); spreads in uS")
    print("| g0 range (uS) | kept (data / model) | t | std all (data / model) | std kept (data / model) | kept / all (data / model) | p90 abs kept (data / model) |")
    print("|---|---|---|---|---|---|---|")
    for lo, hi in ((3e-6, 8e-6), (8e-6, 20e-6), (25e-6, 45e-6), (45e-6, 70e-6), (80e-6, 120e-6), (120e-6, 180e-6)):
        sel = (g0 >= lo) & (g0 < hi)
        g0t = torch.as_tensor(np.repeat(g0[sel], 20))
        gen = torch.Generator().manual_seed(0)
        p1, z1 = model.sample_path_torch(g0t, torch.zeros(()), torch.zeros(()), torch.tensor(args.wait), gen,
                                         out_of_range="clamp")
        passed = ((p1 - g0t).abs() <= args.window).numpy()
        dk_mask = np.abs(d1[sel]) <= args.window
        for t in times:
            dt = np.array([by[t][c] for c in np.asarray(keep)[sel]])
            pt, _ = model.sample_path_torch(g0t, torch.tensor(args.wait), z1, torch.tensor(t), gen, out_of_range="clamp")
            dp = (pt - g0t).numpy()
            a, b = dt[dk_mask], dp[passed]
            print(f"| {lo * 1e6:.0f}-{hi * 1e6:.0f} | {dk_mask.mean():.2f} / {passed.mean():.2f} | {t:g} s | "
                  f"{dt.std() * 1e6:.2f} / {dp.std() * 1e6:.2f} | {a.std() * 1e6:.2f} / {b.std() * 1e6:.2f} | "
                  f"{a.std() / dt.std():.2f} / {b.std() / dp.std():.2f} | "
                  f"{np.quantile(np.abs(a), 0.9) * 1e6:.2f} / {np.quantile(np.abs(b), 0.9) * 1e6:.2f} |")


if __name__ == "__main__":
    main()
