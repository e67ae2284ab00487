"""The crossbar circuit with wire resistance (IR drop) and its nodal equations: what every exact
solver of this package shares.

The circuit (the same one :func:`device.spice.crossbar.crossbar_netlist` writes for ngspice)::

    v_in[i] -- r_source -- r_row -- W[i,0] -- r_row -- W[i,1] -- ... -- W[i,C-1] [-- r_row -- r_source -- v_in[i]]
                                      |                 |                    |     (right driver: drive="both_sides")
                                    g[i,0]            g[i,1]              g[i,C-1]      (cell between W[i,j] and B[i,j])
                                      |                 |                    |
    B[0,j] -- r_col -- B[1,j] -- ... -- B[R-1,j] -- r_col -- r_sense -- 0 V (virtual ground), i_out[j] flows into it

Word line ``i`` is driven from its left end (and its right end for ``drive="both_sides"``); the
word line has ``cols`` segments (``cols + 1`` for both sides), the first one between the driver
and the first cell. Bit line ``j`` is open at row 0 and sensed after row ``R-1``; it has ``rows``
segments, the last one between the last cell and the sense node. Cells are linear conductances
``g_s`` or, with ``cell_v0_v > 0``, the compact model's read I-V ``I = g v0 sinh(V / v0)`` (small-
signal conductance ``g``; Stanford-PKU: ``I0 exp(-gap/g0) sinh(V/V0)`` with ``V0 = 0.25 V``).

Shapes: ``g_s`` ``(rows, cols)`` or ``(tiles, rows, cols)`` in siemens; ``v_in_v`` ``(rows,)``,
``(rows, k)`` or ``(tiles, rows, k)`` in volts; ``i_out_a`` ``(..., cols[, k])`` in amperes,
positive for current flowing from the bit line into the sense node.

This module holds the circuit's parameters (:class:`CircuitConfig`), the input checks and the
sparse nodal system (:func:`assemble`); the solvers are :mod:`crossbar.solver` (:func:`~crossbar.solver.solve`,
linear cells: PCG and sparse LU), :mod:`crossbar.effective` (effective matrices by block
elimination, one tile in numpy or many in torch) and :mod:`crossbar.newton` (sinh cells).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from device.config import Config, check_choice, check_range, config

__all__ = ["CircuitConfig", "CrossbarSolution", "ideal_currents", "check_inputs", "NodalSystem", "assemble", "full_vector"]


@config
class CircuitConfig(Config):
    """Parasitics of a crossbar tile (see the module docstring for the circuit)."""

    #: Word-line wire resistance per segment (one segment per cell pitch), ohm; 0 = ideal wire.
    r_wire_row_ohm: float = 1.0
    #: Bit-line wire resistance per segment, ohm; 0 = ideal wire.
    r_wire_col_ohm: float = 1.0
    #: Output resistance of each word-line driver, ohm (>= 0).
    r_source_ohm: float = 0.0
    #: Input resistance of the bit-line sense circuit, ohm; 0 = ideal virtual ground.
    r_sense_ohm: float = 0.0
    #: Word lines driven from the left end only, or from both ends by the same voltage.
    drive: Literal["one_side", "both_sides"] = "one_side"
    #: 0 = linear cells; > 0: read I-V ``I = g v0 sinh(V/v0)`` (Stanford-PKU V0 = 0.25 V).
    cell_v0_v: float = 0.0

    def __post_init__(self) -> None:
        check_range("r_wire_row_ohm", self.r_wire_row_ohm, 0.0, 1e6)
        check_range("r_wire_col_ohm", self.r_wire_col_ohm, 0.0, 1e6)
        check_range("r_source_ohm", self.r_source_ohm, 0.0, 1e9)
        check_range("r_sense_ohm", self.r_sense_ohm, 0.0, 1e9)
        check_choice("drive", self.drive, ("one_side", "both_sides"))
        check_range("cell_v0_v", self.cell_v0_v, 0.0, 100.0)

    @property
    def linear(self) -> bool:
        return self.cell_v0_v == 0.0


@dataclass(frozen=True)
class CrossbarSolution:
    """Result of :func:`solve`.

    ``i_out_a``: bit-line currents ``(..., cols[, k])``. With ``return_nodes=True`` also
    ``v_word_v`` and ``v_bit_v``: word-line and bit-line node voltages at every crossing,
    ``(..., rows, cols[, k])``; otherwise ``None``. ``method`` names the algorithm used and
    ``iterations`` the PCG / Newton iterations (0 for direct methods).
    """

    i_out_a: np.ndarray
    v_word_v: np.ndarray | None = None
    v_bit_v: np.ndarray | None = None
    method: str = ""
    iterations: int = 0


def ideal_currents(g_s: np.ndarray, v_in_v: np.ndarray) -> np.ndarray:
    """``G^T V`` without parasitics: ``(…, rows, cols)``, ``(…, rows[, k])`` -> ``(…, cols[, k])``."""
    g = np.asarray(g_s, dtype=np.float64)
    v = np.asarray(v_in_v, dtype=np.float64)
    if v.ndim == g.ndim - 1:
        return np.einsum("...rc,...r->...c", g, v)
    return np.einsum("...rc,...rk->...ck", g, v)


# ----------------------------------------------------------------------------- validation


def check_inputs(g_s, v_in_v=None):
    g = np.asarray(g_s, dtype=np.float64)
    if g.ndim not in (2, 3):
        raise ValueError(f"g_s must have shape (rows, cols) or (tiles, rows, cols), got {g.shape}")
    if g.shape[-1] < 1 or g.shape[-2] < 1:
        raise ValueError(f"g_s must have at least one row and one column, got {g.shape}")
    if not np.all(np.isfinite(g)) or np.any(g < 0):
        raise ValueError("g_s must be finite and >= 0 siemens")
    if v_in_v is None:
        return g, None, None
    v = np.asarray(v_in_v, dtype=np.float64)
    rows = g.shape[-2]
    if g.ndim == 2:
        if v.ndim not in (1, 2) or v.shape[0] != rows:
            raise ValueError(f"v_in_v must have shape ({rows},) or ({rows}, k) for g_s {g.shape}, got {v.shape}")
        kind = "vec" if v.ndim == 1 else "mat"
    else:
        if v.ndim == 2 and v.shape == (g.shape[0], rows):
            kind = "tvec"
        elif v.ndim == 3 and v.shape[:2] == (g.shape[0], rows):
            kind = "tmat"
        else:
            raise ValueError(
                f"v_in_v must have shape ({g.shape[0]}, {rows}) or ({g.shape[0]}, {rows}, k) for g_s {g.shape}, got {v.shape}"
            )
    if not np.all(np.isfinite(v)):
        raise ValueError("v_in_v must be finite")
    return g, v, kind


# ----------------------------------------------------------------------------- sparse assembly


@dataclass
class NodalSystem:
    """Nodal equations of ``tiles`` tiles (block diagonal), unknowns first, knowns merged away."""

    a: sp.csr_matrix  # (n, n) SPD nodal matrix over unknown nodes
    f: sp.csr_matrix  # (n, tiles*rows): rhs = f @ v_in (stacked per tile)
    w_idx: np.ndarray  # (tiles, rows, cols) index of W[i,j] in the full vector (unknowns, then sources, ground)
    b_idx: np.ndarray  # (tiles, rows, cols) index of B[i,j]
    n: int
    n_src: int
    wire_edges: tuple[np.ndarray, np.ndarray, np.ndarray]  # (a, b, g) full-vector indices, linear part
    src_edges: tuple[np.ndarray, np.ndarray, np.ndarray]
    natural: bool  # W/B unmerged, layout [all W, all B]


def assemble(g: np.ndarray, c: CircuitConfig, cell_g: np.ndarray | None = None) -> NodalSystem:
    """Nodal matrix for tiles ``g`` (tiles, R, C); ``cell_g`` overrides the cell conductances."""
    t, r, cc = g.shape
    rc = r * cc
    both = c.drive == "both_sides"
    ar = np.arange(t)[:, None, None]
    ii = np.arange(r)[None, :, None]
    jj = np.arange(cc)[None, None, :]
    # word-line node ids
    if c.r_wire_row_ohm > 0:
        w_id = np.broadcast_to(ar * rc + ii * cc + jj, (t, r, cc))
        n_w = t * rc
    else:
        w_id = np.broadcast_to(ar * r + ii, (t, r, cc))
        n_w = t * r
    if c.r_wire_col_ohm > 0:
        b_id = n_w + np.broadcast_to(ar * rc + ii * cc + jj, (t, r, cc))
        n_b = t * rc
    else:
        b_id = n_w + np.broadcast_to(ar * cc + jj, (t, r, cc))
        n_b = t * cc
    n_all = n_w + n_b
    src = n_all + (np.arange(t)[:, None] * r + np.arange(r)[None, :])  # (t, r) source nodes
    gnd = n_all + t * r
    w_id = np.array(w_id)
    b_id = np.array(b_id)
    r_drv = c.r_source_ohm + c.r_wire_row_ohm
    r_out = c.r_wire_col_ohm + c.r_sense_ohm
    # zero-resistance driver / sense paths: the node *is* the source / ground
    remap = np.arange(gnd + 1)
    if r_drv == 0:
        remap[w_id[:, :, 0]] = src
    if r_out == 0:
        remap[b_id[:, -1, :]] = gnd
    ea, eb, eg = [], [], []
    sa, sb, sg = [], [], []
    if c.r_wire_row_ohm > 0:
        gw = 1.0 / c.r_wire_row_ohm
        ea.append(w_id[:, :, :-1].ravel()); eb.append(w_id[:, :, 1:].ravel())
        eg.append(np.full(t * r * (cc - 1), gw))
    if c.r_wire_col_ohm > 0:
        gc = 1.0 / c.r_wire_col_ohm
        ea.append(b_id[:, :-1, :].ravel()); eb.append(b_id[:, 1:, :].ravel())
        eg.append(np.full(t * (r - 1) * cc, gc))
    if r_drv > 0:
        sa.append(w_id[:, :, 0].ravel()); sb.append(src.ravel()); sg.append(np.full(t * r, 1.0 / r_drv))
    if both:
        # right driver: r_wire_row + r_source again (merged into the row node when both are 0)
        if r_drv > 0:
            sa.append(w_id[:, :, -1].ravel()); sb.append(src.ravel()); sg.append(np.full(t * r, 1.0 / r_drv))
        else:
            remap[w_id[:, :, -1]] = src
    if r_out > 0:
        ea.append(b_id[:, -1, :].ravel()); eb.append(np.full(t * cc, gnd)); eg.append(np.full(t * cc, 1.0 / r_out))
    cg = g if cell_g is None else cell_g
    ea.append(w_id.ravel()); eb.append(b_id.ravel()); eg.append(cg.ravel())
    e_a = remap[np.concatenate(ea)] if ea else np.zeros(0, int)
    e_b = remap[np.concatenate(eb)] if eb else np.zeros(0, int)
    e_g = np.concatenate(eg)
    s_a = remap[np.concatenate(sa)] if sa else np.zeros(0, int)
    s_b = remap[np.concatenate(sb)] if sb else np.zeros(0, int)
    s_g = np.concatenate(sg) if sg else np.zeros(0)
    # compress unknown ids (merged-away nodes vanish), keep order
    is_unknown = np.zeros(gnd + 1, bool)
    is_unknown[:n_all] = remap[:n_all] == np.arange(n_all)
    new = np.full(gnd + 1, -1)
    n = int(is_unknown.sum())
    new[is_unknown] = np.arange(n)
    new[n_all:] = n + np.arange(t * r + 1)  # sources then ground
    full_a = np.concatenate([e_a, s_a])
    full_b = np.concatenate([e_b, s_b])
    full_g = np.concatenate([e_g, s_g])
    keep = full_a != full_b
    fa, fb, fg = new[full_a[keep]], new[full_b[keep]], full_g[keep]
    m = n + t * r + 1
    lap = sp.coo_matrix(
        (np.concatenate([fg, fg, -fg, -fg]), (np.concatenate([fa, fb, fa, fb]), np.concatenate([fa, fb, fb, fa]))),
        shape=(m, m),
    ).tocsr()
    a = lap[:n, :n].tocsr()
    f = -lap[:n, n : n + t * r].tocsr()
    natural = c.r_wire_row_ohm > 0 and c.r_wire_col_ohm > 0 and r_drv > 0 and r_out > 0
    n_edges = e_a.size
    return NodalSystem(
        a=a, f=f, w_idx=new[remap[w_id]], b_idx=new[remap[b_id]], n=n, n_src=t * r,
        wire_edges=(new[e_a[: n_edges - cg.size]], new[e_b[: n_edges - cg.size]], e_g[: n_edges - cg.size]),
        src_edges=(new[s_a], new[s_b], s_g), natural=natural,
    )


def full_vector(sys_: NodalSystem, x: np.ndarray, v_stack: np.ndarray) -> np.ndarray:
    """Unknowns ``x`` (n, k) plus sources (tiles*rows, k) plus ground -> full node vector."""
    return np.concatenate([x, v_stack, np.zeros((1, x.shape[1]))], axis=0)
