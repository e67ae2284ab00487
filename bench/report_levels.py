"""Per-level statistics of level tables, side by side: the figures data/README.md quotes.

    PYTHONPATH=. .venv/bin/python bench/report_levels.py data/levels_b4.h5 [OLD.h5 ...] [--markdown]

For each table and level: target and mean conductance (uS), std/mean, the fraction of converged
cells outside the verify window, the unconverged cells, the counted read-out error to the next
level (midpoint thresholds, all cells) and the fitted one (lognormal fits of the converged cells,
indicative only); per table the on/off ratio and pulses. "Outside the window" uses today's window
(``verify_half_window`` of the default ``ProgrammingConfig`` at the table's bits per cell) for
every table, so that tables made by older code are measured with the same yardstick; "own
window" is the window of the table's stored programming config (for tables older than the
window cap: the old rule, ``window_spacing_frac=0.5``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def level_stats(path: str | Path) -> dict:
    """Statistics of one level table (see the module docstring)."""
    from device import tables as T
    from device.programming import LevelTable, ProgrammingConfig, empirical_readout_error, readout_error_rate, verify_half_window

    t = LevelTable.load(path)
    raw = T.read_table(path, kind="levels")
    conv = t.converged if t.converged is not None else np.ones(t.g_samples_s.shape, bool)
    hw = verify_half_window(t.g_target_s, ProgrammingConfig(bits_per_cell=min(t.bits_per_cell, 4)))
    out = (np.abs(t.g_samples_s - t.g_target_s[:, None]) > hw[:, None]) & conv
    prog = raw.config.get("programming") if isinstance(raw.config, dict) else None
    known = set(ProgrammingConfig().to_dict())
    own_kw = {"window_spacing_frac": 0.5, **{k: v for k, v in (prog or {}).items() if k in known}}
    own_kw["bits_per_cell"] = min(t.bits_per_cell, 4)
    hw_own = verify_half_window(t.g_target_s, ProgrammingConfig.from_dict({**ProgrammingConfig().to_dict(), **own_kw}))
    out_own = (np.abs(t.g_samples_s - t.g_target_s[:, None]) > hw_own[:, None]) & conv
    emp = empirical_readout_error(t)
    return {
        "path": str(path),
        "created": str(raw.attrs.get("created", "")),
        "engine": str(raw.attrs.get("engine", "python")),
        "v_read_v": t.v_read_v,
        "target_s": t.g_target_s,
        "mean_s": t.g_mean_s,
        "std_rel": t.g_std_s / t.g_mean_s,
        "outside": out.sum(axis=1) / np.maximum(conv.sum(axis=1), 1),
        "outside_own": out_own.sum(axis=1) / np.maximum(conv.sum(axis=1), 1),
        "unconverged": (~conv).sum(axis=1),
        "err_counted": emp.rate,
        "errors_counted": emp.errors,
        "trials": emp.trials,
        "err_fitted": readout_error_rate(t),
        "on_off": t.on_off_ratio,
        "pulses_mean": float(np.mean(t.pulses)) if t.pulses is not None else float("nan"),
        "pulses_max": int(np.max(t.pulses)) if t.pulses is not None else 0,
        "n": t.n_devices,
    }


def format_stats(s: dict, markdown: bool = False) -> str:
    head = (f"{s['path']} (created {s['created']}, {s['engine']} engine, read at {s['v_read_v']} V): "
            f"on/off {s['on_off']:.3f}, pulses mean {s['pulses_mean']:.1f} max {s['pulses_max']}, {s['n']} cells/level, "
            f"{int(s['unconverged'].sum())} unconverged, outside the window {100 * s['outside'].mean():.2f} % "
            f"(own window {100 * s['outside_own'].mean():.2f} %; means of the levels)")
    cols = ("level", "target uS", "mean uS", "std/mean", "outside", "own window", "unconv", "err counted", "err fitted")
    rows = []
    L = s["target_s"].size
    for k in range(L):
        ec = f"{s['err_counted'][k]:.2e} ({s['errors_counted'][k]}/{s['trials'][k]})" if k < L - 1 else ""
        ef = f"{s['err_fitted'][k]:.2e}" if k < L - 1 else ""
        rows.append((str(k), f"{s['target_s'][k] * 1e6:.2f}", f"{s['mean_s'][k] * 1e6:.3f}", f"{s['std_rel'][k]:.4f}",
                     f"{100 * s['outside'][k]:.1f} %", f"{100 * s['outside_own'][k]:.1f} %", str(int(s['unconverged'][k])), ec, ef))
    if markdown:
        lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        w = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        lines = [head, "  ".join(c.rjust(w[i]) for i, c in enumerate(cols))]
        lines += ["  ".join(x.rjust(w[i]) for i, x in enumerate(r)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+", help="level tables (HDF5)")
    ap.add_argument("--markdown", action="store_true", help="markdown tables")
    args = ap.parse_args(argv)
    for p in args.tables:
        print(format_stats(level_stats(p), args.markdown))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
