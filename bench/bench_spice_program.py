"""Write-verify with every pulse and read an ngspice transient against the Python engine, side by side.

    PYTHONPATH=. .venv/bin/python bench/bench_spice_program.py [--bits 2] [--devices 8] [--processes 2]
                                                              [--cache-dir DIR] [--seed 0]

Both engines program the same cells (the default preset with the cycle-to-cycle term off: the
netlist is deterministic; device-to-device spread and 1 % verify read noise on both, the same
generator seed, so they make the same decisions until a read lands differently) with today's
default ``ProgrammingConfig``. Per level it prints the mean pulses of each engine, their ratio,
the cells whose counts agree within 2 pulses, the cells at the ``max_pulses`` cap, and the ratio
of the mean programmed conductances; then the wall time of each engine (ngspice: ``--processes``
worker processes, about 40 ms a transient). Run it from an older tree (``PYTHONPATH=<old tree>``)
to see the engines diverge where the old write-verify cycled between two overshoots.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from device.presets import get_preset
    from device.programming import ProgrammingConfig, program_levels
    from device.spice.program import SpiceEngine
    from device.spice.runner import ngspice_version

    p = get_preset("stanford_pku").replace(c2c_stochastic=False)
    cfg = ProgrammingConfig(bits_per_cell=args.bits)
    kw = {"allow_unconverged": True} if "allow_unconverged" in program_levels.__code__.co_varnames else {}
    t0 = time.perf_counter()
    py = program_levels(cfg, p, n_devices=args.devices, rng=np.random.default_rng(args.seed), **kw)
    t_py = time.perf_counter() - t0
    t0 = time.perf_counter()
    with SpiceEngine(processes=args.processes, cache_dir=args.cache_dir) as eng:
        sp = program_levels(cfg, p, n_devices=args.devices, rng=np.random.default_rng(args.seed), engine=eng, **kw)
    t_sp = time.perf_counter() - t0
    print(f"{args.bits} bit(s)/cell, {args.devices} cells per level, max_pulses {cfg.max_pulses}, ngspice {ngspice_version()}")
    print(f"{'level':>5} {'target uS':>9} {'pulses py':>9} {'pulses sp':>9} {'sp/py':>6} {'|d|<=2':>7} "
          f"{'capped py':>9} {'capped sp':>9} {'g sp/py':>8}")
    for k in range(2**args.bits):
        a, b = py.pulses[k], sp.pulses[k]
        print(f"{k:>5} {py.table.g_target_s[k] * 1e6:>9.2f} {a.mean():>9.1f} {b.mean():>9.1f} {b.mean() / a.mean():>6.3f} "
              f"{np.mean(np.abs(a - b) <= 2):>7.2f} {int((~py.converged[k]).sum()):>9d} {int((~sp.converged[k]).sum()):>9d} "
              f"{sp.table.g_samples_s[k].mean() / py.table.g_samples_s[k].mean():>8.4f}")
    print(f"all cells: pulses py {py.pulses.mean():.1f}, sp {sp.pulses.mean():.1f} (ratio {sp.pulses.mean() / py.pulses.mean():.3f}); "
          f"identical counts {np.mean(sp.pulses == py.pulses):.2f}, within 2 {np.mean(np.abs(sp.pulses - py.pulses) <= 2):.2f}")
    print(f"wall: python {t_py:.1f} s, ngspice {t_sp:.1f} s ({args.processes} processes; ratio {t_sp / t_py:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
