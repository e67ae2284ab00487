"""Level placement against relaxation: where to put a multi-level cell's conductance levels so
that a layer read ``T`` seconds after programming is as close as possible to its weights.

A relaxing device does not spread every level alike (tech B: a 3 uS or a 100-120 uS cell moves
by about 1 uS in 10^4 s, a 30-60 uS cell by 9-11 uS), and most cells of a transformer layer hold
digit 0 (76-97 % of MiniLM's cells), so which absolute conductances the digits sit at decides the
layer's error at ``T``. The engine reads a multi-bit cell through the analog sum of its column,
which is linear only when the levels are equally spaced in conductance (unequal levels leave a
systematic error at ``t = 0``), so the levels stay equally spaced and the choice is the window:
where digit 0 sits (``g_lo``) and where the top level sits (``g_hi``); for one bit per cell that
is the placement of both levels.

The objective is the layer's expected relative MVM error at ``T`` (or its RMS over several
times), computed in closed form from

* the relaxation model's exact moments of ``g(T) - g0`` per programmed conductance
  (:func:`device.relaxation.level_moments`), averaged over each level's programming variation
  (relative write-verify residuals, e.g. a level table's ``g / g_target - 1``) and with the read
  noise;
* the engine's own slicing and fold (:func:`crossbar.pipeline.cell_digits`,
  :func:`crossbar.pipeline.fold`): for every weight code ``q`` the read-back code has mean
  ``sum_cells sign 2**(bpc s) mu(d) / step`` and variance ``sum_cells 4**(bpc s) var(d) / step**2``;
* a distribution of weight codes (a Gaussian layer by default, or a model's layers):
  ``error**2 = sum_q p(q) [(mean(q) - q)**2 + var(q)] / sum_q p(q) q**2`` for inputs uncorrelated
  across rows (what a random-input MVM error measures; quantization error, the same for every
  window, is left out). With drift compensation (``compensation`` not "none") the read is first
  scaled by the least-squares gain, as :meth:`crossbar.engine.ProgrammedMatrix.compensate` does.

:func:`optimize_window` searches the window on a grid (geometric in both ends, then refined)
inside the conductances the relaxation model was fitted on and the device can be programmed to.
``reram-cosim device levels optimize`` runs it and programs the chosen levels by write-verify.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

import numpy as np
import torch

from crossbar.config import CrossbarConfig
from crossbar.layout import default_layout
from crossbar.pipeline import cell_digits, fold
from crossbar.quant import QTensor, code_dtype, q_max
from device.config import ConfigError, check_choice

__all__ = [
    "DigitMatrices",
    "digit_matrices",
    "code_moments",
    "layer_error",
    "gaussian_code_probs",
    "code_probs_of",
    "Placement",
    "optimize_window",
    "window_error",
    "NAIVE_WINDOW_S",
]

#: the naive placement the toolkit shipped before: levels equally spaced from 10 uS (digit 0)
#: to 100 uS (the top level), the window of data/levels_b1..b4.h5
NAIVE_WINDOW_S = (10e-6, 100e-6)

#: bit lines of the one-row tile the code table is folded on (every code once)
_LUT_TILE_COLS = 4096


@dataclasses.dataclass(frozen=True)
class DigitMatrices:
    """How each weight code is built from its cells' levels, from the engine's slicing and fold.

    ``mean``: ``(n_codes, levels)``: read-back code = ``mean @ mu / step`` for per-level mean
    conductances ``mu`` (signed sums of ``2**(bpc s)``); ``var``: ``(n_codes, levels)``:
    variance = ``var @ v / step**2`` for per-level variances ``v`` (sums of ``4**(bpc s)``);
    ``codes``: ``(n_codes,)`` the signed codes ``-q_max..q_max``."""

    mean: np.ndarray
    var: np.ndarray
    codes: np.ndarray


def digit_matrices(cfg: CrossbarConfig) -> DigitMatrices:
    """:class:`DigitMatrices` for ``cfg`` (weight bits, bits per cell, mapping, slicing): the
    engine's :func:`cell_digits` and :func:`fold` on a one-row matrix holding every code once,
    folded with one-hot level conductances (one fold per level; the variance through the fold's
    read-noise path with ``sigma = 1``, as :func:`nn.hwtrain.code_statistics` does)."""
    qm = q_max(cfg.weight_bits)
    n = 2 * qm + 1
    lut = cfg.replace(tile_rows=1, tile_cols=_LUT_TILE_COLS, adc_bits=None, ir_drop="ideal", read_noise_sigma_rel=0.0,
                      weight_format="static", weight_frac_bits=0, weight_granularity="layer")
    codes = torch.arange(-qm, qm + 1, dtype=torch.int64).view(n, 1)
    qt = QTensor(q=codes.to(code_dtype(cfg.weight_bits)), frac_bits=torch.zeros((), dtype=torch.int64), bits=cfg.weight_bits)
    layout = default_layout(n, 1, lut)
    digits = cell_digits(qt, layout, lut).numpy()
    L = 2**cfg.bits_per_cell
    cpu = torch.device("cpu")
    A = np.zeros((n, L))
    V = np.zeros((n, L))
    for d in range(L):
        onehot = torch.from_numpy((digits == d).astype(np.float64))
        A[:, d] = fold(onehot, qt, layout, lut, 1.0, cpu, torch.float64).readout[:, 0].numpy()
        nv = fold(onehot, qt, layout, lut.replace(read_noise_sigma_rel=1.0), 1.0, cpu, torch.float64).noise_var
        V[:, d] = nv[:, 0].numpy()
    return DigitMatrices(mean=A, var=V, codes=np.arange(-qm, qm + 1))


def code_moments(dm: DigitMatrices, mu_s: np.ndarray, var_s2: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the read-back code, per code, for per-level mean conductances
    ``mu_s`` and variances ``var_s2`` and the level step ``step_s`` the read decodes with."""
    return dm.mean @ np.asarray(mu_s) / step_s, dm.var @ np.asarray(var_s2) / step_s**2


