"""Crossbar solver speed: this solver vs badcrossbar vs ngspice, side by side in one run.

    .venv/bin/python bench/bench_solver.py [--ngspice-max 128] [--sizes 32,64,128,256,512]

Random tiles: cells log-uniform in 10 kohm..1 Mohm, 2.5 ohm per wire segment, inputs U(0, 0.2 V).
Prints, per size: one input vector with the exact solver (PCG), the effective matrix (all inputs,
block elimination), badcrossbar 1.1 and ngspice (shared mode, .op) for one vector, and the ratios.
Times are the best of a few repetitions (ngspice: one run). Accuracy vs badcrossbar is printed too.
"""

import argparse
import logging
import time

import numpy as np

from crossbar.solver import CircuitConfig, effective_matrix, solve


def best(fn, reps):
    t = []
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        t.append(time.perf_counter() - t0)
    return min(t), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="32,64,128,256,512")
    ap.add_argument("--ngspice-max", type=int, default=128)
    ap.add_argument("--badcrossbar-max", type=int, default=512)
    args = ap.parse_args()
    import badcrossbar

    logging.disable(logging.WARNING)
    c = CircuitConfig(r_wire_row_ohm=2.5, r_wire_col_ohm=2.5)
    rng = np.random.default_rng(0)
    print(f"{'N':>4} {'solve_ms':>9} {'effM_ms':>9} {'effM/solve':>10} {'badxbar_ms':>10} {'ngspice_s':>9} "
          f"{'x_badxbar':>9} {'x_ngspice':>9} {'relerr_bx':>9} {'pcg_it':>6}")
    for n in [int(s) for s in args.sizes.split(",")]:
        g = np.exp(rng.uniform(np.log(1e-6), np.log(1e-4), (n, n)))
        v = rng.uniform(0, 0.2, n)
        reps = 5 if n <= 128 else 2
        t_s, sol = best(lambda: solve(g, v, c), reps)
        t_m, m = best(lambda: effective_matrix(g, c), max(1, reps // 2))
        t_b = float("nan")
        err = float("nan")
        if n <= args.badcrossbar_max:
            t_b, bx = best(lambda: badcrossbar.compute(v[:, None], 1 / g, r_i_word_line=2.5, r_i_bit_line=2.5), 1 if n > 128 else 3)
            ib = bx.currents.output.ravel()
            err = np.max(np.abs(sol.i_out_a - ib)) / np.max(np.abs(ib))
        t_n = float("nan")
        if n <= args.ngspice_max:
            from device.spice.crossbar import run_crossbar

            t_n, _ = best(lambda: run_crossbar(g, v, r_wire_row_ohm=2.5, r_wire_col_ohm=2.5), 1)
        print(f"{n:>4} {t_s * 1e3:>9.2f} {t_m * 1e3:>9.1f} {t_m / t_s:>10.1f} {t_b * 1e3:>10.1f} {t_n:>9.3f} "
              f"{t_b / t_s:>9.1f} {t_n / t_s:>9.0f} {err:>9.1e} {sol.iterations:>6}", flush=True)


if __name__ == "__main__":
    main()
