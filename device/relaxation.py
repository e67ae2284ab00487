"""Conductance relaxation after programming: the distribution of g(t) given the programmed g0.

A freshly programmed filamentary cell does not keep its conductance: within seconds to hours it
drifts and, above all, spreads (tech-B: a level programmed to 34 uS with 1.1 uS of spread is at
29.9 uS with 10.1 uS of spread 10^4 s later). :class:`RelaxationModel` holds, measured, the
conditional distribution of the change ``dg = g(t) - g0`` for a grid of programmed conductances
``g0`` and the measured times since programming, and samples it.

The form, and why (tech-B, fitted on half its cells and checked on the other half; numbers in
RESULTS.md): **tabulated conditional quantiles**, interpolated linearly in ``g0`` between bin
centres and in ``log10(t)`` between measured times (both at equal probability, i.e. by quantile
functions). Neither the mean drift nor the spread is a simple law in either variable: the spread
grows fast in the first decade (0.01 -> 0.1 s) then slower, and it peaks at mid conductances
(about 30-60 uS) while the lowest and highest levels barely move; the drift is negative at mid
conductances and slightly positive near the bottom. The distributions are also far from normal
(heavy tails: a few cells jump by tens of uS), so a normal model with the right mean and standard
deviation misplaces the tails. A table of quantiles per (g0 bin, time) reproduces all of this
from the data; the fit report (:func:`compare_forms`) gives the held-out Kolmogorov-Smirnov
distance of the quantile form and of a normal form with the same mean and spread.

Valid range (outside it the model refuses, :class:`RelaxationRangeError`):
* time since programming: ``0`` (returns ``g0``) or within the measured times
  ``[time_s[0], time_s[-1]]`` (tech-B: 0.01 s to 10^4 s). No extrapolation law is claimed:
  tech-B's spread grows roughly linearly in log time late on, but not early, and a law fitted to
  five points would be a guess beyond 10^4 s.
* programmed conductance within the fitted cells' ``[g0_min_s, g0_max_s]`` (``out_of_range=
  "clamp"`` instead uses the nearest bin's distribution, for stuck or extreme cells).
* temperature: the temperature of the measurement. Tech-B's bake data (one bake per temperature,
  100-260 C, of unknown duration, after an unknown time at room temperature) show the spread
  growing with temperature (:func:`techb_bake_statistics`) but cannot separate time from
  temperature, so no acceleration law is fitted.

When it is sampled: once per chip, at a given time since programming (``read_time_s``), after
programming variation and stuck-at faults; each cell independently (the data hold no spatial
correlation and the model does not claim one); a conductance is floored at half the smallest
conductance measured (:attr:`RelaxationModel.g_floor_s`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from device.errors import UserError

__all__ = [
    "RelaxationError",
    "RelaxationRangeError",
    "RelaxationData",
    "RelaxationModel",
    "read_relaxation_csv",
    "bin_statistics",
    "compare_forms",
    "techb_bake_statistics",
    "plot_relaxation",
    "level_moments",
]


#: points of the uniform g0 -> bin-position table of :meth:`RelaxationModel.sample_torch` (its
#: corners are smoothed over 1/4095 of the fitted g0 range, 0.04 uS for tech B)
_POSITION_TABLE = 4096


class RelaxationError(UserError):
    """Relaxation data that cannot be fitted (missing columns, too few cells per bin or time)."""


class RelaxationRangeError(UserError):
    """A time or programmed conductance outside the range the relaxation model was fitted on."""


@dataclasses.dataclass(frozen=True)
class RelaxationData:
    """Relaxation reads, one a row: ``cell`` (ids), ``time_s`` (> 0, since programming), ``g_s``
    (the read), ``g0_s`` (the cell's programmed conductance)."""

    cell: np.ndarray
    time_s: np.ndarray
    g_s: np.ndarray
    g0_s: np.ndarray
    #: cells (and their reads) left out because one of their reads was invalid (``drop_invalid``)
    dropped_cells: int = 0
    dropped_reads: int = 0

    def subset(self, mask: np.ndarray) -> "RelaxationData":
        return RelaxationData(self.cell[mask], self.time_s[mask], self.g_s[mask], self.g0_s[mask],
                              self.dropped_cells, self.dropped_reads)

    def split_cells(self, rng: np.random.Generator, fraction: float = 0.5) -> tuple["RelaxationData", "RelaxationData"]:
        """Two disjoint halves by cell (a random ``fraction`` of the cells, the rest)."""
        cells = np.unique(self.cell)
        pick = rng.permutation(cells)[: int(round(fraction * cells.size))]
        m = np.isin(self.cell, pick)
        return self.subset(m), self.subset(~m)


def relaxation_data(cell: Sequence, time_s: np.ndarray, g_s: np.ndarray, g0_s: np.ndarray | None = None, *,
                    drop_invalid: bool = False) -> RelaxationData:
    """Check and normalise relaxation reads. Without ``g0_s`` each cell's earliest read is its
    programmed conductance (and that read is not a relaxation sample). Reads at ``time_s <= 0``
    are dropped once ``g0`` is known (they are the programming read).

    A read is invalid when its time is not finite or negative, or its conductance (or ``g0``) is
    not finite and positive (a negative or NaN read of a measurement file). By default an invalid
    read is an error naming the row; ``drop_invalid=True`` instead leaves out every read of each
    cell that has an invalid one (a cell with a broken read has no trustworthy trajectory) and
    records how many cells and reads went (:attr:`RelaxationData.dropped_cells`)."""
    cell = np.asarray([str(c) for c in cell]) if not np.issubdtype(np.asarray(cell).dtype, np.integer) else np.asarray(cell)
    t = np.asarray(time_s, float)
    g = np.asarray(g_s, float)
    if not (cell.shape == t.shape == g.shape) or t.ndim != 1:
        raise RelaxationError("cell, time_s and g_s must be 1-d and of one length")
    g0 = None if g0_s is None else np.asarray(g0_s, float)
    if g0 is not None and g0.shape != g.shape:
        raise RelaxationError("g0_s must hold one value per row")
    bad = ~(np.isfinite(t) & (t >= 0)) | ~(np.isfinite(g) & (g > 0))
    if g0 is not None:
        bad |= ~(np.isfinite(g0) & (g0 > 0))
    dropped_cells = dropped_reads = 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if not drop_invalid:
            what = (f"time_s={float(t[i])!r}" if not (np.isfinite(t[i]) and t[i] >= 0)
                    else f"g_s={float(g[i])!r}" if not (np.isfinite(g[i]) and g[i] > 0) else f"g0_s={float(g0[i])!r}")
            raise RelaxationError(
                f"row {i + 1} (cell {cell[i]}) holds an invalid read ({what}): times must be finite and >= 0, "
                f"conductances finite and > 0 ({int(bad.sum())} such rows; drop_invalid / --drop-invalid leaves out "
                "the cells that have one)"
            )
        gone = np.isin(cell, np.unique(cell[bad]))
        dropped_cells, dropped_reads = int(np.unique(cell[bad]).size), int(gone.sum())
        cell, t, g = cell[~gone], t[~gone], g[~gone]
        g0 = None if g0 is None else g0[~gone]
        if cell.size == 0:
            raise RelaxationError(f"every cell holds an invalid read ({dropped_cells} cells): nothing left to fit")
    if g0 is None:
        order = np.lexsort((t, cell))
        cs, first = np.unique(cell[order], return_index=True)
        g0_of = dict(zip(cs.tolist(), g[order][first].tolist()))
        first_row = np.zeros(t.size, bool)
        first_row[order[first]] = True
        g0 = np.array([g0_of[c] for c in cell.tolist()])
        keep = ~first_row & (t > 0)
    else:
        keep = t > 0
    if not keep.any():
        raise RelaxationError("no reads after programming (time_s > 0) to fit")
    return RelaxationData(cell[keep], t[keep], g[keep], g0[keep], dropped_cells, dropped_reads)


def read_relaxation_csv(path: str | Path, *, drop_invalid: bool = False) -> RelaxationData:
    """A tidy relaxation CSV: ``cell``, ``time_s``, ``g_s`` or ``r_ohm``, optional ``g0_s``.
    ``drop_invalid``: leave out the cells with an invalid read (a non-numeric, empty, negative or
    zero value) instead of refusing the file (:func:`relaxation_data`)."""
    from device.calibrate import conductance_column, read_tidy_csv

    d = read_tidy_csv(path, text_columns=("cell",), float_columns=("time_s", "g_s", "r_ohm", "g0_s", "r0_ohm"),
                      bad_numbers="nan" if drop_invalid else "raise")
    if "time_s" not in d:
        raise RelaxationError(f"{path}: needs a column 'time_s' (time since programming, s)")
    # invalid values are refused (or dropped) by relaxation_data, naming the row and --drop-invalid
    g = conductance_column(d, str(path), check=False)
    g0 = conductance_column(d, str(path), "g0", check=False) if ("g0_s" in d or "r0_ohm" in d) else None
    try:
        return relaxation_data(d["cell"], d["time_s"], g, g0, drop_invalid=drop_invalid)
    except RelaxationError as exc:
        raise RelaxationError(f"{path}: {exc}") from None


def _time_groups(t: np.ndarray, ratio: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Group read times into nominal time points: sorted unique times, a new group wherever a
    time exceeds the previous one by more than ``ratio``. Returns (group index per row, the
    geometric mean time of each group)."""
    u = np.unique(t)
    brk = np.concatenate([[True], u[1:] / u[:-1] > ratio])
    gid_u = np.cumsum(brk) - 1
    gid = gid_u[np.searchsorted(u, t)]
    centres = np.array([math.exp(np.log(t[gid == k]).mean()) for k in range(gid_u[-1] + 1)])
    return gid, centres


def _normal_score_correlation(cell: np.ndarray, row_bin: np.ndarray, gid: np.ndarray, dg: np.ndarray,
                              n_bins: int, n_times: int, min_pairs: int = 20) -> np.ndarray:
    """(bins, times, times) correlation of the normal scores of one cell's ``dg`` at two time
    points, per g0 bin: in each (bin, time) the reads are ranked (ties averaged), mapped to
    ``z = Phi^-1((rank - 1/2) / n)``, and the correlation of ``z`` is taken over the cells read at
    both times (a cell read twice in one time group uses its first read). Fewer than
    ``min_pairs`` common cells: 0 (no dependence claimed). The diagonal is 1."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    cells, cid = np.unique(cell, return_inverse=True)
    zc = np.zeros((n_bins, n_times, n_times))
    for i in range(n_bins):
        z = np.full((cells.size, n_times), np.nan)
        for j in range(n_times):
            m = np.flatnonzero((row_bin == i) & (gid == j))
            if m.size == 0:
                continue
            zz = ndtri((rankdata(dg[m]) - 0.5) / m.size)
            c = cid[m]
            _, first = np.unique(c, return_index=True)
            z[c[first], j] = zz[first]
        for j in range(n_times):
            zc[i, j, j] = 1.0
            for k in range(j + 1, n_times):
                both = np.isfinite(z[:, j]) & np.isfinite(z[:, k])
                if both.sum() >= min_pairs:
                    a, b = z[both, j], z[both, k]
                    sa, sb = a.std(), b.std()
                    r = float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb)) if sa > 0 and sb > 0 else 0.0
                    zc[i, j, k] = zc[i, k, j] = r
    return zc


