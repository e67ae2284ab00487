"""Tabulated IR-drop model: attenuation factors ``A`` with ``M ≈ g ⊙ A`` for whole tiles.

A linear crossbar with wire resistance computes ``i_out = v_in @ M`` with an input-independent
effective matrix ``M`` (:func:`crossbar.solver.effective_matrix`). This module tabulates a cheap
model of ``M / g`` so that the layers above apply IR drop without solving circuits: the
attenuation is computed once from the programmed conductances (vectorized over tiles, numpy or
torch) and folded into the weights, so it costs nothing per inference.

Models compared on held-out tiles (:func:`tabulate` measures all, keeps the best):

``none``
    ``A = 1`` (ideal ``G.V``).
``first_order``
    The simplest analytical correction, first order in the wire resistance: a unit input on
    word line ``i`` loses ``r_row * P_row[i, j]`` along the word line and the bit line rises by
    ``r_col * P_col[i, j]``, with ``P_row[i, j] = sum_{k<=j} sum_{m>=k} g[i, m]`` (current through
    every segment between the driver and cell ``j``) and ``P_col[i, j] = sum_n g[n, j] (R -
    max(n, i))`` (bit-line rise at row ``i`` times the leakage back through the other cells);
    ``A = 1 - x`` with ``x = r_row P_row + r_col P_col`` (cumulative sums only).
``position``
    ``A[i, j]`` averaged over training tiles: position only.
``lut``
    ``A = F(x)``: a monotone lookup table of the exact attenuation against the first-order
    predictor ``x``, fitted per tile size and wire resistance. ``x`` carries the position, the
    local conductance and the load of the row and the column; the table corrects the higher-order
    terms that ``1 - x`` misses (it is badly wrong at 40 % drop).

When it is sampled: once, from the programmed conductances (an effect of the circuit, not of
time). Valid range: the tile sizes tabulated (exactly), wire resistances inside the tabulated
grid (linear interpolation between grid points), one-side drive, ideal sense, equal row/column
wire resistance, conductances inside the training distribution's window. Outside, it raises.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.config import Config, check_int_range, check_positive, check_range, config

__all__ = [
    "TabulateConfig",
    "IRDropTable",
    "first_order_predictor",
    "sample_tiles",
    "tabulate",
    "demo_figures",
    "MODELS",
]

MODELS = ("none", "first_order", "position", "lut")
_N_BINS = 400  # bins of u = x/(1+x) in [0, 1) for the lut statistics


@config
class TabulateConfig(Config):
    """How IR-drop samples are drawn and the model is fitted."""

    sizes: tuple[int, ...] = (64, 128)
    """Square tile sizes (rows = cols) to tabulate."""
    r_wire_ohm: tuple[float, ...] = (0.5, 1.0, 2.5, 5.0)
    """Wire resistance per segment (rows and columns alike), ohm; the interpolation grid."""
    samples: int = 16
    """Training tiles per (size, r_wire)."""
    holdout: int = 4
    """Held-out tiles per (size, r_wire) for the fidelity measurement."""
    inputs_per_tile: int = 8
    """Random input vectors per held-out tile (input statistics enter only here, see below)."""
    g_min_s: float = 1e-6
    """Lowest programmed conductance, S (1 Mohm HRS)."""
    g_max_s: float = 1e-4
    """Highest programmed conductance, S (10 kohm LRS)."""
    levels: int = 4
    """Conductance levels, linearly spaced in [g_min_s, g_max_s] (ignored with levels_table)."""
    sigma_rel: float = 0.05
    """Relative programming spread of each level (lognormal sigma)."""
    levels_table: str = ""
    """Optional path of a ``levels`` HDF5 table: conductances are drawn from its ``g_s``."""
    v_read_v: float = 0.2
    """Full-scale word-line voltage, V (the full-scale current is rows * g_max_s * v_read_v)."""
    input_density: float = 0.5
    """Probability that a word line is driven; driven lines get U(0, v_read_v)."""
    engine: str = "exact"
    """'exact' (crossbar.solver block elimination) or 'spice' (ngspice, one run per word line)."""
    seed: int = 0
    """Seed of the numpy Generator; each (size, r, chunk) gets its own spawned stream."""
    chunk: int = 4
    """Tiles per work unit (one resumable part file each)."""

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ValueError("sizes must not be empty")
        for s in self.sizes:
            check_int_range("sizes", s, 2, 4096)
        if not self.r_wire_ohm:
            raise ValueError("r_wire_ohm must not be empty")
        for r in self.r_wire_ohm:
            check_range("r_wire_ohm", r, 0.0, 1e3, lo_open=True)
        check_int_range("samples", self.samples, 1)
        check_int_range("holdout", self.holdout, 1)
        check_int_range("inputs_per_tile", self.inputs_per_tile, 1)
        check_positive("g_min_s", self.g_min_s)
        check_positive("g_max_s", self.g_max_s)
        if self.g_max_s <= self.g_min_s:
            raise ValueError(f"g_max_s={self.g_max_s!r} is invalid: must be > g_min_s={self.g_min_s!r}")
        check_int_range("levels", self.levels, 2, 1 << 16)
        check_range("sigma_rel", self.sigma_rel, 0.0, 1.0)
        check_positive("v_read_v", self.v_read_v)
        check_range("input_density", self.input_density, 0.0, 1.0, lo_open=True)
        if self.engine not in ("exact", "spice"):
            raise ValueError(f"engine={self.engine!r} is invalid: must be one of 'exact', 'spice'")
        check_int_range("seed", self.seed, 0)
        check_int_range("chunk", self.chunk, 1)


# ----------------------------------------------------------------------------- predictor


def _xp(a):
    try:
        import torch

        if isinstance(a, torch.Tensor):
            return torch
    except ImportError:  # torch is a dependency, but keep numpy-only use working
        pass
    return np


def first_order_predictor(g_s, r_wire_row_ohm: float, r_wire_col_ohm: float):
    """``x = r_row P_row + r_col P_col`` (see module docstring), same shape as ``g_s``.

    ``g_s`` ``(…, rows, cols)`` numpy array or torch tensor (any device); cumulative sums only.
    """
    xp = _xp(g_s)
    g = g_s
    rows = g.shape[-2]
    if xp is np:
        rsum = np.flip(np.cumsum(np.flip(g, -1), -1), -1)  # sum_{m>=k} g[i,m]
        p_row = np.cumsum(rsum, -1)
        n = np.arange(rows, dtype=g.dtype)[:, None]
        tail = np.flip(np.cumsum(np.flip(g * (rows - n), -2), -2), -2)  # sum_{n>=i} g (R-n)
        head = np.cumsum(g, -2) - g  # sum_{n<i} g
    else:
        rsum = xp.flip(xp.cumsum(xp.flip(g, (-1,)), -1), (-1,))
        p_row = xp.cumsum(rsum, -1)
        n = xp.arange(rows, dtype=g.dtype, device=g.device)[:, None]
        tail = xp.flip(xp.cumsum(xp.flip(g * (rows - n), (-2,)), -2), (-2,))
        head = xp.cumsum(g, -2) - g
    p_col = tail + (rows - n) * head
    return r_wire_row_ohm * p_row + r_wire_col_ohm * p_col


def _u(x):
    return x / (1.0 + x)


def _interp(xp, x, xk, yk):
    """Piecewise-linear interpolation, constant beyond the ends (numpy or torch)."""
    if xp is np:
        return np.interp(x, xk, yk)
    import torch

    xk = torch.as_tensor(xk, dtype=x.dtype, device=x.device)
    yk = torch.as_tensor(yk, dtype=x.dtype, device=x.device)
    xc = x.clamp(xk[0], xk[-1])
    idx = torch.searchsorted(xk, xc.contiguous()).clamp(1, xk.numel() - 1)
    x0, x1 = xk[idx - 1], xk[idx]
    y0, y1 = yk[idx - 1], yk[idx]
    w = (xc - x0) / (x1 - x0)
    return y0 + w * (y1 - y0)


# ----------------------------------------------------------------------------- sampling


def sample_tiles(cfg: TabulateConfig, rows: int, cols: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, rows, cols)`` programmed conductances, siemens, from the configured distribution."""
    if cfg.levels_table:
        from device import tables

        pool = np.asarray(tables.read_table(cfg.levels_table, kind="levels").arrays["g_s"].data, float).ravel()
        pool = pool[np.isfinite(pool) & (pool > 0)]
        return rng.choice(pool, size=(n, rows, cols))
    lv = np.linspace(cfg.g_min_s, cfg.g_max_s, cfg.levels)
    g = lv[rng.integers(0, cfg.levels, size=(n, rows, cols))]
    if cfg.sigma_rel > 0:
        g = g * np.exp(cfg.sigma_rel * rng.standard_normal(g.shape))
    return np.clip(g, cfg.g_min_s * 0.5, cfg.g_max_s * 2.0)


