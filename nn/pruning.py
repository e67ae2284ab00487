"""Differentiable structured pruning of weight rows and columns (hard-concrete L0 gates).

Seed paper 1 (Li et al. 2024, arXiv 2401.11664) frees whole crossbar rows and columns by pruning
the input features (crossbar rows / word lines) and output features (crossbar columns / bit lines)
of every crossbar-mapped ``nn.Linear``; the freed space then holds duplicated weights and MSB
copies at zero extra crossbar cost. This module learns those masks.

Method
    Each targeted Linear ``y = x W^T + b`` (``W``: ``(out_features, in_features)``) gets two gate
    vectors, ``z_row`` over its ``in_features`` and ``z_col`` over its ``out_features``, and
    computes ``y = z_col * ((x * z_row) W^T) + b``: the effective weight is
    ``W * outer(z_col, z_row)``. The bias is digital (added after the crossbar) and is kept.
    Gates are hard-concrete random variables (Louizos, Welling, Kingma, "Learning Sparse Neural
    Networks through L0 Regularization", ICLR 2018, arXiv 1712.01312): with ``u ~ U(0, 1)``,
    ``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``, ``z = clamp(s (zeta - gamma) + gamma,
    0, 1)``, and ``P(z != 0) = sigmoid(log_alpha - beta log(-gamma / zeta))`` is differentiable.
    Sparsity is driven to the target with the Lagrangian of Wang, Wohlwend and Lei ("Structured
    Pruning of Large Language Models", EMNLP 2020, arXiv 1910.04732):
    ``loss + lambda1 (s - t) + lambda2 (s - t)^2`` where ``s`` is the expected fraction of pruned
    rows and columns and ``t`` the target; the multipliers are trained by gradient *ascent*
    (:meth:`RowColPruner.lagrangian` returns the term; its multipliers' gradients are negated).
    ``scope="global"`` constrains the fraction of all targeted rows and columns removed (the
    line-count-weighted mean of the layers' sparsities, :meth:`RowColPruner.total_expected_sparsity`),
    the same quantity that finalize hits and the run reports; ``"per_layer"`` adds one constraint
    per layer.

Sparsity definition
    The row/column sparsity of a layer is the fraction of its rows and columns removed,
    ``(pruned_in + pruned_out) / (in_features + out_features)``: the quantity that frees crossbar
    lines. A weight survives only if both its row and its column survive.

After training, :meth:`RowColPruner.finalize` turns the gates into hard boolean masks with exactly
the target fraction (per layer, or of all lines together with ``scope="global"``: the least likely
gates go first, ranked across layers, at most ``max_layer_sparsity`` of any one layer's rows or
columns), zeroes the pruned weights, and
keeps them at zero during the recovery fine-tune (a gradient hook). The masks are saved beside the
model (:func:`save_masks`, safetensors) and read by the mapping layer, which packs the surviving
rows and columns so that whole crossbar lines become free.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from device.config import Config, check_choice, check_positive, check_range, config

__all__ = [
    "PruningConfig",
    "RowColPruner",
    "RowColMask",
    "save_masks",
    "load_masks",
    "apply_masks",
    "DEFAULT_TARGETS",
    "MASKS_FILE",
    "reapply_masks",
    "mask_summary",
    "PruningPhase",
]

#: file name of the masks beside a pruned model (read by the mapping layer)
MASKS_FILE = "pruning_masks.safetensors"

#: Linear modules of a BERT-family encoder that sit on crossbars: attention projections and the
#: feed-forward layers (the classifier head and pooler stay digital).
DEFAULT_TARGETS = r"encoder\..*\.(query|key|value|attention\.output\.dense|intermediate\.dense|output\.dense)$"


@config
class PruningConfig(Config):
    """Settings of the row/column pruning phase."""

    #: target fraction of rows and columns removed, in [0, 1) (seed paper 1: > 0.3 is lossless)
    target_sparsity: float = 0.3
    #: "global": one size-weighted constraint over all layers; "per_layer": every layer hits it
    scope: str = "per_layer"
    #: regex over module names selecting the Linear layers to prune
    target_modules: str = DEFAULT_TARGETS
    #: hard-concrete temperature (Louizos et al. 2018 use 2/3)
    beta: float = 2.0 / 3.0
    #: stretch interval (gamma < 0 < 1 < zeta), Louizos et al. 2018: (-0.1, 1.1)
    gamma: float = -0.1
    #: upper end of the stretch interval (see gamma)
    zeta: float = 1.1
    #: initial keep probability of every gate
    init_keep: float = 0.95
    #: learning rate of the gate logits
    lr_gates: float = 0.05
    #: learning rate of the Lagrange multipliers (gradient ascent)
    lr_lambda: float = 0.05
    #: fraction of the pruning phase over which the target ramps linearly from 0 to target_sparsity
    warmup_fraction: float = 0.5
    #: scope="global": most a finalized layer may lose of its rows, and of its columns (so that no
    #: layer is cut to nothing while the others meet the target)
    max_layer_sparsity: float = 0.95

    def __post_init__(self) -> None:
        check_range("target_sparsity", self.target_sparsity, 0.0, 1.0, hi_open=True)
        check_choice("scope", self.scope, ("global", "per_layer"))
        try:
            re.compile(self.target_modules)
        except re.error as exc:
            raise ValueError(f"target_modules={self.target_modules!r} is not a valid regex: {exc}") from None
        check_positive("beta", self.beta)
        check_range("gamma", self.gamma, None, 0.0, hi_open=True)
        check_range("zeta", self.zeta, 1.0, None, lo_open=True)
        check_range("init_keep", self.init_keep, 0.0, 1.0, lo_open=True, hi_open=True)
        check_positive("lr_gates", self.lr_gates)
        check_positive("lr_lambda", self.lr_lambda)
        check_range("warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        check_range("max_layer_sparsity", self.max_layer_sparsity, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.scope == "global" and self.target_sparsity > self.max_layer_sparsity:
            raise ValueError(
                f"target_sparsity={self.target_sparsity} is above max_layer_sparsity={self.max_layer_sparsity}: "
                "the global target cannot be met"
            )


class _HardConcrete(nn.Module):
    """A vector of hard-concrete gates (Louizos et al. 2018, eq. 10-12)."""

    def __init__(self, n: int, cfg: PruningConfig) -> None:
        super().__init__()
        self.beta, self.gamma, self.zeta = cfg.beta, cfg.gamma, cfg.zeta
        # choose log_alpha so that P(z != 0) = init_keep
        la = math.log(cfg.init_keep / (1 - cfg.init_keep)) + self.beta * math.log(-self.gamma / self.zeta)
        self.log_alpha = nn.Parameter(torch.full((n,), la))
        self.generator: torch.Generator | None = None

    def keep_probability(self) -> torch.Tensor:
        """``P(z != 0)`` per gate: the differentiable expected L0 norm's summands."""
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.gamma / self.zeta))

    def forward(self, training: bool | None = None) -> torch.Tensor:
        """Gate values; stochastic when training (``training`` overrides the module's flag)."""
        if self.training if training is None else training:
            u = torch.rand(self.log_alpha.shape, generator=self.generator, device="cpu").to(self.log_alpha.device)
            u = u.clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)


