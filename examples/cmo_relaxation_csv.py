"""A second relaxation technology as a tidy CSV: cells that relax by the published CMO/HfOx ReRAM
law of aihwkit's ``ReRamCMONoiseModel`` (Falcone et al., IBM Research Zurich; the fit aihwkit
ships): after programming at ``g0``, the conductance at time ``t`` (s) is normal with mean
``g0 - 0.0890 ln t`` uS and standard deviation ``0.0420 ln t + 0.412`` uS, whatever ``g0`` (the
law's own statement: relaxation independent of the target conductance). aihwkit draws each read
time independently; so does this file. The window is aihwkit's CMO window, 8-90 uS.

It exists to run the toolkit's relaxation path on a technology that is not tech B (``device
calibrate relaxation`` on it, then level placement and compensation): a law whose spread does not
depend on ``g0``, against tech B's mid-range hump. One read is made invalid on purpose (a
negative conductance, as measurement files have) so that ``--drop-invalid`` has work to do.

    python examples/cmo_relaxation_csv.py --out /tmp/cmo.csv
    reram-cosim device calibrate relaxation --in /tmp/cmo.csv --drop-invalid --out /tmp/relaxation_cmo.h5
"""

from __future__ import annotations

import argparse

import numpy as np

#: aihwkit ReRamCMONoiseModel decay_dict defaults (uS): mean slope in ln t, std slope and offset
MEAN_PER_LN_T_US = -0.08900206
STD_PER_LN_T_US, STD_AT_1S_US = 0.04201137, 0.41183342
TIMES_S = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cells", type=int, default=17_800, help="cells (5 reads each; default 17,800 = 89,000 rows)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    g0 = rng.uniform(8.0, 90.0, args.cells)  # uS
    from device.io import atomic_path

    with atomic_path(args.out) as tmp:
        with open(tmp, "w") as fh:
            fh.write("cell,time_s,g_s,g0_s\n")
            bad = (args.cells // 2, 2)  # one negative read
            for k, t in enumerate(TIMES_S):
                lt = np.log(t)
                g = g0 + MEAN_PER_LN_T_US * lt + (STD_PER_LN_T_US * lt + STD_AT_1S_US) * rng.standard_normal(args.cells)
                for c in range(args.cells):
                    v = -g[c] if (c, k) == bad else g[c]
                    fh.write(f"{c},{t:g},{v * 1e-6:.6e},{g0[c] * 1e-6:.6e}\n")
    print(f"wrote {args.out}: {args.cells} cells x {len(TIMES_S)} times, one invalid read")


if __name__ == "__main__":
    main()
