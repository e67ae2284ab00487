"""Exact nodal analysis of a resistive crossbar with wire resistance (IR drop).

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

Three exact methods (all solve the same nodal equations ``A x = b``; they agree to ~1e-12):

* ``"pcg"``: conjugate gradients on the sparse SPD nodal matrix, preconditioned by the exact
  solution of every word line and every bit line as its own chain (two tridiagonal
  factorizations, done once; LAPACK ``dpttrf``). It converges in 10-20 iterations on
  128x128 tiles at 1-5 ohm per segment, to a relative residual of 1e-13: the default for one
  or a few input vectors (``solve``) with nonzero wire resistance.
* ``"block"``: direct block elimination. Each word line is eliminated exactly (its tridiagonal
  inverse), which leaves a block-tridiagonal system in the bit-line voltages with dense
  ``cols x cols`` blocks; a forward sweep from the open end of the bit lines to the sense end
  gives the bit-line currents for all ``rows`` unit inputs at once: the effective matrix
  ``M`` with ``i_out = v_in @ M``, exact for a linear crossbar, in ``O(rows * cols^3)``.
* ``"direct"``: one sparse LU factorization (``scipy.sparse.linalg.splu``) of the nodal matrix,
  any number of right-hand sides; used for Newton steps on nonlinear cells and where a wire
  resistance is zero (nodes are merged, no 0-ohm elements).

Shapes: ``g_s`` ``(rows, cols)`` or ``(tiles, rows, cols)`` in siemens; ``v_in_v`` ``(rows,)``,
``(rows, k)`` or ``(tiles, rows, k)`` in volts; ``i_out_a`` ``(..., cols[, k])`` in amperes,
positive for current flowing from the bit line into the sense node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import lapack

from device.config import Config, check_choice, check_range, config

__all__ = ["CircuitConfig", "CrossbarSolution", "solve", "effective_matrix", "effective_matrices", "ideal_currents"]


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


def _check_inputs(g_s, v_in_v=None):
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
class _System:
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


def _assemble(g: np.ndarray, c: CircuitConfig, cell_g: np.ndarray | None = None) -> _System:
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
    return _System(
        a=a, f=f, w_idx=new[remap[w_id]], b_idx=new[remap[b_id]], n=n, n_src=t * r,
        wire_edges=(new[e_a[: n_edges - cg.size]], new[e_b[: n_edges - cg.size]], e_g[: n_edges - cg.size]),
        src_edges=(new[s_a], new[s_b], s_g), natural=natural,
    )


def _full(sys_: _System, x: np.ndarray, v_stack: np.ndarray) -> np.ndarray:
    """Unknowns ``x`` (n, k) plus sources (tiles*rows, k) plus ground -> full node vector."""
    return np.concatenate([x, v_stack, np.zeros((1, x.shape[1]))], axis=0)


# ----------------------------------------------------------------------------- PCG


def _line_preconditioner(sys_: _System, t: int, r: int, cc: int):
    """Exact solve of every word line and every bit line as an isolated chain (LAPACK dpttrf)."""
    rc = r * cc
    d = sys_.a.diagonal()
    n_w = t * rc
    dw = d[:n_w].copy()
    ew = sys_.a.diagonal(1)[: n_w - 1].copy()  # -1/r_row inside a word line
    ew[cc - 1 :: cc] = 0.0  # no coupling between the end of one word line and the next
    perm = (np.arange(t)[:, None, None] * rc + np.arange(r)[None, None, :] * cc + np.arange(cc)[None, :, None]).ravel()
    db = d[n_w:][perm]
    eb = np.full(n_w - 1, sys_.a[n_w, n_w + cc] if r > 1 else 0.0)  # -1/r_col, column-major
    eb[r - 1 :: r] = 0.0
    dwf, ewf, info1 = lapack.dpttrf(dw, ew)
    dbf, ebf, info2 = lapack.dpttrf(db, eb)
    if info1 or info2:
        raise np.linalg.LinAlgError("line preconditioner is not positive definite")

    def apply(x: np.ndarray) -> np.ndarray:
        y = np.empty_like(x)
        y[:n_w] = lapack.dpttrs(dwf, ewf, x[:n_w])[0]
        yb = lapack.dpttrs(dbf, ebf, x[n_w:][perm])[0]
        y[n_w:][perm] = yb
        return y

    return apply


def _pcg(a, b: np.ndarray, prec, *, rtol: float = 1e-13, maxiter: int = 2000):
    """Conjugate gradients on independent columns of ``b`` (n, k). Returns (x, iterations, ok)."""
    x = np.zeros_like(b)
    bnorm = np.linalg.norm(b, axis=0)
    active = bnorm > 0
    if not active.any():
        return x, 0, True
    res = b.copy()
    z = prec(res)
    p = z.copy()
    rz = np.einsum("ij,ij->j", res, z)
    for it in range(1, maxiter + 1):
        ap = a @ p
        pap = np.einsum("ij,ij->j", p, ap)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=active & (pap != 0))
        x += alpha * p
        res -= alpha * ap
        rn = np.linalg.norm(res, axis=0)
        if np.all(rn[active] <= rtol * bnorm[active]):
            return x, it, True
        z = prec(res)
        rz_new = np.einsum("ij,ij->j", res, z)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=active & (rz != 0))
        p = z + beta * p
        rz = rz_new
    return x, maxiter, False


# ----------------------------------------------------------------------------- block elimination


def _row_schur(g: np.ndarray, c: CircuitConfig):
    """Eliminate the word lines of one tile: ``S`` (R, C, C) and ``h`` (R, C).

    After elimination the bit-line voltages of row ``i`` see ``S_i`` (cells in series with the
    word-line network) and a current injection ``h_i * v_in[i]``.
    """
    r, cc = g.shape
    nd = 2 if c.drive == "both_sides" else 1
    s = np.zeros((r, cc, cc))
    h = np.empty((r, cc))
    if c.r_wire_row_ohm == 0:
        rdrv = c.r_source_ohm / nd
        tot = 1.0 + rdrv * g.sum(axis=1)  # (R,)
        s[:] = -(rdrv / tot)[:, None, None] * g[:, :, None] * g[:, None, :]
        s[:, np.arange(cc), np.arange(cc)] += g
        h[:] = g / tot[:, None]
        return s, h
    gw = 1.0 / c.r_wire_row_ohm
    gdrv = 1.0 / (c.r_source_ohm + c.r_wire_row_ohm)
    eye = np.eye(cc)
    off = np.full(cc - 1, -gw)
    for i in range(r):
        d = g[i] + 2 * gw
        d[0] += gdrv - gw
        d[-1] += (gdrv if nd == 2 else 0.0) - gw
        if cc == 1:
            z = np.array([[1.0 / (g[i, 0] + gdrv * nd)]])
        else:
            df, ef, info = lapack.dpttrf(d, off)
            if info:
                raise np.linalg.LinAlgError("word-line matrix is not positive definite")
            z = lapack.dpttrs(df, ef, eye)[0]  # T_i^{-1}
        s[i] = -(g[i][:, None] * z * g[i][None, :])
        s[i][np.arange(cc), np.arange(cc)] += g[i]
        inj = z[:, 0] * gdrv + (z[:, -1] * gdrv if nd == 2 else 0.0)
        h[i] = g[i] * inj
    return s, h


def _spd_inverse_lower(a: np.ndarray) -> np.ndarray:
    """Inverse of an SPD matrix from its lower triangle (``dpotrf`` + ``dpotri``); only the lower
    triangle of the result is valid (callers read it with ``dsymm`` / ``dpotrf(lower)``)."""
    c, info = lapack.dpotrf(a, lower=1, overwrite_a=1, clean=1)  # upper zeroed: stays 0 in Pi
    if info:
        raise np.linalg.LinAlgError("bit-line block is not positive definite")
    inv, info = lapack.dpotri(c, lower=1, overwrite_c=1)
    if info:
        raise np.linalg.LinAlgError("bit-line block is singular")
    return inv


def _block_effective(g: np.ndarray, c: CircuitConfig) -> np.ndarray:
    """Effective matrix (R, C) of one linear tile by block elimination (see module docstring).

    Forward sweep along the bit lines: ``Sigma_i = S_i + D_i - gc^2 Pi_{i-1}``,
    ``Pi_i = Sigma_i^{-1}`` (``dpotrf`` + ``dpotri``, ``O(cols^3)`` per row, lower triangle only:
    no symmetrization pass, products by ``dsymm``); the columns already collected are carried
    along, ``Y <- gc Pi_{i-1} Y``, ``O(rows^2 cols^2)`` in all.
    """
    from scipy.linalg import blas

    r, cc = g.shape
    s, h = _row_schur(g, c)
    eye = np.eye(cc)
    if c.r_wire_col_ohm == 0:
        # every bit line is a single node: Delta = sum_i S_i, then the sense resistance
        y = h.T  # (C, R)
        if c.r_sense_ohm == 0:
            return y.T.copy()
        delta = s.sum(axis=0)
        out = np.linalg.solve(eye + c.r_sense_ohm * delta, y)
        return out.T
    gc = 1.0 / c.r_wire_col_ohm
    gout = 1.0 / (c.r_wire_col_ohm + c.r_sense_ohm)
    y = np.zeros((cc, r), order="F")
    dg = np.arange(cc)
    pi = None
    for i in range(r):
        sig = np.array(s[i], order="F")  # S_i is symmetric: its lower triangle is what dpotrf reads
        sig[dg, dg] += (gc if i > 0 else 0.0) + (gc if i < r - 1 else gout)
        if pi is not None:
            sig -= (gc * gc) * pi
            y[:, :i] = blas.dsymm(gc, pi, y[:, :i], lower=1)
        y[:, i] = h[i]
        pi = _spd_inverse_lower(sig)
    return (gout * blas.dsymm(1.0, pi, y, lower=1)).T


# ----------------------------------------------------------------------------- Newton (sinh cells)


def _newton(g: np.ndarray, v_stack: np.ndarray, c: CircuitConfig, x0: np.ndarray, sys_: _System):
    """Newton iterations for sinh cells on the nodal equations, one column of ``v_stack`` at a time."""
    v0 = c.cell_v0_v
    wa, wb, wg = sys_.wire_edges
    sa, sb, sg = sys_.src_edges
    ca, cb = sys_.w_idx.ravel(), sys_.b_idx.ravel()
    gcell = g.ravel()
    n = sys_.n
    m = n + sys_.n_src + 1
    la = np.concatenate([wa, sa])
    lb = np.concatenate([wb, sb])
    lg = np.concatenate([wg, sg])
    lin = sp.coo_matrix(
        (np.concatenate([lg, lg, -lg, -lg]), (np.concatenate([la, lb, la, lb]), np.concatenate([la, lb, lb, la]))),
        shape=(m, m),
    ).tocsr()
    xs = np.empty_like(x0)
    iters = 0
    for k in range(v_stack.shape[1]):
        xf = np.concatenate([x0[:, k], v_stack[:, k], [0.0]])
        for it in range(100):
            vd = xf[ca] - xf[cb]
            i_cell = gcell * v0 * np.sinh(vd / v0)
            g_d = gcell * np.cosh(vd / v0)
            resid = lin @ xf
            np.add.at(resid, ca, i_cell)
            np.add.at(resid, cb, -i_cell)
            jac = lin + sp.coo_matrix(
                (np.concatenate([g_d, g_d, -g_d, -g_d]), (np.concatenate([ca, cb, ca, cb]), np.concatenate([ca, cb, cb, ca]))),
                shape=(m, m),
            ).tocsr()
            dx = spla.splu(jac[:n, :n].tocsc()).solve(-resid[:n])
            step = np.max(np.abs(dx)) if n else 0.0
            if step > 0.1:  # limit the step: sinh grows fast
                dx *= 0.1 / step
            xf[:n] += dx
            iters = max(iters, it + 1)
            if step < 1e-13 * max(1.0, np.max(np.abs(v_stack[:, k]))):
                break
        else:
            raise np.linalg.LinAlgError("Newton iterations for the sinh cells did not converge in 100 steps")
        xs[:, k] = xf[:n]
    return xs, iters


# ----------------------------------------------------------------------------- public API


def solve(
    g_s,
    v_in_v,
    circuit: CircuitConfig | None = None,
    *,
    return_nodes: bool = False,
    method: Literal["auto", "pcg", "direct", "block"] = "auto",
    rtol: float = 1e-13,
    cache: bool = True,
) -> CrossbarSolution:
    """Bit-line currents of crossbar tiles with wire resistance (exact nodal analysis).

    ``g_s`` ``(rows, cols)`` or ``(tiles, rows, cols)`` siemens; ``v_in_v`` ``(rows,)`` /
    ``(rows, k)`` / ``(tiles, rows)`` / ``(tiles, rows, k)`` volts. Returns ``i_out_a`` of shape
    ``(..., cols[, k])`` (amperes into the sense node) and, with ``return_nodes``, the word- and
    bit-line voltages at every crossing. ``method="auto"`` picks ``"block"`` (effective matrix,
    then a matmul) for many input vectors, ``"pcg"`` for a few, ``"direct"`` for nonlinear
    cells, zero wire resistance or when node voltages are asked for on a nonlinear tile.
    ``rtol``: relative residual at which PCG stops (1e-13 gives currents to ~1e-11; 1e-10 to
    ~1e-9). PCG keeps the nodal matrix and its preconditioner of the last conductances it saw
    (compared in full, so it never goes stale): repeated solves on the same tiles skip the build;
    ``cache=False`` builds afresh. For many input vectors ``"auto"`` takes the effective matrix
    (``O(rows cols^3)``, at BLAS speed) or multi-vector PCG, whichever an operation count favours.
    """
    c = circuit if circuit is not None else CircuitConfig()
    g, v, kind = _check_inputs(g_s, v_in_v)
    g3 = g[None] if g.ndim == 2 else g
    t, r, cc = g3.shape
    if kind == "vec":
        v3 = v[None, :, None]
    elif kind == "mat":
        v3 = v[None]
    elif kind == "tvec":
        v3 = v[:, :, None]
    else:
        v3 = v
    k = v3.shape[2]
    check_choice("method", method, ("auto", "pcg", "direct", "block"))
    if method == "auto":
        if not c.linear:
            method = "direct"
        elif return_nodes:
            method = "pcg" if (c.r_wire_row_ohm > 0 and c.r_wire_col_ohm > 0) else "direct"
        elif k >= 4 and (c.r_wire_row_ohm == 0 or c.r_wire_col_ohm == 0 or _block_cheaper(r, cc, k)):
            method = "block"
        else:
            method = "pcg" if (c.r_wire_row_ohm > 0 and c.r_wire_col_ohm > 0) else "block"
    if method == "block":
        if not c.linear:
            raise ValueError("method='block' needs linear cells (cell_v0_v=0); use method='direct'")
        if return_nodes:
            raise ValueError("method='block' gives bit-line currents only; use 'pcg' or 'direct' for node voltages")
        m = effective_matrix(g3, c)
        i_out = np.einsum("trk,trc->tck", v3, m)
        iters = 0
        vw = vb = None
    elif method == "pcg" and c.linear and t * r * cc >= 2:
        if not (c.r_wire_row_ohm > 0 and c.r_wire_col_ohm > 0):
            raise ValueError("method='pcg' needs nonzero wire, driver-path and sense-path resistances; use 'direct'")
        op = _cached_operator(g3, c) if cache else _GridOperator(g3, c)
        x, iters, ok = op.solve(v3, rtol=rtol)
        if not ok:  # never seen on 1-5 ohm tiles; fall back to the direct factorization
            x = op.direct(v3)
            method = "direct"
        i_out = op.currents(x)
        vw, vb = op.nodes(x, v3) if return_nodes else (None, None)
    else:
        sys_ = _assemble(g3, c)
        v_stack = v3.reshape(t * r, k)
        rhs = sys_.f @ v_stack
        iters = 0
        if method == "pcg" and t * r * cc < 2:
            method = "direct"  # LAPACK's tridiagonal routines need chains of length >= 2
        if method == "pcg":
            if not sys_.natural:
                raise ValueError("method='pcg' needs nonzero wire, driver-path and sense-path resistances; use 'direct'")
            x, iters, ok = _pcg(sys_.a, rhs, _line_preconditioner(sys_, t, r, cc), rtol=rtol)
            if not ok:  # never seen on 1-5 ohm tiles; fall back to the direct factorization
                x = spla.splu(sys_.a.tocsc()).solve(rhs)
                method = "direct"
        else:
            x = spla.splu(sys_.a.tocsc()).solve(rhs) if sys_.n else np.zeros((0, k))
        if not c.linear:
            x, iters = _newton(g3, v_stack, c, x, sys_)
        xf = _full(sys_, x, v_stack)
        vw = xf[sys_.w_idx.reshape(-1)].reshape(t, r, cc, k)
        vb = xf[sys_.b_idx.reshape(-1)].reshape(t, r, cc, k)
        vd = vw - vb
        if c.linear:
            i_cell = g3[..., None] * vd
        else:
            i_cell = g3[..., None] * c.cell_v0_v * np.sinh(vd / c.cell_v0_v)
        i_out = i_cell.sum(axis=1)  # KCL: everything a bit line collects leaves through its sense node
    squeeze_t = g.ndim == 2
    squeeze_k = kind in ("vec", "tvec")

    def shape(a):
        if a is None:
            return None
        if squeeze_k:
            a = a[..., 0]
        if squeeze_t:
            a = a[0]
        return a

    return CrossbarSolution(
        i_out_a=shape(i_out),
        v_word_v=shape(vw) if return_nodes else None,
        v_bit_v=shape(vb) if return_nodes else None,
        method=method,
        iterations=iters,
    )


def effective_matrix(g_s, circuit: CircuitConfig | None = None) -> np.ndarray:
    """Linear map from word-line voltages to bit-line currents: ``i_out = v_in @ M``.

    ``g_s`` ``(rows, cols)`` or ``(tiles, rows, cols)`` siemens -> ``M`` ``(tiles, rows, cols)``
    siemens (always 3-D). Exact for linear cells (then the map is input-independent, so IR drop
    costs one matmul per tile at inference); raises ``ValueError`` for nonlinear cells. Computed
    by direct block elimination, ``O(rows * cols^3)`` per tile.
    """
    c = circuit if circuit is not None else CircuitConfig()
    if not c.linear:
        raise ValueError("effective_matrix is exact only for linear cells (cell_v0_v=0); use solve()")
    g, _, _ = _check_inputs(g_s)
    g3 = g[None] if g.ndim == 2 else g
    if c.r_wire_row_ohm == 0 and c.r_wire_col_ohm == 0 and c.r_source_ohm == 0 and c.r_sense_ohm == 0:
        return g3.copy()
    with _one_blas_thread():
        return np.stack([_block_effective(gt, c) for gt in g3])


def _one_blas_thread():
    """Single-threaded BLAS for the ``cols x cols`` blocks: threads only add overhead at this size,
    and on a busy machine OpenBLAS threads spinning for cores made the elimination 50x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own thread count
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ----------------------------------------------------------------------------- batched exact (torch)