def layer_error(probs: np.ndarray, codes: np.ndarray, mean: np.ndarray, var: np.ndarray,
                compensation: Literal["none", "global", "column"] = "none") -> float:
    """Relative RMS MVM error of a layer whose codes follow ``probs`` (see the module
    docstring); with compensation the read is scaled by the least-squares gain first (one gain
    for the codes' distribution: "global" and "column" alike, since every column here has the
    same distribution)."""
    check_choice("compensation", compensation, ("none", "global", "column"))
    p = np.asarray(probs, float)
    q = np.asarray(codes, float)
    signal = float(np.sum(p * q * q))
    if signal <= 0:
        raise ConfigError("the code distribution holds only zeros: no signal to measure an error against")
    g = 1.0
    if compensation != "none":
        den = float(np.sum(p * (mean * mean + var)))
        g = float(np.sum(p * q * mean)) / den if den > 0 else 1.0
    return float(np.sqrt(np.sum(p * ((g * mean - q) ** 2 + g * g * var)) / signal))


def gaussian_code_probs(cfg: CrossbarConfig, shape: tuple[int, int] = (384, 384), seed: int = 0) -> np.ndarray:
    """``(2 q_max + 1,)`` code frequencies of a Gaussian ``shape`` layer quantized as the engine
    quantizes it (``cfg``'s weight format): the default layer of the placement."""
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return code_probs_of([w], cfg)


def code_probs_of(weights: Sequence[torch.Tensor], cfg: CrossbarConfig) -> np.ndarray:
    """``(2 q_max + 1,)`` frequencies of the codes of ``weights`` (each ``(out, in)``, e.g. a
    model's crossbar layers) quantized in ``cfg``'s weight format, each layer by itself."""
    from crossbar.engine import quantize_weight

    qm = q_max(cfg.weight_bits)
    counts = np.zeros(2 * qm + 1)
    for w in weights:
        w = w.detach().to(torch.float64).cpu()
        qt = quantize_weight(w, cfg, default_layout(w.shape[0], w.shape[1], cfg))
        counts += np.bincount(qt.q.to(torch.int64).view(-1).numpy() + qm, minlength=2 * qm + 1)
    if counts.sum() == 0:
        raise ConfigError("no weights to take the code distribution from")
    return counts / counts.sum()