class RowColMask:
    """Hard boolean masks of one Linear: ``rows`` over in_features, ``cols`` over out_features."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        self.rows = rows.bool().cpu()
        self.cols = cols.bool().cpu()

    @property
    def sparsity(self) -> float:
        n = self.rows.numel() + self.cols.numel()
        return float((~self.rows).sum() + (~self.cols).sum()) / n

    def weight_mask(self) -> torch.Tensor:
        """``(out_features, in_features)`` boolean: a weight survives iff its row and column do."""
        return self.cols[:, None] & self.rows[None, :]


class RowColPruner:
    """Attach learnable row/column gates to a model's crossbar-mapped Linear layers.

    Usage::

        pruner = RowColPruner(model, PruningConfig(target_sparsity=0.3), generator=g)
        opt_gates = torch.optim.Adam(pruner.gate_parameters(), lr=cfg.lr_gates)
        opt_lambda = torch.optim.Adam(pruner.lambda_parameters(), lr=cfg.lr_lambda, maximize=True)
        ...  loss = task_loss + pruner.lagrangian(progress)  # progress in [0, 1]
        masks = pruner.finalize()   # removes the gates, zeroes pruned weights, keeps them at zero
    """

    def __init__(self, model: nn.Module, cfg: PruningConfig, *, generator: torch.Generator) -> None:
        if not isinstance(generator, torch.Generator):
            raise TypeError("RowColPruner needs generator, a seeded torch.Generator (the gates' noise is drawn from it)")
        self.cfg = cfg
        self.model = model
        pattern = re.compile(cfg.target_modules)
        self.layers: dict[str, nn.Linear] = {
            name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.search(name)
        }
        if not self.layers:
            raise ValueError(f"no nn.Linear module name matches target_modules={cfg.target_modules!r}")
        dev = next(model.parameters()).device
        self.row_gates: dict[str, _HardConcrete] = {}
        self.col_gates: dict[str, _HardConcrete] = {}
        self._handles: list = []
        for name, lin in self.layers.items():
            gr = _HardConcrete(lin.in_features, cfg).to(dev)
            gc = _HardConcrete(lin.out_features, cfg).to(dev)
            gr.generator = gc.generator = generator
            self.row_gates[name], self.col_gates[name] = gr, gc
            self._handles.append(lin.register_forward_pre_hook(self._pre_hook(gr)))
            self._handles.append(lin.register_forward_hook(self._post_hook(lin, gc)))
        n = 1 if cfg.scope == "global" else len(self.layers)
        self.lambda1 = torch.zeros(n, device=dev, requires_grad=True)
        self.lambda2 = torch.zeros(n, device=dev, requires_grad=True)
        self.masks: dict[str, RowColMask] | None = None

    @staticmethod
    def _pre_hook(gate: _HardConcrete):
        def hook(module: nn.Module, args: tuple) -> tuple:
            z = gate(module.training)
            return (args[0] * z,) + tuple(args[1:])

        return hook

    @staticmethod
    def _post_hook(lin: nn.Linear, gate: _HardConcrete):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            z = gate(module.training)
            if lin.bias is None:
                return out * z
            return (out - lin.bias) * z + lin.bias

        return hook

    def remove_hooks(self) -> None:
        """Detach the gates from the model (the model computes with its plain weights again)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def train(self, mode: bool = True) -> None:
        for g in list(self.row_gates.values()) + list(self.col_gates.values()):
            g.train(mode)

    def gate_parameters(self) -> Iterator[nn.Parameter]:
        for name in self.layers:
            yield self.row_gates[name].log_alpha
            yield self.col_gates[name].log_alpha

    def lambda_parameters(self) -> list[torch.Tensor]:
        return [self.lambda1, self.lambda2]

    def expected_sparsity(self) -> dict[str, torch.Tensor]:
        """Expected row/column sparsity per layer (differentiable)."""
        out = {}
        for name in self.layers:
            kr = self.row_gates[name].keep_probability()
            kc = self.col_gates[name].keep_probability()
            out[name] = 1.0 - (kr.sum() + kc.sum()) / (kr.numel() + kc.numel())
        return out

    def total_expected_sparsity(self) -> torch.Tensor:
        """Expected fraction of all targeted rows and columns removed (differentiable): the global
        scope's constrained quantity, the line-count-weighted mean of :meth:`expected_sparsity`."""
        keep = sum(self.row_gates[n].keep_probability().sum() + self.col_gates[n].keep_probability().sum() for n in self.layers)
        n_lines = sum(l.in_features + l.out_features for l in self.layers.values())
        return 1.0 - keep / n_lines

    def lagrangian(self, progress: float) -> torch.Tensor:
        """``lambda1 (s - t) + lambda2 (s - t)^2`` with the target ramped by ``progress`` in [0, 1].

        Minimise it over the gates and *maximise* it over the multipliers (``maximize=True``).
        """
        ramp = 1.0 if self.cfg.warmup_fraction == 0 else min(1.0, progress / self.cfg.warmup_fraction)
        t = self.cfg.target_sparsity * ramp
        if self.cfg.scope == "global":
            diff = (self.total_expected_sparsity() - t).reshape(1)
        else:
            diff = torch.stack(list(self.expected_sparsity().values())) - t
        return (self.lambda1 * diff + self.lambda2 * diff**2).sum()

    def finalize(self) -> dict[str, RowColMask]:
        """Hard masks hitting the target exactly; remove the gates; keep pruned weights at zero.

        The deterministic gate values of the kept rows and columns are folded into the weights,
        so the model computes what its eval-mode gated version computed, less the removed lines.

        ``scope="per_layer"``: in every layer the ``round(t * n)`` rows and columns (competing)
        with the lowest keep probability are removed, ``t`` the target and ``n`` the layer's lines.
        ``scope="global"``: the ``round(t * N)`` lines with the lowest keep probability among all
        ``N`` lines of all targeted layers are removed, so the masks remove exactly the target
        fraction of rows + columns whatever the multipliers reached (the layers' shares are the
        learned ones); no layer loses more than ``floor(max_layer_sparsity * n)`` of its rows or of
        its columns (a line over that cap is skipped for the next least likely one).
        """
        keeps = {
            name: (self.row_gates[name].keep_probability().detach().cpu(), self.col_gates[name].keep_probability().detach().cpu())
            for name in self.layers
        }
        if self.cfg.scope == "global":
            keep_flags = _global_keep(keeps, self.cfg.target_sparsity, self.cfg.max_layer_sparsity)
        else:
            keep_flags = {}
            for name, (kr, kc) in keeps.items():
                n_total = kr.numel() + kc.numel()
                n_prune = int(round(self.cfg.target_sparsity * n_total))
                # the least likely lines of this layer go, rows and columns competing
                order = torch.argsort(torch.cat([kr, kc]), stable=True)[:n_prune]
                keep = torch.ones(n_total, dtype=torch.bool)
                keep[order] = False
                keep_flags[name] = (keep[: kr.numel()], keep[kr.numel():])
        masks: dict[str, RowColMask] = {}
        for name, lin in self.layers.items():
            masks[name] = RowColMask(*keep_flags[name])
            # The network was trained with kept lines scaled by their (deterministic) gate value
            # z in (0, 1]; fold z into the weights so that removing the gates keeps the function
            # (W <- z_col[:, None] * W * z_row[None, :]), instead of jumping every z to 1.
            with torch.no_grad():
                zr = self.row_gates[name](training=False).detach()
                zc = self.col_gates[name](training=False).detach()
                lin.weight.mul_(zc[:, None].to(lin.weight.dtype) * zr[None, :].to(lin.weight.dtype))
        self.remove_hooks()
        apply_masks(self.model, masks)
        self.masks = masks
        return masks


