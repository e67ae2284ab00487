"""Switch the zero-space fault protections (:mod:`mapping.protection`) on for a patched model.

From Python::

    from mapping.protection import ProtectionConfig
    from nn.crossbar_linear import patch_model, program_model, set_simulated
    from nn.protect import protect_model

    patch_model(model, sim_cfg)
    masks = load_masks(model_dir / "pruning_masks.safetensors")           # prune only
    pp = protect_model(model, ProtectionConfig(prune=True, duplicate=True, msb_embed=True), masks)
    print(pp.summary())                                                 # tiles per layer, copies
    program_model(model, rng); set_simulated(model, True)               # reads now vote

From a study spec (:mod:`nn.study`), a method named after a key of :data:`PROTECTION_METHODS`
(``unprotected``, ``prune``, ``prune+dup``, ``prune+dup+msb``, ``msb``, ...) gets that
protection; any method may add ``"protection.<field>=<value>"`` overrides (applied on top of the
named bundle, or of no protection), e.g.
``"methods": {"prune+dup": [], "dup3_fa": ["protection.prune=true", "protection.duplicate=true",
"protection.vote=fault_aware"]}``. With ``prune`` on, the masks are read from
``<model dir>/pruning_masks.safetensors`` (written by :func:`nn.pruning.save_masks`); a clear
error says so when the file is absent.

Fault-map-aware mapping (:mod:`mapping.faultaware`, ``SimConfig.faultaware``) combines with every
protection: a method adds ``"faultaware.reencode=true"`` (and ``"faultaware.placement=true"``) to
its overrides, e.g. ``"msb+reencode": ["protection.msb_embed=true", "faultaware.reencode=true"]``.
:func:`protect_model` then gives each layer a :class:`mapping.faultaware.FaultAwareMapper` that
knows the protection: the slices a read votes over keep their digits (their faults are the
vote's), every other slice is re-encoded around the chip's stuck cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from device.config import apply_overrides
from nn.pruning import MASKS_FILE  # noqa: F401  (re-exported: the masks' file name)
from mapping.protection import ProtectedRead, ProtectionConfig, ProtectionError, ProtectionPlan, build_protection

__all__ = [
    "MASKS_FILE",
    "PROTECTION_METHODS",
    "protect_model",
    "masks_for",
    "method_protection",
    "make_prepare",
    "magnitude_masks",
    "gradient_sensitivity",
]


#: named bundles of protection settings a study method can be called by
PROTECTION_METHODS: dict[str, Callable[[], ProtectionConfig]] = {
    "unprotected": lambda: ProtectionConfig(),
    "prune": lambda: ProtectionConfig(prune=True),
    "dup": lambda: ProtectionConfig(duplicate=True),
    "prune+dup": lambda: ProtectionConfig(prune=True, duplicate=True),
    "prune+dup+fault_aware": lambda: ProtectionConfig(prune=True, duplicate=True, vote="fault_aware"),
    "msb": lambda: ProtectionConfig(msb_embed=True),
    "msb2": lambda: ProtectionConfig(msb_embed=True, msb_copies=2),
    "prune+msb": lambda: ProtectionConfig(prune=True, msb_embed=True),
    "prune+dup+msb": lambda: ProtectionConfig(prune=True, duplicate=True, msb_embed=True),
}


def method_protection(name: str, overrides: list[str] | tuple[str, ...] = ()) -> ProtectionConfig | None:
    """The protection of a study method: the named bundle (if ``name`` is one) with
    ``protection.*`` overrides applied; None when neither applies (a plain method)."""
    prot_over = [o[len("protection."):] for o in overrides if o.startswith("protection.")]
    if name not in PROTECTION_METHODS and not prot_over:
        return None
    base = PROTECTION_METHODS[name]() if name in PROTECTION_METHODS else ProtectionConfig()
    try:
        return apply_overrides(base, prot_over)
    except ValueError as exc:
        raise ProtectionError(f"method {name!r}: {exc}") from None


def masks_for(model_dir: str | Path) -> dict[str, Any]:
    """The row/column masks saved beside a model (``<model_dir>/pruning_masks.safetensors``)."""
    from nn.pruning import load_masks

    p = Path(model_dir) / MASKS_FILE
    if not p.is_file():
        raise ProtectionError(
            f"protection prune=True needs the learned row/column masks {p}, which does not exist: fine-tune with "
            "row/column pruning (nn.pruning.RowColPruner, saved with nn.pruning.save_masks) or switch prune off"
        )
    return load_masks(p)


def magnitude_masks(model_or_weights: Any, sparsity: float, *, rows_share: float = 0.5) -> dict[str, Any]:
    """Row/column masks by L2 norm (a baseline for when no learned masks exist).

    ``sparsity`` in [0, 1): fraction of each layer's rows + columns removed, ``rows_share`` of
    them rows (the lines with the smallest norms go). ``model_or_weights``: a patched model (its
    crossbar layers) or ``{name: weight (out, in)}``.
    """
    from device.config import check_range
    from nn.pruning import RowColMask

    check_range("sparsity", sparsity, 0.0, 1.0, hi_open=True)
    check_range("rows_share", rows_share, 0.0, 1.0)
    if isinstance(model_or_weights, dict):
        weights = model_or_weights
    else:
        from nn.crossbar_linear import crossbar_matrices

        weights = {n: m.weight for n, m in crossbar_matrices(model_or_weights).items()}
        if not weights:
            raise ValueError("the model has no crossbar layers; patch_model first or pass {name: weight}")
    out = {}
    for n, w in weights.items():
        w = w.detach().float().cpu()
        o, i = w.shape
        k = round(sparsity * (o + i))
        kr = min(i - 1, round(k * rows_share))
        kc = min(o - 1, k - kr)
        rows = torch.ones(i, dtype=torch.bool)
        cols = torch.ones(o, dtype=torch.bool)
        rows[w.norm(dim=0).argsort(stable=True)[:kr]] = False
        cols[w.norm(dim=1).argsort(stable=True)[:kc]] = False
        out[n] = RowColMask(rows, cols)
    return out


def protect_model(
    model: torch.nn.Module,
    prot: ProtectionConfig,
    masks: dict[str, Any] | None = None,
    *,
    sensitivity: dict[str, Any] | None = None,
) -> ProtectionPlan:
    """Apply ``prot`` to a patched model: its mapping plan (:func:`nn.crossbar_linear.apply_plan`)
    and, when copies vote, the protected read (:func:`nn.crossbar_linear.set_read_fn`). Call
    before :func:`nn.crossbar_linear.program_model`. Returns the plan with its report.

    With ``prune`` the pruned weights must already be zero (a checkpoint saved after
    :meth:`nn.pruning.RowColPruner.finalize`; else :func:`nn.pruning.apply_masks`).
    """
    from nn.crossbar_linear import apply_plan, crossbar_matrices, set_read_fn

    mods = crossbar_matrices(model)
    if not mods:
        raise ValueError("the model has no crossbar modules (CrossbarLinear, ...); call patch_model first")
    cfgs = {id(m.sim_cfg): m.sim_cfg for m in mods.values()}
    if len(cfgs) != 1:
        raise ValueError("protect_model needs one sim config for all crossbar layers")
    sim_cfg = next(iter(cfgs.values()))
    if prot.prune and masks is not None:
        for n, mk in masks.items():
            if n in mods:
                w = mods[n].weight.detach()
                keep = mk.weight_mask().to(w.device)
                if keep.shape == w.shape and bool((w[~keep] != 0).any()):
                    raise ProtectionError(
                        f"{n}: the masks prune weights that are not zero in the model; zero them first "
                        "(nn.pruning.apply_masks) or load the checkpoint saved after RowColPruner.finalize"
                    )
    pp = build_protection(model, sim_cfg, masks, prot, sensitivity=sensitivity)
    apply_plan(model, pp.plan)
    fa = getattr(sim_cfg, "faultaware", None)
    if fa is not None and fa.any:  # fault-map-aware mapping that leaves the voted slices to the vote
        from mapping.faultaware import FaultAwareMapper

        mapper = FaultAwareMapper(fa, prot)
        for n in pp.plan.layers:
            mods[n].remap = mapper
    if prot.voting:
        for n in pp.plan.layers:
            set_read_fn(model, ProtectedRead(prot), [n])  # one reader (and cache) per layer
    else:
        set_read_fn(model, None)
    return pp


def make_prepare(prot: ProtectionConfig, model_dir: str | Path | None = None, *,
                 sensitivity: dict[str, Any] | None = None) -> Callable[[Any, Any], None]:
    """A ``prepare(model, sim_cfg)`` hook for :meth:`nn.evaluate.EvalSession.run`: masks from
    ``model_dir`` when ``prot.prune``, then :func:`protect_model`."""
    masks = None
    if prot.prune:
        if model_dir is None:
            raise ProtectionError("protection prune=True needs the model directory holding " + MASKS_FILE)
        masks = masks_for(model_dir)

    def prepare(model: Any, sim_cfg: Any) -> None:
        protect_model(model, prot, masks, sensitivity=sensitivity)

    return prepare


def gradient_sensitivity(model: torch.nn.Module, batches: Any, *, fisher: bool = False) -> dict[str, torch.Tensor]:
    """Per-weight sensitivity of the crossbar layers for ``criterion="magnitude_x_sensitivity"``.

    Runs the model digitally on ``batches`` (an iterable of keyword dicts with ``labels``, e.g.
    tokenized GLUE batches) and accumulates ``|dL/dW|`` (``fisher=False``) or ``(dL/dW)^2`` (the
    empirical Fisher diagonal) per batch. Returns ``{name: (out, in)}`` on the CPU; the model's
    gradients are left cleared and its training mode unchanged.
    """
    from nn.crossbar_linear import crossbar_matrices, crossbar_modules

    mods = crossbar_matrices(model)
    if not mods:
        raise ValueError("the model has no crossbar modules (CrossbarLinear, ...); call patch_model first")
    layers = crossbar_modules(model)
    was_sim = {n: m.simulated for n, m in layers.items()}
    was_train = model.training
    acc = {n: torch.zeros_like(m.weight, device="cpu") for n, m in mods.items()}
    req = {n: m.parameter.requires_grad for n, m in mods.items()}
    try:
        model.eval()
        for m in layers.values():
            m.simulated = False
        for m in mods.values():
            m.parameter.requires_grad_(True)
        n_batches = 0
        for b in batches:
            model.zero_grad(set_to_none=True)
            out = model(**b)
            if getattr(out, "loss", None) is None:
                raise ValueError("gradient_sensitivity needs batches with labels (the model returned no loss)")
            out.loss.backward()
            for n, m in mods.items():
                g = m.weight_grad().detach().cpu()
                acc[n] += g * g if fisher else g.abs()
            n_batches += 1
        if n_batches == 0:
            raise ValueError("gradient_sensitivity got no batches")
    finally:
        model.zero_grad(set_to_none=True)
        for n, m in layers.items():
            m.simulated = was_sim[n]
        for n, m in mods.items():
            m.parameter.requires_grad_(req[n])
        model.train(was_train)
    return {n: a / n_batches for n, a in acc.items()}