def _row_elimination_torch(g, c: CircuitConfig):
    """Batched :func:`_row_schur` in torch: every word line of every tile eliminated exactly.

    ``g`` (T, R, C). Returns ``(schur_row, h)``: ``schur_row(i)`` gives ``S_i`` (T, C, C) (built
    on demand, so memory stays ``O(T C^2)``) and ``h`` (T, R, C) the injections per unit input.
    With wire resistance, the inverse ``Z`` of each word line's tridiagonal matrix (diagonal
    ``d``, off-diagonal ``-gw``) comes from its elimination pivots in ``O(C^2)``:
    ``dl_k = d_k - gw^2/dl_{k-1}``, ``dr_k = d_k - gw^2/dr_{k+1}``, ``Z_jj = 1/(dl_j + dr_j - d_j)``,
    ``Z_ij = Z_jj prod_{k=i}^{j-1} (gw/dl_k)`` for ``i <= j`` (an exponential of a difference of
    cumulative log sums; every factor is in (0, 1), so nothing overflows).
    """
    import torch

    t, r, cc = g.shape
    nd = 2 if c.drive == "both_sides" else 1
    if c.r_wire_row_ohm == 0:
        rdrv = c.r_source_ohm / nd
        tot = 1.0 + rdrv * g.sum(-1)  # (T, R)
        h = g / tot[..., None]

        def schur_row(i, full: bool = True):
            gi = g[:, i]
            s = -(rdrv / tot[:, i])[:, None, None] * gi[:, :, None] * gi[:, None, :]
            return s + torch.diag_embed(gi)

        return schur_row, h
    gw = 1.0 / c.r_wire_row_ohm
    gdrv = 1.0 / (c.r_source_ohm + c.r_wire_row_ohm)
    d = g + 2 * gw
    d[..., 0] += gdrv - gw
    d[..., -1] += (gdrv if nd == 2 else 0.0) - gw
    dl = torch.empty_like(d)
    dr = torch.empty_like(d)
    dl[..., 0] = d[..., 0]
    for k in range(1, cc):
        dl[..., k] = d[..., k] - (gw * gw) / dl[..., k - 1]
    dr[..., cc - 1] = d[..., cc - 1]
    for k in range(cc - 2, -1, -1):
        dr[..., k] = d[..., k] - (gw * gw) / dr[..., k + 1]
    zd = 1.0 / (dl + dr - d)  # (T, R, C) diagonal of each word line's inverse
    la = torch.log(gw / dl)
    lc = torch.cumsum(la, -1) - la  # lc_j = sum_{k<j} log(gw/dl_k)
    # Z_{j0} = Z_{0j} = Z_jj exp(lc_j - lc_0): the driver at column 0 feeds node j
    inj = zd * torch.exp(lc - lc[..., :1]) * gdrv
    if nd == 2:  # Z_{j,C-1} = Z_{C-1,C-1} exp(lc_{C-1} - lc_j)
        inj = inj + zd[..., -1:] * torch.exp(lc[..., -1:] - lc) * gdrv
    h = g * inj
    upper = torch.ones(cc, cc, dtype=torch.bool, device=g.device).triu()
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    # Z is semiseparable: Z[a, b] = q_a p_b for a >= b with p = exp(-lc), q = zd exp(lc), one
    # outer product per row, when the exponentials stay far from overflow (|lc| < 300)
    rank1 = bool(lc.numel() == 0 or float(lc.abs().max()) < 300.0)
    if rank1:
        gp = g * torch.exp(-lc)
        gq = g * zd * torch.exp(lc)

    def schur_row(i, full: bool = True):
        """``S_i`` (T, C, C); with ``full=False`` only its lower triangle is valid (what the
        Cholesky factorization reads), built as one outer product."""
        gi = g[:, i]
        if rank1 and not full:
            s = torch.mul(gq[:, i, :, None], gp[:, i, None, :]).neg_()
            s.diagonal(dim1=-2, dim2=-1).add_(gi)
            return s
        lci = lc[:, i]
        u = torch.where(upper, torch.exp((lci[:, None, :] - lci[:, :, None]).clamp(max=0.0)) * zd[:, i, None, :], zero)
        z = u + u.transpose(-1, -2).tril(-1)
        return torch.diag_embed(gi) - gi[:, :, None] * z * gi[:, None, :]

    return schur_row, h


