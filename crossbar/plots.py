"""Plots of IR drop over a tile: the voltage-drop map and the current error against position.

Display units here only (mV, uA, % of full scale); inputs are SI arrays. matplotlib is imported
inside the functions with the non-interactive Agg backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_voltage_drop_map", "plot_column_error"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_voltage_drop_map(v_word_v: np.ndarray, v_bit_v: np.ndarray, v_in_v: np.ndarray, path, *, title: str = "") -> Path:
    """Map of where the read voltage goes, in mV, ``(rows, cols)``: lost along the word lines
    (``v_in - W``), the rise of the bit lines above the sense node (``B``) and the sum, lost across
    each cell (``v_in - (W - B)``). Drivers sit at the left end of each word line (column 0 side),
    sense amplifiers below the last row of each bit line; the axes say so."""
    plt = _plt()
    drop_mv = 1e3 * (np.asarray(v_in_v)[:, None] - (np.asarray(v_word_v) - np.asarray(v_bit_v)))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), constrained_layout=True)
    for ax, data, name in (
        (axes[0], 1e3 * (np.asarray(v_in_v)[:, None] - v_word_v), "lost along the word line (mV)"),
        (axes[1], 1e3 * np.asarray(v_bit_v), "bit line above the sense node (mV)"),
        (axes[2], drop_mv, "lost across the cell: the sum (mV)"),
    ):
        im = ax.imshow(data, origin="upper", cmap="viridis", aspect="auto")
        ax.set_xlabel("column j (bit line); drivers at the left edge")
        ax.set_ylabel("row i (word line); sense amps below the last row")
        ax.set_title(name, fontsize=10)
        fig.colorbar(im, ax=ax)
    if title:
        fig.suptitle(title, fontsize=10)
    from device.plots import save_figure

    return save_figure(fig, path, dpi=110)[0]


def plot_column_error(errors: dict[str, dict[str, np.ndarray]], path, *, title: str = "",
                      ylabel: str = "column current error (% of RMS column current)") -> Path:
    """Column-current error of IR-drop models against the exact solver, one panel per input:
    ``errors[input name][model name]`` = ``(cols,)`` error in % of the RMS actual column current
    of that input (the normalisation :func:`crossbar.irdrop.demo_figures` prints; there, the RMS
    over several signed input vectors, as ``ylabel`` says)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(errors), figsize=(5.5 * len(errors), 4), constrained_layout=True, squeeze=False)
    for ax, (inp, by_model) in zip(axes[0], errors.items()):
        rms = []
        for i, (name, e) in enumerate(by_model.items()):
            rms.append(f"{float(np.sqrt(np.mean(np.square(e)))):.2f}")
            ax.plot(e, color=f"C{i}", label=name)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("column j (bit line; drivers at column 0's side)")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(f"{inp}\nRMS error {' / '.join(rms)} % (legend order)", fontsize=9)
        ax.set_yscale("symlog", linthresh=0.1)
        if all(np.min(e) >= 0 for e in by_model.values()):  # RMS errors: no negative half
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    from device.plots import save_figure

    return save_figure(fig, path, dpi=110)[0]
