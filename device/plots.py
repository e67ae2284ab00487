"""Plots of device simulations (matplotlib, Agg backend, imported inside each function).

Every function writes a PNG atomically (temporary file + rename) and returns its path. Display
units here (kOhm, uS, nm, ns, mA); the data stay SI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_iv", "plot_pulse", "plot_levels", "draw_level_histograms", "readout_error_text", "BINS_PER_LEVEL"]


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


#: bins of each level's own histogram in the level plots (its samples' span): fine enough for the
#: fitted curves drawn over them (256 cells: ~9 per bin)
BINS_PER_LEVEL = 30


def readout_error_text(err: Any) -> str:
    """The worst adjacent read-out error of a :class:`device.programming.ReadoutError` as counted
    on the samples, with its confidence interval: ``"0 of 512 reads [95 % CI 0, 7.2e-03]"``."""
    k = int(np.argmax(err.ci_high)) if len(err.ci_high) else 0
    if not len(err.rate):
        return "no adjacent levels"
    return (f"{int(err.errors[k])} of {int(err.trials[k])} reads [{100 * err.confidence:g} % CI "
            f"{err.ci_low[k]:.2g}, {err.ci_high[k]:.2g}]")


def draw_level_histograms(ax: Any, table: Any, threshold_s: np.ndarray, *, labels: Any = None) -> None:
    """The level plot of every level table (write-verify, measured), one convention: each level's
    histogram on its own :data:`BINS_PER_LEVEL` bins over its samples (density in 1/uS, area 1 per
    level, so the bars and the fits share units), its normal fit dashed and its lognormal fit solid,
    the level's label above its peak, the read-out thresholds dotted. Axis labels in uS at the
    table's read voltage (``table.v_read_v``)."""
    from scipy import stats

    names = labels or getattr(table, "labels", None) or tuple(str(k) for k in range(table.levels))
    for k in range(table.levels):
        g = np.asarray(table.level_samples(k), float) * 1e6  # uS
        c = f"C{k % 10}"
        lo, hi = float(g.min()), float(g.max())
        pad = 0.05 * (hi - lo) if hi > lo else max(1e-3, 0.01 * abs(lo))
        bins = np.linspace(lo - pad, hi + pad, BINS_PER_LEVEL + 1)
        ax.hist(g, bins=bins, density=True, alpha=0.4, color=c)
        m, s = g.mean(), g.std(ddof=1)
        lm, ls = np.log(g).mean(), np.log(g).std(ddof=1)
        x = np.linspace(max(1e-9, m - 5 * s), m + 5 * s, 400) if s > 0 else np.array([m])
        y_n = stats.norm.pdf(x, m, s) if s > 0 else np.zeros_like(x)
        y_l = stats.lognorm.pdf(x, ls, scale=np.exp(lm)) if ls > 0 else np.zeros_like(x)
        ax.plot(x, y_n, color=c, lw=1.0, ls="--", label="normal fit" if k == 0 else None)
        ax.plot(x, y_l, color=c, lw=1.2, ls="-", label="lognormal fit" if k == 0 else None)
        counts, _ = np.histogram(g, bins=bins, density=True)
        top = max(float(counts.max()), float(y_n.max()), float(y_l.max()))
        ax.annotate(f"level {names[k]}", (m, top), xytext=(0, 4), textcoords="offset points", ha="center",
                    va="bottom", fontsize=8, color=c)
    for i, th in enumerate(np.asarray(threshold_s, float)):
        ax.axvline(th * 1e6, color="k", lw=0.6, ls=":", label="read-out thresholds" if i == 0 else None)
    v = getattr(table, "v_read_v", None)
    ax.set_xlabel(f"conductance read at {v:g} V (uS)" if v else "conductance at the read voltage (uS)")
    ax.set_ylabel("probability density (1/uS)")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.08)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)


def plot_levels(table: Any, path: str | Path, *, error_rate: np.ndarray | None = None) -> Path:
    """Histograms of the per-level conductances of a :class:`device.programming.LevelTable`
    (:func:`draw_level_histograms`) with the midpoint thresholds, and the worst adjacent read-out
    error counted on the cells with its 95 % Clopper-Pearson interval. ``error_rate`` is accepted
    for compatibility and unused (the title counts the samples)."""
    from device.programming import empirical_readout_error

    del error_rate
    plt = _pyplot()
    emp = empirical_readout_error(table, thresholds="midpoint")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    draw_level_histograms(ax, table, emp.threshold_s)
    ax.set_title(
        f"write-verify, {table.bits_per_cell} bit/cell: {table.levels} levels x {table.n_devices} cells, "
        f"on/off {table.on_off_ratio:.1f}\nworst adjacent read-out error (midpoint thresholds) {readout_error_text(emp)}",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)