def _block_effective_torch(g, c: CircuitConfig):
    """Batched :func:`_block_effective`: effective matrices (T, R, C) of linear tiles ``g``."""
    import torch

    t, r, cc = g.shape
    schur_row, h = _row_elimination_torch(g, c)
    if c.r_wire_col_ohm == 0:
        if c.r_sense_ohm == 0:
            return h.clone()
        delta = schur_row(0)
        for i in range(1, r):
            delta = delta + schur_row(i)
        eye = torch.eye(cc, dtype=g.dtype, device=g.device)
        return torch.linalg.solve(eye + c.r_sense_ohm * delta, h.transpose(-1, -2)).transpose(-1, -2)
    gc = 1.0 / c.r_wire_col_ohm
    gout = 1.0 / (c.r_wire_col_ohm + c.r_sense_ohm)
    y = torch.zeros(t, cc, r, dtype=g.dtype, device=g.device)
    dg = torch.arange(cc, device=g.device)
    pi = None
    for i in range(r):
        sig = schur_row(i, full=False)  # lower triangle valid: Cholesky reads no more
        sig.diagonal(dim1=-2, dim2=-1).add_((gc if i > 0 else 0.0) + (gc if i < r - 1 else gout))
        if pi is not None:
            sig.add_(pi, alpha=-(gc * gc))
            y[:, :, :i] = torch.matmul(pi, y[:, :, :i]).mul_(gc)
        y[:, :, i] = h[:, i]
        chol, info = torch.linalg.cholesky_ex(sig)
        if bool((info != 0).any()):
            raise np.linalg.LinAlgError("bit-line block is not positive definite")
        pi = torch.cholesky_inverse(chol)
    return torch.matmul(pi, y).mul_(gout).transpose(-1, -2)