def window_error(model: Any, lo_s: float, hi_s: float, times_s: Sequence[float], dm: DigitMatrices, probs: np.ndarray, *,
                 residual_rel: np.ndarray, read_noise_rel: float = 0.0, compensation: str = "none",
                 level_samples_s: Sequence[np.ndarray] | None = None, out_of_range: str = "raise") -> np.ndarray:
    """``(times,)`` relative layer error of levels equally spaced from ``lo_s`` to ``hi_s`` at
    each time: each level's programmed conductances are ``target (1 + residual_rel)`` (or the
    given ``level_samples_s``, e.g. a written table's), relaxed by ``model`` and read with
    ``read_noise_rel``."""
    from device.relaxation import level_moments

    L = dm.mean.shape[1]
    targets = np.linspace(lo_s, hi_s, L)
    step = (hi_s - lo_s) / (L - 1)
    samples = level_samples_s if level_samples_s is not None else [t * (1.0 + np.asarray(residual_rel)) for t in targets]
    out = []
    for t in times_s:
        mu, var = level_moments(model, samples, float(t), read_noise_rel=read_noise_rel, out_of_range=out_of_range)
        mean, v = code_moments(dm, mu, var, step)
        out.append(layer_error(probs, dm.codes, mean, v, compensation))
    return np.array(out)


@dataclasses.dataclass(frozen=True)
class Placement:
    """What :func:`optimize_window` chose, and against what.

    ``g_lo_s`` / ``g_hi_s``: the window (digit 0 and the top level); ``targets_s``: the levels;
    ``times_s``: the read times optimized for; ``error``: ``(times,)`` predicted relative layer
    error at each; ``objective``: their RMS (what was minimised). ``naive_*``: the same for the
    naive window :data:`NAIVE_WINDOW_S` (None where it leaves the allowed range). ``grid_lo_s``,
    ``grid_hi_s``, ``grid_objective``: the coarse search (NaN where ``lo >= hi`` or the on/off
    bound fails). ``bounds_s``: the allowed range of programmed conductances."""

    bits_per_cell: int
    g_lo_s: float
    g_hi_s: float
    targets_s: np.ndarray
    times_s: np.ndarray
    error: np.ndarray
    objective: float
    naive_window_s: tuple[float, float]
    naive_error: np.ndarray | None
    grid_lo_s: np.ndarray
    grid_hi_s: np.ndarray
    grid_objective: np.ndarray
    bounds_s: tuple[float, float]
    compensation: str
    read_noise_rel: float

    def summary(self) -> str:
        ts = ", ".join(f"{t:g} s" for t in self.times_s)
        lines = [
            f"level placement, {self.bits_per_cell} bit(s)/cell, read at {ts}"
            + (f", {self.compensation} drift compensation" if self.compensation != "none" else ""),
            f"  allowed programmed conductances {self.bounds_s[0] * 1e6:.3g}..{self.bounds_s[1] * 1e6:.3g} uS",
            f"  chosen: digit 0 at {self.g_lo_s * 1e6:.3g} uS, top level at {self.g_hi_s * 1e6:.3g} uS "
            f"(levels {', '.join(f'{g * 1e6:.3g}' for g in self.targets_s)} uS)",
            "  predicted relative layer error: " + ", ".join(f"{e:.4f} at {t:g} s" for e, t in zip(self.error, self.times_s)),
        ]
        if self.naive_error is not None:
            lines.append(f"  naive {self.naive_window_s[0] * 1e6:.3g}-{self.naive_window_s[1] * 1e6:.3g} uS: "
                         + ", ".join(f"{e:.4f} at {t:g} s" for e, t in zip(self.naive_error, self.times_s)))
        return "\n".join(lines)


