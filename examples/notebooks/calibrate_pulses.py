# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Stanford-PKU parameters from measured pulse ramps
#
# `reram-cosim device calibrate pulses` on the potentiation / depression ramps of a resistive
# device shipped with CrossSim (github.com/sandialabs/cross-sim, BSD-3): identical pulses, reads
# at 0.1 V. Fitted by `scipy.optimize.least_squares`: the gap velocity prefactor (times an assumed
# 100 ns width) and the SET / RESET amplitudes; the cycle-to-cycle term and the read noise by
# moments of the ramp-to-ramp spread; I0 pinned so the highest read sits at the smallest gap.

# %%
import json

import tempfile
from pathlib import Path

import numpy as np

from device.calibrate_pulses import cross_sim_ramps_csv, fit_pulses, plot_pulse_fit, read_ramps_csv

work = Path(tempfile.mkdtemp(prefix="ramps_"))  # the converted measurements stay out of the repository
csv = cross_sim_ramps_csv(work / "ramps.csv")
ramps = read_ramps_csv(csv)
fit = fit_pulses(ramps)
print(f"vel0 {fit.params.vel0_m_per_s:.3g} m/s (x {fit.t_pulse_s * 1e9:g} ns), SET {fit.v_set_v:.3f} V, RESET {fit.v_reset_v:.3f} V")
print(f"delta_g0 {fit.params.delta_g0_m * 1e9:.4f} nm (the published per-step 0.02 nm, reinterpreted, is 10x more)")
print(f"read noise {fit.read_noise_a * 1e9:.1f} nA; rms misfit SET {fit.rms_error_set_a * 1e6:.2f} uA, RESET {fit.rms_error_reset_a * 1e6:.2f} uA")

# %%
with open("preset_pulse_ramps.json", "w") as fh:
    json.dump(fit.preset_json(), fh, indent=2, sort_keys=True)
plot_pulse_fit(ramps, fit, "pulse_fit.png")
from IPython.display import Image, display  # noqa: E402

display(Image("pulse_fit.png"))
print(json.dumps({k: v for k, v in fit.preset_json()["params"].items() if k in ("i0_a", "vel0_m_per_s", "delta_g0_m")}, indent=1))