def sample_inputs(cfg: TabulateConfig, rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``(rows, k)`` word-line voltages: driven with probability ``input_density``, U(0, v_read)."""
    on = rng.random((rows, k)) < cfg.input_density
    return np.where(on, rng.uniform(0.0, cfg.v_read_v, (rows, k)), 0.0)


def _effective(g: np.ndarray, r: float, engine: str) -> np.ndarray:
    """Exact effective matrices ``(n, R, C)`` of tiles ``g`` at wire resistance ``r``."""
    from crossbar.solver import CircuitConfig, effective_matrix

    if engine == "exact":
        return effective_matrix(g, CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r))
    from device.spice.crossbar import run_crossbar

    out = np.empty_like(g)
    for t in range(g.shape[0]):
        for i in range(g.shape[1]):
            v = np.zeros(g.shape[1])
            v[i] = 1.0
            out[t, i] = run_crossbar(g[t], v, r_wire_row_ohm=r, r_wire_col_ohm=r)["i_out_a"]
    return out


def _work(args) -> dict[str, np.ndarray]:
    """One work unit: sufficient statistics of ``A = M/g`` for ``chunk`` training tiles."""
    cfg_dict, size, r, seed_seq, n = args
    cfg = TabulateConfig.from_dict(cfg_dict)
    rng = np.random.default_rng(seed_seq)
    g = sample_tiles(cfg, size, size, n, rng)
    m = _effective(g, r, cfg.engine)
    # Least squares in M, not in A = M/g: small cells get A far from 1 through sneak paths (a
    # neighbour's current, not their own), which matters little in current but would dominate a
    # plain mean of A. Per bin: A = sum(g M) / sum(g^2).
    x = first_order_predictor(g, r, r)
    b = np.minimum((_u(x) * _N_BINS).astype(int), _N_BINS - 1).ravel()
    gg = (g * g).ravel()
    return {
        "count": np.bincount(b, minlength=_N_BINS).astype(float),
        "sum_gg": np.bincount(b, weights=gg, minlength=_N_BINS),
        "sum_gm": np.bincount(b, weights=(g * m).ravel(), minlength=_N_BINS),
        "sum_ggu": np.bincount(b, weights=gg * _u(x).ravel(), minlength=_N_BINS),
        "pos_gm": (g * m).sum(axis=0),
        "pos_gg": (g * g).sum(axis=0),
    }


# ----------------------------------------------------------------------------- the table


@dataclass
class _Entry:
    """Fitted model data of one (size, r_wire)."""

    u_knots: np.ndarray  # (K,) increasing, u = x/(1+x)
    a_knots: np.ndarray  # (K,)
    a_position: np.ndarray | None = None  # (R, C) for the position model


@dataclass
class IRDropTable:
    """Tabulated attenuation ``A`` (``M ≈ g_s * A``) for square tiles of the tabulated sizes.

    Attributes: ``sizes`` (tile sizes, rows = cols), ``rows``/``cols`` (the sizes, as tuples),
    ``r_wire_ohm`` (the grid of wire resistances per segment, ohm; interpolated inside),
    ``model`` (one of :data:`MODELS`), ``rms_error_fullscale`` ``(sizes, r_wire)`` (the measured
    held-out error of this model, RMS of bit-line current error / full-scale current),
    ``errors`` (the same for every candidate model, dict name -> array), ``g_range_s``.
    """

    sizes: tuple[int, ...]
    r_wire_ohm: np.ndarray
    model: str
    entries: dict[tuple[int, int], _Entry]
    rms_error_fullscale: np.ndarray
    errors: dict[str, np.ndarray] = field(default_factory=dict)
    g_range_s: tuple[float, float] = (0.0, math.inf)
    config: dict[str, Any] = field(default_factory=dict)
    netlist: str | None = None
    ngspice_version: str | None = None

    @property
    def rows(self) -> tuple[int, ...]:
        return self.sizes

    @property
    def cols(self) -> tuple[int, ...]:
        return self.sizes

    # ------------------------------------------------------------------ apply
    def _check(self, shape, r: float) -> tuple[int, int, float]:
        rows, cols = shape[-2], shape[-1]
        if rows != cols or rows not in self.sizes:
            raise ValueError(
                f"IR-drop table covers square tiles of sizes {list(self.sizes)}; got a {rows}x{cols} tile"
            )
        grid = self.r_wire_ohm
        lo, hi = float(grid[0]), float(grid[-1])
        if not (lo - 1e-12 <= r <= hi + 1e-12):
            raise ValueError(f"r_wire_ohm={r!r} is outside the tabulated range [{lo:g}, {hi:g}] ohm")
        k = int(np.clip(np.searchsorted(grid, r) , 1, len(grid) - 1)) if len(grid) > 1 else 0
        if len(grid) == 1:
            return rows, 0, 0.0
        w = (r - grid[k - 1]) / (grid[k] - grid[k - 1])
        return rows, k, float(w)

    def _attenuation_at(self, g, size: int, ri: int, r: float):
        xp = _xp(g)
        if self.model == "none":
            return xp.ones_like(g)
        x = first_order_predictor(g, r, r)
        if self.model == "first_order":
            return 1.0 - x
        e = self.entries[(size, ri)]
        if self.model == "position":
            pos = e.a_position
            if xp is not np:
                pos = xp.as_tensor(pos, dtype=g.dtype, device=g.device)
            return pos + 0 * g
        return _interp(xp, _u(x), e.u_knots, e.a_knots)

    def attenuation(self, g_s, r_wire_ohm: float | None = None):
        """Attenuation factors ``A`` (same shape as ``g_s``, ``(…, rows, cols)``) with ``M ≈ g_s * A``.

        ``g_s``: numpy array or torch tensor (CPU/CUDA; the result stays on its device), siemens.
        ``r_wire_ohm``: wire resistance per segment; default the only grid point if there is one.
        Linear interpolation between the two bracketing grid points of ``r_wire_ohm``.
        """
        if r_wire_ohm is None:
            if len(self.r_wire_ohm) != 1:
                raise ValueError(f"give r_wire_ohm: this table covers {list(map(float, self.r_wire_ohm))} ohm")
            r_wire_ohm = float(self.r_wire_ohm[0])
        xp = _xp(g_s)
        g = g_s if xp is not np else np.asarray(g_s, dtype=np.float64)
        size, k, w = self._check(g.shape, float(r_wire_ohm))
        if len(self.r_wire_ohm) == 1:
            return self._attenuation_at(g, size, 0, float(self.r_wire_ohm[0]))
        # interpolate the *attenuation* between the neighbouring grid points
        a0 = self._attenuation_at(g, size, k - 1, float(self.r_wire_ohm[k - 1]))
        if w == 0.0:
            return a0
        a1 = self._attenuation_at(g, size, k, float(self.r_wire_ohm[k]))
        return a0 + w * (a1 - a0)

    def effective_matrix(self, g_s, r_wire_ohm: float | None = None):
        """``g_s * attenuation(g_s)``: the approximate effective matrix, ``i_out = v_in @ M``."""
        return g_s * self.attenuation(g_s, r_wire_ohm)

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> Path:
        from device import tables

        arrays: dict[str, tables.Array] = {
            "r_wire_ohm": tables.Array(np.asarray(self.r_wire_ohm, float), "ohm", description="wire resistance per segment (rows and columns)"),
            "size": tables.Array(np.asarray(self.sizes, np.int64), "1", description="tile size (rows = cols)"),
            "model_name": tables.Array(np.arange(len(MODELS)), "index", description="; ".join(f"{i}={m}" for i, m in enumerate(MODELS))),
            "rms_error_fullscale": tables.Array(self.rms_error_fullscale, "1", ("size", "r_wire_ohm"),
                                                "held-out RMS bit-line current error / full-scale current, chosen model"),
        }
        if self.errors:
            arrays["rms_error_by_model"] = tables.Array(
                np.stack([self.errors[m] for m in MODELS]), "1", ("model_name", "size", "r_wire_ohm"),
                "held-out RMS error / full scale of every candidate model",
            )
        for (size, ri), e in self.entries.items():
            grp = f"size{size}/r{ri}"
            arrays[f"{grp}/u_knots"] = tables.Array(e.u_knots, "1", ("knot",), description="u = x/(1+x), x the first-order predictor")
            arrays[f"{grp}/a_knots"] = tables.Array(e.a_knots, "1", ("knot",), description="attenuation M/g at u_knots")
            if e.a_position is not None and self.model == "position":
                arrays[f"{grp}/a_position"] = tables.Array(e.a_position.astype(np.float32), "1", ("row", "col"))
        attrs = {"model": self.model, "g_min_s": self.g_range_s[0], "g_max_s": self.g_range_s[1],
                 "r_wire_index_note": "group size<N>/r<k> holds grid point r_wire_ohm[k]"}
        return tables.write_table(path, kind="irdrop", arrays=arrays, config=self.config, attrs=attrs,
                                  netlist=self.netlist, ngspice_version=self.ngspice_version)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "IRDropTable":
        from device import tables

        t = tables.read_table(path, kind="irdrop")
        arr = t.arrays
        sizes = tuple(int(s) for s in np.asarray(arr["size"].data))
        r = np.asarray(arr["r_wire_ohm"].data, float)
        model = str(t.attrs["model"])
        entries = {}
        for size in sizes:
            for ri in range(len(r)):
                grp = f"size{size}/r{ri}"
                pos = arr.get(f"{grp}/a_position")
                entries[(size, ri)] = _Entry(
                    np.asarray(arr[f"{grp}/u_knots"].data, float), np.asarray(arr[f"{grp}/a_knots"].data, float),
                    None if pos is None else np.asarray(pos.data, float),
                )
        errors = {}
        if "rms_error_by_model" in arr:
            e = np.asarray(arr["rms_error_by_model"].data, float)
            errors = {m: e[i] for i, m in enumerate(MODELS)}
        return cls(sizes=sizes, r_wire_ohm=r, model=model, entries=entries,
                   rms_error_fullscale=np.asarray(arr["rms_error_fullscale"].data, float), errors=errors,
                   g_range_s=(float(t.attrs.get("g_min_s", 0.0)), float(t.attrs.get("g_max_s", math.inf))),
                   config=dict(t.config or {}), netlist=t.netlist, ngspice_version=t.attrs.get("ngspice_version"))


# ----------------------------------------------------------------------------- tabulation


def _fit(stats: dict[str, np.ndarray]) -> _Entry:
    w = stats["sum_gg"]
    ok = (stats["count"] > 0) & (w > 0)
    u = stats["sum_ggu"][ok] / w[ok]
    a = stats["sum_gm"][ok] / w[ok]
    # monotone non-increasing in u (more load, more drop): pool adjacent violators
    a = _pava_decreasing(a, w[ok])
    if u.size == 1:
        u = np.array([u[0], u[0] + 1e-9])
        a = np.array([a[0], a[0]])
    return _Entry(u_knots=u, a_knots=a, a_position=stats["pos_gm"] / stats["pos_gg"])


def _pava_decreasing(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-increasing) regression, pool-adjacent-violators."""
    vals, wts, lens = [], [], []
    for yi, wi in zip(-y, w):
        vals.append(yi); wts.append(wi); lens.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, l2 = vals.pop(), wts.pop(), lens.pop()
            v1, w1, l1 = vals.pop(), wts.pop(), lens.pop()
            vals.append((v1 * w1 + v2 * w2) / (w1 + w2)); wts.append(w1 + w2); lens.append(l1 + l2)
    return -np.repeat(vals, lens)


def _part_path(parts: Path, size: int, ri: int, c: int) -> Path:
    return parts / f"size{size}_r{ri}_chunk{c}.npz"


def _save_part(path: Path, stats: dict[str, np.ndarray]) -> None:
    from device.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
        np.savez(f, **stats)


def tabulate(cfg: TabulateConfig, out: str | os.PathLike, *, workers: int | None = None,
             progress: bool = True) -> IRDropTable:
    """Sample tiles, fit every model, measure held-out errors, save the best model to ``out``.

    Work is split into ``(size, r_wire, chunk)`` units run on all cores (processes); each
    finished unit is written atomically to ``<out>.parts/`` and skipped on a rerun, so an
    interrupted run resumes. The parts directory is removed after the table is written.
    """
    from tqdm import tqdm

    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    r_grid = np.array(sorted(cfg.r_wire_ohm), float)
    root = np.random.SeedSequence(cfg.seed)
    jobs, keys = [], []
    for si, size in enumerate(cfg.sizes):
        for ri, r in enumerate(r_grid):
            n_chunks = math.ceil(cfg.samples / cfg.chunk)
            seeds = np.random.SeedSequence(entropy=root.entropy, spawn_key=(si, ri)).spawn(n_chunks + 1)
            for c in range(n_chunks):
                n = min(cfg.chunk, cfg.samples - c * cfg.chunk)
                keys.append((size, ri, c))
                jobs.append((cfg.to_dict(), size, float(r), seeds[c], n))
    todo = [(k, j) for k, j in zip(keys, jobs) if not _part_path(parts, *k).exists()]
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="irdrop samples", disable=not progress)
    if todo:
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                for k, res in zip((k for k, _ in todo), ex.map(_work, [j for _, j in todo])):
                    _save_part(_part_path(parts, *k), res)
                    bar.update(1)
        else:
            for k, j in todo:
                _save_part(_part_path(parts, *k), _work(j))
                bar.update(1)
    bar.close()
    entries = {}
    for size in cfg.sizes:
        for ri in range(len(r_grid)):
            acc: dict[str, np.ndarray] = {}
            for c in range(math.ceil(cfg.samples / cfg.chunk)):
                with np.load(_part_path(parts, size, ri, c)) as z:
                    for name in z.files:
                        acc[name] = acc.get(name, 0) + z[name]
            entries[(size, ri)] = _fit(acc)
    # held-out fidelity of every model
    errors = {m: np.zeros((len(cfg.sizes), len(r_grid))) for m in MODELS}
    probe = IRDropTable(sizes=tuple(cfg.sizes), r_wire_ohm=r_grid, model="lut", entries=entries,
                        rms_error_fullscale=np.zeros(0), g_range_s=(cfg.g_min_s, cfg.g_max_s))
    for si, size in enumerate(cfg.sizes):
        for ri, r in enumerate(r_grid):
            seeds = np.random.SeedSequence(entropy=root.entropy, spawn_key=(si, ri)).spawn(math.ceil(cfg.samples / cfg.chunk) + 1)
            rng = np.random.default_rng(seeds[-1])
            g = sample_tiles(cfg, size, size, cfg.holdout, rng)
            m_exact = _effective(g, float(r), cfg.engine)
            v = np.stack([sample_inputs(cfg, size, cfg.inputs_per_tile, rng) for _ in range(cfg.holdout)])
            i_true = np.einsum("trk,trc->tck", v, m_exact)
            i_fs = size * cfg.g_max_s * cfg.v_read_v
            for mname in MODELS:
                probe.model = mname
                a = probe.attenuation(g, float(r))
                i_model = np.einsum("trk,trc->tck", v, g * a)
                errors[mname][si, ri] = np.sqrt(np.mean((i_model - i_true) ** 2)) / i_fs
    # choose: lowest RMS over the (size, r_wire) grid of the held-out errors (ties -> simpler)
    score = {m: float(np.sqrt(np.mean(errors[m] ** 2))) for m in MODELS}
    best = min(MODELS, key=lambda m: (round(score[m], 7), MODELS.index(m)))
    netlist = ngv = None
    if cfg.engine == "spice":
        from device.spice.crossbar import crossbar_netlist
        from device.spice.runner import ngspice_version

        size0 = min(cfg.sizes)
        g0 = sample_tiles(cfg, size0, size0, 1, np.random.default_rng(cfg.seed))[0]
        netlist = crossbar_netlist(g0, np.eye(size0)[0], r_wire_row_ohm=float(r_grid[0]), r_wire_col_ohm=float(r_grid[0]),
                                   title="example deck of the sampled circuits (first tile, first unit input)")
        ngv = ngspice_version()
    table = IRDropTable(sizes=tuple(cfg.sizes), r_wire_ohm=r_grid, model=best, entries=entries,
                        rms_error_fullscale=errors[best], errors=errors, g_range_s=(cfg.g_min_s, cfg.g_max_s),
                        config=cfg.to_dict(), netlist=netlist, ngspice_version=ngv)
    table.save(out)
    for p in parts.glob("*.npz"):
        p.unlink()
    try:
        parts.rmdir()
    except OSError:
        pass
    return table


