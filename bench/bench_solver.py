"""Crossbar solver speed: this solver vs CrossSim vs badcrossbar (vs ngspice), side by side in one run.

    RERAM_COSIM_NUM_THREADS=1 .venv/bin/python bench/bench_solver.py [--sizes 32,64,128,256,512] [--r-wire-ohm 1,2.5,5]
        [--vectors 16] [--crosssim /work/.peers/lib/python3.11/site-packages] [--ngspice-max 0]

Random tiles: cells log-uniform in 10 kohm..1 Mohm (Gmax = 100 uS), inputs U(0, 0.2 V), one
wire resistance per segment on rows and columns, one-side drive, ideal drivers and sensing (the
circuit CrossSim's ``NoninterleavedInputSourceArray`` models; see ../shared/peers/README.md).
Single thread for every solver (BLAS and torch pinned to 1 thread before the imports).

Per size and wire resistance: one input vector (``solve``: PCG on the nodal matrix with the line
preconditioner, from scratch: matrix, factorization, iterations) and ``--vectors`` input
vectors per tile (``solve`` picks the effective matrix by block elimination or multi-vector PCG
by an operation-count model), both to a relative accuracy of ~1e-9 (``rtol=1e-11``); CrossSim
3.2.0's iterative solver with its convergence threshold ``Verr_th_mvm`` set so that its error
is ~1e-9 too (its retries with a smaller relaxation factor count: that is its solve); badcrossbar
(one vector, exact). Each column prints the time and the accuracy reached (max |I - I_exact| /
max |I_exact|, reference: sparse LU). Times are the best of a few repetitions (one at large sizes).
CrossSim's many-vector run is skipped (nan) when its one-vector solve took more than
``--crosssim-max-s`` / 4 per vector, and CrossSim entirely above ``--crosssim-max-rgn2``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from crossbar.solver import CircuitConfig, solve  # noqa: E402

#: PCG stopping residual: at 1e-10 the currents were off by up to 1e-7 on some tiles, at 1e-11
#: they are within ~1e-9 everywhere measured (the accuracy columns print what each run reached)
RTOL = 1e-11


def best(fn, reps):
    t, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        t.append(time.perf_counter() - t0)
    return min(t), out


def rel(a, ref):
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def crosssim_solver(path: str):
    """CrossSim's parasitic solver for the circuit above, or None when it is not installed."""
    if path:
        sys.path.append(path)  # appended: numpy/scipy stay this environment's
    try:
        import simulator
        from simulator.backend import ComputeBackend
        from simulator.circuits.array import NoninterleavedInputSourceArray
    except ImportError:
        return None
    ComputeBackend(use_gpu=False)

    def make(r_ohm: float, g_max_s: float, verr: float):
        p = simulator.CrossSimParameters()
        p.xbar.device.Rmin = 1.0 / g_max_s
        p.xbar.array.parasitics.enable = True
        p.xbar.array.parasitics.Rp_row = r_ohm
        p.xbar.array.parasitics.Rp_col = r_ohm
        p.simulation.Verr_th_mvm = verr
        p.simulation.hide_convergence_msg = True
        arr = NoninterleavedInputSourceArray(p)

        def run(g, v):  # v (rows,) or (rows, k) -> (cols,) or (cols, k), amperes
            arr.gamma = p.simulation.relaxation_gamma  # every solve starts from the default factor
            return np.asarray(arr.iterative_solve(g.T / g_max_s, v / 0.2, row_in=True)) * g_max_s * 0.2

        return run

    return make


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="32,64,128,256,512")
    ap.add_argument("--r-wire-ohm", default="1,2.5,5")
    ap.add_argument("--vectors", type=int, default=16)
    ap.add_argument("--crosssim", default="/work/.peers/lib/python3.11/site-packages",
                    help="site-packages holding CrossSim's `simulator` (never a project dependency)")
    ap.add_argument("--crosssim-verr", type=float, default=1e-9, help="CrossSim Verr_th_mvm (V, normalized)")
    ap.add_argument("--crosssim-max-s", type=float, default=60.0)
    ap.add_argument("--crosssim-max-rgn2", type=float, default=1e9,
                    help="skip CrossSim (nan) above this r_wire * Gmax * N^2: its solve takes minutes there")
    ap.add_argument("--badcrossbar-max", type=int, default=512)
    ap.add_argument("--ngspice-max", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    import badcrossbar

    logging.disable(logging.WARNING)
    cs = crosssim_solver(args.crosssim)
    g_max = 1e-4
    k = args.vectors
    print(f"single thread; {k} vectors in the many-vector columns; accuracy = max|I - I_exact|/max|I_exact|; "
          f"CrossSim {'found' if cs else 'NOT found'}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'N':>4} {'ohm':>4} {'rGN2':>5} | {'ours_1v_ms':>10} {'acc':>7} {'xsim_1v_ms':>10} {'acc':>7} {'bxbar_ms':>9} "
          f"{'x_xsim':>6} {'x_bxbar':>7} | {'ours_kv_ms':>10} {'acc':>7} {'how':>5} {'xsim_kv_ms':>10} {'acc':>7} {'x_xsim':>6}")
    rng = np.random.default_rng(0)
    for r in [float(x) for x in args.r_wire_ohm.split(",")]:
        c = CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r)
        for n in [int(s) for s in args.sizes.split(",")]:
            g = np.exp(rng.uniform(np.log(1e-6), np.log(g_max), (n, n)))
            v = rng.uniform(0, 0.2, n)
            vk = rng.uniform(0, 0.2, (n, k))
            ref = solve(g, v, c, method="direct").i_out_a
            refk = solve(g, vk, c, method="direct").i_out_a if n <= 256 else None
            reps = 5 if n <= 64 else (3 if n <= 128 else 1)

            # cache=False: every repetition builds the matrix and preconditioner (no reuse)
            t1, s1 = best(lambda: solve(g, v, c, rtol=RTOL, cache=False), reps)
            tk, sk = best(lambda: solve(g, vk, c, rtol=RTOL, cache=False), max(1, reps - 2))
            acc_k = float("nan") if refk is None else rel(sk.i_out_a, refk)
            if refk is None:  # no LU reference past 256: CrossSim's many-vector run is compared with ours
                refk = sk.i_out_a
            t_cs = t_csk = float("nan")
            a_cs = a_csk = float("nan")
            if cs is not None and r * g_max * n * n <= args.crosssim_max_rgn2:
                run = cs(r, g_max, args.crosssim_verr)
                try:
                    t_cs, o = best(lambda: run(g, v), reps if n <= 128 else 1)
                    a_cs = rel(o, ref)
                    if t_cs < args.crosssim_max_s / k * 4:
                        t_csk, ok_ = best(lambda: run(g, vk), 1)
                        a_csk = rel(ok_, refk)
                except ValueError:  # "Parasitic MVM solver failed to converge"
                    t_cs = float("inf")
            t_b = float("nan")
            if n <= args.badcrossbar_max:
                t_b, bx = best(lambda: badcrossbar.compute(v[:, None], 1 / g, r_i_word_line=r, r_i_bit_line=r), 1)
            print(f"{n:>4} {r:>4g} {r * g_max * n * n:>5.0f} | {t1 * 1e3:>10.2f} {rel(s1.i_out_a, ref):>7.0e} "
                  f"{t_cs * 1e3:>10.2f} {a_cs:>7.0e} {t_b * 1e3:>9.1f} {t_cs / t1:>6.1f} {t_b / t1:>7.0f} | "
                  f"{tk * 1e3:>10.1f} {acc_k:>7.0e} {sk.method:>5} {t_csk * 1e3:>10.1f} {a_csk:>7.0e} "
                  f"{t_csk / tk:>6.1f}", flush=True)
            if args.ngspice_max and n <= args.ngspice_max:
                from device.spice.crossbar import run_crossbar

                t_n, _ = best(lambda: run_crossbar(g, v, r_wire_row_ohm=r, r_wire_col_ohm=r), 1)
                print(f"     ngspice {t_n:.3f} s = {t_n / t1:.0f}x ours")


if __name__ == "__main__":
    main()
