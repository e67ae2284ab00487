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
# # Level distributions from measured data (tech B)
#
# `reram-cosim device calibrate levels` on real measurements: the conductances of an RRAM
# technology ("tech B", Levy et al., github.com/akashlevy/RRAM-Relaxation-Master-Model, MIT) read
# 1000 s after programming. We keep 8 of its 32 programmed levels (every 4th: a 3-bit cell) and
# build the level table the crossbar engine uses (`--set levels.table_path=...`). The data stay in
# `../shared/data/devices/`; everything here is written to the working directory.

# %%
import tempfile
from pathlib import Path

import numpy as np

from device.calibrate import calibrate_levels_csv, levels_summary, plot_level_table, techb_levels_csv
from device.programming import LevelTable, empirical_readout_error

work = Path(tempfile.mkdtemp(prefix="techb_"))  # the converted measurements stay out of the repository
csv = techb_levels_csv(work / "techb_levels_1000s.csv", time_s=1000.0, ranges=range(0, 32, 4))
table = calibrate_levels_csv(csv)
print(levels_summary(table, thresholds="optimal"))

# %% [markdown]
# Levels are ordered by mean conductance (digit 0 = lowest) and keep their labels; the spacing
# is not uniform, and the engine draws every digit from its own level's measured samples.

# %%
spacing = np.diff(table.g_mean_s)
print("labels in digit order:", table.labels)
print("spacing between adjacent means (uS):", np.round(spacing * 1e6, 2))
err = empirical_readout_error(table, thresholds="midpoint")
for k in range(table.levels - 1):
    print(f"{table.labels[k]:>3}|{table.labels[k + 1]:<3} error {err.rate[k]:.3%}  95% CI [{err.ci_low[k]:.3%}, {err.ci_high[k]:.3%}]")

# %%
path = table.save("levels_techB_b3_1000s.h5")
back = LevelTable.load(path)
assert np.allclose(back.g_mean_s, table.g_mean_s)
plot_level_table(table, "levels_techB_b3_1000s.png")

# %% [markdown]
# The figure and the fitted table:

# %%
from IPython.display import Image, display  # noqa: E402

display(Image("levels_techB_b3_1000s.png"))
print(f"on/off {table.on_off_ratio:.1f}; means (uS): {np.round(table.g_mean_s * 1e6, 2)}; stds (uS): {np.round(table.g_std_s * 1e6, 2)}")
