"""Fault-map-aware mapping: re-encode weights around stuck cells, and place them where faults cost least.

After fabrication a chip is tested (a march test), so its stuck-at map is known before the weights
are written. Two uses of it, both at zero extra crossbars:

Re-encoding (:func:`best_digits`, :func:`reencode_cells`, :class:`FaultAwareEncoder`)
    A weight's code ``q`` is stored in ``K`` cells: for each slice ``s`` (weight ``2**(b s)``,
    ``b`` = bits per cell) a G+ and a G- cell (differential pair) or one cell read against its
    slice's shared reference cell (offset mapping). The read-back is

        ``y = sum_k sign_k * 2**(b s_k) * v_k``

    with ``v_k`` the cell's value in level steps: ``d`` for a healthy cell programmed to digit
    ``d`` (:data:`nominal <level values>`: ``(g_target[d] - g_target[0]) / step``), and for a
    stuck cell ``(g_sa0_s - g_target[0]) / step`` (SA0, HRS) or ``(g_sa1_s - g_target[0]) / step``
    (SA1, LRS). Given which cells are stuck, the digits of the healthy cells are chosen to make
    ``y`` the representable value closest to ``q`` (primary objective ``|y - q|``; among equally
    close encodings the one that changes the fewest healthy cells, so a weight whose faults do not
    hurt keeps its digits). An SA1 in a G+ cell is cancelled by its G- partner, an MSB fault is
    absorbed by lower slices, and healthy cells may use all ``2**b`` levels of the cell (also the
    levels above a partial most-significant slice: ``full_levels=True``), which widens what can be
    absorbed.

    Exact per weight: the options of each slice (products of its cells' levels) are enumerated
    and de-duplicated, merged into the sums reachable from the lower half and from the upper half
    of the slices, and the two halves are matched by a sorted search (meet in the middle): for
    every upper-half sum the closest lower-half sum is found with ``searchsorted``. 8-bit weights
    on 2-bit differential pairs: at most 31 distinct sums per half, so a few hundred operations
    per faulty weight, vectorized over all faulty weights of a layer (healthy weights are not
    touched). Tests compare with brute force over every digit assignment.

Placement (:func:`place_layer`)
    Permutes the inputs over the word lines (row slots, free rows included) and the outputs over
    the column slots (the columns of one output: all slices and both polarities, free column
    groups included) so that the faults fall where they cost least. Cost of a placement: ``sum over
    weights of s_o * a_i * r(q_oi, P)**2`` with ``r`` the residual error of the weight's best encoding
    given the fault pattern ``P`` of the cells it lands on (re-encoded or not), ``a_i`` an
    optional input weight (e.g. the input's mean square activation ``E[x_i**2]``) and ``s_o`` an
    optional output weight (e.g. the mean square gradient of the loss with respect to output
    ``o``: a Fisher-style sensitivity); both 1 by default. ``s_o a_i r_oi**2`` is then the
    diagonal estimate of the loss's sensitivity to the weight's error, so faults go where the
    model notices them least, not only onto small weights (on MiniLM the residual-stream inputs
    with the largest activations carry the smallest weights of the FFN's first layer, rank
    correlation -0.7 to -0.9, and a few inputs of its second layer have 50-125x the mean square
    activation: the unweighted cost is blind to both and moves faults there; see RESULTS.md). :class:`FaultAwareConfig` ``placement_weighting`` names which weights
    a model run supplies (``nn.sensitivity`` estimates them). With the columns
    fixed the cost separates over inputs, so the best row permutation is a linear assignment
    problem (``scipy.optimize.linear_sum_assignment``), and likewise the columns with the rows
    fixed: alternating the two exact steps never increases the cost, and the result is kept only
    if it is lower than the identity's. Free lines (pruning) are slots like any other, so the
    most damaged lines end up unused. Residuals are tabulated per fault pattern over all codes
    (few patterns occur), so a cost matrix is a gather, not a re-encoding per entry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch

from crossbar.engine import FREE, NEG, POS, REF, CrossbarConfig, TileLayout
from device.config import Config, check_choice, check_int_range, config
from mapping.plan import MappingError

__all__ = [
    "FaultAwareConfig",
    "PLACEMENT_WEIGHTINGS",
    "best_digits",
    "WeightCells",
    "weight_cells",
    "level_values",
    "reencode_cells",
    "readback",
    "code_digits",
    "layout_digits",
    "FaultAwareEncoder",
    "place_layer",
    "placement_cost",
    "PlacementReport",
    "ResidualTable",
    "frozen_slices",
    "FaultAwareMapper",
]

#: the placement cost's weightings (FaultAwareConfig.placement_weighting)
PLACEMENT_WEIGHTINGS = ("none", "activation", "fisher")

_BIG = float("inf")
#: faulty weights re-encoded per vectorized chunk (memory: ~ chunk x 256 x 8 bytes per tensor)
_CHUNK = 16384


@config
class FaultAwareConfig(Config):
    """Fault-map-aware mapping of a chip (needs its stuck-at map: a post-fabrication march test)."""

    #: re-encode every weight around its stuck cells (the closest representable value)
    reencode: bool = False
    #: permute each layer's rows and columns so that faults land where they cost least
    placement: bool = False
    #: healthy cells may use every level of the cell, also above a partial most-significant slice
    full_levels: bool = True
    #: alternating row / column assignment rounds of the placement (each never raises the cost)
    placement_rounds: int = 2
    #: what the placement's cost weighs each weight's squared residual with: "none" (1),
    #: "activation" (its input's mean square activation E[x_i^2]), "fisher" (E[x_i^2] times its
    #: output's mean square loss gradient E[(dL/dy_o)^2]); the weights are estimated on training
    #: batches of the model (nn.sensitivity) and handed to each layer's FaultAwareMapper. On
    #: MiniLM "none" lowers the summed residual yet costs accuracy, "fisher" is what works (RESULTS.md)
    placement_weighting: Literal["none", "activation", "fisher"] = "none"

    def __post_init__(self) -> None:
        for name in ("reencode", "placement", "full_levels"):
            if not isinstance(getattr(self, name), bool):
                from device.config import ConfigError

                raise ConfigError(f"faultaware.{name}={getattr(self, name)!r} is invalid: must be true or false")
        check_int_range("faultaware.placement_rounds", self.placement_rounds, 1, 20)
        check_choice("faultaware.placement_weighting", self.placement_weighting, PLACEMENT_WEIGHTINGS)

    @property
    def any(self) -> bool:
        return self.reencode or self.placement


# --------------------------------------------------------------------------------------------
# the per-weight optimum


def _dedupe(vals: torch.Tensor, chg: torch.Tensor, choice: torch.Tensor, tol: float):
    """Sort the options of each row by value (ties: fewest changes first), drop repeated values
    (within ``tol``), and cut the width to the largest count of distinct values in the chunk.

    ``vals`` ``(n, M)`` float64 (``inf`` = no option), ``chg`` ``(n, M)`` int, ``choice``
    ``(n, M, g)`` int (the per-group option index of each entry). Returns the same, compacted."""
    o = torch.argsort(chg, dim=1, stable=True)
    vals, chg = vals.gather(1, o), chg.gather(1, o)
    choice = choice.gather(1, o.unsqueeze(-1).expand_as(choice))
    # sums of float level values that differ by round-off only count as one value: sort on a
    # grid of ``tol`` so that such near-equal values order by their changes
    key = torch.round(vals / tol)
    o = torch.argsort(key, dim=1, stable=True)
    vals, chg, key = vals.gather(1, o), chg.gather(1, o), key.gather(1, o)
    choice = choice.gather(1, o.unsqueeze(-1).expand_as(choice))
    if vals.shape[1] > 1:
        dup = torch.zeros_like(vals, dtype=torch.bool)
        dup[:, 1:] = key[:, 1:] == key[:, :-1]
        dup &= torch.isfinite(vals)
        if bool(dup.any()):
            vals = vals.masked_fill(dup, _BIG)
            o = torch.argsort(vals, dim=1, stable=True)
            vals, chg = vals.gather(1, o), chg.gather(1, o)
            choice = choice.gather(1, o.unsqueeze(-1).expand_as(choice))
    width = max(1, int(torch.isfinite(vals).sum(1).max()))
    return vals[:, :width].contiguous(), chg[:, :width].contiguous(), choice[:, :width].contiguous()


def _merge(a, b, tol):
    """All sums of one option of ``a`` and one of ``b`` (each ``(vals, chg, choice)``), de-duplicated."""
    va, ca, xa = a
    vb, cb, xb = b
    n, ma, mb = va.shape[0], va.shape[1], vb.shape[1]
    vals = (va.unsqueeze(2) + vb.unsqueeze(1)).reshape(n, ma * mb)
    chg = (ca.unsqueeze(2) + cb.unsqueeze(1)).reshape(n, ma * mb)
    choice = torch.cat(
        [xa.unsqueeze(2).expand(n, ma, mb, xa.shape[2]), xb.unsqueeze(1).expand(n, ma, mb, xb.shape[2])], dim=3
    ).reshape(n, ma * mb, xa.shape[2] + xb.shape[2])
    return _dedupe(vals, chg, choice, tol)


def best_digits(
    digits: Any,
    faults: Any,
    *,
    sign: Any,
    weight: Any,
    group: Any,
    max_digit: Any,
    levels: Any = None,
    stuck_values: tuple[float, float] | None = None,
    free: Any = None,
    target: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits of each weight's healthy cells that bring its read-back closest to its code.

    Parameters (``n`` weights of ``K`` cells each; see the module docstring)
    ----------
    digits: ``(n, K)`` int, the target digit of every cell (the plain encoding).
    faults: ``(n, K)`` int, :class:`device.faults.Fault` codes (0 ok, 1 SA0, 2 SA1).
    sign: ``(K,)`` +1 / -1 (G+ / G- or reference cell).
    weight: ``(K,)`` the cell's place value, ``2**(bits_per_cell * slice)``.
    group: ``(K,)`` int, the slice of the cell (cells of one slice are enumerated together).
    max_digit: ``(K,)`` int, the largest digit a healthy cell may take (``2**bits - 1``).
    levels: ``(L,)`` value of digit ``d`` in level steps; default ``arange(L)`` with
        ``L = max(max_digit) + 1`` (evenly spaced levels).
    stuck_values: ``(v_sa0, v_sa1)`` in level steps; default ``(levels[0], levels[-1])``.
    free: ``(K,)`` or ``(n, K)`` bool, cells that may be re-encoded (default all); a cell that is
        not free keeps its digit (e.g. a shared reference cell, a voted copy).
    target: ``(n,)`` the value to approach; default the nominal code ``sum sign * weight * digit``.

    Returns ``(new_digits (n, K) int64, error (n,) float64)``: ``error = y - target`` of the
    chosen encoding. Stuck cells keep their digit in ``new_digits`` (it does not matter what is
    written to them). Exact: no other assignment of the free healthy cells' digits (within
    ``0..max_digit``) gives a smaller ``|error|``; among those that tie, the fewest free healthy
    cells differ from ``digits``.
    """
    d = torch.as_tensor(digits).to(torch.int64)
    f = torch.as_tensor(faults).to(torch.int64)
    if d.ndim != 2 or f.shape != d.shape:
        raise ValueError(f"digits and faults must both be (n, K); got {tuple(d.shape)} and {tuple(f.shape)}")
    n, K = d.shape
    sg = torch.as_tensor(sign, dtype=torch.float64).reshape(K)
    wt = torch.as_tensor(weight, dtype=torch.float64).reshape(K)
    gr = torch.as_tensor(group, dtype=torch.int64).reshape(K)
    md = torch.as_tensor(max_digit, dtype=torch.int64).reshape(K)
    L = int(md.max()) + 1
    lv = torch.arange(L, dtype=torch.float64) if levels is None else torch.as_tensor(levels, dtype=torch.float64)
    if lv.ndim != 1 or lv.numel() < L:
        raise ValueError(f"levels must hold at least {L} values (max_digit + 1)")
    L = int(lv.numel())
    v0, v1 = (float(lv[0]), float(lv[-1])) if stuck_values is None else (float(stuck_values[0]), float(stuck_values[1]))
    fr = torch.ones(n, K, dtype=torch.bool) if free is None else torch.as_tensor(free, dtype=torch.bool).expand(n, K)
    if bool(((d < 0) | (d >= L)).any()):
        raise ValueError(f"digits must lie in 0..{L - 1}")
    if target is None and n > 1:
        # the optimum depends only on (digits, faults, free): solve each distinct problem once
        # (a layer has a few thousand distinct ones among up to millions of faulty weights)
        key = torch.cat([d, f, fr.to(torch.int64)], dim=1)
        uniq, inv = torch.unique(key, dim=0, return_inverse=True)
        if uniq.shape[0] < n:
            nd, e = best_digits(uniq[:, :K], uniq[:, K : 2 * K], sign=sg, weight=wt, group=gr, max_digit=md,
                                levels=lv, stuck_values=(v0, v1), free=uniq[:, 2 * K :].bool())
            return nd[inv], e[inv]
    tgt = (sg * wt * d.to(torch.float64)).sum(1) if target is None else torch.as_tensor(target, dtype=torch.float64).reshape(n)
    tol = 1e-9 * float(wt.max()) * max(1.0, float(lv.abs().max()), abs(v0), abs(v1))
    new = d.clone()
    err = torch.zeros(n, dtype=torch.float64)
    groups = [torch.nonzero(gr == g).flatten() for g in torch.unique(gr).tolist()]
    groups.sort(key=lambda ix: float(wt[ix].min()))
    half = len(groups) // 2
    for i0 in range(0, n, _CHUNK):
        i1 = min(n, i0 + _CHUNK)
        dn, fn, frn = d[i0:i1], f[i0:i1], fr[i0:i1]
        opts = []
        for ix in groups:
            m = ix.numel()
            # option index o = sum_j digit_j * L**j over the group's cells
            code = torch.arange(L**m)
            dig = torch.stack([(code // L**j) % L for j in range(m)], dim=1)  # (L**m, m)
            cells_d = dn[:, ix]  # (c, m)
            cells_f = fn[:, ix]
            movable = frn[:, ix] & (cells_f == 0)  # (c, m)
            val_c = torch.where(cells_f == 1, v0, torch.where(cells_f == 2, v1, lv[cells_d]))  # fixed value
            dd = dig.unsqueeze(0)  # (1, O, m)
            ok = (~movable.unsqueeze(1) & (dd == cells_d.unsqueeze(1))) | (movable.unsqueeze(1) & (dd <= md[ix]))
            v = torch.where(movable.unsqueeze(1), lv[dd], val_c.unsqueeze(1))  # (c, O, m)
            contrib = (v * (sg[ix] * wt[ix])).sum(2)
            valid = ok.all(2)
            chg = (movable.unsqueeze(1) & (dd != cells_d.unsqueeze(1))).sum(2)
            vals = contrib.masked_fill(~valid, _BIG)
            opts.append(_dedupe(vals, chg, code.view(1, -1, 1).expand(i1 - i0, -1, 1).clone(), tol))
        lo, hi = _reduce(opts[:half], i1 - i0, tol), _reduce(opts[half:], i1 - i0, tol)
        vl, cl, xl = lo
        vh, ch, xh = hi
        q = tgt[i0:i1].unsqueeze(1) - vh  # (c, Mh) what the lower half should read
        nvalid = torch.isfinite(vl).sum(1, keepdim=True)
        idx = torch.searchsorted(vl, q.contiguous())
        best_e, best_c, best_l = None, None, None
        for cand in (idx - 1, idx):
            cand = torch.minimum(cand.clamp(min=0), nvalid - 1)
            e = (q - vl.gather(1, cand)).abs()
            c = ch + cl.gather(1, cand)
            if best_e is None:
                best_e, best_c, best_l = e, c, cand
            else:
                better = (e < best_e - tol) | (((e - best_e).abs() <= tol) & (c < best_c))
                best_e = torch.where(better, e, best_e)
                best_c = torch.where(better, c, best_c)
                best_l = torch.where(better, cand, best_l)
        best_e = best_e.masked_fill(~torch.isfinite(vh), _BIG)
        emin = best_e.min(1, keepdim=True).values
        key = torch.where(best_e <= emin + tol, best_c, torch.iinfo(torch.int64).max)
        h = key.argmin(1, keepdim=True)  # (c, 1)
        l_ = best_l.gather(1, h)
        cho = torch.cat([xl.gather(1, l_.unsqueeze(-1).expand(-1, 1, xl.shape[2])).squeeze(1),
                         xh.gather(1, h.unsqueeze(-1).expand(-1, 1, xh.shape[2])).squeeze(1)], dim=1)
        gl = groups[:half] + groups[half:]
        y = vl.gather(1, l_).squeeze(1) + vh.gather(1, h).squeeze(1)
        err[i0:i1] = y - tgt[i0:i1]
        for g, ix in enumerate(gl):
            o = cho[:, g]
            for j, k in enumerate(ix.tolist()):
                dig = (o // L**j) % L
                mov = frn[:, k] & (fn[:, k] == 0)
                new[i0:i1, k] = torch.where(mov, dig, dn[:, k])
    return new, err


def _reduce(opts: list, n: int, tol: float):
    """Merge the option sets of several slices into the set of reachable sums."""
    if not opts:
        return (torch.zeros(n, 1, dtype=torch.float64), torch.zeros(n, 1, dtype=torch.int64),
                torch.zeros(n, 1, 0, dtype=torch.int64))
    acc = opts[0]
    for o in opts[1:]:
        acc = _merge(acc, o, tol)
    return acc


# --------------------------------------------------------------------------------------------
# the cells of every weight of one layer


@dataclasses.dataclass(frozen=True)
class WeightCells:
    """Where the cells of each weight ``(o, i)`` of one layer sit (main copies only).

    Cell ``k`` of a weight: slice ``k // P``, role ``k % P`` (``P`` = 2: G+, G-; 1: offset cell),
    and for offset mapping ``K = 2 S`` cells, the last ``S`` the slices' reference cells.
    ``in_block`` / ``in_row``: ``(in,)`` row block and word line of each input (-1 unmapped);
    ``out_block``: ``(out,)`` column block of each output (-1 unmapped); ``out_cols``:
    ``(out, S, P)`` bit line of each weight column; ``ref_cols``: ``(C, S)`` reference bit line of
    each slice in each column block (offset), else None. ``sign``, ``weight``, ``group``,
    ``max_digit``: ``(K,)`` as :func:`best_digits` takes them; ``fixed``: ``(K,)`` cells never
    re-encoded (references).
    """

    n_col_blocks: int
    in_block: np.ndarray
    in_row: np.ndarray
    out_block: np.ndarray
    out_cols: np.ndarray
    ref_cols: np.ndarray | None
    sign: np.ndarray
    weight: np.ndarray
    group: np.ndarray
    max_digit: np.ndarray
    fixed: np.ndarray

    @property
    def K(self) -> int:
        return int(self.sign.size)

    def positions(self, o: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tile, row, col)`` ``(n, K)`` flat cell indices of weights ``(o[j], i[j])``."""
        o = np.asarray(o, np.int64)
        i = np.asarray(i, np.int64)
        C = self.n_col_blocks
        tile = (self.in_block[i] * C + self.out_block[o])[:, None]
        row = self.in_row[i][:, None]
        cols = self.out_cols[o].reshape(o.size, -1)
        if self.ref_cols is not None:
            cols = np.concatenate([cols, self.ref_cols[self.out_block[o]]], axis=1)
        K = cols.shape[1]
        return np.broadcast_to(tile, (o.size, K)), np.broadcast_to(row, (o.size, K)), cols


def weight_cells(layout: TileLayout, cfg: CrossbarConfig, out_features: int, in_features: int,
                 *, full_levels: bool = True) -> WeightCells:
    """The :class:`WeightCells` of a layout (main rows and columns; copies are left out).

    ``full_levels``: healthy cells may use every level of the cell (``2**bits_per_cell - 1``),
    also in a partial most-significant slice; False keeps each slice to its own bits.
    """
    S = cfg.n_slices
    P = 2 if cfg.mapping == "differential" else 1
    R, C = layout.n_row_blocks, layout.n_col_blocks
    in_block = np.full(in_features, -1, np.int64)
    in_row = np.full(in_features, -1, np.int64)
    m = (layout.row_in >= 0) & ~layout.row_copy
    rr, pp = np.nonzero(m)
    in_block[layout.row_in[rr, pp]] = rr
    in_row[layout.row_in[rr, pp]] = pp
    out_block = np.full(out_features, -1, np.int64)
    out_cols = np.full((out_features, S, P), -1, np.int64)
    role, sl, co, cp = layout.col_role, layout.col_slice, layout.col_out, layout.col_copy
    for p, rl in enumerate((POS, NEG)[:P]):
        cc, jj = np.nonzero((role == rl) & ~cp)
        out_cols[co[cc, jj], sl[cc, jj], p] = jj
        out_block[co[cc, jj]] = cc
    ref_cols = None
    if cfg.mapping == "offset":
        ref_cols = np.full((C, S), -1, np.int64)
        cc, jj = np.nonzero((role == REF) & ~cp)
        ref_cols[cc, sl[cc, jj]] = jj
    top = 2**cfg.bits_per_cell - 1
    md = np.array([top if full_levels else 2**b - 1 for b in cfg.slice_bits], np.int64)
    s_idx = np.repeat(np.arange(S), P)
    sign = np.tile(np.array([1.0, -1.0][:P]), S)
    fixed = np.zeros(S * P, bool)
    if cfg.mapping == "offset":
        s_idx = np.concatenate([s_idx, np.arange(S)])
        sign = np.concatenate([sign, -np.ones(S)])
        fixed = np.concatenate([fixed, np.ones(S, bool)])
    return WeightCells(
        n_col_blocks=C, in_block=in_block, in_row=in_row, out_block=out_block, out_cols=out_cols, ref_cols=ref_cols,
        sign=sign, weight=2.0 ** (cfg.bits_per_cell * s_idx), group=s_idx, max_digit=md[s_idx], fixed=fixed,
    )


def level_values(levels: Any) -> tuple[np.ndarray, tuple[float, float]]:
    """Digit values and stuck values in level steps from a ``LevelTable``:
    ``(arange(L), ((g_sa0_s - g_target[0]) / step, (g_sa1_s - g_target[0]) / step))``, ``step``
    the engine's level step ``(g_target[-1] - g_target[0]) / (L - 1)``. Healthy digits are taken
    at their nominal values (the code the engine reads for digit ``d``)."""
    g = np.asarray(levels.g_target_s, np.float64)
    step = (g[-1] - g[0]) / (g.size - 1)
    return np.arange(g.size, dtype=np.float64), ((float(levels.g_sa0_s) - g[0]) / step, (float(levels.g_sa1_s) - g[0]) / step)


def reencode_cells(
    digits: Any,
    faults: Any,
    layout: TileLayout,
    cfg: CrossbarConfig,
    out_features: int,
    in_features: int,
    *,
    levels: Any = None,
    full_levels: bool = True,
    frozen_slices: Any = None,
) -> tuple[Any, dict[str, float]]:
    """Re-encode every weight of one layer that has a stuck cell whose value differs from its digit.

    ``digits`` / ``faults``: ``(tiles, rows, cols)`` (numpy or torch) target digits and fault
    codes of the layer's cells. ``levels``: a ``LevelTable`` (stuck values from its
    ``g_sa0_s`` / ``g_sa1_s``) or None (SA0 reads digit 0, SA1 the top digit). ``frozen_slices``:
    ``(out, S)`` bool (or None): slices that must keep their digits (e.g. voted by a protection
    read). Returns the new digits (same type and dtype as ``digits``) and counts: weights hit,
    weights repaired exactly, sum of squared errors before and after (code units).
    """
    is_t = isinstance(digits, torch.Tensor)
    dig = digits.detach().cpu().numpy() if is_t else np.asarray(digits)
    flt = faults.detach().cpu().numpy() if isinstance(faults, torch.Tensor) else np.asarray(faults)
    out = dig.copy()
    stats = {"weights_hit": 0.0, "weights_exact": 0.0, "sse_before": 0.0, "sse_after": 0.0}
    wc = weight_cells(layout, cfg, out_features, in_features, full_levels=full_levels)
    if levels is None:
        lv = np.arange(2**cfg.bits_per_cell, dtype=np.float64)
        sv = (0.0, float(lv[-1]))
    else:
        lv, sv = level_values(levels)
    o, i = _hit_weights(dig, flt, layout, wc, lv, sv)
    if o.size == 0:
        return digits, stats
    t, r, c = wc.positions(o, i)
    d = dig[t, r, c].astype(np.int64)
    f = flt[t, r, c].astype(np.int64)
    free = np.broadcast_to(~wc.fixed, d.shape).copy()
    if frozen_slices is not None:
        # frozen (voted) slices keep their digits, and their faults are left to the vote: taken
        # as healthy here so the other slices do not compensate what the vote corrects
        fz = np.asarray(frozen_slices, bool)[o]  # (n, S)
        P = 2 if cfg.mapping == "differential" else 1
        frozen = np.zeros_like(free)
        frozen[:, : cfg.n_slices * P] = np.repeat(fz, P, axis=1)
        free &= ~frozen
        f = np.where(frozen, 0, f)
    kw = dict(sign=wc.sign, weight=wc.weight, group=wc.group, max_digit=wc.max_digit, levels=lv, stuck_values=sv)
    _, e0 = best_digits(torch.from_numpy(d), torch.from_numpy(f), free=torch.zeros(d.shape, dtype=torch.bool), **kw)
    new, e1 = best_digits(torch.from_numpy(d), torch.from_numpy(f), free=torch.from_numpy(free), **kw)
    nd = new.numpy()
    mov = free & (f == 0)
    out[t[mov], r[mov], c[mov]] = nd[mov].astype(out.dtype)
    stats = {
        "weights_hit": float(o.size), "weights_exact": float((e1.abs() < 1e-9).sum()),
        "sse_before": float((e0**2).sum()), "sse_after": float((e1**2).sum()),
    }
    if is_t:
        return torch.from_numpy(out).to(device=digits.device, dtype=digits.dtype), stats
    return out, stats


def _hit_weights(dig, flt, layout, wc: WeightCells, lv, sv) -> tuple[np.ndarray, np.ndarray]:
    """``(o, i)`` of the weights with a stuck cell (in one of their main cells) whose stuck value
    differs from the value of its digit."""
    t, r, c = np.nonzero(flt)
    if t.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    val = np.where(flt[t, r, c] == 1, sv[0], sv[1])
    hurt = np.abs(val - lv[dig[t, r, c].astype(np.int64)]) > 1e-12
    t, r, c = t[hurt], r[hurt], c[hurt]
    C = layout.n_col_blocks
    rb, cb = t // C, t % C
    i = layout.row_in[rb, r].astype(np.int64)
    ok = (i >= 0) & ~layout.row_copy[rb, r]
    role = layout.col_role[cb, c]
    cp = layout.col_copy[cb, c]
    o_list, i_list = [], []
    wmask = ok & ((role == POS) | (role == NEG)) & ~cp
    o_list.append(layout.col_out[cb[wmask], c[wmask]].astype(np.int64))
    i_list.append(i[wmask])
    rmask = ok & (role == REF) & ~cp
    if np.any(rmask):  # a reference cell serves every output of its block on that row
        for b, ii in zip(cb[rmask], i[rmask]):
            outs = np.flatnonzero(wc.out_block == b)
            o_list.append(outs)
            i_list.append(np.full(outs.size, ii, np.int64))
    o = np.concatenate(o_list)
    i = np.concatenate(i_list)
    key = np.unique(o * (wc.in_block.size + 1) + i)
    return key // (wc.in_block.size + 1), key % (wc.in_block.size + 1)


def readback(digits: Any, faults: Any, layout: TileLayout, cfg: CrossbarConfig, out_features: int,
             in_features: int, *, levels: Any = None) -> np.ndarray:
    """``(out, in)`` nominal read-back of every mapped weight in code units: digits at their
    nominal values, stuck cells at their stuck values (no variation, no IR drop). Unmapped
    weights read 0."""
    dig = digits.detach().cpu().numpy() if isinstance(digits, torch.Tensor) else np.asarray(digits)
    flt = faults.detach().cpu().numpy() if isinstance(faults, torch.Tensor) else np.asarray(faults)
    wc = weight_cells(layout, cfg, out_features, in_features)
    if levels is None:
        lv, sv = np.arange(2**cfg.bits_per_cell, dtype=np.float64), (0.0, float(2**cfg.bits_per_cell - 1))
    else:
        lv, sv = level_values(levels)
    y = np.zeros((out_features, in_features))
    oo = np.flatnonzero(wc.out_block >= 0)
    ii = np.flatnonzero(wc.in_block >= 0)
    if oo.size == 0 or ii.size == 0:
        return y
    O, I = np.meshgrid(oo, ii, indexing="ij")
    t, r, c = wc.positions(O.ravel(), I.ravel())
    f = flt[t, r, c]
    v = np.where(f == 1, sv[0], np.where(f == 2, sv[1], lv[dig[t, r, c].astype(np.int64)]))
    y[O.ravel(), I.ravel()] = (v * wc.sign * wc.weight).sum(1)
    return y


# --------------------------------------------------------------------------------------------
# placement


def code_digits(q: Any, cfg: CrossbarConfig) -> np.ndarray:
    """``(n, K)`` digits of codes ``q`` ``(n,)`` in the cell order of :class:`WeightCells`
    (slice-major, G+ then G-; offset: the weight cells, then the reference cells)."""
    q = np.asarray(q, np.int64).reshape(-1)
    S, b = cfg.n_slices, cfg.bits_per_cell
    width = np.asarray(cfg.slice_bits, np.int64)
    shift = b * np.arange(S)
    mask = (1 << width) - 1
    if cfg.mapping == "differential":
        pos = (np.maximum(q, 0)[:, None] >> shift) & mask
        neg = (np.maximum(-q, 0)[:, None] >> shift) & mask
        return np.stack([pos, neg], axis=2).reshape(q.size, 2 * S)
    half = 1 << (cfg.weight_bits - 1)
    u = ((q + half)[:, None] >> shift) & mask
    r = np.broadcast_to((half >> shift) & mask, u.shape)
    return np.concatenate([u, r], axis=1)


@dataclasses.dataclass
class PlacementReport:
    """Fault cost of a layer (sum of squared residual errors in code units, input-weighted)
    with the given layout and with the placed one, and the rounds run."""

    cost_before: float
    cost_after: float
    rounds: int
    moved_inputs: int
    moved_outputs: int


class ResidualTable:
    """Squared residual error ``T[pattern, q]`` of the best encoding of code ``q`` given a fault
    pattern of its ``K`` cells, filled lazily (shared by the layers of one chip configuration:
    pass one to :func:`place_layer` as ``residuals=`` to reuse it). ``wc``: the layer's
    :class:`WeightCells`; ``lv``, ``sv``: :func:`level_values`."""

    def __init__(self, cfg: CrossbarConfig, wc: WeightCells, lv, sv, reencode: bool) -> None:
        self.cfg, self.wc, self.lv, self.sv, self.reencode = cfg, wc, lv, sv, reencode
        self.qmax = (1 << (cfg.weight_bits - 1)) - 1
        self.codes = np.arange(-self.qmax, self.qmax + 1)
        self.digits = code_digits(self.codes, cfg)
        self.index: dict[int, int] = {0: 0}
        self.rows: list[np.ndarray] = [np.zeros(self.codes.size)]

    def ids(self, patterns: np.ndarray) -> np.ndarray:
        """Row index of each pattern ``(n, K)`` (fault codes), computing new ones."""
        key = (patterns.astype(np.int64) * (3 ** np.arange(patterns.shape[1], dtype=np.int64))).sum(1)
        uk, inv = np.unique(key, return_inverse=True)
        new = [k for k in uk.tolist() if k not in self.index]
        if new:
            K = patterns.shape[1]
            pat = np.stack([(np.asarray(new)[:, None] // 3 ** np.arange(K)) % 3], 0)[0]  # (m, K)
            m, nq = pat.shape[0], self.codes.size
            d = np.broadcast_to(self.digits[None], (m, nq, K)).reshape(-1, K)
            f = np.broadcast_to(pat[:, None, :], (m, nq, K)).reshape(-1, K)
            free = np.broadcast_to(~self.wc.fixed & self.reencode, d.shape)
            _, e = best_digits(torch.from_numpy(np.array(d)), torch.from_numpy(np.array(f)),
                               sign=self.wc.sign, weight=self.wc.weight, group=self.wc.group,
                               max_digit=self.wc.max_digit, levels=self.lv, stuck_values=self.sv,
                               free=torch.from_numpy(np.array(free)))
            e2 = (e.numpy() ** 2).reshape(m, nq)
            for k, row in zip(new, e2):
                self.index[k] = len(self.rows)
                self.rows.append(row)
        table_ids = np.array([self.index[k] for k in uk.tolist()], np.int64)
        return table_ids[inv]

    def table(self) -> np.ndarray:
        return np.stack(self.rows)


def _slots(layout: TileLayout, cfg: CrossbarConfig, wc: WeightCells):
    """Row slots ``(n_r, 2)`` (block, line): main and free word lines; column slots: ``(n_c,)``
    block and ``(n_c, S, P)`` bit lines: the columns of each mapped output and groups of free
    columns (copies stay where they are)."""
    lay = layout
    rmask = ((lay.row_in >= 0) & ~lay.row_copy) | (lay.row_in < 0)
    rb, rl = np.nonzero(rmask)
    S, P = cfg.n_slices, (2 if cfg.mapping == "differential" else 1)
    outs = np.flatnonzero(wc.out_block >= 0)
    c_blk = [wc.out_block[outs]]
    c_cols = [wc.out_cols[outs]]
    for c in range(lay.n_col_blocks):
        free = np.flatnonzero((lay.col_role[c] == FREE) & ~lay.col_copy[c])
        n = free.size // (S * P)
        if n and cfg.mapping == "offset" and np.any(wc.ref_cols[c] < 0):
            continue  # a block without reference columns cannot hold an offset-coded output
        if n:
            c_blk.append(np.full(n, c))
            c_cols.append(free[: n * S * P].reshape(n, S, P))
    return np.stack([rb, rl], 1), np.concatenate(c_blk), np.concatenate(c_cols)


def _patterns(faults, layout, wc: WeightCells, rslots, cblk, ccols, r_idx, c_idx):
    """Fault patterns ``(E, K)`` of the cells where row slot ``r_idx[e]`` meets column slot ``c_idx[e]``."""
    C = layout.n_col_blocks
    tile = rslots[r_idx, 0] * C + cblk[c_idx]
    line = rslots[r_idx, 1]
    cols = ccols[c_idx].reshape(len(c_idx), -1)
    if wc.ref_cols is not None:
        cols = np.concatenate([cols, wc.ref_cols[cblk[c_idx]]], axis=1)
    return faults[tile[:, None], line[:, None], cols]


def _faulty_pairs(faults, layout, wc, rslots, cblk, ccols):
    """All (row slot, column slot) pairs whose cells hold a fault: ``(r_idx, c_idx)``."""
    C = layout.n_col_blocks
    t, r, c = np.nonzero(faults)
    if t.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    R = layout.n_row_blocks
    rpos = np.full((R, layout.tile_rows), -1, np.int64)
    rpos[rslots[:, 0], rslots[:, 1]] = np.arange(len(rslots))
    cpos = np.full((C, layout.tile_cols), -1, np.int64)
    K = ccols.shape[1] * ccols.shape[2]
    cpos[np.repeat(cblk, K), ccols.reshape(-1)] = np.repeat(np.arange(len(cblk)), K)
    ri = rpos[t // C, r]
    ci = cpos[t % C, c]
    pairs = [np.stack([ri, ci], 1)[(ri >= 0) & (ci >= 0)]]
    if wc.ref_cols is not None:  # a faulty reference cell touches every column slot of its block
        is_ref = np.zeros((C, layout.tile_cols), bool)
        for cb in range(C):
            is_ref[cb, wc.ref_cols[cb][wc.ref_cols[cb] >= 0]] = True
        m = is_ref[t % C, c] & (ri >= 0)
        for rr, cb in zip(ri[m], (t % C)[m]):
            cs = np.flatnonzero(cblk == cb)
            pairs.append(np.stack([np.full(cs.size, rr), cs], 1))
    p = np.unique(np.concatenate(pairs), axis=0)
    return p[:, 0], p[:, 1]


def placement_cost(q: Any, layout: TileLayout, cfg: CrossbarConfig, faults: Any, *, levels: Any = None,
                   reencode: bool = True, full_levels: bool = True, in_weight: Any = None,
                   out_weight: Any = None) -> float:
    """Fault cost of ``layout``: ``sum_{o,i} s_o a_i r_oi**2``, ``r_oi`` the residual error (code
    units) of weight ``(o, i)``'s best encoding (re-encoded or the plain digits) on the cells it
    occupies, ``a = in_weight`` ``(in,)`` and ``s = out_weight`` ``(out,)`` (default 1); computed
    cell by cell with :func:`reencode_cells` and :func:`readback`."""
    qq = (q.q if hasattr(q, "q") else torch.as_tensor(q)).detach().cpu().numpy().astype(np.int64)
    out_f, in_f = qq.shape
    fm = faults.detach().cpu().numpy() if isinstance(faults, torch.Tensor) else np.asarray(faults)
    dig = layout_digits(qq, layout, cfg)
    if reencode:
        dig, _ = reencode_cells(dig, fm, layout, cfg, out_f, in_f, levels=levels, full_levels=full_levels)
    y = readback(dig, fm, layout, cfg, out_f, in_f, levels=levels)
    wc = weight_cells(layout, cfg, out_f, in_f)
    mapped = (wc.out_block >= 0)[:, None] & (wc.in_block >= 0)[None, :]
    r2 = np.where(mapped, (y - qq) ** 2, 0.0)
    a = _line_weight(in_weight, in_f, "in_weight")
    s = _line_weight(out_weight, out_f, "out_weight")
    return float((r2 * a[None, :] * s[:, None]).sum())


def _line_weight(w: Any, n: int, name: str) -> np.ndarray:
    """``(n,)`` float64 non-negative finite weights (1 when ``w`` is None)."""
    if w is None:
        return np.ones(n)
    a = np.asarray(w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else w, np.float64)
    if a.shape != (n,):
        raise MappingError(f"{name} has shape {a.shape}; the layer needs ({n},)")
    if not np.all(np.isfinite(a)) or bool((a < 0).any()):
        raise MappingError(f"{name} must be finite and >= 0")
    return a


def layout_digits(qq: np.ndarray, layout: TileLayout, cfg: CrossbarConfig) -> np.ndarray:
    """``(tiles, rows, cols)`` plain digits of codes ``qq`` on ``layout`` (main cells; copies,
    free cells and free rows at 0), in the engine's layout convention."""
    out_f, in_f = qq.shape
    wc = weight_cells(layout, cfg, out_f, in_f)
    dig = np.zeros((layout.n_tiles, layout.tile_rows, layout.tile_cols), np.uint8)
    oo = np.flatnonzero(wc.out_block >= 0)
    ii = np.flatnonzero(wc.in_block >= 0)
    O, I = np.meshgrid(oo, ii, indexing="ij")
    t, r, c = wc.positions(O.ravel(), I.ravel())
    dig[t, r, c] = code_digits(qq[O.ravel(), I.ravel()], cfg)
    return dig


def place_layer(
    q: Any,
    layout: TileLayout,
    cfg: CrossbarConfig,
    faults: Any,
    *,
    levels: Any = None,
    reencode: bool = True,
    full_levels: bool = True,
    in_weight: Any = None,
    out_weight: Any = None,
    rounds: int = 2,
    residuals: Any = None,
) -> tuple[TileLayout, PlacementReport]:
    """Permute the inputs over word lines and the outputs over column slots of one layer so that
    its fault cost (:func:`placement_cost`) is as low as alternating exact assignments make it.

    ``q``: ``(out, in)`` weight codes (or a ``QTensor``); ``layout``: the layer's layout (copies
    and copy rows stay in place; free lines are slots); ``faults``: ``(tiles, rows, cols)`` the
    chip's fault map of this layer; ``in_weight``: ``(in,)`` importance of each input, e.g. its
    mean square activation, and ``out_weight``: ``(out,)`` of each output, e.g. the mean square
    loss gradient with respect to it (default 1: the cost is ``sum s_o a_i r_oi**2``).
    Returns the new layout (same tiles: no crossbar is added) and a :class:`PlacementReport`.
    The cost never increases: each step is an exact linear assignment given the other side, and
    the identity is kept when nothing improves.
    """
    from scipy.optimize import linear_sum_assignment

    if cfg.weight_format == "dynamic" and cfg.weight_granularity == "tile":
        raise MappingError("placement permutes lines across tiles: it needs a layer-wide weight format "
                           "(crossbar.weight_granularity=layer)")
    qq = (q.q if hasattr(q, "q") else torch.as_tensor(q)).detach().cpu().numpy().astype(np.int64)
    out_f, in_f = qq.shape
    fm = faults.detach().cpu().numpy() if isinstance(faults, torch.Tensor) else np.asarray(faults)
    if fm.shape != (layout.n_tiles, layout.tile_rows, layout.tile_cols):
        raise MappingError(f"fault map has shape {fm.shape}; the layout has {layout.n_tiles} tiles of "
                           f"{layout.tile_rows}x{layout.tile_cols}")
    wc = weight_cells(layout, cfg, out_f, in_f, full_levels=full_levels)
    if levels is None:
        lv, sv = np.arange(2**cfg.bits_per_cell, dtype=np.float64), (0.0, float(2**cfg.bits_per_cell - 1))
    else:
        lv, sv = level_values(levels)
    res = residuals if residuals is not None else ResidualTable(cfg, wc, lv, sv, reencode)
    a = _line_weight(in_weight, in_f, "in_weight")
    s = _line_weight(out_weight, out_f, "out_weight")
    rslots, cblk, ccols = _slots(layout, cfg, wc)
    ins = np.flatnonzero(wc.in_block >= 0)
    outs = np.flatnonzero(wc.out_block >= 0)
    # current assignment: slot of each mapped input / output (the slots list mapped lines first
    # for columns; rows are in block order)
    rpos = np.full((layout.n_row_blocks, layout.tile_rows), -1, np.int64)
    rpos[rslots[:, 0], rslots[:, 1]] = np.arange(len(rslots))
    in_slot = rpos[wc.in_block[ins], wc.in_row[ins]]
    out_slot = np.arange(outs.size, dtype=np.int64)
    r_idx, c_idx = _faulty_pairs(fm, layout, wc, rslots, cblk, ccols)
    pid = res.ids(_patterns(fm, layout, wc, rslots, cblk, ccols, r_idx, c_idx)) if r_idx.size else np.zeros(0, np.int64)
    if r_idx.size:  # patterns that every code survives (re-encoded exactly) cost nothing anywhere
        hurts = res.table().max(1) > 0
        keep = hurts[pid]
        r_idx, c_idx, pid = r_idx[keep], c_idx[keep], pid[keep]
    qoff = res.qmax

    def total(in_slot, out_slot) -> float:
        if r_idx.size == 0:
            return 0.0
        T = res.table()
        inv_r = np.full(len(rslots), -1)
        inv_r[in_slot] = ins
        inv_c = np.full(len(cblk), -1)
        inv_c[out_slot] = outs
        i, o = inv_r[r_idx], inv_c[c_idx]
        m = (i >= 0) & (o >= 0)
        return float((T[pid[m], qq[o[m], i[m]] + qoff] * a[i[m]] * s[o[m]]).sum())

    before = total(in_slot, out_slot)
    best = (before, in_slot.copy(), out_slot.copy())
    done = 0
    for _ in range(rounds if r_idx.size else 0):
        T = res.table()
        # rows, columns fixed: cost[i, slot] = a_i sum_o s_o T[pattern(slot, out_slot[o]), q[o, i]]
        inv_c = np.full(len(cblk), -1)
        inv_c[out_slot] = outs
        o = inv_c[c_idx]
        m = o >= 0
        cost = np.zeros((len(rslots), in_f))
        _accumulate(cost, r_idx[m], T, pid[m], qq[o[m]], qoff, scale=None if out_weight is None else s[o[m]])
        cost = cost[:, ins].T * a[ins, None]
        _, cols = linear_sum_assignment(cost)
        in_slot = cols.astype(np.int64)
        # columns, rows fixed: cost[o, slot] = s_o sum_i a_i T[pattern(in_slot[i], slot), q[o, i]]
        inv_r = np.full(len(rslots), -1)
        inv_r[in_slot] = ins
        i = inv_r[r_idx]
        m = i >= 0
        cost = np.zeros((len(cblk), out_f))
        _accumulate(cost, c_idx[m], T, pid[m], (qq[:, i[m]] ).T, qoff, scale=a[i[m]])
        cost = cost[:, outs].T * s[outs, None]
        _, cols = linear_sum_assignment(cost)
        out_slot = cols.astype(np.int64)
        done += 1
        c_now = total(in_slot, out_slot)
        if c_now < best[0] - 1e-12 * max(1.0, abs(best[0])):
            best = (c_now, in_slot.copy(), out_slot.copy())
        else:
            break
    after, in_slot, out_slot = best
    new = layout.copy()
    if after < before:
        ro = new.row_in
        ro[rslots[:, 0], rslots[:, 1]] = -1
        ro[rslots[in_slot, 0], rslots[in_slot, 1]] = ins
        S, P = ccols.shape[1], ccols.shape[2]
        rl = np.array([POS, NEG][:P], np.int8)
        for k in range(len(cblk)):  # clear every column slot, then write the outputs
            new.col_out[cblk[k], ccols[k]] = -1
            new.col_slice[cblk[k], ccols[k]] = -1
            new.col_role[cblk[k], ccols[k]] = FREE
        for o, k in zip(outs, out_slot):
            new.col_out[cblk[k], ccols[k]] = o
            new.col_slice[cblk[k], ccols[k]] = np.arange(S)[:, None]
            new.col_role[cblk[k], ccols[k]] = rl[None, :]
        moved_in = int(np.sum(new.row_in != layout.row_in))
        moved_out = int(np.sum(np.any(new.col_out != layout.col_out, axis=0)))
    else:
        after, new, moved_in, moved_out = before, layout, 0, 0
    return new, PlacementReport(cost_before=before, cost_after=after, rounds=done, moved_inputs=moved_in,
                                moved_outputs=moved_out)


def _accumulate(cost, slot, T, pid, qrows, qoff, scale=None, chunk=1 << 22):
    """``cost[slot[e], :] += T[pid[e], qrows[e, :] + qoff] (* scale[e])`` in chunks of entries
    (``cost`` a float64 numpy array, updated in place through a shared torch view)."""
    if slot.size == 0:
        return
    ct = torch.from_numpy(cost)
    Tt = torch.from_numpy(T)
    width = qrows.shape[1]
    step = max(1, chunk // max(1, width))
    for e0 in range(0, slot.size, step):
        e1 = min(slot.size, e0 + step)
        flat = torch.from_numpy(pid[e0:e1, None] * T.shape[1] + (qrows[e0:e1] + qoff))
        v = Tt.view(-1)[flat.view(-1)].view(e1 - e0, width)
        if scale is not None:
            v = v * torch.from_numpy(scale[e0:e1, None])
        ct.index_add_(0, torch.from_numpy(slot[e0:e1]), v)


# --------------------------------------------------------------------------------------------
# the chip: the engine's encode hook and a placed layout for the same cells


def frozen_slices(layout: TileLayout, cfg: CrossbarConfig, out_features: int, prot: Any = None) -> np.ndarray | None:
    """``(out, S)`` slices whose columns a protection read votes over (they keep their digits):
    slices with copies in free columns (duplication), and with ``msb_embed`` the MSB slice and the
    slices holding its embedded copies. None when nothing is voted."""
    fz = np.zeros((out_features, cfg.n_slices), bool)
    cp = layout.col_copy & ((layout.col_role == POS) | (layout.col_role == NEG))
    fz[layout.col_out[cp], layout.col_slice[cp]] = True
    if prot is not None and getattr(prot, "msb_embed", False):
        fz[:, cfg.n_slices - 1] = True
        fz[:, : int(prot.msb_copies)] = True
    return fz if fz.any() else None


class FaultAwareEncoder:
    """The engine's encode hook (:func:`crossbar.pipeline.encode_step`): ``encoder(digits, faults,
    ctx) -> digits`` re-encodes every weight of the layer around the stuck cells of this chip
    (:func:`reencode_cells`, stuck values from ``ctx.levels``).

    ``prot``: the ``mapping.protection.ProtectionConfig`` the layer is read with, or None; the
    slices its read votes over (:func:`frozen_slices`) keep their digits and their faults are
    left to the vote. ``stats`` holds the counts of the last call (weights hit, repaired exactly,
    squared error before / after in code units).
    """

    def __init__(self, fa: FaultAwareConfig | None = None, prot: Any = None) -> None:
        self.fa = fa if fa is not None else FaultAwareConfig(reencode=True)
        self.prot = prot
        self.stats: dict[str, float] = {}

    def __call__(self, digits: torch.Tensor, faults: torch.Tensor, ctx: Any) -> torch.Tensor:
        out_f, in_f = ctx.qweight.q.shape
        fz = frozen_slices(ctx.layout, ctx.cfg, out_f, self.prot)
        new, self.stats = reencode_cells(digits, faults, ctx.layout, ctx.cfg, out_f, in_f, levels=ctx.levels,
                                         full_levels=self.fa.full_levels, frozen_slices=fz)
        return new


#: residual tables of the placement, keyed by what they are computed from (crossbar config,
#: stuck values, re-encoding, level use): shared by every layer and chip of that configuration
_TABLES: dict[tuple, "ResidualTable"] = {}


class FaultAwareMapper:
    """Fault-map-aware mapping of a programmed chip: ``mapper(pm, base_layout) -> pm``.

    Reads the chip's fault map (the same cells whatever the layout: the map is a property of the
    tiles, drawn from the chip's seed, or given by a test), then with ``placement`` chooses a
    layout from ``base_layout`` (:func:`place_layer`), and re-programs the *same chip* (same seed:
    same faults, same variation streams) with that layout and, with ``reencode``, the
    :class:`FaultAwareEncoder` hook. The placement's residual tables are kept for the next layers
    and chips of the same configuration (content-keyed). ``report``: the last call's placement
    report. Placement's cost assumes every slice may be re-encoded (slices a protection votes
    over are re-encoded by no one: there it is an approximation).

    ``in_weight`` ``(in,)`` / ``out_weight`` ``(out,)``: the layer's weights of the placement cost
    (:func:`place_layer`); required when ``fa.placement_weighting`` is not "none" ("activation"
    needs ``in_weight``, "fisher" both), so a weighting that was asked for is never silently left
    out (a model run gets them from ``nn.sensitivity``: one mapper per layer).
    """

    def __init__(self, fa: FaultAwareConfig, prot: Any = None, *, in_weight: Any = None,
                 out_weight: Any = None) -> None:
        if not isinstance(fa, FaultAwareConfig):
            raise ValueError(f"expected a FaultAwareConfig, got {type(fa).__name__}")
        self.fa = fa
        self.prot = prot
        self.in_weight = None if in_weight is None else _line_weight(in_weight, np.size(in_weight), "in_weight")
        self.out_weight = None if out_weight is None else _line_weight(out_weight, np.size(out_weight), "out_weight")
        self.encoder = FaultAwareEncoder(fa, prot) if fa.reencode else None
        self.report: PlacementReport | None = None

    def _weights(self) -> dict[str, Any]:
        """The ``in_weight`` / ``out_weight`` that ``placement_weighting`` uses (the others None)."""
        w = self.fa.placement_weighting
        return {"in_weight": self.in_weight if w in ("activation", "fisher") else None,
                "out_weight": self.out_weight if w == "fisher" else None}

    def fault_map(self, pm: Any, layout: TileLayout | None = None) -> torch.Tensor:
        """``(tiles, rows, cols)`` fault map of ``pm``'s chip (the test result a chip maker has)."""
        from crossbar.pipeline import cell_digits_step, fault_map_step, run_pipeline

        return run_pipeline(pm.context(layout=layout), (cell_digits_step, fault_map_step)).faults

    def __call__(self, pm: Any, base_layout: TileLayout | None = None) -> Any:
        import dataclasses as dc

        from crossbar.engine import with_folded
        from crossbar.pipeline import fold, level_step_s, run_pipeline

        if not self.fa.any:
            return pm
        from crossbar.engine import default_layout

        # always from the plan's layout (not the previous chip's placement): a chip is a function
        # of its seed, whatever was programmed before
        layout = default_layout(*pm.qweight.q.shape, pm.cfg) if base_layout is None else base_layout
        if self.fa.placement:
            need = {"none": (), "activation": ("in_weight",), "fisher": ("in_weight", "out_weight")}
            missing = [n for n in need[self.fa.placement_weighting] if getattr(self, n) is None]
            if missing:
                raise MappingError(
                    f"faultaware.placement_weighting={self.fa.placement_weighting!r} needs the layer's "
                    f"{' and '.join(missing)} (estimated on the model: nn.sensitivity.attach_placement_weights)")
            fm = self.fault_map(pm, layout)
            cfg = pm.cfg
            out_f, in_f = pm.qweight.q.shape
            key = (cfg.to_json(), tuple(level_values(pm.levels)[1]), self.fa.reencode, self.fa.full_levels)
            res = _TABLES.get(key)
            if res is None:
                lv, sv = level_values(pm.levels)
                wc = weight_cells(layout, cfg, out_f, in_f, full_levels=self.fa.full_levels)
                if len(_TABLES) >= 8:
                    _TABLES.pop(next(iter(_TABLES)))
                res = _TABLES[key] = ResidualTable(cfg, wc, lv, sv, self.fa.reencode)
            layout, self.report = place_layer(pm.qweight, layout, cfg, fm, levels=pm.levels, reencode=self.fa.reencode,
                                              full_levels=self.fa.full_levels, rounds=self.fa.placement_rounds,
                                              residuals=res, **self._weights())
        new = dc.replace(pm, layout=layout, encoder=self.encoder, kept=None)
        st = run_pipeline(new.context())
        folded = fold(st.m_s, new.qweight, layout, new.cfg, level_step_s(new.levels), new.device, new.dtype)
        return with_folded(new, folded, layout=layout)
