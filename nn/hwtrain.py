"""Hardware-aware training: the weight a simulated chip would hold, as a training-time view.

:class:`HardwareView` maps a crossbar-mapped ``nn.Linear`` weight ``w`` ``(out, in)`` to the
weight the chip of a :class:`nn.sim.SimConfig` reads back, ``w_hw``, for one training batch.
:func:`hardware_weights` swaps it in for a forward/backward pass and restores ``w`` bit for bit,
so the gradient taken at ``w_hw`` is applied to ``w`` (a straight-through estimator:
``dL/dw := dL/dw_hw``, also through the rounding). Two parts, derived from the same config and
the same engine functions the evaluation uses (:mod:`crossbar.engine`, :mod:`crossbar.quant`,
:mod:`mapping.protection`):

Crossbar-matched variation (``noise_scale > 0``)
    The engine quantizes ``w`` to codes ``q`` with step ``Delta`` (dynamic fixed point per layer
    or tile), splits ``|q|`` (differential) or ``q + 2**(N-1)`` (offset) into slice digits, and
    programs every cell -- the HRS cells holding digit 0 included -- with a conductance drawn
    from its level's samples in the level table. With an ideal ADC and no IR drop the weight it
    reads back is ``w_eff = Delta * sum_cells sign * 2**(bpc*s) * g / dg`` (``dg`` the level
    step, ``(g_target[-1] - g_target[0]) / (levels - 1)``), so per weight::

        E[w_eff]   = Delta * sum_cells sign * 2**(bpc*s) * mu(d) / dg
        Var[w_eff] = Delta**2 * sum_cells 4**(bpc*s) * sigma(d)**2 / dg**2

    ``mu(d)``, ``sigma(d)``: mean and (population) standard deviation of level ``d``'s samples,
    which the engine resamples uniformly (synthetic tables: ``sigma ~ sigma_rel * g_target``).
    Both depend on the code alone, so they are tabulated once per config for every code
    (:func:`code_statistics`, by running the engine's own slicing ``cell_digits`` and fold
    ``fold`` on a matrix holding each code once), and a training step is a quantization and two
    table look-ups: ``w_hw = E[w_eff | q] + noise_scale * sqrt(Var[w_eff | q]) * z``,
    ``z ~ N(0, 1)`` per weight from the training generator. The noise of a small weight is not
    proportional to it: a zero weight still has ``2 * n_slices`` HRS cells, each weighted by its
    slice's ``2**(bpc*s)``; with on/off 10 those dominate. Read noise
    (``crossbar.read_noise_sigma_rel``, drawn on every read by the engine) is folded in as extra
    per-cell variance ``sigma_r**2 * E[g**2]``. With ``crossbar.read_time_s > 0`` (relaxation-aware
    training) ``mu(d)`` and ``sigma(d)`` are those of the cells as read at that time: every sample
    of level ``d`` relaxed by the sim config's relaxation model (exact moments,
    :func:`relaxed_moments`), so the view's mean carries the levels' drift and its noise their
    spread at ``T``. Not modelled here: stuck-at faults, IR drop, ADC
    and DAC quantization (:meth:`HardwareView.describe` lists the ones the config turns on).
    With ``quantize=False`` the forward keeps ``w`` and only adds the noise. The view draws the
    noise independently per weight; with ``mapping="offset"`` the engine's weights of one tile
    share their reference cells, so there the per-weight variance matches but the correlation
    between outputs of a tile is not reproduced.

MSB-embedding-aware fake quantization (``msb_copies > 0``)
    With ``mapping.protection`` ``msb_embed`` the lowest ``msb_copies`` slices hold copies of
    the MSB slice, so a weight keeps only the codes :func:`mapping.protection.embed_msb` leaves
    (magnitude rounded half up to a multiple of ``2**b``, clamped). The view returns exactly
    those values (``embed_msb(...)[1]``, same step, same rounding), so they are fixed points of
    the protected mapping: re-quantized and embedded they come back unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from crossbar.engine import CrossbarConfig, default_layout
from crossbar.pipeline import cell_digits, check_levels, fold, level_step_s
from crossbar.quant import QTensor, code_dtype, q_max, quantize_blocks
from device.config import ConfigError

__all__ = [
    "CodeStats",
    "code_statistics",
    "relaxed_moments",
    "quantize_like_engine",
    "HardwareView",
    "hardware_weights",
]

#: bit lines of the one-row tile the code table is folded on (the engine's upper limit); the tile
#: geometry does not change which digit a code puts in which cell
_LUT_TILE_COLS = 4096


@dataclasses.dataclass(frozen=True)
class CodeStats:
    """Mean and standard deviation of the read-back weight per code, in weight steps (LSB).

    ``mean``, ``std``: float64 ``(2*q_max + 1,)``, entry ``q + q_max`` for code ``q``.
    ``dg_s``: the level step the engine divides by, S.
    """

    q_max: int
    mean: np.ndarray
    std: np.ndarray
    dg_s: float


def code_statistics(cfg: CrossbarConfig, levels: Any, moments: tuple[np.ndarray, np.ndarray] | None = None) -> CodeStats:
    """Per-code mean and std of the effective weight a chip programmed with ``cfg`` and ``levels``
    (a ``device.programming.LevelTable``) reads back with an ideal ADC and no IR drop.

    Runs the engine's slicing (:func:`crossbar.pipeline.cell_digits`) and fold (:func:`crossbar.pipeline.fold`) on an ``(n_codes, 1)``
    matrix holding every code once: the mean folds the level means ``mu(d)``; the variance folds
    the per-cell standard deviation ``sqrt(sigma(d)**2 + sigma_r**2 (mu(d)**2 + sigma(d)**2))``
    through the engine's read-noise path (``read_noise_sigma_rel=1``), which sums
    ``4**(bpc*s) * std**2 / dg**2`` over the weight's cells (and its reference cells, offset
    mapping). See the module docstring for the equations.

    ``moments``: per-level mean and variance of the cells' conductance (S, S^2) to use instead of
    those of the table's samples: the cells as read ``read_time_s`` after programming
    (:func:`relaxed_moments`, relaxation-aware training).
    """
    if not isinstance(cfg, CrossbarConfig):
        raise ValueError(f"cfg must be a CrossbarConfig, got {type(cfg).__name__}")
    check_levels(levels, cfg)
    qm = q_max(cfg.weight_bits)
    n = 2 * qm + 1
    lut_cfg = cfg.replace(
        tile_rows=1, tile_cols=_LUT_TILE_COLS, adc_bits=None, ir_drop="ideal", read_noise_sigma_rel=0.0,
        weight_format="static", weight_frac_bits=0, weight_granularity="layer",
    )
    codes = torch.arange(-qm, qm + 1, dtype=torch.int64).view(n, 1)
    qt = QTensor(q=codes.to(code_dtype(cfg.weight_bits)), frac_bits=torch.zeros((), dtype=torch.int64), bits=cfg.weight_bits)
    layout = default_layout(n, 1, lut_cfg)
    digits = cell_digits(qt, layout, lut_cfg).numpy()  # (tiles, 1, cols)
    if moments is None:
        g = np.asarray(levels.g_samples_s, dtype=np.float64)
        mu = g.mean(axis=1)
        var = g.var(axis=1)  # ddof=0: the engine draws uniformly from exactly these samples
    else:
        mu, var = (np.asarray(m, dtype=np.float64) for m in moments)
        if mu.shape != (levels.levels,) or var.shape != (levels.levels,):
            raise ValueError(f"moments must be two ({levels.levels},) arrays: per-level mean and variance")
    sig_r = cfg.read_noise_sigma_rel
    sd = np.sqrt(var + sig_r**2 * (mu**2 + var))
    dg = level_step_s(levels)
    cpu = torch.device("cpu")
    mean = fold(torch.from_numpy(mu[digits]), qt, layout, lut_cfg, dg, cpu, torch.float64).readout[:, 0]
    nv = fold(torch.from_numpy(sd[digits]), qt, layout, lut_cfg.replace(read_noise_sigma_rel=1.0), dg, cpu, torch.float64).noise_var
    std = np.sqrt(nv[:, 0].numpy()) if nv is not None else np.zeros(n)
    return CodeStats(q_max=qm, mean=mean.numpy().copy(), std=std, dg_s=dg)


def relaxed_moments(sim: Any, levels: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-level mean and variance (S, S^2) of the cells of ``sim``'s chip as read
    ``crossbar.read_time_s`` after programming (with refresh, at most ``refresh_period_s``):
    each of the level table's samples (what the engine draws) relaxed by the sim config's
    relaxation model, exactly (:func:`device.relaxation.level_moments`). None at read time 0.
    Relaxation-aware programming and drift compensation are not in these moments (the first
    narrows the spread a little, the second rescales a column: training against the plain
    relaxed chip is the conservative choice)."""
    from device.relaxation import level_moments
    from nn.sim import check_relaxation_range, load_relaxation

    t = float(sim.crossbar.read_time_s)
    if t == 0:
        return None
    check_relaxation_range(sim, levels)
    hook = load_relaxation(sim)
    r = sim.crossbar.retention
    if r.refresh_period_s > 0:
        t = min(t, r.refresh_period_s)
    g = np.asarray(levels.g_samples_s, dtype=np.float64)
    return level_moments(hook.model, list(g), t, out_of_range=sim.relaxation.out_of_range)


