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
# # Accuracy versus time since programming (tech-B relaxation)
#
# The fine-tuned MiniLM SST-2 classifier on a simulated chip whose cells relax after programming
# by the measured tech-B model (`data/relaxation_techB.h5`, `crossbar.read_time_s`): 1 and 2 bits
# per cell, with the shipped write-verify levels (programming variation) and with ideal levels.
# By default a small subset (the test suite runs it): 32 dev sentences, 2 bits per cell, 1 s and
# 10^4 s, one chip per point; `RERAM_COSIM_NOTEBOOK_FULL=1` runs the whole dev set, 1 and 2 bits
# per cell, at 5 times.

# %%
import os
import tempfile
from pathlib import Path

import numpy as np

from device.config import apply_overrides
from nn.evaluate import EvalSession
from nn.models import finetuned_model_dir
from nn.sim import get_preset

# the fine-tuned MiniLM SST-2 that `make demo` caches; RERAM_COSIM_NOTEBOOK_MODEL points elsewhere
model_dir = os.environ.get("RERAM_COSIM_NOTEBOOK_MODEL") or finetuned_model_dir("minilm-sst2")
import nn  # noqa: E402

# GLUE lives in ../shared/data/glue next to the repository (never in it)
glue_dir = Path(os.environ.get("RERAM_COSIM_GLUE_DIR", Path(nn.__file__).resolve().parents[2] / "shared" / "data" / "glue"))
# the test suite runs a small subset; RERAM_COSIM_NOTEBOOK_FULL=1 runs the whole dev set and 5 times
full = os.environ.get("RERAM_COSIM_NOTEBOOK_FULL", "") == "1"
n_examples = None if full else 32
sess = EvalSession.open(model_dir, "sst2", glue_dir, max_examples=n_examples, max_length=64)
digital = sess.digital_metrics()
print("digital accuracy on the subset:", digital)

# %%
times_s = [1.0, 10.0, 100.0, 1e3, 1e4] if full else [1.0, 1e4]
out = Path(tempfile.mkdtemp(prefix="acc_time_")) / "results.csv"
rows = []
bits_list = (1, 2) if full else (2,)
for bits in bits_list:
    for variation in ("write-verify levels", "ideal levels"):
        for t in times_s:
            sets = [f"crossbar.bits_per_cell={bits}", f"crossbar.read_time_s={t}"]
            if variation == "ideal levels":
                # 10-100 uS, no spread: inside tech-B's measured range of programmed conductance
                sets += ["levels.source=synthetic", "levels.sigma_rel=0", "levels.on_off_ratio=10", "levels.g_on_s=1e-4"]
            cfg = apply_overrides(get_preset("default"), sets)
            s = sess.run(cfg, 1, 0, out, digital=False, progress=False)
            acc = s["simulated"]["accuracy"]["mean"]
            rows.append((bits, variation, t, acc))
            print(f"{bits} bit/cell, {variation:<20} t = {t:>7g} s: accuracy {acc:.3f}")

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from device.plots import save_figure  # noqa: E402

fig, ax = plt.subplots(figsize=(6, 4))
for bits in bits_list:
    for variation, ls in (("write-verify levels", "-"), ("ideal levels", "--")):
        pts = [(t, a) for b, v, t, a in rows if b == bits and v == variation]
        x = [t for t, _ in pts]
        ax.semilogx(x, [a for _, a in pts], ls, marker="o", label=f"{bits} bit/cell, {variation}")
ax.axhline(digital["accuracy"], color="k", lw=0.6, label="digital")
ax.set(xlabel="time since programming (s)", ylabel=f"SST-2 accuracy ({sess.n_examples} sentences)",
       title="MiniLM on a tech-B chip: relaxation after programming")
ax.legend(fontsize=7)
fig.tight_layout()
save_figure(fig, "accuracy_vs_time.png")
from IPython.display import Image, display  # noqa: E402

display(Image("accuracy_vs_time.png"))
print("bits, levels, time_s, accuracy")
for r in rows:
    print(*r, sep=", ")
