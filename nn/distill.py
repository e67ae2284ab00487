"""Knowledge distillation towards the starting model (used by pruning runs, :mod:`nn.finetune`)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["frozen_teacher", "distillation_loss"]


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of the starting model (eval mode: no dropout) for distillation."""
    import copy

    t = copy.deepcopy(model).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def distillation_loss(
    s_logits: torch.Tensor,
    t_logits: torch.Tensor,
    s_hidden: Sequence[torch.Tensor] | None = None,
    t_hidden: Sequence[torch.Tensor] | None = None,
    *,
    temperature: float = 2.0,
    hidden_weight: float = 0.0,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distillation loss of a student towards a teacher (Hinton et al. 2015, arXiv 1503.02531; the
    layer-wise hidden-state term as in CoFi, Xia et al. ACL 2022, arXiv 2204.00408).

    Logits ``(batch, labels)``: classification (``labels > 1``) ``T**2 KL(softmax(t/T) ||
    softmax(s/T))`` averaged over the batch (the ``T**2`` keeps its gradient scale independent of
    ``T``); regression (one output) the mean squared difference. Hidden states (tuples of ``(batch,
    tokens, hidden)``, e.g. ``output_hidden_states``): ``hidden_weight`` times the mean over layers
    of the mean squared difference over the real tokens (``attention_mask``). Zero when student
    and teacher agree.
    """
    if s_logits.shape[-1] > 1:
        T = float(temperature)
        kd = torch.nn.functional.kl_div(
            torch.log_softmax(s_logits / T, -1), torch.log_softmax(t_logits / T, -1), log_target=True,
            reduction="batchmean",
        ) * (T * T)
    else:
        kd = torch.nn.functional.mse_loss(s_logits, t_logits)
    if hidden_weight > 0 and s_hidden is not None and t_hidden is not None:
        m = None if attention_mask is None else attention_mask.to(s_hidden[0].dtype).unsqueeze(-1)
        terms = []
        for hs, ht in zip(s_hidden, t_hidden):
            d2 = (hs - ht).square()
            if m is None:
                terms.append(d2.mean())
            else:
                terms.append((d2 * m).sum() / (m.sum() * hs.shape[-1]).clamp(min=1))
        kd = kd + hidden_weight * torch.stack(terms).mean()
    return kd
