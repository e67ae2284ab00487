"""Plots of what a mapping costs: the per-layer energy and area breakdown of a
:class:`mapping.cost.CostReport`, and accuracy against energy per inference along a study axis.

Display units here only (uJ, mm^2); the reports stay SI. matplotlib is imported inside the
functions (Agg backend) and every figure is written atomically by :func:`device.plots.save_figure`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from device.errors import UserError
from mapping.cost import COMPONENTS, CostReport

__all__ = ["PLOT_FORMATS", "check_plot_path", "plot_breakdown", "plot_accuracy_energy"]

#: image formats the plots are written in (the path's suffix picks one)
PLOT_FORMATS = ("png", "pdf", "svg")


def check_plot_path(path: str | Path) -> None:
    """Refuse a plot path whose suffix is not one of :data:`PLOT_FORMATS` (before any work)."""
    ext = Path(path).suffix.lstrip(".").lower()
    if ext not in PLOT_FORMATS:
        raise UserError(f"plot {path}: the suffix must be one of {', '.join('.' + f for f in PLOT_FORMATS)}")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_breakdown(report: CostReport, path: str | Path, *, title: str | None = None) -> Path:
    """Two stacked horizontal bar charts, one bar per layer: energy per inference (uJ) and area
    (mm^2) by component (:data:`mapping.cost.COMPONENTS`); the energy outside the crossbars
    (``report.extra_energy_j``, e.g. digital attention) is named in the title."""
    from device.plots import save_figure

    check_plot_path(path)
    plt = _pyplot()
    layers = report.layers
    names = [l.name for l in layers]
    comps = [k for k in COMPONENTS if any(l.energy_j[k] or l.area_m2[k] for l in layers)]
    n = len(layers)
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3.0, 0.22 * n + 1.5)), sharey=True, constrained_layout=True)
    y = np.arange(n)
    colors = plt.get_cmap("tab10")
    for ax, what, unit, scale in ((axes[0], "energy_j", "energy per inference, uJ", 1e6),
                                  (axes[1], "area_m2", "area, mm$^2$", 1e6)):
        left = np.zeros(n)
        for i, k in enumerate(comps):
            v = np.array([getattr(l, what)[k] for l in layers]) * scale
            if not v.any():
                continue
            ax.barh(y, v, left=left, color=colors(i % 10), label=k, height=0.8)
            left += v
        ax.set_xlabel(unit)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    import os

    common = os.path.commonprefix(names) if n > 1 else ""
    common = common[: common.rfind(".") + 1]  # drop whole name parts only ("bert.encoder.")
    axes[0].set_yticklabels([s[len(common):][-40:] for s in names], fontsize=7)
    axes[0].invert_yaxis()
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=min(len(labels), 5))
    extra = ", ".join(f"{k} {v * 1e6:.3g} uJ" for k, v in report.extra_energy_j.items())
    head = title or Path(str(report.meta.get("model", "cost per layer"))).name
    fig.suptitle(f"{head}: {report.energy_j * 1e6:.4g} uJ, {report.area_m2 * 1e6:.4g} mm$^2$, "
                 f"{report.tops_per_w:.3g} TOPS/W" + (f" (incl. {extra})" if extra else ""), fontsize=9)
    return save_figure(fig, path)[0]


def plot_accuracy_energy(points: Sequence[dict[str, Any]], path: str | Path, *, axis: str, metric: str = "score",
                         digital: float | None = None, title: str | None = None) -> Path:
    """Accuracy against energy per inference along a study axis.

    ``points``: dicts with ``method``, ``value`` (the axis value), ``energy_j`` (per inference)
    and ``mean`` / ``std`` / ``n`` of the metric over chips (:func:`nn.cost.accuracy_vs_energy`
    makes them); one line per method through its axis values, each point labelled by its value,
    +-1 standard deviation as error bars; ``digital``: the digital score as a dashed line."""
    from device.plots import save_figure

    check_plot_path(path)
    if not points:
        raise UserError("no points to plot: the results hold no simulated rows on the axis")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
    methods = list(dict.fromkeys(p["method"] for p in points))
    for m in methods:
        ps = sorted((p for p in points if p["method"] == m), key=lambda p: p["energy_j"])
        e = np.array([p["energy_j"] for p in ps]) * 1e6
        mu = np.array([p["mean"] for p in ps])
        sd = np.array([p["std"] for p in ps])
        ax.errorbar(e, mu, yerr=sd, marker="o", capsize=3, label=m)
        for p, xi, yi in zip(ps, e, mu):
            ax.annotate(f"{p['value']:g}" if isinstance(p["value"], (int, float)) else str(p["value"]), (xi, yi),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    if digital is not None:
        ax.axhline(digital, ls="--", color="gray", lw=1, label="digital")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference, uJ")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs energy along {axis}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)[0]
