"""Plots of device simulations (matplotlib, Agg backend, imported inside each function).

Every function writes a PNG atomically (temporary file + rename) and returns its path. Display
units here (kOhm, uS, nm, ns, mA); the data stay SI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_iv", "plot_pulse", "plot_levels"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120, formats: tuple[str, ...] | None = None) -> list[Path]:
    """Write ``fig`` atomically (temporary file, then rename) and close it.

    ``formats``: e.g. ``("png", "pdf")`` writes ``path`` with each suffix; default: the format
    of ``path``'s own suffix. Every plot of the toolkit goes through here.
    """
    from device.tables import atomic_path

    plt = _pyplot()
    path = Path(path)
    exts = formats or (path.suffix.lstrip(".") or "png",)
    out = []
    try:
        for ext in exts:
            target = path.with_suffix("." + ext)
            with atomic_path(target, "." + ext) as tmp:
                fig.savefig(tmp, dpi=dpi, format=ext)
            out.append(target)
    finally:
        plt.close(fig)
    return out


def _save(fig: Any, path: str | Path) -> Path:
    return save_figure(fig, path)[0]


def plot_iv(result: Any, path: str | Path, *, title: str = "Stanford-PKU cell: DC sweep") -> Path:
    """|I| (log) vs V of a :class:`device.simulate.SweepResult`, one line per device, and the
    gap vs V. Arrows of the sweep: 0 -> +V (SET) -> 0 -> -V (RESET) -> 0."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    n = result.i_a.shape[1]
    for j in range(n):
        ax1.semilogy(result.v_v, np.abs(result.i_a[:, j]) * 1e3 + 1e-12, lw=1)
        ax2.plot(result.v_v, result.gap_m[:, j] * 1e9, lw=1)
    ax1.set_xlabel("voltage (V)")
    ax1.set_ylabel("|current| (mA)")
    ax1.set_title(title)
    ax1.grid(True, which="both", alpha=0.3)
    ax2.set_xlabel("voltage (V)")
    ax2.set_ylabel("gap (nm)")
    ax2.set_title(f"{n} device(s): SET at V>0, RESET at V<0")
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_pulse(result: Any, path: str | Path) -> Path:
    """Gap vs time and read resistance after each pulse of a :class:`device.simulate.PulseResult`."""
    plt = _pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(8, 8), sharex=False)
    t_ns = result.t_s * 1e9
    ax1.plot(t_ns, result.v_v, color="k", lw=1)
    ax1.set_ylabel("pulse (V)")
    ax2.plot(t_ns, result.gap_m * 1e9, lw=1)
    ax2.set_ylabel("gap (nm)")
    ax2.set_xlabel("time (ns)")
    ax3.semilogy(np.arange(1, result.r_read_ohm.shape[0] + 1), result.r_read_ohm / 1e3, "o-", ms=3, lw=1)
    ax3.set_xlabel("pulse number")
    ax3.set_ylabel(f"R at {result.v_read_v} V (kOhm)")
    for ax in (ax1, ax2, ax3):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_levels(table: Any, path: str | Path, *, error_rate: np.ndarray | None = None) -> Path:
    """Histograms of the per-level conductances of a :class:`device.programming.LevelTable`
    with the fitted normal and lognormal densities, targets and midpoint thresholds."""
    from scipy import stats

    from device.programming import readout_error_rate

    plt = _pyplot()
    err = readout_error_rate(table) if error_rate is None else error_rate
    fig, ax = plt.subplots(figsize=(10, 4.5))
    g_us = table.g_samples_s * 1e6
    lo, hi = g_us.min(), g_us.max()
    bins = np.linspace(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo), 40 * table.levels + 1)
    x = np.linspace(bins[0], bins[-1], 4000)
    for k in range(table.levels):
        g = g_us[k]
        ax.hist(g, bins=bins, density=True, alpha=0.45, color=f"C{k % 10}")
        m, s = g.mean(), g.std(ddof=1)
        lm, ls = np.log(g).mean(), np.log(g).std(ddof=1)
        w = 1.0 / table.levels
        ax.plot(x, stats.norm.pdf(x, m, s), color=f"C{k % 10}", lw=1, ls="--", label="normal fit" if k == 0 else None)
        ax.plot(x, stats.lognorm.pdf(x, ls, scale=np.exp(lm)), color=f"C{k % 10}", lw=1.2, label="lognormal fit" if k == 0 else None)
        del w
    for th in 0.5 * (table.g_target_s[:-1] + table.g_target_s[1:]):
        ax.axvline(th * 1e6, color="k", lw=0.6, ls=":")
    ax.set_xlabel("conductance at read voltage (uS)")
    ax.set_ylabel("probability density (1/uS)")
    worst = float(np.max(err)) if err.size else 0.0
    ax.set_title(
        f"{table.bits_per_cell} bit/cell, {table.levels} levels, {table.n_devices} cells/level, "
        f"on/off {table.on_off_ratio:.1f}; worst adjacent read-out error {worst:.2e}"
    )
    ax.legend(loc="upper right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
