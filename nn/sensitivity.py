"""Per-layer weights of the fault-map-aware placement cost, estimated on the model.

The placement (:func:`mapping.faultaware.place_layer`) chooses where each weight's residual error
lands. What that error costs the model is, to second order and with the diagonal (Fisher)
approximation, ``sum_{o,i} E[(dL/dy_o)**2] E[x_i**2] r_oi**2`` for a layer ``y = W x``: the
mean square gradient of the loss with respect to each output times the mean square of each
input. This module measures both on a few training batches of the digital model:

* :func:`layer_sensitivity`: ``{matrix name: LayerSensitivity(in_sq, out_fisher)}`` for every
  crossbar matrix of a patched model, over the non-padded tokens (a Linear on tokens; all rows of
  a convolution's patches or an RNN's time steps). ``out_fisher`` is the
  *expected* Fisher over the model's own predictive distribution (for each class ``c``,
  ``p_c (d(-log p_c)/dy_o)**2`` summed over classes; regression: ``(d yhat / dy_o)**2``), so
  it does not depend on whether the training labels are fitted; each example's gradient is
  squared separately (a token's output only reaches its own example's loss).
* :func:`training_batches`: a stratified subset of the task's training split (``default_rng``
  of a fixed seed: the same rows every run), tokenized like the evaluation.
* :func:`attach_placement_weights`: one :class:`mapping.faultaware.FaultAwareMapper` per layer
  with its ``in_weight`` / ``out_weight`` (normalized to mean 1; the placement only compares
  costs within a layer), as ``SimConfig.faultaware.placement_weighting`` asks ("activation":
  ``in_sq``; "fisher": both). Estimated once per model and weights (cached).
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable, Iterable

import numpy as np
import torch

__all__ = [
    "LayerSensitivity",
    "layer_sensitivity",
    "hf_logits",
    "hf_token_mask",
    "layer_inputs",
    "training_batches",
    "attach_placement_weights",
    "N_EXAMPLES",
]

#: training examples the placement weights are estimated on (stratified, seed 0)
N_EXAMPLES = 256
_BATCH = 32

#: model -> {weights fingerprint: {name: LayerSensitivity}}
_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    """One layer's ``in_sq`` ``(in,)``: mean square input ``E[x_i**2]``, and ``out_fisher``
    ``(out,)``: mean square loss gradient ``E[(dL/dy_o)**2]`` (expected Fisher), both over the
    non-padded tokens of the batches, float64."""

    in_sq: np.ndarray
    out_fisher: np.ndarray
    tokens: int


def hf_logits(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """A GLUE classifier's logits ``(n, classes)`` on ``batch`` (keyword inputs; ``labels``
    ignored): the default ``forward`` of :func:`layer_sensitivity`."""
    return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def hf_token_mask(batch: dict[str, Any]) -> torch.Tensor:
    """The flattened ``attention_mask`` of a tokenized batch (all ones without one): the default
    ``row_mask`` of :func:`layer_sensitivity`."""
    am = batch.get("attention_mask")
    return (am if am is not None else torch.ones_like(batch["input_ids"])).reshape(-1).bool().cpu()


def layer_inputs(model: torch.nn.Module, enc: Any, names: Iterable[str], n_examples: int, *,
                 batch_size: int = 32) -> dict[str, torch.Tensor]:
    """The inputs of modules ``names`` of a GLUE classifier on the first ``n_examples`` rows of
    ``enc`` (a :class:`nn.glue.Encoded`), real tokens only (:func:`hf_token_mask`):
    ``{name: (tokens, in_features)}``, in row order. Real activations for layer-level studies
    (the examples' retention and relaxation measurements); no gradients."""
    names = list(names)
    mods = dict(model.named_modules())
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    mask: list[torch.Tensor] = []

    def hook(name: str):
        def f(_m, inp, _out):
            x = inp[0].detach()
            got[name].append(x.reshape(-1, x.shape[-1])[mask[0].to(x.device)])
        return f

    hs = [mods[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for s in range(0, n_examples, batch_size):
                b = enc.batch(np.arange(s, min(s + batch_size, n_examples)))
                b.pop("labels", None)
                mask[:] = [hf_token_mask(b)]
                model(**b)
    finally:
        for h in hs:
            h.remove()
    return {n: torch.cat(v) for n, v in got.items()}


def layer_sensitivity(model: torch.nn.Module, batches: Iterable[Any], *,
                      forward: Callable[[torch.nn.Module, Any], torch.Tensor] = hf_logits,
                      row_mask: Callable[[Any], Any] = hf_token_mask) -> dict[str, LayerSensitivity]:
    """:class:`LayerSensitivity` of every crossbar matrix of ``model`` (patched; read digitally
    here), from ``batches``. ``forward(model, batch) -> logits (n, classes)`` runs the model
    (default :func:`hf_logits`: a GLUE classifier's keyword batches); ``row_mask(batch)`` gives
    the rows that count (default :func:`hf_token_mask`: the attention mask; None: all). A matrix
    whose product rows are the mask's rows (a Linear on tokens) counts only the masked rows, any
    other (convolution patches, RNN time steps) all of its rows.
    Each matrix's products are observed through its ``observer`` hook
    (:class:`nn.crossbar_matrix.CrossbarMatrix`). The model's gradients are left cleared, its
    training mode and the layers' simulated flags unchanged."""
    from nn.crossbar_linear import crossbar_matrices, crossbar_modules

    mats = crossbar_matrices(model)
    if not mats:
        raise ValueError("the model has no crossbar modules (CrossbarLinear, ...); call patch_model first")
    layers = crossbar_modules(model)
    was_sim = {n: m.simulated for n, m in layers.items()}
    req = {n: m.parameter.requires_grad for n, m in mats.items()}
    was_train = model.training
    in_acc = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in mats.items()}
    out_acc = {n: torch.zeros(m.out_features, dtype=torch.float64) for n, m in mats.items()}
    rows_in = dict.fromkeys(mats, 0)
    outs: dict[str, list[torch.Tensor]] = {}
    mask_now: list[Any] = [None]
    record_in = [False]

    def rows(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().reshape(-1, t.shape[-1]).to(torch.float64)
        m = mask_now[0]
        return t[m] if m is not None and t.shape[0] == m.numel() else t

    def observe(mat: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        if record_in[0]:
            r = rows(x)
            in_acc[mat.name] += (r**2).sum(0).cpu()
            rows_in[mat.name] += r.shape[0]
        if y.requires_grad:
            y.retain_grad()
            outs.setdefault(mat.name, []).append(y)

    try:
        model.eval()
        for m in layers.values():
            m.simulated = False
        for m in mats.values():
            m.parameter.requires_grad_(True)  # the outputs need a graph even for a frozen model
            m.observer = observe
        for b in batches:
            mask_now[0] = row_mask(b)
            with torch.no_grad():
                record_in[0] = True
                logits = forward(model, b)
                record_in[0] = False
            n_out = logits.shape[-1]
            probs = logits.softmax(-1) if n_out > 1 else None
            for c in range(n_out):
                model.zero_grad(set_to_none=True)
                outs.clear()
                with torch.enable_grad():
                    lg = forward(model, b)
                    if probs is None:
                        loss = lg.sum()  # regression: d yhat / dy (Gauss-Newton, unit noise)
                    else:  # sqrt(p_c) so that the squared gradients carry the weight p_c
                        loss = -(lg.log_softmax(-1)[:, c] * probs[:, c].sqrt()).sum()
                    loss.backward()
                for n, ys in outs.items():
                    for o in ys:
                        if o.grad is not None:
                            out_acc[n] += (rows(o.grad) ** 2).sum(0).cpu()
        if not any(rows_in.values()):
            raise ValueError("layer_sensitivity got no tokens (no batches, or all padding)")
    finally:
        outs.clear()
        model.zero_grad(set_to_none=True)
        for n, m in mats.items():
            m.observer = None
            m.parameter.requires_grad_(req[n])
        for n, m in layers.items():
            m.simulated = was_sim[n]
        model.train(was_train)
    return {n: LayerSensitivity(in_sq=(in_acc[n] / max(1, rows_in[n])).numpy(),
                                out_fisher=(out_acc[n] / max(1, rows_in[n])).numpy(), tokens=rows_in[n]) for n in mats}


def training_batches(model_dir: str, task: str, glue_dir: Any, *, max_length: int = 128,
                     n_examples: int = N_EXAMPLES, batch_size: int = _BATCH, seed: int = 0,
                     device: Any = "cpu") -> list[dict[str, Any]]:
    """``n_examples`` rows of ``task``'s training split (stratified, ``default_rng(seed)``),
    tokenized with the model's tokenizer at ``max_length``, as padded batches."""
    from transformers import AutoTokenizer

    from nn.glue import get_task, load_split, subsample, tokenize
    from nn.models import resolve_model_dir

    t = get_task(task)
    data = subsample(load_split(t, "train", glue_dir), n_examples, np.random.default_rng(seed))
    tok = AutoTokenizer.from_pretrained(resolve_model_dir(model_dir))
    enc = tokenize(data, tok, max_length)
    return [enc.batch(np.arange(i, min(len(enc), i + batch_size)), device) for i in range(0, len(enc), batch_size)]


def _normalized(v: np.ndarray) -> np.ndarray:
    m = float(np.mean(v))
    return v / m if m > 0 else np.ones_like(v)


def attach_placement_weights(model: torch.nn.Module, sim_cfg: Any, batches: Any, *,
                             forward: Callable[[torch.nn.Module, Any], torch.Tensor] = hf_logits,
                             row_mask: Callable[[Any], Any] = hf_token_mask) -> dict[str, LayerSensitivity]:
    """Give every crossbar matrix of ``model`` a :class:`mapping.faultaware.FaultAwareMapper`
    with the placement weights ``sim_cfg.faultaware.placement_weighting`` asks for (nothing to
    do for "none" or without placement). ``batches``: the batches, or a callable returning them
    (called only when the estimate is not cached for these weights). A mapper a protection set
    before keeps its protection config. ``forward``, ``row_mask``: see :func:`layer_sensitivity`. Returns the
    sensitivities (empty when nothing to do)."""
    from mapping.faultaware import FaultAwareMapper
    from nn.crossbar_linear import crossbar_matrices

    fa = sim_cfg.faultaware
    if not fa.placement or fa.placement_weighting == "none":
        return {}
    mods = crossbar_matrices(model)
    key = tuple((n, m.weight.data_ptr(), m.weight._version, tuple(m.weight.shape)) for n, m in mods.items())
    per_model = _CACHE.setdefault(model, {})
    sens = per_model.get(key)
    if sens is None:
        sens = layer_sensitivity(model, batches() if callable(batches) else batches, forward=forward,
                                 row_mask=row_mask)
        per_model.clear()
        per_model[key] = sens
    for n, m in mods.items():
        prot = getattr(m.remap, "prot", None)
        m.remap = FaultAwareMapper(fa, prot, in_weight=_normalized(sens[n].in_sq),
                                   out_weight=_normalized(sens[n].out_fisher))
    return sens