def effective_matrices(g_s, circuit: CircuitConfig | None = None, *, tiles_per_call: int | None = None):
    """Exact effective matrices of many linear tiles at once, in torch (CPU or GPU).

    ``g_s``: torch tensor ``(tiles, rows, cols)`` float64 siemens (finite, >= 0), on any device;
    returns ``M`` of the same shape, dtype and device with ``i_out = v_in @ M[t]`` for tile ``t``.
    The same block elimination as :func:`effective_matrix` (``O(rows cols^3)`` per tile, exact to
    rounding), vectorized over tiles: the word-line inverses come from tridiagonal pivots in
    ``O(cols^2)`` per row, and the bit-line sweep runs batched Cholesky factorizations and
    batched matmuls over ``tiles_per_call`` tiles at a time (default: about 4 MiB of blocks); on
    the CPU the chunks run on ``torch.get_num_threads()`` threads, one thread each.
    Raises :class:`InputError` for bad tensors and :class:`ConfigError` for nonlinear cells.
    """
    import torch

    from device.config import ConfigError
    from device.errors import InputError

    c = circuit if circuit is not None else CircuitConfig()
    if not c.linear:
        raise ConfigError("effective_matrices is exact only for linear cells (cell_v0_v=0); use solve()")
    if not isinstance(g_s, torch.Tensor):
        raise InputError(f"g_s must be a torch tensor, got {type(g_s).__name__}")
    if g_s.dtype != torch.float64 or g_s.ndim != 3 or min(g_s.shape[1:]) < 1:
        raise InputError(f"g_s must be a float64 tensor of shape (tiles, rows, cols), got {tuple(g_s.shape)} {g_s.dtype}")
    if g_s.numel() and not bool(torch.isfinite(g_s).all() & (g_s >= 0).all()):
        raise InputError("g_s must be finite and >= 0 siemens")
    t, r, cc = g_s.shape
    if c.r_wire_row_ohm == 0 and c.r_wire_col_ohm == 0 and c.r_source_ohm == 0 and c.r_sense_ohm == 0:
        return g_s.clone()
    if tiles_per_call is None:
        tiles_per_call = max(1, (4 << 20) // (8 * cc * max(cc, r) * 3))  # blocks stay in cache
    out = torch.empty_like(g_s)
    starts = list(range(0, t, tiles_per_call))

    def run(t0: int) -> None:
        out[t0 : t0 + tiles_per_call] = _block_effective_torch(g_s[t0 : t0 + tiles_per_call].clone(), c)

    n_threads = torch.get_num_threads()
    if g_s.device.type != "cpu" or n_threads <= 1:
        for t0 in starts:
            run(t0)
        return out
    # CPU: one chunk of tiles per thread, each single-threaded inside (torch releases the GIL in
    # its kernels). Intra-op threads on 128x128 blocks were catastrophic on a busy machine
    # (50x slower per tile: OpenMP threads waiting for cores), so they are off even for one chunk.
    from concurrent.futures import ThreadPoolExecutor

    torch.set_num_threads(1)
    try:
        if len(starts) == 1:
            run(starts[0])
        else:
            with ThreadPoolExecutor(max_workers=min(n_threads, len(starts))) as ex:
                list(ex.map(run, starts))
    finally:
        torch.set_num_threads(n_threads)
    return out


# ----------------------------------------------------------------------------- line-ordered PCG


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.einsum("i,i->", a, b))


