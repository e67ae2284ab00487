"""Number formats of weights (in the cells) and activations (at the DAC): static and dynamic fixed
point, and a real-valued scale.

A value ``x`` is stored as a signed integer code ``q`` with a binary point ``frac_bits`` (``F``)::

    x ~= q * 2**-F,    q = clip(round(x * 2**F), -q_max, q_max),    q_max = 2**(bits-1) - 1

The code range is symmetric (``-q_max .. q_max``; the two's-complement code ``-2**(bits-1)`` is not
used) so that a differential pair and an offset column represent the same set of weights and the
sign of a weight never changes its magnitude range.

Static fixed point
    ``F`` is fixed by the configuration (``frac_bits``). Values beyond ``q_max * 2**-F`` clip; a
    layer whose range is much smaller than the format's leaves its most-significant bits unused.

Dynamic fixed point (DFP)
    ``F`` is chosen per layer or per crossbar tile from the data range (Long, She, Mukhopadhyay,
    "Design of reliable DNN accelerator with un-reliable ReRAM", DATE 2019, doi:10.23919/DATE.2019.8715178):
    the largest ``F`` with ``round(max|x| * 2**F) <= q_max``. Then the largest magnitude is never
    clipped and it sets the most-significant magnitude bit (``round(max|x| * 2**F) >= 2**(bits-2)``),
    so no MSB is wasted. ``F`` may be negative (step > 1) for large values.

Scaled (``mode="scaled"``)
    A real-valued step ``Delta = max|x| / q_max`` (per layer, per tile or per input vector), so the
    largest magnitude maps exactly to ``q_max`` and every code is used: ``q = round(x / Delta)``.
    This is what CrossSim and aihwkit do (an analog or digital scale factor after the ADC); it is
    1.2-1.8x finer than the power-of-two step of DFP, which must round the range up to a power of
    two. The step is stored in :attr:`QTensor.step` (``frac_bits`` is then 0 and unused).

Granularity: one format for the whole tensor (``"layer"``), per block of the tensor (``"tile"``,
a crossbar tile's weights or a row block's inputs), or per row of a 2-D tensor (``"vector"``:
one step per input vector, what a per-vector shifter or scale at the DAC does; inputs only).

All functions are pure tensor functions; the compute device is the input's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch

from device.config import Config, ConfigError, check_choice, check_int_range, config

__all__ = [
    "QuantConfig",
    "QTensor",
    "q_max",
    "step_for",
    "dfp_frac_bits",
    "quantize",
    "quantize_blocks",
    "code_dtype",
    "block_max_abs",
    "relative_error",
    "static_frac_bits_for",
]

#: frac_bits are clamped to this range; 2**+-60 stays far inside float32/float64 exponents for any
#: realistic data and keeps scales exact powers of two
_F_MIN, _F_MAX = -60, 60


@config
class QuantConfig(Config):
    """A fixed-point number format for one tensor (weights of a layer, or activations at a DAC)."""

    #: total bits of the signed code, sign included (codes -(2**(bits-1)-1) .. 2**(bits-1)-1)
    bits: int = 8
    #: "static": binary point fixed by frac_bits; "dynamic": chosen from the data range (DFP, DATE
    #: 2019); "scaled": real-valued step max|x| / q_max (CrossSim, aihwkit)
    mode: Literal["static", "dynamic", "scaled"] = "dynamic"
    #: static mode only: bits after the binary point (step 2**-frac_bits); may be negative
    frac_bits: int = 6
    #: dynamic / scaled modes: one step per "layer", per crossbar "tile" (block of the tensor), or
    #: per "vector" (row of a 2-D input: one input vector)
    granularity: Literal["layer", "tile", "vector"] = "layer"

    def __post_init__(self) -> None:
        check_int_range("bits", self.bits, 2, 24)
        check_choice("mode", self.mode, ("static", "dynamic", "scaled"))
        check_int_range("frac_bits", self.frac_bits, _F_MIN, _F_MAX)
        check_choice("granularity", self.granularity, ("layer", "tile", "vector"))


def q_max(bits: int) -> int:
    """Largest code magnitude of a ``bits``-bit symmetric signed format: ``2**(bits-1) - 1``."""
    return (1 << (bits - 1)) - 1


def code_dtype(bits: int) -> torch.dtype:
    """Smallest integer dtype holding ``bits``-bit codes (int8 / int16 / int32)."""
    return torch.int8 if bits <= 8 else torch.int16 if bits <= 16 else torch.int32


def step_for(max_abs: torch.Tensor, cfg: QuantConfig) -> torch.Tensor:
    """The quantization step (float64, ``max_abs``'s shape) that ``cfg`` gives data of range ``max_abs``.

    static: ``2**-frac_bits``; dynamic: ``2**-F`` with ``F`` from :func:`dfp_frac_bits`;
    scaled: ``max_abs / q_max`` (an all-zero range gets step 1: any step represents it exactly).
    """
    m = max_abs.detach().to(torch.float64)
    if cfg.mode == "static":
        return torch.full_like(m, 2.0 ** -cfg.frac_bits)
    if cfg.mode == "dynamic":
        return torch.exp2(-dfp_frac_bits(m, cfg.bits).to(torch.float64))
    return torch.where(m > 0, m / q_max(cfg.bits), torch.ones_like(m))


def dfp_frac_bits(max_abs: torch.Tensor, bits: int) -> torch.Tensor:
    """Dynamic-fixed-point binary point: the largest ``F`` with ``round(max_abs * 2**F) <= q_max``.

    ``max_abs``: any shape, >= 0. Returns int64 of the same shape. An all-zero block gets
    ``F = 0`` (any ``F`` represents it exactly). Computed in float64 with an explicit check of the
    rounding boundary, so it holds exactly (not just up to ``log2`` round-off).
    """
    m = max_abs.detach().to(torch.float64)
    qm = float(q_max(bits))
    safe = torch.where(m > 0, m, torch.ones_like(m))
    f = torch.floor(torch.log2(qm / safe))
    # correct a possible off-by-one of log2 and the round-half-up boundary: step F up while
    # round(m*2^(F+1)) still fits, down while round(m*2^F) does not
    for _ in range(2):
        up = torch.floor(safe * torch.exp2(f + 1) + 0.5) <= qm
        f = torch.where(up, f + 1, f)
        down = torch.floor(safe * torch.exp2(f) + 0.5) > qm
        f = torch.where(down, f - 1, f)
    f = torch.where(m > 0, f, torch.zeros_like(f)).clamp(_F_MIN, _F_MAX)
    return f.to(torch.int64)


@dataclasses.dataclass(frozen=True)
class QTensor:
    """Integer codes and their binary point(s).

    ``q``: integer codes, the input's shape, dtype :func:`code_dtype`.
    ``frac_bits``: int64, shape ``()`` (one binary point) or ``(nb_0, nb_1)`` (one per block of
    ``block`` elements over the last two dimensions, DFP per tile).
    ``clipped``: number of elements that saturated at ``+-q_max`` (always 0 for DFP and scaled).
    ``step``: float64 real-valued step(s), shape of ``frac_bits`` (scaled format); None for the
    fixed-point formats, whose step is ``2**-frac_bits``.
    """

    q: torch.Tensor
    frac_bits: torch.Tensor
    bits: int
    block: tuple[int, int] | None = None
    clipped: int = 0
    step: torch.Tensor | None = None

    def scale(self) -> torch.Tensor:
        """The step: ``2**-frac_bits`` (fixed point) or :attr:`step` (scaled), float64, shape of ``frac_bits``."""
        if self.step is not None:
            return self.step
        return torch.exp2(-self.frac_bits.to(torch.float64))

    def to(self, device: str | torch.device) -> "QTensor":
        """A copy with its tensors on ``device``."""
        return dataclasses.replace(
            self, q=self.q.to(device), frac_bits=self.frac_bits.to(device),
            step=None if self.step is None else self.step.to(device),
        )

    def scale_full(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The step of every element, broadcastable to ``q`` (per-block steps expanded)."""
        s = self.scale().to(dtype)
        if self.block is None:
            return s
        b0, b1 = self.block
        s = s.repeat_interleave(b0, 0).repeat_interleave(b1, 1)
        return s[: self.q.shape[-2], : self.q.shape[-1]]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``q * 2**-frac_bits`` as ``dtype``."""
        return self.q.to(dtype) * self.scale_full(dtype)


def _round_clip(x: torch.Tensor, f: torch.Tensor, bits: int, step: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    qm = q_max(bits)
    if step is None:
        y = torch.floor(x.to(torch.float64) * torch.exp2(f.to(torch.float64)) + 0.5)  # round half up
    else:
        y = torch.floor(x.to(torch.float64) / step + 0.5)
    clipped = int(((y > qm) | (y < -qm)).sum())
    return y.clamp_(-qm, qm), clipped


def quantize(x: torch.Tensor, cfg: QuantConfig, *, frac_bits: int | torch.Tensor | None = None) -> QTensor:
    """Quantize ``x`` (any shape) with one binary point for the whole tensor.

    ``frac_bits`` overrides the format's choice (e.g. a binary point calibrated on data). With
    ``cfg.mode == "dynamic"`` and no override, ``F`` comes from ``max|x|`` (:func:`dfp_frac_bits`).
    """
    if not torch.is_floating_point(x):
        raise ValueError(f"quantize expects a floating-point tensor, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("cannot quantize a tensor with NaN or infinite values")
    if frac_bits is None and cfg.mode == "scaled":
        m = x.detach().abs().max() if x.numel() else torch.zeros((), device=x.device)
        step = step_for(m, cfg)
        f = torch.zeros((), dtype=torch.int64, device=x.device)
        q, clipped = _round_clip(x, f, cfg.bits, step)
        return QTensor(q=q.to(code_dtype(cfg.bits)), frac_bits=f, bits=cfg.bits, clipped=clipped, step=step)
    if frac_bits is not None:
        f = torch.as_tensor(frac_bits, dtype=torch.int64, device=x.device).reshape(())
    elif cfg.mode == "static":
        f = torch.tensor(cfg.frac_bits, dtype=torch.int64, device=x.device)
    else:
        f = dfp_frac_bits(x.detach().abs().max() if x.numel() else torch.zeros((), device=x.device), cfg.bits)
    q, clipped = _round_clip(x, f, cfg.bits)
    return QTensor(q=q.to(code_dtype(cfg.bits)), frac_bits=f, bits=cfg.bits, clipped=clipped)


def block_max_abs(x: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """``max|x|`` over blocks of ``block`` elements of a 2-D tensor (edge blocks may be partial).

    Returns shape ``(ceil(rows/b0), ceil(cols/b1))``.
    """
    b0, b1 = block
    r, c = x.shape
    n0, n1 = math.ceil(r / b0), math.ceil(c / b1)
    pad = torch.zeros(n0 * b0, n1 * b1, dtype=x.dtype, device=x.device)
    pad[:r, :c] = x.detach().abs()
    return pad.view(n0, b0, n1, b1).amax(dim=(1, 3))


def quantize_blocks(x: torch.Tensor, cfg: QuantConfig, block: tuple[int, int]) -> QTensor:
    """Quantize a 2-D tensor with one binary point per ``block`` (used for DFP per crossbar tile).

    For a static format, or ``granularity != "tile"``, this is :func:`quantize` (one step).
    Otherwise ``frac_bits`` (and ``step``, scaled format) have shape ``(ceil(rows/b0), ceil(cols/b1))``.
    """
    if x.ndim != 2:
        raise ValueError(f"quantize_blocks expects a 2-D tensor, got shape {tuple(x.shape)}")
    if cfg.mode == "static" or cfg.granularity != "tile":
        return quantize(x, cfg)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("cannot quantize a tensor with NaN or infinite values")
    if cfg.mode == "scaled":
        step = step_for(block_max_abs(x, block), cfg)
        s_full = step.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[: x.shape[0], : x.shape[1]]
        f0 = torch.zeros(step.shape, dtype=torch.int64, device=x.device)
        q, clipped = _round_clip(x, f0, cfg.bits, s_full)
        return QTensor(q=q.to(code_dtype(cfg.bits)), frac_bits=f0, bits=cfg.bits, block=tuple(block), clipped=clipped, step=step)
    f = dfp_frac_bits(block_max_abs(x, block), cfg.bits)
    f_full = f.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[: x.shape[0], : x.shape[1]]
    q, clipped = _round_clip(x, f_full, cfg.bits)
    return QTensor(q=q.to(code_dtype(cfg.bits)), frac_bits=f, bits=cfg.bits, block=tuple(block), clipped=clipped)


def relative_error(x: torch.Tensor, xq: torch.Tensor) -> float:
    """RMS error of ``xq`` against ``x`` relative to the RMS of ``x``."""
    num = torch.linalg.vector_norm((xq - x).to(torch.float64))
    den = torch.linalg.vector_norm(x.to(torch.float64))
    return float(num / den) if den > 0 else float(num)


def static_frac_bits_for(max_abs: float, bits: int) -> int:
    """Helper for choosing a static format: the DFP binary point of a single reference range."""
    if max_abs < 0 or not np.isfinite(max_abs):
        raise ConfigError(f"max_abs={max_abs!r} is invalid: must be finite and >= 0")
    return int(dfp_frac_bits(torch.tensor(float(max_abs)), bits))
