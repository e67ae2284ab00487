"""The device part of ``make demo``: an I-V plot, level histograms for 1 and 2 bits per cell, and
the read-out error rates, printed and plotted (``readout_error.png``; about 15 s on one core)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_device_demo", "demo_iv_sweep", "DEMO_IV_COMPLIANCE_A"]

#: the I-V figure's cell: a 1T1R whose access transistor holds the SET current to 1 mA (a typical
#: compliance, and the one at which the SET ends near the tables' 10 kOhm LRS level); its RESET is
#: not limited (the transistor is driven hard). The bare cell swept to 1.5 V draws 94 mA and
#: reaches 593 K: no real cell is swept that way
DEMO_IV_COMPLIANCE_A = 1e-3


def demo_iv_sweep(seed: int = 0) -> tuple[Any, Any]:
    """The demo's I-V sweep (default +-1.5 V, 1 V/s) of 4 cells of the default preset behind a
    1T1R access transistor with a ``DEMO_IV_COMPLIANCE_A`` SET compliance: (params, SweepResult)."""
    from device.presets import default_params
    from device.simulate import dc_sweep

    cell_1t1r = default_params().replace(i_compliance_a=DEMO_IV_COMPLIANCE_A)
    return cell_1t1r, dc_sweep(cell_1t1r, n_devices=4, rng=np.random.default_rng(seed))


def run_device_demo(out_dir: str | Path, *, seed: int = 0, n_devices: int = 256, verbose: bool = True) -> dict[str, Any]:
    """Write ``iv.h5``/``iv.png``, ``levels_b{1,2}.h5``/``.png``, ``readout_error.png`` and
    ``device_summary.json`` to ``out_dir``; return (and print) the summary: SET/RESET voltages,
    per-bits on/off ratio, pulses, sigma and read-out error rates (counted on the programmed cells,
    with 95 % Clopper-Pearson intervals, and the lognormal fits' extrapolation), plus synthetic
    tables showing how the error rate grows with bits per cell and falls with the on/off ratio at
    a fixed sigma."""
    from device.plots import plot_iv, plot_levels
    from device.presets import DEFAULT_PRESET, default_params
    from device.programming import (
        LevelTable,
        ProgrammingConfig,
        cell_error_rate,
        empirical_readout_error,
        program_levels,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = default_params()
    summary: dict[str, Any] = {"preset": DEFAULT_PRESET, "seed": seed}

    cell_1t1r, sweep = demo_iv_sweep(seed)
    sweep.save(out / "iv.h5", config={"preset": DEFAULT_PRESET, "model": cell_1t1r.to_dict(), "seed": seed})
    plot_iv(sweep, out / "iv.png",
            title=f"1T1R Stanford-PKU cell, SET compliance {DEMO_IV_COMPLIANCE_A * 1e3:g} mA: DC sweep")
    v_set, v_reset = sweep.thresholds_v()
    summary["iv"] = {
        "i_compliance_a": DEMO_IV_COMPLIANCE_A,
        "v_set_v": [round(float(x), 4) for x in v_set],
        "v_reset_v": [round(float(x), 4) for x in v_reset],
        "r_min_ohm": float(sweep.r_read_ohm.min()),
        "r_max_ohm": float(sweep.r_read_ohm.max()),
        "i_max_a": float(np.abs(sweep.i_a).max()),
        "t_max_k": float(sweep.temperature_k.max()),
    }

    levels = {}
    for bits in (1, 2):
        cfg = ProgrammingConfig(bits_per_cell=bits)
        res = program_levels(cfg, params, n_devices=n_devices, rng=np.random.default_rng(seed + bits))
        res.save(out / f"levels_b{bits}.h5", seed=seed + bits)
        plot_levels(res.table, out / f"levels_b{bits}.png", error_rate=res.error_rate)
        t = res.table
        emp = empirical_readout_error(t, thresholds="midpoint")
        levels[bits] = {
            "on_off_ratio": round(t.on_off_ratio, 4),
            "sigma_rel": [round(float(x), 5) for x in t.g_std_s / t.g_mean_s],
            "pulses_mean": round(float(res.pulses.mean()), 2),
            "converged_fraction": float(res.converged.mean()),
            "v_read_v": t.v_read_v,
            "readout_errors": [int(x) for x in emp.errors],
            "readout_trials": [int(x) for x in emp.trials],
            "readout_error_rate": [float(x) for x in emp.rate],
            "readout_error_ci_high": [float(x) for x in emp.ci_high],
            "cell_error_rate_lognormal_fit": cell_error_rate(t),
            **_cell_error_counted(t, emp.threshold_s),
        }
    summary["write_verify"] = levels

    # the same sigma: error rate vs bits per cell and vs on/off ratio (analytic lognormal levels)
    rng = np.random.default_rng(seed)
    sweep_bits = {}
    for bits in (1, 2, 3, 4):
        t = LevelTable.synthetic(bits_per_cell=bits, g_on_s=100e-6, g_off_s=10e-6, sigma_rel=0.05, rng=rng)
        sweep_bits[bits] = cell_error_rate(t)
    sweep_onoff = {}
    for ratio in (2, 5, 10, 100):
        t = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=100e-6 / ratio, sigma_rel=0.05, rng=rng)
        sweep_onoff[ratio] = cell_error_rate(t)
    summary["synthetic_sigma_0.05"] = {"cell_error_vs_bits": sweep_bits, "cell_error_vs_on_off_2bit": sweep_onoff}
    summary["figures"] = [str(_plot_readout_error(summary, out / "readout_error.png"))]

    from device.io import atomic_write_text

    atomic_write_text(out / "device_summary.json", json.dumps(summary, indent=1, default=str))
    if verbose:
        print(_format(summary))
    return summary


def _cell_error_counted(table: Any, threshold_s: np.ndarray) -> dict[str, Any]:
    """Cells read as another level (outside their level's band between the midpoint thresholds),
    counted on the programmed cells, with the 95 % Clopper-Pearson interval of the rate."""
    from device.programming import clopper_pearson

    edges = np.concatenate([[-np.inf], np.asarray(threshold_s, float), [np.inf]])
    wrong = total = 0
    for k in range(table.levels):
        g = np.asarray(table.level_samples(k), float)
        wrong += int(np.sum((g <= edges[k]) | (g > edges[k + 1])))
        total += g.size
    lo, hi = clopper_pearson(np.array([wrong]), np.array([total]))
    return {"cells_misread": wrong, "cells_read": total, "cell_error_ci_low": float(lo[0]), "cell_error_ci_high": float(hi[0])}


def _plot_readout_error(s: dict[str, Any], path: Path) -> Path:
    """Cell read-out error (a uniformly random level read as another) of lognormal levels with 5 %
    sigma versus bits per cell (on/off 10) and versus on/off ratio (2 bits), and the write-verify
    tables' error counted on their cells: the 95 % upper bound where none was misread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from device.plots import save_figure

    syn = s["synthetic_sigma_0.05"]
    floor = 1e-12  # rates below it are drawn on the axis floor (their value written beside them)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))

    def curve(ax, xs, ys, label):
        ax.plot(xs, [max(floor, y) for y in ys], "o-", color="C0", label=label)
        for x, y in zip(xs, ys):
            if y < floor:
                ax.annotate(f"{y:.1e} (off scale)", (x, floor), xytext=(6, 6), textcoords="offset points", fontsize=8, color="C0")

    bits = sorted(syn["cell_error_vs_bits"])
    curve(a1, bits, [syn["cell_error_vs_bits"][b] for b in bits], "lognormal levels, sigma 5 %, on/off 10 (fit tails)")
    for b, d in s["write_verify"].items():
        n, k, hi = d["cells_read"], d["cells_misread"], d["cell_error_ci_high"]
        lbl = "write-verify cells, counted (95 % upper bound)" if b == min(s["write_verify"]) else None
        if k == 0:  # nothing misread: the upper bound only
            a1.plot([b], [hi], marker="v", ms=9, color="C3", ls="none", label=lbl)
            a1.annotate(f"0 of {n} cells misread: < {hi:.1e}", (b, hi), xytext=(8, -3), textcoords="offset points",
                        fontsize=8, color="C3")
        else:
            rate = k / n
            a1.errorbar([b], [rate], yerr=[[rate - d["cell_error_ci_low"]], [hi - rate]], fmt="s", color="C3",
                        capsize=4, label=lbl)
            a1.annotate(f"{k} of {n} cells misread", (b, hi), xytext=(8, 0), textcoords="offset points", fontsize=8, color="C3")
    a1.set(xlabel="bits per cell", ylabel="cells read as another level (fraction)", xticks=bits,
           title="more levels in the same window", ylim=(floor / 2, 1))
    ratios = sorted(syn["cell_error_vs_on_off_2bit"])
    curve(a2, ratios, [syn["cell_error_vs_on_off_2bit"][r] for r in ratios], "lognormal levels, sigma 5 %, 2 bits")
    a2.set_xscale("log")
    a1.set_yscale("log")
    a2.set_yscale("log")
    a2.set(xlabel="on/off ratio", title="a wider window at 2 bits per cell", ylim=(floor / 2, 1))
    for ax in (a1, a2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is a1 else "upper right")
    fig.suptitle("read-out error: a cell of a uniformly random level read as another (midpoint thresholds)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)[0]


def _format(s: dict[str, Any]) -> str:
    lines = [
        f"device ({s['preset']}, 1T1R with a {s['iv']['i_compliance_a'] * 1e3:g} mA SET compliance): SET at "
        f"{s['iv']['v_set_v']} V, RESET at {s['iv']['v_reset_v']} V, R {s['iv']['r_min_ohm'] / 1e3:.3g}-"
        f"{s['iv']['r_max_ohm'] / 1e3:.4g} kOhm, peak {s['iv']['i_max_a'] * 1e3:.3g} mA, {s['iv']['t_max_k']:.0f} K",
    ]
    for bits, d in s["write_verify"].items():
        errs = ", ".join(f"{e}/{n} [CI 0-{hi:.1e}]" if e == 0 else f"{e}/{n} [CI upper {hi:.1e}]"
                         for e, n, hi in zip(d["readout_errors"], d["readout_trials"], d["readout_error_ci_high"]))
        lines.append(
            f"  {bits} bit/cell write-verify (read at {d['v_read_v']:g} V): on/off {d['on_off_ratio']:.2f}, "
            f"{d['pulses_mean']:.1f} pulses/cell, sigma/mean {max(d['sigma_rel']):.3f}, adjacent read-out errors "
            f"counted on the cells {errs}; cells misread {d['cells_misread']} of {d['cells_read']} "
            f"[95 % CI {d['cell_error_ci_low']:.1e}, {d['cell_error_ci_high']:.1e}] (lognormal fits extrapolate "
            f"{d['cell_error_rate_lognormal_fit']:.1e})"
        )
    syn = s["synthetic_sigma_0.05"]
    lines.append("  synthetic, sigma 5 %, on/off 10: cell error vs bits " + ", ".join(f"{b}: {e:.2e}" for b, e in syn["cell_error_vs_bits"].items()))
    lines.append("  synthetic, sigma 5 %, 2 bits: cell error vs on/off " + ", ".join(f"{r}: {e:.2e}" for r, e in syn["cell_error_vs_on_off_2bit"].items()))
    return "\n".join(lines)
