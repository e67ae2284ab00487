"""The cost of running a patched model on its chip: energy, latency and area per inference.

:func:`cost_model` takes a model patched and programmed as for evaluation (the same
:class:`nn.sim.SimConfig`, any protection from :func:`nn.protect.protect_model`, fault-map-aware
mapping through ``SimConfig.faultaware``), runs it *digitally* on real inputs with a forward
pre-hook on every crossbar layer that turns the layer's inputs into the DAC codes the chip would
apply (:meth:`crossbar.engine.ProgrammedMatrix.dac`) and keeps their drive statistics
(:func:`mapping.cost.drive_stats`), counts the MVMs per inference (tokens of the padded sequence),
reads each layer's programmed conductances from the engine (:meth:`ProgrammedMatrix.cells`) and
prices it all with :func:`mapping.cost.cost_layers`. Protection enters through the layout (pruned
lines take no cells, copies are converted when the read votes over them) and through the voting
and MSB-decode logic.

Operations outside the crossbars are reported apart: the attention score and context matmuls of
BERT-family models (``2 x layers x seq^2 x hidden`` multiply-accumulates) as
``attention_digital`` energy at Horowitz's 8-bit multiply (0.2 pJ) and 32-bit add (0.1 pJ) at
45 nm, scaled to the node (:func:`mapping.technology.horowitz_scale`).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from mapping.cost import CostReport, DriveStats, LayerWork, cost_layers, drive_stats, read_columns, row_conductance
from mapping.technology import TechConfig, horowitz_scale

__all__ = ["cost_model", "cost_from_dir", "random_classifier", "sentence_batches", "attention_macs", "spare_columns",
           "accuracy_vs_energy", "accuracy_energy_from_results"]

#: Horowitz, ISSCC 2014 (45 nm, 0.9 V): 8-bit multiply and 32-bit add, J
HOROWITZ_MULT8_J = 0.2e-12
HOROWITZ_ADD32_J = 0.1e-12


def attention_macs(model: torch.nn.Module, seq_len: int) -> int:
    """Multiply-accumulates of the attention matmuls (scores and context) per sequence:
    ``2 x num_hidden_layers x seq_len^2 x hidden_size`` for a BERT-family config, 0 otherwise."""
    c = getattr(model, "config", None)
    layers, hidden = getattr(c, "num_hidden_layers", None), getattr(c, "hidden_size", None)
    if not layers or not hidden:
        return 0
    return 2 * int(layers) * int(seq_len) ** 2 * int(hidden)


def spare_columns(tile_rows: int, tile_cols: int, rate: float, k_sigma: float = 3.0) -> int:
    """Spare bit lines per tile that replace every column holding a stuck cell at fault rate
    ``rate`` (random faults), with ``k_sigma`` binomial standard deviations of margin:
    ``n p + k sqrt(n p (1 - p))`` with ``p = 1 - (1 - rate)^tile_rows`` and ``n`` the tile's
    columns plus the spares themselves (solved by iteration). The redundancy the seed paper's
    zero-space methods are an alternative to."""
    import math

    p = 1.0 - (1.0 - rate) ** tile_rows
    s = 0
    for _ in range(100):
        n = tile_cols + s
        need = math.ceil(n * p + k_sigma * math.sqrt(n * p * (1 - p)))
        if need <= s:
            return s
        s = need
    return s


@torch.no_grad()
def cost_model(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    tech: TechConfig,
    *,
    seq_len: int | None = None,
    meta: dict[str, Any] | None = None,
) -> CostReport:
    """The cost per inference of a patched, programmed model (:mod:`nn.crossbar_linear`).

    ``batches``: model inputs (keyword dicts, e.g. tokenized sentences padded to ``seq_len``);
    every crossbar layer's inputs on them give its drive statistics, and its MVMs per inference
    are its input vectors divided by the number of sequences. ``seq_len``: for the digital
    attention count (default: the batches' sequence length).
    """
    from mapping.protection import ProtectedRead
    from nn.crossbar_linear import crossbar_matrices, crossbar_modules

    # every crossbar matrix (a Linear, a convolution group, an RNN matrix) and its own inputs:
    # the matrices' observer hook sees each product's input rows (im2col patches, time steps)
    mods = crossbar_matrices(model)
    layers = crossbar_modules(model)
    if not mods:
        raise ValueError("the model has no crossbar layers; patch_model and program_model first")
    for n, m in mods.items():
        if m.programmed is None:
            raise ValueError(f"{n}: not programmed; call program_model before cost_model")
    stats: dict[str, DriveStats | None] = dict.fromkeys(mods)
    vectors = dict.fromkeys(mods, 0)

    def observe(mat: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        name = mat.name
        pm = mat.programmed
        x2 = x.detach().reshape(-1, x.shape[-1]).to(pm.device)
        codes, _ = pm.dac(x2.to(pm.dtype))
        st = drive_stats(codes, pm.cfg, tech)
        stats[name] = st if stats[name] is None else stats[name].merge(st)
        vectors[name] += x2.shape[0]

    was = {n: m.simulated for n, m in layers.items()}
    n_seq, L = 0, seq_len
    try:
        for m in layers.values():
            m.simulated = False
        for m in mods.values():
            m.observer = observe
        model.eval()
        for b in batches:
            ids = b.get("input_ids")
            first = next(v for k, v in b.items() if k != "labels")
            n_seq += int(first.shape[0]) if first.ndim > 1 else 1  # sequences / images of the batch
            if L is None and ids is not None:
                L = int(ids.shape[1])
            model(**{k: v for k, v in b.items() if k != "labels"})
    finally:
        for m in mods.values():
            m.observer = None
        for n, m in layers.items():
            m.simulated = was[n]
    if n_seq == 0:
        raise ValueError("cost_model got no batches")
    works = []
    for n, m in mods.items():
        pm = m.programmed
        if stats[n] is None:
            continue  # a layer the model never ran (shared or unused): no reads
        voted = isinstance(m.read_fn, ProtectedRead)
        prot = m.read_fn.prot if voted else None
        cols = read_columns(pm.layout, copies_read=voted)
        g = pm.cells().g_s
        works.append(LayerWork(
            name=n, cfg=pm.cfg, layout=pm.layout, in_features=pm.in_features, out_features=pm.out_features,
            mvms=vectors[n] / n_seq, stats=stats[n], g_row_s=row_conductance(g, pm.layout, cols), voted=voted,
            vote_replicas=(prot.n_copies + 1) if voted and prot.duplicate else 0,
            msb_copies=prot.msb_copies if voted and prot.msb_embed else 0,
        ))
        del g
    extra = {}
    macs = attention_macs(model, L or 0)
    if macs:
        extra["attention_digital"] = macs * (HOROWITZ_MULT8_J + HOROWITZ_ADD32_J) * horowitz_scale(tech.node_m, tech.vdd_v)
    info = {"sequences_measured": n_seq, "seq_len": L, "attention_macs": macs}
    info.update(meta or {})
    return cost_layers(works, tech, extra_energy_j=extra, meta=info)


def sentence_batches(model_dir: Any, tokenizer: Any, *, task: str = "sst2", glue_dir: Any = None, split: str = "dev",
                     n: int = 64, seq_len: int = 128, batch_size: int = 16, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` real sentences of a GLUE split (a seeded random subset), tokenized and padded to
    exactly ``seq_len`` tokens (what a chip with a ``seq_len`` input buffer processes)."""
    from nn.glue import load_split, subsample, tokenize

    sp = subsample(load_split(task, split, glue_dir), n, np.random.default_rng(seed))
    enc = tokenize(sp, tokenizer, max_length=seq_len)
    out = []
    for i in range(0, len(enc), batch_size):
        b = enc.batch(np.arange(i, min(len(enc), i + batch_size)))
        pad = seq_len - b["input_ids"].shape[1]
        b = {k: (torch.nn.functional.pad(v, (0, pad), value=enc.pad_id if k == "input_ids" else 0) if v.ndim == 2 else v)
             for k, v in b.items() if k != "labels"}
        out.append(b)
    return out


def cost_from_dir(model: Any, sim_cfg: Any, tech: TechConfig, *, task: str = "sst2", glue_dir: Any = None,
                  seq_len: int = 128, n_sentences: int = 64, protection: Any = None, seed: int = 0,
                  random_init: bool = False) -> CostReport:
    """The cost of a model directory (or hub id) on the chip ``sim_cfg`` with ``tech``: load,
    patch, protect (``protection``: a :class:`mapping.protection.ProtectionConfig`, masks read
    beside the model when it prunes), program one chip from ``seed`` and cost it on
    ``n_sentences`` real sentences of ``task`` padded to ``seq_len``. ``random_init``: a model
    of the directory's config with freshly initialized weights (shapes only; seeded)."""
    from nn.crossbar_linear import patch_model, program_model
    from nn.models import ModelLoadError, load_classifier

    if random_init:
        net, tok = random_classifier(model, task, seed)
    else:
        net, tok = load_classifier(model, None, task=task)
    n_pos = getattr(net.config, "max_position_embeddings", None)
    if n_pos is not None and seq_len > n_pos:
        raise ModelLoadError(f"seq_len {seq_len} is longer than the {n_pos} positions of {model}")
    patch_model(net, sim_cfg)
    if protection is not None and protection.any:
        from nn.protect import make_prepare

        make_prepare(protection, model)(net, sim_cfg)
    program_model(net, np.random.default_rng(seed))
    batches = sentence_batches(model, tok, task=task, glue_dir=glue_dir, n=n_sentences, seq_len=seq_len, seed=seed)
    meta = {"model": str(model), "task": task, "seq_len": seq_len, "sentences": n_sentences,
            "protection": protection.to_dict() if protection is not None else None, "random_init": random_init}
    return cost_model(net, batches, tech, seq_len=seq_len, meta=meta)


def random_classifier(model: Any, task: str, seed: int) -> tuple[torch.nn.Module, Any]:
    """A classifier of ``model``'s config (a directory or hub id holding ``config.json`` and a
    tokenizer; weights are not read) with freshly initialized weights drawn from ``seed`` (the
    global torch generator is forked, so the caller's stream is untouched) and ``task``'s label
    count: what the cost of a model's shapes needs (e.g. BERT-base without its checkpoint)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from nn.glue import get_task
    from nn.models import ModelLoadError, resolve_model_dir

    where = resolve_model_dir(model)
    try:
        conf = AutoConfig.from_pretrained(where)
        tok = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load a model config and tokenizer from {model}: {first}") from exc
    conf.num_labels = get_task(task).num_labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = AutoModelForSequenceClassification.from_config(conf)
    return net.eval(), tok


def _dotted(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def accuracy_vs_energy(results_csv: Any, axis: str, energies: dict[Any, float], *, metric: str = "score",
                       task: str | None = None) -> tuple[list[dict[str, Any]], float | None]:
    """Join a results file (:func:`nn.evaluate.read_results`, e.g. a study's ``results.csv``) with
    the energy per inference of each point of one sweep axis.

    ``axis``: a :class:`nn.sim.SimConfig` key path (``crossbar.adc_bits``), read from each
    simulated row's ``sim_config``; ``energies``: energy per inference, J, keyed by
    ``(method, value)`` or by the axis value alone. Returns the points of
    :func:`mapping.cost_plots.plot_accuracy_energy` (``method, value, energy_j, mean, std, n``;
    points without an energy are left out) and the mean digital score (None without digital
    rows)."""
    import json
    import math

    from device.errors import UserError
    from nn.evaluate import read_results

    groups: dict[tuple[str, Any], list[float]] = {}
    digital = []
    for r in read_results(results_csv):
        if task is not None and r["task"] != task:
            continue
        v = r.get(metric)
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            continue
        if r["mode"] != "simulated":
            digital.append(float(v))
            continue
        val = _dotted(json.loads(r["sim_config"]), axis)
        groups.setdefault((r["method"], val), []).append(float(v))
    if not groups:
        raise UserError(f"{results_csv} holds no simulated rows with a {metric!r} score")
    points = []
    for (method, val), xs in groups.items():
        e = energies.get((method, val), energies.get(val))
        if e is None:
            continue
        a = np.asarray(xs)
        points.append({"method": method, "value": val, "energy_j": float(e), "mean": float(a.mean()),
                       "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)})
    points.sort(key=lambda p: (p["method"], p["energy_j"]))
    return points, (float(np.mean(digital)) if digital else None)


def accuracy_energy_from_results(results_csv: Any, axis: str, model: Any, tech: TechConfig, *, task: str | None = None,
                                 glue_dir: Any = None, seq_len: int = 128, n_sentences: int = 32, seed: int = 0,
                                 progress: bool = False) -> tuple[list[dict[str, Any]], float | None]:
    """:func:`accuracy_vs_energy` with the energies costed here: each (method, axis value) of the
    simulated rows of ``results_csv`` is costed on the very chip its rows ran (their
    ``sim_config``) with the method's protection when the method is a bundle of
    :data:`nn.protect.PROTECTION_METHODS` (other methods: no protection), by
    :func:`cost_from_dir` on ``model``. Chips that cost the same (same config and protection) are
    costed once."""
    import json

    from device.errors import UserError
    from nn.evaluate import read_results
    from nn.protect import method_protection
    from nn.sim import SimConfig

    todo: dict[tuple[str, Any], tuple[str, str, str]] = {}
    for r in read_results(results_csv):
        if r["mode"] != "simulated" or (task is not None and r["task"] != task):
            continue
        cfg = json.loads(r["sim_config"])
        key = (r["method"], _dotted(cfg, axis))
        todo.setdefault(key, (r["sim_config"], r["method"], r["task"]))
    if not todo:
        raise UserError(f"{results_csv} holds no simulated rows" + (f" of task {task}" if task else ""))
    done: dict[tuple[str, str], float] = {}
    energies: dict[Any, float] = {}
    keys = sorted(todo, key=str)
    if progress:
        from tqdm import tqdm

        keys = tqdm(keys, desc="cost per point", file=__import__("sys").stderr)
    for key in keys:
        cfg_json, method, row_task = todo[key]
        prot = method_protection(method) if method in _protection_methods() else None
        ck = (cfg_json, prot.to_json() if prot is not None else "", row_task)
        if ck not in done:
            sim = SimConfig.from_dict(json.loads(cfg_json))
            done[ck] = cost_from_dir(model, sim, tech, task=row_task, glue_dir=glue_dir, seq_len=seq_len,
                                     n_sentences=n_sentences, protection=prot, seed=seed).energy_j
        energies[key] = done[ck]
    return accuracy_vs_energy(results_csv, axis, energies, task=task)


def _protection_methods() -> tuple[str, ...]:
    from nn.protect import PROTECTION_METHODS

    return tuple(PROTECTION_METHODS)