def _distinct_values(t: "Any", limit: int = 64) -> list[float]:
    """The distinct values of a 1-d tensor ``t``, ascending: by repeated minimum when there are
    few (cells' ages after a few programming rounds; cheaper than sorting millions), else by
    ``torch.unique``."""
    import torch

    vals: list[float] = []
    rest = t
    while rest.numel():
        v = rest.min()
        vals.append(float(v))
        if len(vals) > limit:
            return [float(x) for x in torch.unique(t).cpu().tolist()]
        rest = rest[rest != v]
    return vals


@dataclasses.dataclass(frozen=True)
class RelaxationModel:
    """Measured distribution of ``g(t) - g0`` given ``g0``, tabulated (see the module docstring).

    Arrays: ``g0_bin_s`` (bins,) the mean programmed conductance of each bin's cells, ascending;
    ``time_s`` (times,) measured times since programming, ascending, > 0; ``quantile_p`` (q,)
    probabilities, equally spaced from 0 (the smallest change seen) to 1 (the largest), so the
    sampled tails reach as far as the data's; ``dg_quantile_s`` (bins, times, q) quantiles of
    ``g(t) - g0``; ``mean_drift_s`` / ``std_s`` / ``n_cells`` (bins, times) the data's mean and
    standard deviation of ``g(t) - g0`` and the reads behind them. ``g0_min_s`` / ``g0_max_s``:
    the fitted cells' programmed range; ``g_floor_s``: smallest conductance returned.

    ``z_corr`` (bins, times, times), or None for tables fitted before it existed: how a cell's
    change at one time predicts its change at another, as the correlation of the normal scores
    (ranks mapped through the inverse normal) of one cell's ``g(t) - g0`` at the two times, per
    g0 bin: the Gaussian copula of a cell's trajectory, used by :meth:`sample_path_torch` to
    continue a cell's relaxation from a state seen earlier (relaxation-aware programming keeps
    the cells that passed a verify). ``dropped_cells`` / ``dropped_reads``: cells left out of the
    fit for an invalid read (``drop_invalid``).
    """

    g0_bin_s: np.ndarray
    time_s: np.ndarray
    quantile_p: np.ndarray
    dg_quantile_s: np.ndarray
    mean_drift_s: np.ndarray
    std_s: np.ndarray
    n_cells: np.ndarray
    g0_min_s: float
    g0_max_s: float
    g_floor_s: float
    source: str = ""
    temperature_note: str = "room temperature (the temperature of the measurement); no acceleration law"
    z_corr: np.ndarray | None = None
    dropped_cells: int = 0
    dropped_reads: int = 0

    def __post_init__(self) -> None:
        b, t, p, q = (np.asarray(self.g0_bin_s, float), np.asarray(self.time_s, float),
                      np.asarray(self.quantile_p, float), np.asarray(self.dg_quantile_s, float))
        if q.shape != (b.size, t.size, p.size) or b.size < 1 or t.size < 1 or p.size < 2:
            raise RelaxationError(f"dg_quantile_s must be (bins, times, q) = ({b.size}, {t.size}, {p.size}), got {q.shape}")
        if np.any(np.diff(b) <= 0) or np.any(np.diff(t) <= 0) or np.any(t <= 0) or np.any(np.diff(p) <= 0):
            raise RelaxationError("g0_bin_s, time_s and quantile_p must be strictly ascending (time_s > 0)")
        if np.any(np.diff(q, axis=2) < 0) or not np.all(np.isfinite(q)):
            raise RelaxationError("dg_quantile_s must be finite and non-decreasing in probability")
        for name, v in (("g0_bin_s", b), ("time_s", t), ("quantile_p", p), ("dg_quantile_s", q)):
            object.__setattr__(self, name, v)
        for name in ("mean_drift_s", "std_s"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), float))
        object.__setattr__(self, "n_cells", np.asarray(self.n_cells, np.int64))
        if self.z_corr is not None:
            zc = np.asarray(self.z_corr, float)
            if zc.shape != (b.size, t.size, t.size) or not np.all(np.isfinite(zc)) or np.any(np.abs(zc) > 1 + 1e-9):
                raise RelaxationError(f"z_corr must be (bins, times, times) = ({b.size}, {t.size}, {t.size}) correlations in [-1, 1]")
            object.__setattr__(self, "z_corr", np.clip(zc, -1.0, 1.0))

    # -- fitting --------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        data: RelaxationData,
        *,
        min_cells_per_bin: int = 200,
        max_bins: int = 64,
        n_quantiles: int = 257,
        source: str = "",
    ) -> "RelaxationModel":
        """Fit the tabulated form to ``data``: cells in equal-count bins of programmed conductance
        (``min(max_bins, cells // min_cells_per_bin)`` bins), reads grouped into nominal time
        points (:func:`_time_groups`), and per (bin, time) the empirical quantiles of
        ``g(t) - g0`` at ``n_quantiles`` equally spaced probabilities from 0 to 1 (linear
        interpolation between order statistics: the sample's own range, tails included). Raises :class:`RelaxationError` when a
        (bin, time) cell holds fewer than 20 reads."""
        from device.config import check_int_range

        check_int_range("min_cells_per_bin", min_cells_per_bin, 20)
        check_int_range("max_bins", max_bins, 1, 4096)
        check_int_range("n_quantiles", n_quantiles, 2, 100_000)
        cells, first = np.unique(data.cell, return_index=True)
        n_bins = min(max_bins, cells.size // max(min_cells_per_bin, 1))
        if n_bins < 1:
            raise RelaxationError(f"{cells.size} cells: at least {min_cells_per_bin} are needed (min_cells_per_bin)")
        g0_cell = data.g0_s[first]
        edges = np.quantile(g0_cell, np.linspace(0, 1, n_bins + 1))
        edges[0], edges[-1] = -np.inf, np.inf
        cell_bin = np.clip(np.searchsorted(edges, g0_cell, side="right") - 1, 0, n_bins - 1)
        row_bin = cell_bin[np.searchsorted(cells, data.cell)]
        gid, tpts = _time_groups(data.time_s)
        p = np.linspace(0.0, 1.0, n_quantiles)
        dg = data.g_s - data.g0_s
        Q = np.empty((n_bins, tpts.size, n_quantiles))
        mean = np.empty((n_bins, tpts.size))
        std = np.empty((n_bins, tpts.size))
        cnt = np.empty((n_bins, tpts.size), np.int64)
        centres = np.array([g0_cell[cell_bin == k].mean() for k in range(n_bins)])
        for i in range(n_bins):
            for j in range(tpts.size):
                x = dg[(row_bin == i) & (gid == j)]
                if x.size < 20:
                    raise RelaxationError(
                        f"g0 bin {i} ({centres[i]:.4g} S) at t = {tpts[j]:.4g} s holds {x.size} reads; at least 20 are needed "
                        "(use fewer bins: a larger min_cells_per_bin)"
                    )
                Q[i, j] = np.quantile(x, p)
                mean[i, j], std[i, j], cnt[i, j] = x.mean(), x.std(ddof=1), x.size
        if np.any(np.diff(centres) <= 0):
            raise RelaxationError("the programmed conductances are too concentrated to form ascending bins; use fewer bins")
        zc = _normal_score_correlation(data.cell, row_bin, gid, dg, n_bins, tpts.size)
        return cls(
            g0_bin_s=centres, time_s=tpts, quantile_p=p, dg_quantile_s=Q, mean_drift_s=mean, std_s=std, n_cells=cnt,
            g0_min_s=float(g0_cell.min()), g0_max_s=float(g0_cell.max()),
            g_floor_s=float(0.5 * min(data.g_s.min(), data.g0_s.min())), source=source, z_corr=zc,
            dropped_cells=data.dropped_cells, dropped_reads=data.dropped_reads,
        )

    @classmethod
    def fit_csv(cls, path: str | Path, *, drop_invalid: bool = False, **kw: Any) -> "RelaxationModel":
        """:meth:`fit` on a tidy relaxation CSV (:func:`read_relaxation_csv`; ``drop_invalid``
        leaves out the cells with an invalid read and records how many)."""
        return cls.fit(read_relaxation_csv(path, drop_invalid=drop_invalid), source=kw.pop("source", str(path)), **kw)

    # -- sampling -------------------------------------------------------------------------------
    def _check_time(self, time_s: float) -> float:
        t = float(time_s)
        if not math.isfinite(t) or t < 0:
            raise RelaxationRangeError(f"time_s={time_s!r} is invalid: must be >= 0 (time since programming, s)")
        lo, hi = float(self.time_s[0]), float(self.time_s[-1])
        if t != 0 and not (lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)):
            raise RelaxationRangeError(
                f"time_s={t:g} is outside the measured range [{lo:g}, {hi:g}] s (or 0); the model does not extrapolate"
            )
        return t

    def quantiles_at(self, time_s: float) -> np.ndarray:
        """(bins, q) quantiles of ``g(t) - g0`` at ``time_s`` (linear in log10 t between the
        measured times; zeros at t = 0)."""
        t = self._check_time(time_s)
        if t == 0:
            return np.zeros(self.dg_quantile_s.shape[::2])
        lt = np.log10(self.time_s)
        x = min(max(math.log10(t), lt[0]), lt[-1])
        j = int(np.clip(np.searchsorted(lt, x, side="right") - 1, 0, max(lt.size - 2, 0)))
        if lt.size == 1:
            return self.dg_quantile_s[:, 0]
        w = (x - lt[j]) / (lt[j + 1] - lt[j])
        return (1 - w) * self.dg_quantile_s[:, j] + w * self.dg_quantile_s[:, j + 1]

    def _check_g0(self, g0: np.ndarray, out_of_range: str) -> None:
        if out_of_range not in ("raise", "clamp"):
            raise RelaxationRangeError(f"out_of_range={out_of_range!r} is invalid: must be 'raise' or 'clamp'")
        if g0.size == 0:
            return
        if not np.all(np.isfinite(g0)) or np.any(g0 <= 0):
            raise RelaxationRangeError("programmed conductances must be finite and > 0")
        if out_of_range == "raise" and (g0.min() < self.g0_min_s * (1 - 1e-9) or g0.max() > self.g0_max_s * (1 + 1e-9)):
            raise RelaxationRangeError(
                f"programmed conductances {g0.min():.4g}..{g0.max():.4g} S leave the fitted range "
                f"[{self.g0_min_s:.4g}, {self.g0_max_s:.4g}] S (pass out_of_range='clamp' to use the nearest bin)"
            )

    def sample(self, g0_s: np.ndarray, time_s: float, rng: np.random.Generator, *, out_of_range: Literal["raise", "clamp"] = "raise") -> np.ndarray:
        """Conductances (S) at ``time_s`` after programming for programmed conductances ``g0_s``
        (any shape; each cell independent, one uniform draw per cell from ``rng``)."""
        g0 = np.asarray(g0_s, float)
        self._check_g0(g0, out_of_range)
        Q = self.quantiles_at(time_s)
        if float(time_s) == 0:
            return g0.copy()
        u = rng.random(g0.shape)
        b = self.g0_bin_s
        nb, nq = Q.shape
        if nb > 1:
            i = np.clip(np.searchsorted(b, g0, side="right") - 1, 0, nb - 2)
            w = np.clip((g0 - b[i]) / (b[i + 1] - b[i]), 0.0, 1.0)
        else:
            i, w = np.zeros(g0.shape, np.int64), np.zeros(g0.shape)
        x = u * (nq - 1.0)
        j = np.minimum(x.astype(np.int64), nq - 2)
        v = x - j
        i1 = np.minimum(i + 1, nb - 1)
        dg = ((1 - w) * ((1 - v) * Q[i, j] + v * Q[i, j + 1]) + w * ((1 - v) * Q[i1, j] + v * Q[i1, j + 1]))
        return np.maximum(g0 + dg, self.g_floor_s)

    def sample_torch(self, g0_s: "Any", time_s: float, generator: "Any", *, out_of_range: Literal["raise", "clamp"] = "raise") -> "Any":
        """:meth:`sample` as a tensor function: ``g0_s`` a float tensor (any shape, any device),
        ``generator`` a ``torch.Generator`` on that device; returns conductances (S) of ``g0_s``'s
        shape on its device, float32 for float32 input, else float64. One ``torch.rand`` draw per
        cell; ``time_s = 0`` returns a copy of ``g0_s`` and draws nothing."""
        import torch

        work = torch.float32 if g0_s.dtype == torch.float32 else torch.float64
        g0 = g0_s.to(work)
        if g0.numel():
            self._check_g0(np.array([float(g0.min()), float(g0.max())]), out_of_range)
        Qn = self.quantiles_at(time_s)
        if float(time_s) == 0:
            return g0.clone()
        u = torch.rand(g0.shape, generator=generator, device=g0.device, dtype=work)
        return self._lookup_torch(g0, Qn, u)

    def _lookup_torch(self, g0: "Any", Qn: np.ndarray, u: "Any", y: "Any" = None) -> "Any":
        """``g0 + dg`` with ``dg`` the (bins, q) quantile table ``Qn`` at probabilities ``u``
        (same shape as ``g0``), interpolated like :meth:`sample`; floored at ``g_floor_s``.
        ``y``: the cells' bin positions (:meth:`_bin_position_torch`) when already known."""
        import torch

        work, dev = g0.dtype, g0.device
        # one fused bilinear lookup (grid_sample) in the (g0 bin, probability) table: the same
        # interpolation as sample(), without a dozen full-size temporaries
        Q = torch.as_tensor(Qn, dtype=work, device=dev)
        nb, nq = Qn.shape
        flat = g0.reshape(-1)
        F = torch.nn.functional
        if y is None:
            y = self._bin_position_torch(flat) if nb > 1 else torch.zeros_like(flat)
        grid = torch.stack((u.reshape(-1).mul(2.0).sub_(1.0), y), dim=-1).view(1, 1, -1, 2)
        img = Q.view(1, 1, nb, nq) if nb > 1 else Q.expand(2, nq).reshape(1, 1, 2, nq)
        dg = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)
        dg = dg.view(g0.shape)
        return dg.add_(g0).clamp_(min=self.g_floor_s)

    def _bin_position_torch(self, flat: "Any") -> "Any":
        """The fractional bin position of each g0 in ``flat`` mapped to [-1, 1] (grid_sample
        coordinates): piecewise linear between bin centres, clamped at the ends, looked up in a
        fine uniform table (a searchsorted costs 4x more)."""
        import torch

        nb = self.g0_bin_s.size
        work, dev = flat.dtype, flat.device
        b0, b1 = float(self.g0_bin_s[0]), float(self.g0_bin_s[-1])
        fine = np.linspace(b0, b1, _POSITION_TABLE)
        pos = np.interp(fine, self.g0_bin_s, np.arange(nb)) * (2.0 / (nb - 1)) - 1.0
        pos_t = torch.as_tensor(pos, dtype=work, device=dev).view(1, 1, 1, -1)
        xg = (flat - b0).mul_(2.0 / (b1 - b0)).sub_(1.0)
        g1 = torch.stack((xg, torch.zeros_like(xg)), dim=-1).view(1, 1, -1, 2)
        return torch.nn.functional.grid_sample(pos_t, g1, mode="bilinear", padding_mode="border", align_corners=True).view(-1)

    # -- trajectories (relaxation-aware programming) -------------------------------------------
    @property
    def has_time_correlation(self) -> bool:
        """Whether the table holds ``z_corr`` (needed to continue a cell's relaxation from a
        state seen earlier: :meth:`sample_path_torch`)."""
        return self.z_corr is not None

    def time_correlation(self, t1_s: float, t2_s: float) -> np.ndarray:
        """(bins,) normal-score correlation of a cell's change at ``t1_s`` and at ``t2_s``
        (bilinear in ``(log10 t1, log10 t2)`` between the measured times, clamped to them; 1 when
        the two times are equal)."""
        if self.z_corr is None:
            raise RelaxationError(
                "this relaxation table holds no time correlation (z_corr): refit it with `device calibrate relaxation` "
                "to continue cells' relaxation from a verify"
            )
        a, b = sorted((float(t1_s), float(t2_s)))
        if a == b:
            return np.ones(self.g0_bin_s.size)
        lt = np.log10(self.time_s)
        if lt.size == 1:
            return self.z_corr[:, 0, 0].copy()

        def pos(t: float) -> tuple[int, float]:
            x = min(max(math.log10(t), lt[0]), lt[-1])
            j = int(np.clip(np.searchsorted(lt, x, side="right") - 1, 0, lt.size - 2))
            return j, (x - lt[j]) / (lt[j + 1] - lt[j])

        (i, u), (j, v) = pos(a), pos(b)
        Z = self.z_corr
        r = ((1 - u) * (1 - v) * Z[:, i, j] + u * (1 - v) * Z[:, i + 1, j]
             + (1 - u) * v * Z[:, i, j + 1] + u * v * Z[:, i + 1, j + 1])
        return np.clip(r, -1.0, 1.0)

    def sample_path_torch(self, g0_s: "Any", t_prev_s: "Any", z_prev: "Any", t_new_s: "Any", generator: "Any", *,
                          out_of_range: Literal["raise", "clamp"] = "raise") -> tuple["Any", "Any"]:
        """Continue each cell's relaxation: conductances (S) at age ``t_new_s`` given the
        normal score ``z_prev`` its change had at age ``t_prev_s`` (0: a fresh cell, nothing
        seen yet), and the new normal scores.

        ``g0_s``, ``t_prev_s``, ``z_prev``, ``t_new_s``: tensors of one shape (ages in s, ``t_new_s
        >= t_prev_s``, ``t_new_s`` within the measured times). The Gaussian copula of the table
        (:attr:`z_corr`): ``z_new = rho z_prev + sqrt(1 - rho^2) e`` with ``rho`` the correlation
        of the two ages (:meth:`time_correlation`, interpolated in g0 between bins), ``e ~ N(0, 1)``
        (one ``torch.randn`` draw per cell); a fresh cell's ``z_new = e``; then ``g = g0 + Q(g0,
        t_new, Phi(z_new))``, the table's quantile at that probability: each cell's change at
        ``t_new`` has the table's marginal distribution, and depends on what was seen at
        ``t_prev`` as the data's cells did."""
        import torch

        if self.z_corr is None:
            self.time_correlation(1.0, 2.0)  # raises the clear error
        work = torch.float32 if g0_s.dtype == torch.float32 else torch.float64
        g0 = g0_s.to(work)
        if g0.numel():
            self._check_g0(np.array([float(g0.min()), float(g0.max())]), out_of_range)
        dev = g0.device
        tp = torch.as_tensor(t_prev_s, dtype=torch.float64, device=dev).expand(g0.shape).reshape(-1)
        tn = torch.as_tensor(t_new_s, dtype=torch.float64, device=dev).expand(g0.shape).reshape(-1)
        if bool((tn < tp).any()):
            raise RelaxationRangeError("t_new_s must be >= t_prev_s (ages only grow)")
        flat = g0.reshape(-1)
        z = torch.randn(flat.shape, generator=generator, device=dev, dtype=work)  # e; a fresh cell's z
        zp = torch.as_tensor(z_prev, dtype=work, device=dev).expand(g0.shape).reshape(-1)
        # cells grouped by (t_prev, t_new): ages come from a handful of values (programming rounds)
        nb = self.g0_bin_s.size
        ypos = self._bin_position_torch(flat) if nb > 1 else torch.zeros_like(flat)
        out = torch.empty_like(flat)
        for a in _distinct_values(tp):
            ma = tp == a
            for b in _distinct_values(tn[ma]):
                idx = torch.nonzero(ma & (tn == b)).view(-1)
                g_i = flat.index_select(0, idx)
                y_i = ypos.index_select(0, idx)
                if a > 0:
                    rb = torch.as_tensor(self.time_correlation(a, b), dtype=work, device=dev)
                    if nb > 1:  # linear in g0 between bin centres, like the quantiles
                        xb = (y_i + 1.0) * (0.5 * (nb - 1))
                        i0 = xb.floor().clamp_(0, nb - 2)
                        wt = xb - i0
                        i0 = i0.to(torch.int64)
                        rho = rb.index_select(0, i0) * (1 - wt) + rb.index_select(0, i0 + 1) * wt
                    else:
                        rho = rb.expand(idx.shape)
                    zi = rho * zp.index_select(0, idx) + torch.sqrt(torch.clamp(1 - rho * rho, min=0.0)) * z.index_select(0, idx)
                    z.index_copy_(0, idx, zi)
                if b == 0:
                    out.index_copy_(0, idx, g_i)
                    continue
                u = torch.special.ndtr(z.index_select(0, idx).double()).to(work)
                out.index_copy_(0, idx, self._lookup_torch(g_i, self.quantiles_at(b), u, y_i))
        return out.view(g0.shape), z.view(g0.shape)

    @property
    def t_max_s(self) -> float:
        """The last measured time since programming, s (the model refuses later times)."""
        return float(self.time_s[-1])

    def clamped_cells(self, g0_s: Any) -> int:
        """How many of ``g0_s`` (an array or a tensor) lie outside the fitted range
        ``[g0_min_s, g0_max_s]`` (what ``out_of_range="clamp"`` gives the nearest bin's law)."""
        lo, hi = self.g0_min_s * (1 - 1e-9), self.g0_max_s * (1 + 1e-9)
        if hasattr(g0_s, "detach"):
            return int(((g0_s < lo) | (g0_s > hi)).sum())
        g = np.asarray(g0_s, float)
        return int(((g < lo) | (g > hi)).sum())

    def check_conductances(self, g_min_s: float, g_max_s: float, what: str, *, out_of_range: str = "raise",
                           table: str = "") -> None:
        """Raise :class:`RelaxationRangeError` (naming ``what``) when programmed conductances
        spanning ``[g_min_s, g_max_s]`` leave the fitted range and ``out_of_range="raise"``: the
        check before any work (a level table against this model)."""
        if out_of_range not in ("raise", "clamp"):
            raise RelaxationRangeError(f"out_of_range={out_of_range!r} is invalid: must be 'raise' or 'clamp'")
        if out_of_range == "raise" and (g_min_s < self.g0_min_s * (1 - 1e-9) or g_max_s > self.g0_max_s * (1 + 1e-9)):
            raise RelaxationRangeError(
                f"{what} holds conductances {g_min_s * 1e6:.4g}..{g_max_s * 1e6:.4g} uS, outside the range the relaxation "
                f"model was fitted on ({self.g0_min_s * 1e6:.4g}..{self.g0_max_s * 1e6:.4g} uS, {table or self.source or 'fitted'}); "
                "choose levels inside it, or set relaxation.out_of_range=clamp to give those cells the nearest bin's law"
            )

    def check_levels(self, levels: Any, *, out_of_range: str = "raise", table: str = "") -> None:
        """Before any work: raise :class:`RelaxationRangeError` when the programmed conductances
        of level table ``levels`` (every sample a chip can draw) leave the fitted range and
        ``out_of_range="raise"`` (:meth:`check_conductances`)."""
        g = np.asarray(levels.g_samples_s, float)
        lo, hi = float(g.min()), float(g.max())
        gm = getattr(levels, "g_measured_s", None)
        if gm is not None and np.size(gm):
            lo, hi = min(lo, float(np.min(gm))), max(hi, float(np.max(gm)))
        self.check_conductances(lo, hi, f"level table {getattr(levels, 'source', '') or '(in memory)'}", out_of_range=out_of_range,
                                table=table)

    # -- moments (level placement) ---------------------------------------------------------------
    def dg_moments(self, g0_s: np.ndarray, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean and mean square (S, S^2) of ``g(t) - g0`` at ``time_s`` for programmed
        conductances ``g0_s`` (any shape, clamped to the bin centres as the sampler does), exact
        for the distribution :meth:`sample` draws from (piecewise linear in probability between
        the table's quantiles, linear in g0 between bins with one common probability; the floor at
        ``g_floor_s`` left out)."""
        Q = self.quantiles_at(time_s)
        g0 = np.asarray(g0_s, float)
        if float(time_s) == 0:
            return np.zeros(g0.shape), np.zeros(g0.shape)
        a, b = Q[:, :-1], Q[:, 1:]
        m1 = 0.5 * (a + b).mean(axis=1)  # (bins,)
        nb = Q.shape[0]
        if nb == 1:
            m2 = ((a * a + a * b + b * b) / 3.0).mean(axis=1)
            return np.full(g0.shape, m1[0]), np.full(g0.shape, m2[0])
        i = np.clip(np.searchsorted(self.g0_bin_s, g0, side="right") - 1, 0, nb - 2)
        w = np.clip((g0 - self.g0_bin_s[i]) / (self.g0_bin_s[i + 1] - self.g0_bin_s[i]), 0.0, 1.0)
        sq = ((a * a + a * b + b * b) / 3.0).mean(axis=1)
        cross = ((2 * a[:-1] * a[1:] + a[:-1] * b[1:] + b[:-1] * a[1:] + 2 * b[:-1] * b[1:]) / 6.0).mean(axis=1)  # (bins-1,)
        mean = (1 - w) * m1[i] + w * m1[i + 1]
        msq = (1 - w) ** 2 * sq[i] + 2 * w * (1 - w) * cross[i] + w**2 * sq[i + 1]
        return mean, msq

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path, *, config: Any = None, attrs: dict[str, Any] | None = None) -> Path:
        """Write a ``relaxation`` table (:mod:`device.tables`) atomically; return its path."""
        from device import tables as T

        arrays = {
            "g0_bin_s": T.Array(self.g0_bin_s, "S", (), "mean programmed conductance of each bin's cells"),
            "time_s": T.Array(self.time_s, "s", (), "measured time since programming"),
            "quantile_p": T.Array(self.quantile_p, "1", (), "probability, 0 = smallest change seen, 1 = largest"),
            "dg_quantile_s": T.Array(self.dg_quantile_s, "S", ("g0_bin_s", "time_s", "quantile_p"), "quantiles of g(t) - g0"),
            "mean_drift_s": T.Array(self.mean_drift_s, "S", ("g0_bin_s", "time_s"), "data mean of g(t) - g0"),
            "std_s": T.Array(self.std_s, "S", ("g0_bin_s", "time_s"), "data standard deviation of g(t) - g0"),
            "n_cells": T.Array(self.n_cells, "1", ("g0_bin_s", "time_s"), "reads behind each (bin, time)"),
        }
        if self.z_corr is not None:
            arrays["z_corr"] = T.Array(self.z_corr, "1", ("g0_bin_s", "time_s", "time_s"),
                                       "correlation of the normal scores of one cell's g(t) - g0 at two times (Gaussian copula)")
        a = {"g0_min_s": self.g0_min_s, "g0_max_s": self.g0_max_s, "g_floor_s": self.g_floor_s, "source": self.source,
             "form": "tabulated conditional quantiles, linear in g0 and log10(t)", "temperature": self.temperature_note,
             "dropped_cells": int(self.dropped_cells), "dropped_reads": int(self.dropped_reads)}
        a.update(attrs or {})
        return T.write_table(path, kind="relaxation", arrays=arrays, config=config, attrs=a)

    @classmethod
    def load(cls, path: str | Path) -> "RelaxationModel":
        """Read a ``relaxation`` table written by :meth:`save` (validated first). ``path`` is a
        file, or the name of a shipped table (``"relaxation_techB"``; :func:`device.data.resolve_table`)."""
        from device import tables as T
        from device.data import resolve_table

        path = resolve_table(path)
        t = T.read_table(path, kind="relaxation")
        return cls(
            g0_bin_s=t["g0_bin_s"], time_s=t["time_s"], quantile_p=t["quantile_p"], dg_quantile_s=t["dg_quantile_s"],
            mean_drift_s=t["mean_drift_s"], std_s=t["std_s"], n_cells=t["n_cells"],
            g0_min_s=float(t.attrs["g0_min_s"]), g0_max_s=float(t.attrs["g0_max_s"]), g_floor_s=float(t.attrs["g_floor_s"]),
            source=str(t.attrs.get("source", path)), temperature_note=str(t.attrs.get("temperature", "")),
            z_corr=t["z_corr"] if "z_corr" in t.arrays else None,
            dropped_cells=int(t.attrs.get("dropped_cells", 0)), dropped_reads=int(t.attrs.get("dropped_reads", 0)),
        )

    def summary(self, bins: Sequence[int] | None = None) -> str:
        """Mean drift / spread of ``g(t) - g0`` per (bin, time), uS for display."""
        idx = range(self.g0_bin_s.size) if bins is None else bins
        head = f"{'g0 uS':>8} " + " ".join(f"{t:>12.3g}s" for t in self.time_s)
        lines = [f"relaxation model: {self.g0_bin_s.size} g0 bins, times {self.time_s[0]:g}..{self.time_s[-1]:g} s; "
                 "mean drift / std of g(t)-g0 in uS", head]
        if self.dropped_cells:
            lines.insert(1, f"left out: {self.dropped_cells} cells ({self.dropped_reads} reads) with an invalid read")
        for i in idx:
            lines.append(f"{self.g0_bin_s[i] * 1e6:>8.2f} " + " ".join(
                f"{self.mean_drift_s[i, j] * 1e6:>+6.2f}/{self.std_s[i, j] * 1e6:<6.2f}" for j in range(self.time_s.size)))
        return "\n".join(lines)


def level_moments(model: RelaxationModel | None, level_samples_s: Sequence[np.ndarray], time_s: float, *,
                  read_noise_rel: float = 0.0, out_of_range: Literal["raise", "clamp"] = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (S, S^2) of each level's read conductance ``time_s`` after programming:
    ``level_samples_s[k]`` are level k's programmed conductances (write-verify samples), each
    relaxes by ``model`` (exact moments of its sampler, :meth:`RelaxationModel.dg_moments`; no
    relaxation for ``model=None`` or ``time_s=0``) and is read with relative read noise
    ``read_noise_rel`` (variance ``read_noise_rel^2 E[g^2]``). What the engine's cells of each
    digit look like at the read, averaged over the programming variation: the per-level statistics
    of level placement and of relaxation-aware training."""
    mu, var = [], []
    for g0 in level_samples_s:
        g0 = np.asarray(g0, float).ravel()
        if model is None or float(time_s) == 0:
            m1, m2 = np.zeros_like(g0), np.zeros_like(g0)
        else:
            model._check_g0(g0, out_of_range)
            m1, m2 = model.dg_moments(g0, time_s)
        e1 = float(np.mean(g0 + m1))
        e2 = float(np.mean(g0 * g0 + 2 * g0 * m1 + m2))
        mu.append(e1)
        var.append(max(e2 - e1 * e1, 0.0) + read_noise_rel**2 * e2)
    return np.array(mu), np.array(var)


# -- validation -----------------------------------------------------------------------------------
def bin_statistics(data: RelaxationData, g0_edges_s: np.ndarray, time_s: np.ndarray, g_s: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (g0 bin, time point) mean, standard deviation and interquartile range of ``g_s``
    (default the data's reads) and the count, for reads grouped by ``g0_edges_s`` and the nominal
    times ``time_s`` (each read goes to the nearest time point in log). Returns
    ``(mean, std, count, iqr)``, each (bins, times)."""
    g = data.g_s if g_s is None else g_s
    nb, nt = len(g0_edges_s) - 1, len(time_s)
    bi = np.clip(np.searchsorted(g0_edges_s, data.g0_s, side="right") - 1, 0, nb - 1)
    ti = np.argmin(np.abs(np.log(data.time_s)[:, None] - np.log(np.asarray(time_s))[None, :]), axis=1)
    mean = np.full((nb, nt), np.nan)
    std = np.full((nb, nt), np.nan)
    cnt = np.zeros((nb, nt), np.int64)
    iqr = np.full((nb, nt), np.nan)
    for i in range(nb):
        for j in range(nt):
            x = g[(bi == i) & (ti == j)]
            cnt[i, j] = x.size
            if x.size >= 2:
                mean[i, j], std[i, j] = x.mean(), x.std(ddof=1)
                q1, q3 = np.quantile(x, [0.25, 0.75])
                iqr[i, j] = q3 - q1
    return mean, std, cnt, iqr


def compare_forms(model: RelaxationModel, held_out: RelaxationData, g0_edges_s: np.ndarray, rng: np.random.Generator, *, draws: int = 8) -> dict[str, np.ndarray]:
    """Held-out check of the fitted model (the basis of the form chosen).

    For each held-out read, ``draws`` predictions from the model at the read's time and the
    cell's g0 (several, so that the comparison measures the model and not its sampling noise);
    then per (g0 bin, time): data mean / std, predicted mean / std, the errors in units of the
    data's std, and the two-sample Kolmogorov-Smirnov statistic of the quantile form and of a
    normal form with the model's own mean and std per bin (``ks_quantile``, ``ks_normal``)."""
    from scipy import stats

    k = int(draws)
    if k < 1:
        raise RelaxationError(f"draws={draws!r} is invalid: must be >= 1")
    rep = RelaxationData(np.tile(held_out.cell, k), np.tile(held_out.time_s, k), np.tile(held_out.g_s, k), np.tile(held_out.g0_s, k))
    pred = np.empty_like(rep.g_s)
    normal = np.empty_like(rep.g_s)
    for t in np.unique(rep.time_s):
        m = rep.time_s == t
        tt = min(max(t, model.time_s[0]), model.time_s[-1])
        pred[m] = model.sample(rep.g0_s[m], tt, rng, out_of_range="clamp")
        # the normal form: same per-bin mean drift and std (interpolated like the quantiles)
        j = int(np.argmin(np.abs(np.log(model.time_s) - math.log(tt))))
        mu = np.interp(rep.g0_s[m], model.g0_bin_s, model.mean_drift_s[:, j])
        sd = np.interp(rep.g0_s[m], model.g0_bin_s, model.std_s[:, j])
        normal[m] = rep.g0_s[m] + mu + sd * rng.standard_normal(int(m.sum()))
    md, sd, cnt, qd = bin_statistics(held_out, g0_edges_s, model.time_s)
    mp, sp, _, qp = bin_statistics(rep, g0_edges_s, model.time_s, pred)
    nb, nt = md.shape
    ksq = np.full((nb, nt), np.nan)
    ksn = np.full((nb, nt), np.nan)
    bi = np.clip(np.searchsorted(g0_edges_s, rep.g0_s, side="right") - 1, 0, nb - 1)
    ti = np.argmin(np.abs(np.log(rep.time_s)[:, None] - np.log(model.time_s)[None, :]), axis=1)
    n0 = held_out.g_s.size
    for i in range(nb):
        for j in range(nt):
            m = (bi == i) & (ti == j)
            d = held_out.g_s[m[:n0]]
            if d.size >= 20:
                ksq[i, j] = stats.ks_2samp(d, pred[m]).statistic
                ksn[i, j] = stats.ks_2samp(d, normal[m]).statistic
    return {"mean_data_s": md, "std_data_s": sd, "count": cnt, "mean_pred_s": mp, "std_pred_s": sp,
            "iqr_data_s": qd, "iqr_pred_s": qp,
            "mean_err_in_std": np.abs(mp - md) / sd, "std_err_in_std": np.abs(sp - sd) / sd,
            "iqr_err_rel": np.abs(qp - qd) / qd,
            "ks_quantile": ksq, "ks_normal": ksn}


def techb_bake_statistics(src: str | Path | None = None, g0_edges_s: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Tech-B bake data (``bake.tsv.gz``): per bake temperature (C) and g0 bin, the mean and std of
    ``g_after - g_before``. Returns ``temperature_c`` (T,), ``g0_edges_s``, ``mean_s`` / ``std_s``
    (T, bins). The bake duration and the time between programming and the pre-bake read are not
    in the files: this is the basis of the statement that no acceleration law can be fitted."""
    from device.calibrate import CalibrationError, techb_dir

    d = Path(src) if src is not None else techb_dir()
    f = d / "bake.tsv.gz" if d.is_dir() else d
    if not f.is_file():
        raise CalibrationError(f"{f}: no such file")
    a = np.loadtxt(f, delimiter="\t", ndmin=2)
    edges = np.linspace(0, 144e-6, 10) if g0_edges_s is None else np.asarray(g0_edges_s, float)
    temps = np.unique(a[:, 4])
    mean = np.full((temps.size, edges.size - 1), np.nan)
    std = np.full_like(mean, np.nan)
    for k, T in enumerate(temps):
        s = a[a[:, 4] == T]
        pre = s[s[:, 1] == 0]
        post = s[s[:, 1] > 0]
        _, ip = np.unique(pre[:, 0], return_index=True)
        _, iq = np.unique(post[:, 0], return_index=True)
        pre, post = pre[ip], post[iq]
        common, ia, ib = np.intersect1d(pre[:, 0], post[:, 0], return_indices=True)
        g0, g1 = pre[ia, 3], post[ib, 3]
        bi = np.searchsorted(edges, g0, side="right") - 1
        for i in range(edges.size - 1):
            x = (g1 - g0)[bi == i]
            if x.size >= 2:
                mean[k, i], std[k, i] = x.mean(), x.std(ddof=1)
    return {"temperature_c": temps, "g0_edges_s": edges, "mean_s": mean, "std_s": std}


def plot_relaxation(model: RelaxationModel, path: str | Path, *, n_show: int = 6) -> Path:
    """Mean drift and spread of ``g(t) - g0`` versus time for ``n_show`` g0 bins of the model's
    table (the data's statistics per bin). PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from device.plots import save_figure

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    sel = np.unique(np.linspace(0, model.g0_bin_s.size - 1, n_show).round().astype(int))
    for i in sel:
        lab = f"g0 {model.g0_bin_s[i] * 1e6:.0f} uS"
        (ln,) = ax[0].semilogx(model.time_s, model.mean_drift_s[i] * 1e6, "-o", ms=3, label=lab)
        ax[1].semilogx(model.time_s, model.std_s[i] * 1e6, "-o", ms=3, color=ln.get_color(), label=lab)
    ax[0].set(xlabel="time since programming (s)", ylabel="mean of g(t) - g0 (uS)", title="mean drift")
    ax[1].set(xlabel="time since programming (s)", ylabel="std of g(t) - g0 (uS)", title="spread")
    ax[0].axhline(0, color="k", lw=0.5)
    ax[1].legend(fontsize=7)
    fig.suptitle(f"relaxation model ({model.source or 'fitted'})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)[0]
