"""Re-encoding weights around the stuck cells of a tested chip (fault-map-aware mapping, part 1).

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

:mod:`mapping.placement` chooses where the weights go; :mod:`mapping.faultaware` composes both
for a chip (:class:`mapping.faultaware.FaultAwareMapper`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from crossbar.engine import NEG, POS, REF, CrossbarConfig, TileLayout

__all__ = [
    "best_digits",
    "WeightCells",
    "weight_cells",
    "level_values",
    "reencode_cells",
    "readback",
    "code_digits",
    "frozen_slices",
    "FaultAwareEncoder",
]

_BIG = float("inf")
#: faulty weights re-encoded per vectorized chunk (memory: ~ chunk x 256 x 8 bytes per tensor)
_CHUNK = 16384


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


# --------------------------------------------------------------------------------------------
# the engine's encode hook



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

    ``full_levels``: healthy cells may use every level of the cell (``faultaware.full_levels``).
    ``prot``: the ``mapping.protection.ProtectionConfig`` the layer is read with, or None; the
    slices its read votes over (:func:`frozen_slices`) keep their digits and their faults are
    left to the vote. ``stats`` holds the counts of the last call (weights hit, repaired exactly,
    squared error before / after in code units).
    """

    def __init__(self, *, full_levels: bool = True, prot: Any = None) -> None:
        self.full_levels = bool(full_levels)
        self.prot = prot
        self.stats: dict[str, float] = {}

    def __call__(self, digits: torch.Tensor, faults: torch.Tensor, ctx: Any) -> torch.Tensor:
        out_f, in_f = ctx.qweight.q.shape
        fz = frozen_slices(ctx.layout, ctx.cfg, out_f, self.prot)
        new, self.stats = reencode_cells(digits, faults, ctx.layout, ctx.cfg, out_f, in_f, levels=ctx.levels,
                                         full_levels=self.full_levels, frozen_slices=fz)
        return new