def quantize_like_engine(w: torch.Tensor, cfg: CrossbarConfig) -> QTensor:
    """The weight codes :func:`crossbar.engine.program_matrix` stores for ``w`` ``(out, in)`` in
    the default layout: :func:`crossbar.engine.quantize_weight` without building the layout
    (per-tile DFP uses blocks of ``outputs_per_tile x tile_rows``; otherwise one binary point)."""
    return quantize_blocks(w.detach().to(torch.float64), cfg.weight_quant, (cfg.outputs_per_tile, cfg.tile_rows))


class HardwareView:
    """The training-time weight map ``w -> w_hw`` of one simulated chip (module docstring).

    ``sim``: the :class:`nn.sim.SimConfig` the model will be evaluated with.
    ``noise_scale``: multiplies the chip's per-weight noise std (1 = the chip; 0 = no noise).
    ``quantize``: the forward uses the chip's mean read-back weight of the quantized code (else
    ``w`` itself, plus the noise).
    ``msb_copies``: 0, or 1 / 2 embedded MSB copies: fake-quantize to the values the protected
    mapping keeps (no noise: the vote over noisy MSB replicas is not a Gaussian).
    ``levels``: a ``LevelTable`` to use instead of :func:`nn.sim.build_levels` ``(sim)``.

    Holds only immutable tables (and their copies per device/dtype); calling it is pure apart
    from the draws from the passed generator.
    """

    def __init__(self, sim: Any, *, noise_scale: float = 1.0, quantize: bool = True, msb_copies: int = 0, levels: Any = None) -> None:
        from nn.sim import SimConfig, build_levels, effective_crossbar

        if not isinstance(sim, SimConfig):
            raise ValueError(f"sim must be a SimConfig, got {type(sim).__name__}")
        if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)) or not (0 <= noise_scale < math.inf):
            raise ConfigError(f"noise_scale={noise_scale!r} is invalid: must be finite and >= 0")
        if msb_copies not in (0, 1, 2):
            raise ConfigError(f"msb_copies={msb_copies!r} is invalid: must be 0 (off), 1 or 2")
        if msb_copies and noise_scale > 0:
            raise ConfigError(
                "msb_copies > 0 with crossbar noise is not modelled (the MSB read is a vote over noisy replicas, "
                "not a Gaussian); use noise_scale=0 for MSB-embedding-aware fake quantization"
            )
        if not quantize and not msb_copies and noise_scale == 0:
            raise ConfigError("a hardware view without quantization, noise or MSB embedding changes nothing")
        self.sim = sim
        self.cfg: CrossbarConfig = sim.crossbar
        self.noise_scale = float(noise_scale)
        self.quantize = bool(quantize) or msb_copies > 0
        self.msb_copies = int(msb_copies)
        if msb_copies:
            from mapping.protection import ProtectionConfig

            ProtectionConfig(msb_embed=True, msb_copies=msb_copies).check_against(self.cfg)
            self.stats: CodeStats | None = None
            self.levels_source = None
        else:
            lv = build_levels(sim) if levels is None else levels
            # the chip's read noise too; with crossbar.read_time_s > 0 its cells as relaxed at that time
            self.stats = code_statistics(effective_crossbar(sim, lv), lv, relaxed_moments(sim, lv))
            self.levels_source = str(getattr(lv, "source", "?"))
            self.read_time_s = float(sim.crossbar.read_time_s)
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def noiseless(self) -> "HardwareView":
        """This view without noise, quantizing: the deterministic part of the chip's weight."""
        if self.noise_scale == 0 and self.quantize:
            return self
        v = copy.copy(self)
        v.noise_scale, v.quantize, v._tables = 0.0, True, {}
        return v

    def _lut(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self._tables:
            if self.stats is None:  # MSB-embedding views carry no noise tables (see __call__)
                raise RuntimeError("this hardware view has no code statistics (msb_copies > 0)")
            self._tables[key] = (
                torch.from_numpy(self.stats.mean).to(device=device, dtype=dtype),
                torch.from_numpy(self.noise_scale * self.stats.std).to(device=device, dtype=dtype),
            )
        return self._tables[key]

    def codes(self, w: torch.Tensor) -> QTensor:
        """The codes the chip stores for ``w`` (MSB-embedding: the codes the weight keeps)."""
        qt = quantize_like_engine(w, self.cfg)
        if self.msb_copies:
            from mapping.protection import embed_msb

            qt = embed_msb(qt, self.cfg, self.msb_copies)[1]
        return qt

    def __call__(self, w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``w_hw`` for ``w`` ``(out, in)``: same shape, dtype and device; one ``N(0, 1)`` draw per
        weight from ``generator`` (on the generator's device) when the view has noise."""
        if w.ndim != 2 or not torch.is_floating_point(w):
            raise ValueError(f"expected a floating-point (out, in) weight, got {tuple(w.shape)} {w.dtype}")
        qt = self.codes(w)
        if self.stats is None:  # MSB-embedding fake quantization: exact codes * step
            return qt.dequantize(w.dtype)
        mean, std = self._lut(w.device, w.dtype)
        idx = qt.q.to(torch.int64).add_(self.stats.q_max).view(-1)
        step = qt.scale_full(w.dtype).to(w.device)
        out = mean.index_select(0, idx).view(w.shape).mul_(step) if self.quantize else w.detach().clone()
        if self.noise_scale > 0:
            if generator is None:
                raise ValueError("a hardware view with noise needs generator, a seeded torch.Generator")
            z = torch.randn(w.shape, generator=generator, device=generator.device, dtype=torch.float32)
            z = z.to(device=w.device, dtype=w.dtype)
            out.add_(std.index_select(0, idx).view(w.shape).mul_(step).mul_(z))
        return out

    def layer_report(self, w: torch.Tensor) -> dict[str, float]:
        """Scale of ``w`` and of the view's error on it, in weight steps (LSB) and relative."""
        qt = quantize_like_engine(w, self.cfg)
        step = float(qt.scale_full(torch.float64).max())
        rms_w = float(w.detach().double().pow(2).mean().sqrt())
        rep = {"step": step, "weight_rms_lsb": rms_w / step}
        if self.stats is not None:
            sd = torch.from_numpy(self.noise_scale * self.stats.std)[qt.q.cpu().to(torch.int64) + self.stats.q_max]
            rms_n = float(sd.pow(2).mean().sqrt())
            rep.update({"noise_rms_lsb": rms_n, "noise_rms_over_weight_rms": rms_n * step / rms_w if rms_w > 0 else math.inf})
        fq = self.codes(w).dequantize(torch.float64)
        rep["quantization_rms_lsb"] = float((fq - w.detach().double()).pow(2).mean().sqrt()) / step
        return rep

    def describe(self) -> dict[str, Any]:
        """What the view does, for ``reram_cosim_finetune.json``."""
        c = self.cfg
        d: dict[str, Any] = {
            "quantize": self.quantize,
            "noise_scale": self.noise_scale,
            "msb_copies": self.msb_copies,
            "weight_format": f"{c.weight_bits}-bit {c.weight_format} fixed point per {c.weight_granularity}",
            "slices": list(c.slice_bits),
            "mapping": c.mapping,
        }
        if self.stats is not None:
            s = self.stats
            d.update({
                "levels": self.levels_source,
                "relaxation_read_time_s": self.read_time_s,
                "dg_s": s.dg_s,
                "noise_std_lsb_code0": float(self.noise_scale * s.std[s.q_max]),
                "noise_std_lsb_max_code": float(self.noise_scale * s.std[-1]),
                "mean_bias_lsb_max": float(np.abs(s.mean - np.arange(-s.q_max, s.q_max + 1)).max()),
            })
        sim = self.sim
        off = []
        if sim.faults.rate > 0:
            off.append("stuck-at faults")
        if c.ir_drop != "ideal":
            off.append("IR drop")
        if c.adc_bits is not None:
            off.append("ADC quantization")
        off.append("input (DAC) quantization")
        d["not_modelled"] = off
        return d


def _targets(modules: Any) -> list[torch.Tensor]:
    """The weight tensors of ``modules``: modules (their ``weight``), ``(name, module)`` pairs,
    weight tensors (a parameter or a view of one, e.g. a convolution group's matrix), or a dict
    ``{name: tensor}`` (:func:`nn.crossbar_linear.matrix_weights`)."""
    items = list(modules.values()) if isinstance(modules, dict) else list(modules)
    out = []
    for m in items:
        m = m[1] if isinstance(m, tuple) else m
        out.append(m if isinstance(m, torch.Tensor) else m.weight)
    return out


@contextlib.contextmanager
def hardware_weights(
    modules: Sequence[nn.Module] | Sequence[tuple[str, nn.Module]] | Sequence[torch.Tensor] | dict[str, torch.Tensor],
    view: HardwareView | None,
    generator: torch.Generator | None,
) -> Iterator[None]:
    """Replace each weight by ``view(weight, generator)`` inside the block (draws in order) and
    restore it bit for bit after, also when the block raises. ``modules``: modules (their
    ``weight``), ``(name, module)`` pairs, or the ``(out, in)`` weight matrices themselves
    (parameters or views of them: a convolution's groups, an RNN's matrices, as
    :func:`nn.crossbar_linear.matrix_weights` lists them); writing into a view writes its
    parameter. ``view=None``: nothing happens. Gradients computed inside the block are taken at
    ``w_hw`` and land on the parameter, i.e. the straight-through estimator."""
    if view is None:
        yield
        return
    weights = _targets(modules)
    saved: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for w in weights:
                saved.append(w.detach().clone())
                w.copy_(view(w, generator))
        yield
    finally:
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)
