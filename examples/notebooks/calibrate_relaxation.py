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
# # Conductance relaxation after programming (tech B)
#
# `reram-cosim device calibrate relaxation` on 15,961 measured cells of tech B (Levy et al.,
# github.com/akashlevy/RRAM-Relaxation-Master-Model, MIT), read 0.01 s to 10^4 s after programming.
# The model is the measured distribution of g(t) - g0 per programmed-conductance bin and time
# (tabulated quantiles); we fit it on half of the cells and check it on the other half.

# %%
import tempfile
from pathlib import Path

import numpy as np

from device.calibrate import techb_relaxation_csv
from device.relaxation import RelaxationModel, compare_forms, plot_relaxation, read_relaxation_csv, techb_bake_statistics

work = Path(tempfile.mkdtemp(prefix="techb_"))  # the converted measurements stay out of the repository
csv = techb_relaxation_csv(work / "techb_relaxation.csv")
data = read_relaxation_csv(csv)
fit, held = data.split_cells(np.random.default_rng(0))
model = RelaxationModel.fit(fit, source="tech B, half of the cells")
print(model.summary(range(0, model.g0_bin_s.size, 5)))

# %% [markdown]
# Held-out check: per g0 bin (16 equal-count bins) and time, the predicted mean and spread against
# the other half's, in units of the data's own spread; and the Kolmogorov-Smirnov distance of the
# tabulated form against a normal law with the same mean and spread.

# %%
edges = np.quantile(np.unique(held.g0_s), np.linspace(0, 1, 17))
r = compare_forms(model, held, edges, np.random.default_rng(1))
print(f"mean error / std: max {np.nanmax(r['mean_err_in_std']):.3f}, median {np.nanmedian(r['mean_err_in_std']):.3f}")
print(f"std error / std:  max {np.nanmax(r['std_err_in_std']):.3f}, median {np.nanmedian(r['std_err_in_std']):.3f}, "
      f"within 25 %: {np.mean(r['std_err_in_std'] <= 0.25):.0%}")
print(f"IQR error / IQR:  max {np.nanmax(r['iqr_err_rel']):.3f}")
print(f"KS distance, median over bins: quantile form {np.nanmedian(r['ks_quantile']):.3f}, normal form {np.nanmedian(r['ks_normal']):.3f}")

# %% [markdown]
# Temperature: the bake data show the spread of g(after) - g(before) growing with the bake
# temperature, but give one bake per temperature of unknown duration: no acceleration law.

# %%
b = techb_bake_statistics()
for T, sd in zip(b["temperature_c"], b["std_s"]):
    print(f"{T:5.0f} C: std of the change per g0 bin (uS) {np.round(sd * 1e6, 1)}")

# %% [markdown]
# The full model (all cells, as shipped in `data/relaxation_techB.h5`) and its figure:

# %%
full = RelaxationModel.fit(data, source="tech B, all cells")
full.save("relaxation_techB.h5")
plot_relaxation(full, "relaxation_techB.png")
from IPython.display import Image, display  # noqa: E402

display(Image("relaxation_techB.png"))
print(full.summary(range(0, full.g0_bin_s.size, 8)))
