"""The device part of ``make demo``: an I-V plot, level histograms for 1 and 2 bits per cell, and
a summary of the read-out error rates (about 15 s on one core)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_device_demo"]


def run_device_demo(out_dir: str | Path, *, seed: int = 0, n_devices: int = 256, verbose: bool = True) -> dict[str, Any]:
    """Write ``iv.h5``/``iv.png``, ``levels_b{1,2}.h5``/``.png`` and ``device_summary.json`` to
    ``out_dir``; return (and print) the summary: SET/RESET voltages, per-bits on/off ratio,
    pulses, sigma and read-out error rates, plus synthetic tables showing how the error rate
    grows with bits per cell and falls with the on/off ratio at a fixed sigma."""
    from device.plots import plot_iv, plot_levels
    from device.presets import DEFAULT_PRESET, default_params
    from device.programming import LevelTable, ProgrammingConfig, cell_error_rate, program_levels
    from device.simulate import dc_sweep

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = default_params()
    summary: dict[str, Any] = {"preset": DEFAULT_PRESET, "seed": seed}

    sweep = dc_sweep(params, n_devices=4, rng=np.random.default_rng(seed))
    sweep.save(out / "iv.h5", config={"preset": DEFAULT_PRESET, "model": params.to_dict(), "seed": seed})
    plot_iv(sweep, out / "iv.png")
    v_set, v_reset = sweep.thresholds_v()
    summary["iv"] = {
        "v_set_v": [round(float(x), 4) for x in v_set],
        "v_reset_v": [round(float(x), 4) for x in v_reset],
        "r_min_ohm": float(sweep.r_read_ohm.min()),
        "r_max_ohm": float(sweep.r_read_ohm.max()),
    }

    levels = {}
    for bits in (1, 2):
        cfg = ProgrammingConfig(bits_per_cell=bits)
        res = program_levels(cfg, params, n_devices=n_devices, rng=np.random.default_rng(seed + bits))
        res.save(out / f"levels_b{bits}.h5", seed=seed + bits)
        plot_levels(res.table, out / f"levels_b{bits}.png", error_rate=res.error_rate)
        t = res.table
        levels[bits] = {
            "on_off_ratio": round(t.on_off_ratio, 4),
            "sigma_rel": [round(float(x), 5) for x in t.g_std_s / t.g_mean_s],
            "pulses_mean": round(float(res.pulses.mean()), 2),
            "converged_fraction": float(res.converged.mean()),
            "readout_error_rate": [float(x) for x in res.error_rate],
            "cell_error_rate": cell_error_rate(t),
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

    from device.io import atomic_write_text

    atomic_write_text(out / "device_summary.json", json.dumps(summary, indent=1, default=str))
    if verbose:
        print(_format(summary))
    return summary


def _format(s: dict[str, Any]) -> str:
    lines = [
        f"device ({s['preset']}): SET at {s['iv']['v_set_v']} V, RESET at {s['iv']['v_reset_v']} V, "
        f"R {s['iv']['r_min_ohm'] / 1e3:.3g}-{s['iv']['r_max_ohm'] / 1e3:.4g} kOhm",
    ]
    for bits, d in s["write_verify"].items():
        errs = ", ".join(f"{e:.2e}" for e in d["readout_error_rate"])
        lines.append(
            f"  {bits} bit/cell write-verify: on/off {d['on_off_ratio']:.2f}, {d['pulses_mean']:.1f} pulses/cell, "
            f"sigma/mean {max(d['sigma_rel']):.3f}, adjacent read-out error [{errs}], cell error {d['cell_error_rate']:.2e}"
        )
    syn = s["synthetic_sigma_0.05"]
    lines.append("  synthetic, sigma 5 %, on/off 10: cell error vs bits " + ", ".join(f"{b}: {e:.2e}" for b, e in syn["cell_error_vs_bits"].items()))
    lines.append("  synthetic, sigma 5 %, 2 bits: cell error vs on/off " + ", ".join(f"{r}: {e:.2e}" for r, e in syn["cell_error_vs_on_off_2bit"].items()))
    return "\n".join(lines)
