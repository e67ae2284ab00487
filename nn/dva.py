"""Device-variation-aware (DVA) weight noise and the layers it targets.

DVA training (Long, She, Mukhopadhyay, "Design of reliable DNN accelerator with un-reliable ReRAM",
DATE 2019, doi:10.23919/DATE.2019.8715178) perturbs the weights of the targeted layers for every
training batch: ``W * eps`` with ``eps = 1 + sigma*z`` (``normal``) or ``exp(sigma*z)``
(``lognormal``), ``z ~ N(0, 1)`` per weight from a seeded generator, and restores them exactly
afterwards. The same perturbation, one draw per call, is one "programmed chip" for
:func:`nn.evaluate.noise_robustness`. Used by both fine-tuning (:mod:`nn.finetune`) and
evaluation (:mod:`nn.evaluate`), so it lives below both.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Iterator, Sequence

import torch
from torch import nn

from device.config import ConfigError

__all__ = ["DEFAULT_DVA_TARGET", "resolve_targets", "select_linear", "weight_noise"]

# Encoder attention projections and feed-forward layers of BERT-family models (query, key, value,
# attention output, intermediate and output dense). Not embeddings, pooler or classifier.
DEFAULT_DVA_TARGET = r"encoder\..*(query|key|value|attention\.output\.dense|intermediate\.dense|output\.dense)$"


def resolve_targets(patterns: Sequence[str] | str) -> tuple[str, ...]:
    """``patterns`` as a tuple; the default ``(DEFAULT_DVA_TARGET,)`` stands for the simulated
    chip's default layers of every supported family (:data:`nn.sim.DEFAULT_TARGET_MODULES`: BERT /
    RoBERTa / ELECTRA, DistilBERT, ALBERT), which for BERT-style names are exactly the layers
    ``DEFAULT_DVA_TARGET`` matches. The stored config keeps the one pattern, so runs saved before
    this resolution are still recognised."""
    pats = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    if pats == (DEFAULT_DVA_TARGET,):
        from nn.sim import DEFAULT_TARGET_MODULES

        return tuple(DEFAULT_TARGET_MODULES)
    return pats


def select_linear(model: nn.Module, patterns: Sequence[str] | str = (DEFAULT_DVA_TARGET,)) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules whose qualified names match any of ``patterns`` (``re.search``;
    the default: see :func:`resolve_targets`).

    Raises :class:`device.config.ConfigError` when none matches: noise applied to nothing is a silent bug.
    """
    pats = [re.compile(p) for p in resolve_targets(patterns)]
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and any(p.search(name) for p in pats)
    ]
    if not found:
        raise ConfigError(f"no nn.Linear module name matches {', '.join(p.pattern for p in pats)}")
    return found


def _noise_factors(weight: torch.Tensor, sigma: float, distribution: str, generator: torch.Generator) -> torch.Tensor:
    z = torch.randn(weight.shape, generator=generator, device=generator.device, dtype=torch.float32)
    z = z.to(device=weight.device)
    eps = torch.exp(sigma * z) if distribution == "lognormal" else 1.0 + sigma * z
    return eps.to(weight.dtype)


@contextlib.contextmanager
def weight_noise(
    modules: Sequence[nn.Module] | Sequence[tuple[str, nn.Module]],
    sigma: float,
    generator: torch.Generator,
    distribution: str = "normal",
) -> Iterator[None]:
    """Multiply each module's ``weight`` by fresh noise inside the block; restore it exactly after.

    ``normal``: ``W * (1 + sigma*z)``; ``lognormal``: ``W * exp(sigma*z)``; ``z ~ N(0, 1)``
    elementwise from ``generator``, drawn in module order. Biases are not perturbed (the paper
    models conductance variation of the weight cells). The clean weights are copied back from a
    saved clone, so they are bit-identical after the block, also when it raises.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma={sigma} is invalid: must be finite and >= 0")
    if distribution not in ("normal", "lognormal"):
        raise ValueError(f"distribution={distribution!r} is invalid: must be 'normal' or 'lognormal'")
    if sigma == 0:
        yield
        return
    from nn.hwtrain import hardware_weights

    with hardware_weights(modules, lambda w, g: w * _noise_factors(w, sigma, distribution, g), generator):
        yield