def optimize_window(
    model: Any,
    bits_per_cell: int,
    times_s: Sequence[float],
    *,
    cfg: CrossbarConfig | None = None,
    code_probs: np.ndarray | None = None,
    residual_rel: np.ndarray | None = None,
    read_noise_rel: float = 0.0,
    g_min_s: float | None = None,
    g_max_s: float | None = None,
    min_on_off: float = 1.0,
    compensation: Literal["none", "global", "column"] = "none",
    n_grid: int = 40,
) -> Placement:
    """Choose the window of equally spaced levels that minimises the layer's expected error
    at ``times_s`` (RMS over them) under relaxation ``model`` (a
    ``device.relaxation.RelaxationModel``; see the module docstring).

    ``cfg``: the crossbar config whose slicing the layer uses (default: 8-bit weights on
    differential pairs, ``bits_per_cell``). ``code_probs``: the weight-code distribution (default
    :func:`gaussian_code_probs`). ``residual_rel``: relative programming residuals ``g / target -
    1`` (default: none, the targets exactly). ``g_min_s`` / ``g_max_s``: bounds on the
    programmed conductances (intersected with the model's fitted range, shrunk by the residuals so
    that every programmed conductance stays inside it). ``min_on_off``: ``g_hi / g_lo`` at least
    this. The search: a geometric ``n_grid x n_grid`` grid of (lo, hi), then a finer grid around
    the best point."""
    if cfg is None:
        cfg = CrossbarConfig(bits_per_cell=bits_per_cell)
    if cfg.bits_per_cell != bits_per_cell:
        raise ConfigError(f"cfg has bits_per_cell={cfg.bits_per_cell} but bits_per_cell={bits_per_cell} was asked for")
    times = np.atleast_1d(np.asarray(times_s, float))
    if times.size == 0 or np.any(times < 0) or not np.all(np.isfinite(times)):
        raise ConfigError(f"times_s={list(times)} is invalid: at least one finite time >= 0 (s)")
    for t in times:
        model.quantiles_at(float(t))  # the model's range check: refuses unmeasured times
    if min_on_off < 1.0:
        raise ConfigError(f"min_on_off={min_on_off!r} is invalid: must be >= 1")
    if n_grid < 4:
        raise ConfigError(f"n_grid={n_grid!r} is invalid: must be >= 4")
    check_choice("compensation", compensation, ("none", "global", "column"))
    res = np.zeros(1) if residual_rel is None else np.asarray(residual_rel, float).ravel()
    lo_b = float(model.g0_min_s) / (1.0 + min(float(res.min()), 0.0))
    hi_b = float(model.g0_max_s) / (1.0 + max(float(res.max()), 0.0))
    if g_min_s is not None:
        lo_b = max(lo_b, float(g_min_s))
    if g_max_s is not None:
        hi_b = min(hi_b, float(g_max_s))
    if not (0 < lo_b < hi_b) or hi_b / lo_b < max(min_on_off, 1.0 + 1e-6):
        raise ConfigError(
            f"no window fits: programmed conductances must lie in {lo_b * 1e6:.4g}..{hi_b * 1e6:.4g} uS (the relaxation "
            f"model's fitted range, the device's and --window) with g_hi / g_lo >= {min_on_off:g}"
        )
    dm = digit_matrices(cfg)
    probs = gaussian_code_probs(cfg) if code_probs is None else np.asarray(code_probs, float)
    if probs.shape != dm.codes.shape:
        raise ConfigError(f"code_probs must hold {dm.codes.size} frequencies (codes -q_max..q_max)")

    def objective(lo: float, hi: float) -> float:
        e = window_error(model, lo, hi, times, dm, probs, residual_rel=res, read_noise_rel=read_noise_rel,
                         compensation=compensation)
        return float(np.sqrt(np.mean(e * e)))

    def search(los: np.ndarray, his: np.ndarray) -> tuple[np.ndarray, float, float]:
        grid = np.full((los.size, his.size), np.nan)
        for i, lo in enumerate(los):
            for j, hi in enumerate(his):
                if hi > lo * max(min_on_off, 1.0 + 1e-9):
                    grid[i, j] = objective(float(lo), float(hi))
        if np.all(np.isnan(grid)):
            raise ConfigError("no window on the search grid satisfies the bounds")
        i, j = np.unravel_index(np.nanargmin(grid), grid.shape)
        return grid, float(los[i]), float(his[j])

    glo = np.geomspace(lo_b, hi_b, n_grid)
    ghi = np.geomspace(lo_b, hi_b, n_grid)
    grid, lo, hi = search(glo, ghi)
    # refine: a finer geometric grid spanning one coarse cell either side of the best point
    r = (hi_b / lo_b) ** (1.0 / (n_grid - 1))
    flo = np.geomspace(max(lo_b, lo / r), min(hi_b, lo * r), 9)
    fhi = np.geomspace(max(lo_b, hi / r), min(hi_b, hi * r), 9)
    _, lo, hi = search(flo, fhi)
    err = window_error(model, lo, hi, times, dm, probs, residual_rel=res, read_noise_rel=read_noise_rel, compensation=compensation)
    naive = None
    n_lo, n_hi = NAIVE_WINDOW_S
    if model.g0_min_s <= n_lo * (1 + min(float(res.min()), 0.0)) and n_hi * (1 + max(float(res.max()), 0.0)) <= model.g0_max_s:
        naive = window_error(model, n_lo, n_hi, times, dm, probs, residual_rel=res, read_noise_rel=read_noise_rel,
                             compensation=compensation)
    return Placement(
        bits_per_cell=bits_per_cell, g_lo_s=lo, g_hi_s=hi, targets_s=np.linspace(lo, hi, 2**bits_per_cell), times_s=times,
        error=err, objective=float(np.sqrt(np.mean(err * err))), naive_window_s=NAIVE_WINDOW_S, naive_error=naive,
        grid_lo_s=glo, grid_hi_s=ghi, grid_objective=grid, bounds_s=(lo_b, hi_b), compensation=compensation,
        read_noise_rel=float(read_noise_rel),
    )


