"""Plots of IR drop over a tile: the voltage-drop map and the current error against position.

Display units here only (mV, uA, % of full scale); inputs are SI arrays. matplotlib is imported
inside the functions with the non-interactive Agg backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_voltage_drop_map", "plot_error_vs_position"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_voltage_drop_map(v_word_v: np.ndarray, v_bit_v: np.ndarray, v_in_v: np.ndarray, path, *, title: str = "") -> Path:
    """Map of the voltage lost across each cell: ``v_in[i] - (W[i,j] - B[i,j])`` in mV, ``(rows, cols)``."""
    plt = _plt()
    drop_mv = 1e3 * (np.asarray(v_in_v)[:, None] - (np.asarray(v_word_v) - np.asarray(v_bit_v)))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    for ax, data, name in (
        (axes[0], 1e3 * (np.asarray(v_in_v)[:, None] - v_word_v), "word-line drop v_in - W (mV)"),
        (axes[1], 1e3 * np.asarray(v_bit_v), "bit-line rise B (mV)"),
        (axes[2], drop_mv, "voltage lost across the cell (mV)"),
    ):
        im = ax.imshow(data, origin="upper", cmap="viridis", aspect="auto")
        ax.set_xlabel("column j (bit line)")
        ax.set_ylabel("row i (word line)")
        ax.set_title(name, fontsize=10)
        fig.colorbar(im, ax=ax)
    if title:
        fig.suptitle(title)
    from device.plots import save_figure

    return save_figure(fig, path, dpi=110)[0]


def plot_error_vs_position(m_error_s: dict[str, np.ndarray], v_in_v: np.ndarray, i_fullscale_a: float, path) -> Path:
    """Bit-line current error vs column (and per-cell error vs row) for each model.

    ``m_error_s``: model name -> ``M_model - M_exact`` ``(rows, cols)`` siemens; ``v_in_v``
    ``(rows,)`` the input used for the column currents; errors shown in % of ``i_fullscale_a``.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    v = np.asarray(v_in_v)
    for name, e in m_error_s.items():
        col = 100 * (v @ e) / i_fullscale_a
        axes[0].plot(col, label=name)
        row = 100 * np.sqrt(np.mean((e * v[:, None]) ** 2, axis=1)) * e.shape[0] / i_fullscale_a
        axes[1].plot(row, label=name)
    axes[0].set_xlabel("column j (bit line)")
    axes[0].set_ylabel("bit-line current error (% of full scale)")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[1].set_xlabel("row i (word line)")
    axes[1].set_ylabel("RMS cell-current error x rows (% of full scale)")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    from device.plots import save_figure

    return save_figure(fig, path, dpi=110)[0]
