"""Seed paper 2 (Long, She, Mukhopadhyay, DATE 2019) on the kinds of networks it was written for:
train the models, evaluate them on simulated chips, print the comparison table.

Shared by ``examples/paper2_cnn_digits.py`` (a CNN on scikit-learn's digits) and
``examples/paper2_lstm_sst2.py`` (an LSTM on SST-2); see ``nn/smallnets.py`` for the networks.

Four models per network, each trained once and cached under ``--models-dir`` (default
``~/.cache/reram-cosim/models``; a model directory that exists is reused if it was trained with
the same config, refused otherwise):

* ``normal``: no training noise;
* ``dva``: DVA training, the paper's method: every weight multiplied by ``exp(0.1 z)`` per batch
  (lognormal, sigma 0.1: the top of the programming variation swept below);
* ``hwdva``: DVA matched to one chip (``nn.hwtrain``: the chip's quantized read-back plus the
  per-weight noise of its bit-sliced differential cells), the hardest corner of the sweep: 2 bits
  per cell, on/off 2, lognormal sigma 0.1, trained from scratch;
* ``hwdva_ft``: the same chip-matched noise, fine-tuning the normal model (as MiniLM's
  ``crossbar-DVA-ft`` in RESULTS.md).

Each model is evaluated by the study engine (``nn.study``: content-keyed, resumable rows in
``<out>/<variant>/results.csv``, plots) under synthetic lognormal programming variation (sigma
1, 3, 10 %) x bits per cell (1, 2) x on/off ratio (2, 10, 100), with dynamic fixed point
(``dfp``: a binary point per layer, the toolkit's default) and static fixed point (``static_fp``:
one binary point for every layer, the largest that keeps the model's widest layer from
clipping), ``--trials`` chips per point (trial t is chip ``default_rng([0, t])``). Every layer
with weights goes on crossbars (first and last included), apart from the LSTM's embedding table
(a lookup, not a product).

The table: mean accuracy per point for every model and format, their means over the points, and
the paper's comparison, the average relative gain of DFP + DVA over static fixed point with
normal training (the paper: "more than 20 % better computing accuracy on average").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

#: the physics sweep (synthetic lognormal levels)
AXES = {"levels.sigma_rel": [0.01, 0.03, 0.1], "crossbar.bits_per_cell": [1, 2], "levels.on_off_ratio": [2, 10, 100]}
BASE_SET = ["levels.source=synthetic", "levels.distribution=lognormal"]
#: the chip the chip-matched DVA model trains against
HWDVA_CHIP = ["levels.source=synthetic", "levels.distribution=lognormal", "crossbar.bits_per_cell=2",
              "levels.on_off_ratio=2", "levels.sigma_rel=0.1"]
#: per network: task, training config of the normal model, model-name stem, max tokens
NETS: dict[str, dict[str, Any]] = {
    "cnn": {"task": "digits", "stem": "digits-cnn", "max_length": 64,
            "train": {"arch": "digits_cnn", "epochs": 30, "optimizer": "sgd", "lr": 0.05, "batch_size": 64}},
    "lstm": {"task": "sst2", "stem": "sst2-lstm", "max_length": 64,
             "train": {"arch": "lstm_classifier", "epochs": 2, "optimizer": "adam", "lr": 2e-3, "batch_size": 64,
                       "max_length": 64}},
}
#: per network, the training of each model variant on top of its normal config ("init": "normal"
#: starts from the normal model); the chip-matched runs clip the gradient (the noise of on/off 2
#: made plain SGD diverge)
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "cnn": {
        "normal": {},
        "dva": {"dva_sigma": 0.1, "dva_distribution": "lognormal"},
        "hwdva": {"dva_mode": "crossbar", "sim": HWDVA_CHIP, "lr": 0.01, "max_grad_norm": 1.0},
        "hwdva_ft": {"dva_mode": "crossbar", "sim": HWDVA_CHIP, "init": "normal", "epochs": 10, "lr": 0.01,
                     "max_grad_norm": 1.0},
    },
    "lstm": {
        "normal": {},
        "dva": {"dva_sigma": 0.1, "dva_distribution": "lognormal"},
        "hwdva": {"dva_mode": "crossbar", "sim": HWDVA_CHIP, "max_grad_norm": 1.0},
        "hwdva_ft": {"dva_mode": "crossbar", "sim": HWDVA_CHIP, "init": "normal", "epochs": 1, "lr": 5e-4,
                     "max_grad_norm": 1.0},
    },
}
#: --tiny: seconds, for the smoke test
TINY_TRAIN = {"cnn": {"epochs": 2, "max_train_examples": 128, "arch_kwargs": {"c1": 2, "c2": 4, "hidden": 16}},
              "lstm": {"epochs": 1, "max_train_examples": 64, "max_length": 16, "min_count": 1,
                       "arch_kwargs": {"embed": 8, "hidden": 8}}}
TINY_AXES = {"levels.sigma_rel": [0.1], "crossbar.bits_per_cell": [2], "levels.on_off_ratio": [2]}


def static_frac_bits(model_dir: Path) -> int:
    """The static format's one binary point: the largest that fits the widest crossbar matrix
    (``nn.smallnets.weight_ranges``) in 8-bit codes (``crossbar.quant.dfp_frac_bits``)."""
    import torch

    from crossbar.quant import dfp_frac_bits
    from nn.smallnets import load_model, weight_ranges

    model, _, _ = load_model(model_dir)
    return int(dfp_frac_bits(torch.tensor(max(weight_ranges(model).values())), 8))


def ensure_model(name: str, cfg: Any, models_dir: Path, glue_dir: Any, progress: bool = True) -> Path:
    """Train ``cfg`` into ``models_dir/name`` unless a model trained with the same config is there."""
    from nn.smallnets import is_smallnet_dir, train

    out = models_dir / name
    if is_smallnet_dir(out):
        have = type(cfg).from_dict(json.loads((out / "smallnet.json").read_text())["train"])
        if have != cfg:
            raise SystemExit(f"{out} holds a model trained with another config; remove it or use --models-dir")
        print(f"model {name}: cached ({out})", flush=True)
        return out
    print(f"model {name}: training ...", flush=True)
    meta = train(cfg, out, glue_dir=glue_dir, progress=progress)
    print(f"model {name}: dev accuracy {meta['dev_accuracy']:.4f}, {meta['wall_s']:.0f} s", flush=True)
    return out


def run(net: str, out: Path, models_dir: Path, *, glue_dir: Any, trials: int, tiny: bool, progress: bool) -> dict[str, Path]:
    """Train (or reuse) the three models of ``net`` and run their studies; ``{variant: results.csv}``."""
    from nn.smallnets import TrainConfig
    from nn.study import StudySpec, run_study

    spec_net = NETS[net]
    out.mkdir(exist_ok=True)
    models_dir.mkdir(parents=True, exist_ok=True)
    csvs = {}
    dirs: dict[str, Path] = {}
    for variant, extra in VARIANTS[net].items():
        kw = {**spec_net["train"], **extra, **(TINY_TRAIN[net] if tiny else {})}
        if kw.get("init") is not None:
            kw["init"] = str(dirs[kw["init"]])
        name = spec_net["stem"] + ("" if variant == "normal" else f"-{variant.replace('_', '-')}") + ("-tiny" if tiny else "")
        model = dirs[variant] = ensure_model(name, TrainConfig.from_dict(kw), models_dir, glue_dir, progress)
        frac = static_frac_bits(model)
        spec = StudySpec.from_dict({
            "name": f"seed paper 2 on {net}: {variant}", "model": str(model),
            "glue_dir": None if glue_dir is None else str(glue_dir), "preset": "default",
            "set": ['target_modules=[".*"]', "exclude_modules=[]", *BASE_SET],
            "axes": TINY_AXES if tiny else AXES, "tasks": [spec_net["task"]],
            "methods": {"dfp": [], "static_fp": ["crossbar.weight_format=static", f"crossbar.weight_frac_bits={frac}"]},
            "trials": trials, "seed": 0, "max_examples": 40 if tiny else None,
            "max_length": TINY_TRAIN["lstm"]["max_length"] if tiny and net == "lstm" else spec_net["max_length"],
            "batch_size": 128,
        })
        res = run_study(spec, out / variant, progress=progress, plot=not tiny)
        csvs[variant] = Path(res["csv"])
    return csvs


def _get(d: dict, path: str) -> Any:
    for k in path.split("."):
        d = d[k]
    return d


def table(csvs: dict[str, Path], models_dir: Path | None = None) -> str:
    """The comparison table (markdown) from the studies' results (see the module docstring)."""
    from nn.evaluate import read_results

    axes = list(AXES)
    acc: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    digital: dict[str, float] = {}
    for variant, path in csvs.items():
        for r in read_results(path):
            if r["mode"] == "digital":
                digital[variant] = r["accuracy"]
                continue
            point = tuple(_get(json.loads(r["sim_config"]), a) for a in axes)
            acc[point][f"{variant}/{r['method']}"].append(r["accuracy"])
    cols = [f"{v}/{m}" for v in csvs for m in ("static_fp", "dfp")]
    lines = ["digital accuracy: " + ", ".join(f"{v} {digital.get(v, float('nan')):.4f}" for v in csvs), ""]
    lines.append("| sigma | bits/cell | on/off | " + " | ".join(cols) + " |")
    lines.append("|---:|---:|---:|" + "---:|" * len(cols))
    means: dict[str, list[float]] = {c: [] for c in cols}
    for point in sorted(acc):
        vals = {c: acc[point][c] for c in cols}
        for c in cols:
            means[c].append(float(np.mean(vals[c])) if vals[c] else float("nan"))
        cells = [f"{np.mean(v):.4f} +- {np.std(v, ddof=1) if len(v) > 1 else 0.0:.4f}" if v else "" for v in vals.values()]
        s, b, o = point
        lines.append(f"| {s:g} | {b} | {o:g} | " + " | ".join(cells) + " |")
    lines.append("| mean | | | " + " | ".join(f"{np.nanmean(means[c]):.4f}" for c in cols) + " |")
    lines.append("")
    points = sorted(acc)
    subsets = [("all points", np.ones(len(points), bool)),
               ("the 12 points of the MiniLM table (on/off 10 and 100)", np.array([p[2] >= 10 for p in points]))]
    if "normal/static_fp" in means:
        for label, keep in subsets:
            if not keep.any() or (label != "all points" and keep.all()):
                continue
            base = np.asarray(means["normal/static_fp"])[keep]
            lines += [f"over {label}: mean accuracy " + ", ".join(
                f"{c} {np.nanmean(np.asarray(means[c])[keep]):.4f}" for c in cols), ""]
            for c in cols:
                if c == "normal/static_fp":
                    continue
                g = np.asarray(means[c])[keep] / base - 1.0
                lines.append(f"* {c} vs normal/static_fp: mean relative accuracy gain {np.nanmean(g) * 100:+.1f} % "
                             f"(range {np.nanmin(g) * 100:+.1f} % .. {np.nanmax(g) * 100:+.1f} %) over {len(g)} points")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(net: str, argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=f"seed paper 2 on the {net.upper()} (see examples/paper2_smallnets.py)")
    p.add_argument("--out", type=Path, default=Path(f"results/paper2_{net}"), help="results directory (its parent must exist)")
    p.add_argument("--models-dir", type=Path, default=None, help="where the trained models are cached "
                   "(default ~/.cache/reram-cosim/models; --tiny: <out>/models)")
    p.add_argument("--glue-dir", type=Path, default=None, help="GLUE directory holding SST-2/ (the LSTM)")
    p.add_argument("--trials", type=int, default=4, help="chips per point")
    p.add_argument("--threads", type=int, default=1, help="torch threads (results are pinned to it)")
    p.add_argument("--tiny", action="store_true", help="a smoke test: tiny models, one point, seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--table-only", action="store_true", help="print the table of the studies already in --out")
    a = p.parse_args(argv)
    import torch

    from nn.models import cache_dir

    torch.set_num_threads(a.threads)
    os.environ.setdefault("RERAM_COSIM_NUM_THREADS", str(a.threads))
    if net == "lstm" and a.glue_dir is None:
        env = os.environ.get("GLUE_DIR")
        a.glue_dir = Path(env) if env else None
    if a.glue_dir is not None and not a.glue_dir.is_dir():
        raise SystemExit(f"--glue-dir {a.glue_dir} does not exist")
    if not a.out.parent.is_dir():
        raise SystemExit(f"the parent of --out ({a.out.parent}) does not exist")
    if a.table_only:
        print(table({v: a.out / v / "results.csv" for v in VARIANTS[net] if (a.out / v / "results.csv").is_file()}))
        return
    models = a.models_dir or (a.out / "models" if a.tiny else cache_dir() / "models")
    a.out.mkdir(exist_ok=True)
    csvs = run(net, a.out, models, glue_dir=a.glue_dir, trials=1 if a.tiny else a.trials, tiny=a.tiny, progress=not a.quiet)
    print()
    print(table(csvs))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in NETS:
        sys.exit("usage: python examples/paper2_smallnets.py {cnn,lstm} [options]")
    main(sys.argv[1], sys.argv[2:])