def plot_placement(placement: Placement, model: Any, path: Any) -> Any:
    """Two panels: the relaxation model's spread of ``g(T) - g0`` versus the programmed
    conductance at each read time, with the chosen levels and the naive ones marked; and the
    search's objective over (digit-0 conductance, top conductance). PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from device.plots import save_figure

    p = placement
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    g = np.linspace(model.g0_bin_s[0], model.g0_bin_s[-1], 400)
    for t in p.times_s:
        if t == 0:
            continue
        m1, m2 = model.dg_moments(g, float(t))
        ax[0].plot(g * 1e6, np.sqrt(np.maximum(m2 - m1 * m1, 0)) * 1e6, lw=1, label=f"spread at {t:g} s")
    for k, x in enumerate(p.targets_s):
        ax[0].axvline(x * 1e6, color="tab:green", lw=1.5, label="chosen levels" if k == 0 else None)
    L = p.targets_s.size
    for k, x in enumerate(np.linspace(*p.naive_window_s, L)):
        ax[0].axvline(x * 1e6, color="tab:red", lw=1, ls="--", label="naive equal spacing" if k == 0 else None)
    ax[0].set(xlabel="programmed conductance g0 (uS)", ylabel="std of g(t) - g0 (uS)",
              title=f"{p.bits_per_cell} bit(s)/cell: where the levels sit")
    ax[0].legend(fontsize=7)
    lo, hi = np.meshgrid(p.grid_lo_s * 1e6, p.grid_hi_s * 1e6, indexing="ij")
    cm = ax[1].pcolormesh(lo, hi, np.log10(p.grid_objective), shading="auto", cmap="viridis")
    fig.colorbar(cm, ax=ax[1], label="log10 predicted relative layer error")
    ax[1].plot(p.g_lo_s * 1e6, p.g_hi_s * 1e6, "o", color="tab:green", ms=8, label="chosen")
    if p.naive_error is not None:
        ax[1].plot(p.naive_window_s[0] * 1e6, p.naive_window_s[1] * 1e6, "x", color="tab:red", ms=8, mew=2, label="naive")
    ax[1].set(xscale="log", yscale="log", xlabel="digit 0 at (uS)", ylabel="top level at (uS)", title="search (RMS over the times)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)[0]
