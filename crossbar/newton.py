"""Nonlinear (sinh) cells on the crossbar circuit: Newton iterations on the nodal equations.

A cell of small-signal conductance ``g`` passes ``I = g v0 sinh(V / v0)`` (the Stanford-PKU read
I-V, ``CircuitConfig.cell_v0_v``); the wires and drivers are linear. Newton's method on the full
nodal system (:func:`crossbar.nodal.assemble`), one input vector at a time, from the linear
solution; each step solves the Jacobian by sparse LU and is limited to 0.1 V (sinh grows fast).
Converges in a handful of steps at read voltages; used by :func:`crossbar.solver.solve`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from crossbar.nodal import CircuitConfig, NodalSystem

__all__ = ["newton_solve"]


def newton_solve(g: np.ndarray, v_stack: np.ndarray, c: CircuitConfig, x0: np.ndarray, sys_: NodalSystem):
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
