"""Placing a layer's rows and columns where a tested chip's faults cost least (fault-map-aware
mapping, part 2).

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
from typing import Any

import numpy as np
import torch

from crossbar.engine import FREE, NEG, POS, CrossbarConfig, TileLayout
from mapping.plan import MappingError
from mapping.reencode import (
    WeightCells,
    best_digits,
    code_digits,
    level_values,
    readback,
    reencode_cells,
    weight_cells,
)

__all__ = ["place_layer", "placement_cost", "PlacementReport", "ResidualTable", "layout_digits", "line_weight"]



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
    a = line_weight(in_weight, in_f, "in_weight")
    s = line_weight(out_weight, out_f, "out_weight")
    return float((r2 * a[None, :] * s[:, None]).sum())


def line_weight(w: Any, n: int, name: str) -> np.ndarray:
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
    a = line_weight(in_weight, in_f, "in_weight")
    s = line_weight(out_weight, out_f, "out_weight")
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