def format_errors(table: IRDropTable) -> str:
    """Text table of held-out RMS error (% of full scale) per model, size and r_wire."""
    lines = ["model        size  " + "  ".join(f"r={r:g}ohm".rjust(9) for r in table.r_wire_ohm)]
    for m in MODELS if table.errors else (table.model,):
        e = table.errors.get(m, table.rms_error_fullscale)
        for si, s in enumerate(table.sizes):
            mark = "*" if m == table.model else " "
            lines.append(f"{m:<11}{mark} {s:>4}  " + "  ".join(f"{100 * x:8.3f}%" for x in e[si]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- demo


def demo_figures(out_dir: str | os.PathLike, *, table_path: str | os.PathLike | None = None,
                 size: int = 64, r_wire_ohm: float = 2.5, seed: int = 0) -> list[Path]:
    """IR-drop map and current-error-vs-position plots for one random tile; prints the LUT error.

    Uses ``data/irdrop_default.h5`` unless ``table_path`` is given. Takes a few seconds.
    """
    from crossbar import plots
    from crossbar.solver import CircuitConfig, solve

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = Path(table_path) if table_path else Path(__file__).resolve().parent.parent / "data" / "irdrop_default.h5"
    table = IRDropTable.load(path)
    cfg = TabulateConfig.from_dict(table.config) if table.config else TabulateConfig()
    rng = np.random.default_rng(seed)
    g = sample_tiles(cfg, size, size, 1, rng)[0]
    v = np.full(size, cfg.v_read_v)
    circ = CircuitConfig(r_wire_row_ohm=r_wire_ohm, r_wire_col_ohm=r_wire_ohm)
    sol = solve(g, v, circ, return_nodes=True)
    files = [plots.plot_voltage_drop_map(sol.v_word_v, sol.v_bit_v, v, out_dir / "irdrop_map.png",
                                         title=f"{size}x{size}, {r_wire_ohm:g} ohm/segment, all inputs {v[0]:g} V")]
    from crossbar.solver import effective_matrix

    m = effective_matrix(g, circ)[0]
    models = {name: None for name in ("none", "first_order", table.model)}
    a_err = {}
    for name in models:
        saved = table.model
        table.model = name
        a_err[name] = g * table.attenuation(g, r_wire_ohm) - m
        table.model = saved
    files.append(plots.plot_error_vs_position(a_err, v, size * cfg.g_max_s * cfg.v_read_v, out_dir / "irdrop_error_vs_position.png"))
    vin = np.stack([sample_inputs(cfg, size, 16, rng)])[0]
    i_true = vin.T @ m
    i_fs = size * cfg.g_max_s * cfg.v_read_v
    parts = []
    for name in models:
        i_mod = vin.T @ (m + a_err[name])
        parts.append(f"{name} {100 * np.sqrt(np.mean((i_mod - i_true) ** 2)) / i_fs:.3f}%")
    print(f"IR-drop LUT error ({size}x{size}, {r_wire_ohm:g} ohm, RMS of full scale): " + ", ".join(parts))
    return files