def _global_keep(
    keeps: dict[str, tuple[torch.Tensor, torch.Tensor]], target: float, max_layer_sparsity: float
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Keep flags removing the ``round(target * N)`` least likely of all ``N`` lines.

    ``keeps`` maps each layer to its (rows, cols) keep probabilities. Lines are ranked by keep
    probability across all layers (ties by position, deterministic); a line is eligible while it
    is among the ``floor(max_layer_sparsity * n)`` least likely of its own gate vector, and the
    first ``round(target * N)`` eligible lines in the global order are removed: the greedy
    removal under the per-vector cap, vectorized.
    """
    vecs = [v for pair in keeps.values() for v in pair]
    probs = torch.cat(vecs).double()
    group = torch.cat([torch.full((v.numel(),), i, dtype=torch.long) for i, v in enumerate(vecs)])
    n_all = probs.numel()
    n_prune = int(round(target * n_all))
    caps = torch.tensor([int(math.floor(max_layer_sparsity * v.numel())) for v in vecs], dtype=torch.long)
    # rank of each line inside its own vector (by probability, ties by position)
    rank = torch.empty(n_all, dtype=torch.long)
    start = 0
    for v in vecs:
        order = torch.argsort(v.double(), stable=True)
        rank[start + order] = torch.arange(v.numel())
        start += v.numel()
    eligible = rank < caps[group]
    if int(eligible.sum()) < n_prune:
        raise ValueError(f"target {target} needs {n_prune} lines but the per-layer cap {max_layer_sparsity} allows {int(eligible.sum())}")
    # global order by probability; ties by position (a stable sort of the concatenation)
    order = torch.argsort(probs, stable=True)
    chosen = order[eligible[order]][:n_prune]
    keep = torch.ones(n_all, dtype=torch.bool)
    keep[chosen] = False
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    start = 0
    for name, (kr, kc) in keeps.items():
        out[name] = (keep[start : start + kr.numel()], keep[start + kr.numel() : start + kr.numel() + kc.numel()])
        start += kr.numel() + kc.numel()
    return out


def mask_summary(masks: dict[str, RowColMask]) -> dict[str, float | int]:
    """Sparsity of a set of masks, both ways: the fraction of all rows + columns removed (what
    frees crossbar lines; the constrained quantity) and the fraction of all weights removed (a
    weight survives only if its row and its column do)."""
    lines = sum(m.rows.numel() + m.cols.numel() for m in masks.values())
    lines_removed = sum(int((~m.rows).sum() + (~m.cols).sum()) for m in masks.values())
    weights = sum(m.rows.numel() * m.cols.numel() for m in masks.values())
    weights_kept = sum(int(m.rows.sum()) * int(m.cols.sum()) for m in masks.values())
    return {
        "lines": lines,
        "lines_removed": lines_removed,
        "rows_cols_removed": lines_removed / lines,
        "weights": weights,
        "weights_removed": (weights - weights_kept) / weights,
    }


def apply_masks(model: nn.Module, masks: dict[str, RowColMask]) -> list:
    """Zero the pruned weights of ``model`` and keep them zero under training (gradient hooks).

    Returns the hook handles (remove them to let the weights train freely again).
    """
    modules = dict(model.named_modules())
    handles = []
    for name, m in masks.items():
        if name not in modules or not isinstance(modules[name], nn.Linear):
            raise ValueError(f"mask for {name!r} matches no nn.Linear of the model")
        lin = modules[name]
        wm = m.weight_mask().to(lin.weight.device)
        if wm.shape != lin.weight.shape:
            raise ValueError(f"mask for {name!r} has shape {tuple(wm.shape)}, weight has {tuple(lin.weight.shape)}")
        with torch.no_grad():
            lin.weight.mul_(wm)
        handles.append(lin.weight.register_hook(lambda g, wm=wm: g * wm))
    return handles


def reapply_masks(model: nn.Module, masks: dict[str, RowColMask]) -> None:
    """Zero the pruned weights again (call after every optimizer step of a recovery fine-tune:
    Adam's moment estimates keep moving weights whose gradient is zero)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, m in masks.items():
            w = modules[name].weight
            w.mul_(m.weight_mask().to(device=w.device, dtype=w.dtype))


def save_masks(path: str | Path, masks: dict[str, RowColMask]) -> Path:
    """Save masks as safetensors (``<name>.rows`` / ``<name>.cols``, uint8), atomically."""
    from safetensors.torch import save_file

    from device.tables import atomic_path

    tensors = {}
    for name, m in masks.items():
        tensors[f"{name}.rows"] = m.rows.to(torch.uint8).contiguous()
        tensors[f"{name}.cols"] = m.cols.to(torch.uint8).contiguous()
    with atomic_path(path, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "reram-cosim row/column masks", "true": "kept"})
    return Path(path)


def load_masks(path: str | Path) -> dict[str, RowColMask]:
    """Inverse of :func:`save_masks`."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    names = sorted({k.rsplit(".", 1)[0] for k in t})
    out = {}
    for n in names:
        if f"{n}.rows" not in t or f"{n}.cols" not in t:
            raise ValueError(f"{path}: mask {n!r} lacks its rows or cols entry")
        out[n] = RowColMask(t[f"{n}.rows"], t[f"{n}.cols"])
    return out


class PruningPhase:
    """Row/column pruning inside a fine-tuning run (seed paper 1), driven by :func:`nn.finetune.finetune`.

    Steps ``[0, prune_phase * total)`` train hard-concrete gates on the rows and columns of the
    crossbar-mapped layers with the Lagrangian sparsity penalty (target ramped up over the first
    half of the phase); at the boundary the gates become hard masks with exactly the target
    sparsity (per layer, or of all lines together with the global scope); the remaining steps are
    the recovery fine-tune, with pruned weights held at zero (re-applied after every optimizer step, since AdamW's moments would move them).
    """

    def __init__(self, model: nn.Module, pcfg: PruningConfig, boundary: int, generator: torch.Generator) -> None:
        """``pcfg``: the pruning settings; ``boundary``: the step at which the gates become
        masks (``prune_phase`` times the run's steps); ``generator``: the gates' noise."""
        self.cfg = pcfg
        self.model = model
        self.boundary = max(1, int(boundary))
        self.pruner = RowColPruner(model, pcfg, generator=generator)
        self.opt_gates = torch.optim.Adam(list(self.pruner.gate_parameters()), lr=pcfg.lr_gates)
        self.opt_lambda = torch.optim.Adam(self.pruner.lambda_parameters(), lr=pcfg.lr_lambda, maximize=True)
        self.masks = None
        self.sparsity_at_boundary: float | None = None

    def penalty(self, step: int) -> torch.Tensor:
        if self.masks is not None:
            return torch.zeros(())
        return self.pruner.lagrangian(step / self.boundary)

    def after_step(self, step: int, final: bool = False) -> None:
        if self.masks is None:
            if not final:
                self.opt_gates.step()
                self.opt_lambda.step()
            self.opt_gates.zero_grad(set_to_none=True)
            self.opt_lambda.zero_grad(set_to_none=True)
            if step >= self.boundary or final:
                with torch.no_grad():
                    # the constrained quantity: the fraction of all lines (global scope) expected gone
                    self.sparsity_at_boundary = float(self.pruner.total_expected_sparsity())
                self.masks = self.pruner.finalize()
        else:
            reapply_masks(self.model, self.masks)

    def state_dict(self) -> dict[str, Any]:
        st: dict[str, Any] = {"sparsity_at_boundary": self.sparsity_at_boundary}
        if self.masks is None:
            st["gates"] = {n: (self.pruner.row_gates[n].log_alpha.detach().cpu(), self.pruner.col_gates[n].log_alpha.detach().cpu()) for n in self.pruner.layers}
            st["lambdas"] = [t.detach().cpu() for t in self.pruner.lambda_parameters()]
            st["opt_gates"] = self.opt_gates.state_dict()
            st["opt_lambda"] = self.opt_lambda.state_dict()
            st["gen"] = self.pruner.row_gates[next(iter(self.pruner.layers))].generator.get_state()
        else:
            st["masks"] = {n: (m.rows, m.cols) for n, m in self.masks.items()}
        return st

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.sparsity_at_boundary = st.get("sparsity_at_boundary")
        if "masks" in st:
            self.pruner.remove_hooks()
            self.masks = {n: RowColMask(r, c) for n, (r, c) in st["masks"].items()}
            apply_masks(self.model, self.masks)
            return
        with torch.no_grad():
            for n, (r, c) in st["gates"].items():
                self.pruner.row_gates[n].log_alpha.copy_(r)
                self.pruner.col_gates[n].log_alpha.copy_(c)
            for t, v in zip(self.pruner.lambda_parameters(), st["lambdas"]):
                t.copy_(v)
        self.opt_gates.load_state_dict(st["opt_gates"])
        self.opt_lambda.load_state_dict(st["opt_lambda"])
        self.pruner.row_gates[next(iter(self.pruner.layers))].generator.set_state(st["gen"])

    def report(self) -> dict[str, Any]:
        if self.masks is None:
            raise RuntimeError("report() before the pruning masks were finalised")
        return {
            "config": self.cfg.to_dict(),
            "gate_steps": self.boundary,
            "expected_sparsity_at_boundary": self.sparsity_at_boundary,
            **mask_summary(self.masks),
            "layers": {n: {"rows_kept": int(m.rows.sum()), "rows": m.rows.numel(), "cols_kept": int(m.cols.sum()), "cols": m.cols.numel(), "sparsity": m.sparsity} for n, m in self.masks.items()},
        }
