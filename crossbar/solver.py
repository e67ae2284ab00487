"""Exact nodal analysis of a resistive crossbar with wire resistance (IR drop): :func:`solve`.

The circuit, its parameters and its nodal equations are :mod:`crossbar.nodal`'s. Three exact
methods solve them (they agree to ~1e-12):

* ``"pcg"``: conjugate gradients on the bit-line Schur complement (every word line eliminated
  exactly by a tridiagonal solve), preconditioned by the exact solution of every bit line as its
  own chain (LAPACK ``dpttrf``/``dpttrs``); 10-20 iterations on 128x128 tiles at 1-5 ohm per
  segment, to a relative residual of 1e-13: the default for one or a few input vectors with
  nonzero wire resistance. This module.
* ``"block"``: direct block elimination to the effective matrix ``M`` (``i_out = v_in @ M``,
  exact for linear cells), :mod:`crossbar.effective`.
* ``"direct"``: one sparse LU factorization (``scipy.sparse.linalg.splu``) of the nodal matrix,
  any number of right-hand sides; used where a wire resistance is zero (nodes are merged, no
  0-ohm elements) and as the linear start of Newton's method for sinh cells
  (:mod:`crossbar.newton`).

Shapes: ``g_s`` ``(rows, cols)`` or ``(tiles, rows, cols)`` in siemens; ``v_in_v`` ``(rows,)``,
``(rows, k)`` or ``(tiles, rows, k)`` in volts; ``i_out_a`` ``(..., cols[, k])`` in amperes,
positive for current flowing from the bit line into the sense node. ``CircuitConfig``,
``effective_matrix`` and ``effective_matrices`` are re-exported here (the names users know).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.sparse.linalg as spla
from scipy.linalg import lapack

from crossbar.effective import block_is_cheaper, effective_matrices, effective_matrix
from crossbar.newton import newton_solve
from crossbar.nodal import (
    CircuitConfig,
    CrossbarSolution,
    NodalSystem,
    assemble,
    check_inputs,
    full_vector,
    ideal_currents,
)
from device.config import check_choice

__all__ = ["CircuitConfig", "CrossbarSolution", "solve", "effective_matrix", "effective_matrices", "ideal_currents"]


# ----------------------------------------------------------------------------- PCG on the nodal matrix


def _line_preconditioner(sys_: NodalSystem, t: int, r: int, cc: int):
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
    g, v, kind = check_inputs(g_s, v_in_v)
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
        elif k >= 4 and (c.r_wire_row_ohm == 0 or c.r_wire_col_ohm == 0 or block_is_cheaper(r, cc, k)):
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
        sys_ = assemble(g3, c)
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
            x, iters = newton_solve(g3, v_stack, c, x, sys_)
        xf = full_vector(sys_, x, v_stack)
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


# ----------------------------------------------------------------------------- line-ordered PCG


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.einsum("i,i->", a, b))


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
        sys_ = assemble(gg, self._circuit)
        v_stack = v3.reshape(t * r, -1)
        xx = spla.splu(sys_.a.tocsc()).solve(sys_.f @ v_stack)
        xf = full_vector(sys_, xx, v_stack)
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
