"""Tile layouts: where each weight digit of one matrix sits on a grid of crossbar tiles.

A tile is a ``(tile_rows, tile_cols)`` array of cells. A weight matrix ``W`` of shape
``(out_features, in_features)`` (the ``nn.Linear`` convention) is mapped with inputs on word
lines (rows) and outputs x weight slices x polarity on bit lines (columns). The tiles of a layer
form a grid of ``R`` row blocks x ``C`` column blocks (:class:`TileLayout`); tile ``t = r * C + c``.
The default layout (:func:`default_layout`) puts input ``i`` on row ``i % tile_rows`` of row
block ``i // tile_rows``, and the columns of output ``o`` side by side::

    differential: column (o_local * S + s) * 2 + p      p = 0: G+, p = 1: G-
    offset:       column  o_local * S + s               plus S reference columns at k * S + s

with ``S`` slices per weight and ``k`` outputs per tile. Unused ("free") cells are left in HRS
(level 0): they leak no signal (no voltage on free rows) but they load the wires for IR drop.
A :class:`TileLayout` may be any permutation of this (the mapping plan in :mod:`mapping.plan`
builds them, and can mark rows/columns as copies for fault protection: copies are programmed
but not read by the default read).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from crossbar.config import CrossbarConfig
from device.errors import UserError

__all__ = ["TileLayout", "LayoutError", "default_layout", "is_default_layout", "FREE", "POS", "NEG", "REF", "LAYOUT_ARRAYS"]

#: column roles in a :class:`TileLayout`
FREE, POS, NEG, REF = 0, 1, 2, 3


class LayoutError(UserError):
    """A tile layout that does not hold every digit of its matrix exactly once."""


@dataclasses.dataclass(frozen=True, eq=False)
class TileLayout:
    """Where each weight digit of one matrix sits: a grid of ``R x C`` tiles (crossbar-level part
    of a mapping plan; :mod:`mapping.plan` records and edits these).

    Tiles in row block ``r`` share the word-line assignment ``row_in[r]``; tiles in column block
    ``c`` share the bit-line assignment ``col_*[c]``.

    ``row_in``: ``(R, tile_rows)`` int, input feature on each word line, -1 free.
    ``row_copy``: ``(R, tile_rows)`` bool, the row holds a copy of ``row_in``'s weights (programmed,
    not driven by the default read).
    ``col_out``: ``(C, tile_cols)`` int, output feature of each bit line (-1: free or reference).
    ``col_slice``: ``(C, tile_cols)`` int, weight slice of the bit line (0 = LSB; -1 free).
    ``col_role``: ``(C, tile_cols)`` int, :data:`FREE`, :data:`POS`, :data:`NEG` or :data:`REF`.
    ``col_copy``: ``(C, tile_cols)`` bool, the column is a copy (programmed, not read by default).
    """

    tile_rows: int
    tile_cols: int
    row_in: np.ndarray
    col_out: np.ndarray
    col_slice: np.ndarray
    col_role: np.ndarray
    row_copy: np.ndarray
    col_copy: np.ndarray

    @property
    def n_row_blocks(self) -> int:
        return int(self.row_in.shape[0])

    @property
    def n_col_blocks(self) -> int:
        return int(self.col_out.shape[0])

    @property
    def n_tiles(self) -> int:
        return self.n_row_blocks * self.n_col_blocks

    def tile_index(self, r: int, c: int) -> int:
        return r * self.n_col_blocks + c

    def copy(self) -> "TileLayout":
        return dataclasses.replace(self, **{f: getattr(self, f).copy() for f in LAYOUT_ARRAYS})

    def validate(self, out_features: int, in_features: int, cfg: CrossbarConfig) -> None:
        """Raise ValueError unless this layout holds every digit of an ``(out, in)`` matrix once."""
        R, C, tr, tc = self.n_row_blocks, self.n_col_blocks, self.tile_rows, self.tile_cols
        if (tr, tc) != (cfg.tile_rows, cfg.tile_cols):
            raise LayoutError(f"layout tiles are {tr}x{tc} but the crossbar config has {cfg.tile_rows}x{cfg.tile_cols}")
        for name, shape in (("row_in", (R, tr)), ("row_copy", (R, tr)), ("col_out", (C, tc)),
                            ("col_slice", (C, tc)), ("col_role", (C, tc)), ("col_copy", (C, tc))):
            if getattr(self, name).shape != shape:
                raise LayoutError(f"layout {name} has shape {getattr(self, name).shape}, expected {shape}")
        if np.any(self.row_in >= in_features) or np.any(self.row_in < -1):
            raise LayoutError("layout row_in has an index outside the inputs")
        rin = self.row_in[(self.row_in >= 0) & ~self.row_copy]
        if np.unique(rin).size != rin.size:
            raise LayoutError("layout rows hold an input more than once (mark extra rows as copies)")
        if np.any(self.row_copy & ~np.isin(self.row_in, rin)):
            raise LayoutError("layout has a copy row of an input that is not mapped")
        role, s, o, cp = self.col_role, self.col_slice, self.col_out, self.col_copy
        S = cfg.n_slices
        roles = (POS, NEG) if cfg.mapping == "differential" else (POS,)
        if np.any(~np.isin(role, (FREE, *roles, *((REF,) if cfg.mapping == "offset" else ())))):
            raise LayoutError(f"layout has column roles not used by {cfg.mapping} mapping")
        w = (role == POS) | (role == NEG)
        if np.any(w & ((o < 0) | (o >= out_features) | (s < 0) | (s >= S))):
            raise LayoutError("layout weight column with an output or slice index out of range")
        main = w & ~cp
        key = (o[main].astype(np.int64) * S + s[main]) * 3 + role[main]
        if np.unique(key).size != key.size:
            raise LayoutError("layout holds an (output, slice, polarity) in more than one column (mark copies)")
        per_out = np.bincount(o[main], minlength=out_features)
        if np.any((per_out != 0) & (per_out != S * len(roles))):
            raise LayoutError(f"layout must hold all {S} slice(s){' and both polarities' if len(roles) > 1 else ''} of each mapped output")
        blocks = np.broadcast_to(np.arange(C)[:, None], o.shape)
        ob = np.full(out_features, -1)
        for rl in roles:  # every digit of one output must sit in one column block
            for ss in range(S):
                m = main & (role == rl) & (s == ss)
                if ss == 0 and rl == POS:
                    ob[o[m]] = blocks[m]
                elif np.any(ob[o[m]] != blocks[m]):
                    raise LayoutError("layout splits the columns of one output over several column blocks")
        if cfg.mapping == "offset":
            for c in range(C):
                used = np.unique(s[c][main[c]])
                for ss in used:
                    n_ref = int(np.sum((role[c] == REF) & (s[c] == ss) & ~cp[c]))
                    if n_ref != 1:
                        raise LayoutError(f"column block {c} needs exactly one reference column for slice {ss}, has {n_ref}")


LAYOUT_ARRAYS = ("row_in", "col_out", "col_slice", "col_role", "row_copy", "col_copy")


def default_layout(out_features: int, in_features: int, cfg: CrossbarConfig) -> TileLayout:
    """The dense layout: inputs in order on rows, outputs in order on columns (see module doc)."""
    if out_features < 1 or in_features < 1:
        raise LayoutError(f"weight shape ({out_features}, {in_features}) must be positive")
    tr, tc, S, k = cfg.tile_rows, cfg.tile_cols, cfg.n_slices, cfg.outputs_per_tile
    R, C = -(-in_features // tr), -(-out_features // k)
    row_in = np.arange(R * tr, dtype=np.int32).reshape(R, tr)
    row_in[row_in >= in_features] = -1
    col_out = np.full((C, tc), -1, np.int32)
    col_slice = np.full((C, tc), -1, np.int8)
    col_role = np.full((C, tc), FREE, np.int8)
    ol = np.arange(k)
    for s in range(S):
        if cfg.mapping == "differential":
            for p, rl in ((0, POS), (1, NEG)):
                j = (ol * S + s) * 2 + p
                col_out[:, j] = np.arange(C)[:, None] * k + ol
                col_slice[:, j] = s
                col_role[:, j] = rl
        else:
            j = ol * S + s
            col_out[:, j] = np.arange(C)[:, None] * k + ol
            col_slice[:, j] = s
            col_role[:, j] = POS
            col_slice[:, k * S + s] = s
            col_role[:, k * S + s] = REF
    over = col_out >= out_features
    col_out[over], col_slice[over], col_role[over] = -1, -1, FREE
    return TileLayout(
        tile_rows=tr, tile_cols=tc, row_in=row_in, col_out=col_out, col_slice=col_slice, col_role=col_role,
        row_copy=np.zeros((R, tr), bool), col_copy=np.zeros((C, tc), bool),
    )



def is_default_layout(layout: TileLayout, shape: tuple[int, int], cfg: CrossbarConfig) -> bool:
    """Whether ``layout`` is :func:`default_layout` of an ``(out, in)`` matrix."""
    d = default_layout(shape[0], shape[1], cfg)
    return all(np.array_equal(getattr(d, f), getattr(layout, f)) for f in LAYOUT_ARRAYS)