def _block_cheaper(rows: int, cols: int, k: int) -> bool:
    """Time model (single core, measured): block elimination ~0.8 ns x ``rows cols^2 (rows +
    cols)`` plus ~20 us per row of Python; Schur-complement PCG ~0.12 us per node per vector."""
    return 8e-10 * rows * cols * cols * (rows + cols) + 2e-5 * rows < 1.2e-7 * rows * cols * k


_LAST_OPERATOR: list = []  # [(g copy, circuit, _GridOperator)]: the most recent build


def _cached_operator(g3: np.ndarray, c: CircuitConfig) -> "_GridOperator":
    """The operator of ``g3`` under ``c``, reused when the last call had equal conductances
    (an ``O(n)`` comparison, far cheaper than the build it saves)."""
    if _LAST_OPERATOR:
        g_old, c_old, op = _LAST_OPERATOR[0]
        if c_old == c and g_old.shape == g3.shape and np.array_equal(g_old, g3):
            return op
    op = _GridOperator(g3, c)
    _LAST_OPERATOR[:] = [(g3.copy(), c, op)]
    return op


class _GridOperator:
    """The bit-line Schur complement of linear tiles with nonzero row and column wires.

    Every word line is eliminated exactly (a tridiagonal solve, LAPACK ``dpttrs``), which leaves
    the SPD system ``S b = f`` in the bit-line voltages ``b`` with ``S = T_b - G T_w^{-1} G``
    (``T_w``, ``T_b``: the word- and bit-line chains including the cells, ``G``: the cells). PCG
    on ``S`` preconditioned by ``T_b^{-1}`` needs about half the iterations of PCG on the full
    nodal matrix with the same line preconditioner, each as cheap (two ``dpttrs`` and a few
    vector operations on half as many unknowns). Word-line nodes row-major ``(t, i, j)``,
    bit-line nodes column-major ``(t, j, i)``, so every line is a contiguous chain. Built once
    per set of conductances (two ``dpttrf``); any number of input vectors reuse it.
    """

    def __init__(self, g: np.ndarray, c: CircuitConfig):
        t, r, cc = g.shape
        self.shape = (t, r, cc)
        n = t * r * cc
        self.n = n
        gw = 1.0 / c.r_wire_row_ohm
        gc = 1.0 / c.r_wire_col_ohm
        self.gdrv = 1.0 / (c.r_source_ohm + c.r_wire_row_ohm)
        self.gout = 1.0 / (c.r_wire_col_ohm + c.r_sense_ohm)
        self.both = c.drive == "both_sides"
        dw = g + 2 * gw
        dw[..., 0] += self.gdrv - gw
        dw[..., -1] += (self.gdrv if self.both else 0.0) - gw
        gt = np.ascontiguousarray(g.transpose(0, 2, 1))
        db = gt + 2 * gc
        db[..., 0] -= gc
        db[..., -1] += self.gout - gc
        ew = np.full(n - 1, -gw)
        ew[cc - 1 :: cc] = 0.0
        eb = np.full(n - 1, -gc)
        eb[r - 1 :: r] = 0.0
        self.fw = lapack.dpttrf(dw.ravel(), ew)
        self.fb = lapack.dpttrf(db.ravel(), eb)
        if self.fw[2] or self.fb[2]:
            raise np.linalg.LinAlgError("line preconditioner is not positive definite")
        self.g = g.reshape(n, 1)
        self.gt = gt.reshape(n, 1)
        self.db = db.reshape(n, 1)
        self.eb = eb[:, None]
        self._circuit = c

    def _to_col(self, x: np.ndarray) -> np.ndarray:
        t, r, cc = self.shape
        return x.reshape(t, r, cc, -1).transpose(0, 2, 1, 3).reshape(self.n, -1)

    def _to_row(self, x: np.ndarray) -> np.ndarray:
        t, r, cc = self.shape
        return x.reshape(t, cc, r, -1).transpose(0, 2, 1, 3).reshape(self.n, -1)

    def _tw_inv(self, x: np.ndarray) -> np.ndarray:
        return lapack.dpttrs(self.fw[0], self.fw[1], x)[0]

    def precond(self, x: np.ndarray) -> np.ndarray:
        return lapack.dpttrs(self.fb[0], self.fb[1], x)[0]

    def __matmul__(self, b: np.ndarray) -> np.ndarray:
        """``S b`` for ``b`` ``(n, k)``."""
        out = self.db * b
        out[1:] += self.eb * b[:-1]
        out[:-1] += self.eb * b[1:]
        return out - self.gt * self._to_col(self._tw_inv(self.g * self._to_row(b)))

    def _drive(self, v3: np.ndarray) -> np.ndarray:
        t, r, cc = self.shape
        k = v3.shape[-1]
        w = np.zeros((t, r, cc, k))
        w[:, :, 0] = self.gdrv * v3
        if self.both:
            w[:, :, -1] += self.gdrv * v3
        return w.reshape(self.n, k)

    def rhs(self, v3: np.ndarray) -> np.ndarray:
        """Right-hand side ``f`` ``(n, k)`` of the bit-line system for inputs ``v3`` (T, R, k)."""
        return self.gt * self._to_col(self._tw_inv(self._drive(v3)))

    def currents(self, x: np.ndarray) -> np.ndarray:
        """Bit-line currents ``(T, C, k)`` from the bit-line voltages ``x`` ``(n, k)``."""
        t, r, cc = self.shape
        return self.gout * x.reshape(t, cc, r, -1)[:, :, -1]

    def nodes(self, x: np.ndarray, v3: np.ndarray):
        """Word- and bit-line voltages ``(T, R, C, k)`` from the bit-line voltages ``x``."""
        t, r, cc = self.shape
        k = x.shape[1]
        w = self._tw_inv(self._drive(v3) + self.g * self._to_row(x))
        return w.reshape(t, r, cc, k), x.reshape(t, cc, r, k).transpose(0, 2, 1, 3)

    def direct(self, v3: np.ndarray) -> np.ndarray:
        """Bit-line voltages by a sparse LU of the full nodal matrix (the fallback)."""
        t, r, cc = self.shape
        gg = self.g.reshape(t, r, cc)
        sys_ = _assemble(gg, self._circuit)
        v_stack = v3.reshape(t * r, -1)
        xx = spla.splu(sys_.a.tocsc()).solve(sys_.f @ v_stack)
        xf = _full(sys_, xx, v_stack)
        vb = xf[sys_.b_idx.reshape(-1)].reshape(t, r, cc, -1)
        return vb.transpose(0, 2, 1, 3).reshape(self.n, -1)

    def solve(self, v3: np.ndarray, *, rtol: float = 1e-13, maxiter: int = 2000):
        """Bit-line voltages ``x`` ``(n, k)`` for inputs ``v3`` (T, R, k): ``(x, iterations, converged)``."""
        b = self.rhs(v3)
        if b.shape[1] == 1:
            x, it, ok = self._pcg1(b[:, 0], rtol, maxiter)
            return x[:, None], it, ok
        return _pcg(self, b, self.precond, rtol=rtol, maxiter=maxiter)

    def _pcg1(self, b: np.ndarray, rtol: float, maxiter: int):
        """:func:`_pcg` for one right-hand side, lean: a dozen array operations per iteration
        (the iteration count is small, so the per-call overhead is what small tiles pay). Dot
        products by ``einsum``, not BLAS: a threaded BLAS ``ddot`` on a busy machine stalled the
        iteration 100x."""
        dot = _dot
        t, r, cc = self.shape
        fw, ew, _ = self.fw
        fb, eb, _ = self.fb
        dpttrs = lapack.dpttrs
        g, gt, db, ebv = self.g[:, 0], self.gt[:, 0], self.db[:, 0], self.eb[:, 0]

        def s_mul(p):
            out = db * p
            out[1:] += ebv * p[:-1]
            out[:-1] += ebv * p[1:]
            w = dpttrs(fw, ew, g * p.reshape(t, cc, r).transpose(0, 2, 1).ravel())[0]
            out -= gt * w.reshape(t, r, cc).transpose(0, 2, 1).ravel()
            return out

        x = np.zeros_like(b)
        bnorm = math.sqrt(dot(b, b))
        if bnorm == 0.0:
            return x, 0, True
        tol2 = (rtol * bnorm) ** 2
        res = b.copy()
        z = dpttrs(fb, eb, res)[0]
        p = z.copy()
        rz = dot(res, z)
        for it in range(1, maxiter + 1):
            ap = s_mul(p)
            alpha = rz / dot(p, ap)
            x += alpha * p
            res -= alpha * ap
            if dot(res, res) <= tol2:
                return x, it, True
            z = dpttrs(fb, eb, res)[0]
            rz_new = dot(res, z)
            p *= rz_new / rz
            p += z
            rz = rz_new
        return x, maxiter, False
