"""Effective matrices of linear crossbar tiles: ``i_out = v_in @ M``, exact, by direct elimination.

For linear cells the map from word-line voltages to bit-line currents does not depend on the
input, so IR drop costs one matmul per tile at inference once ``M`` is known
(:func:`crossbar.pipeline.ir_drop_step` with ``crossbar.ir_drop="exact"``). Two exact
eliminations of the same nodal matrix (:mod:`crossbar.nodal`'s circuit):

* the bit-line sweep: each word line is eliminated exactly (its tridiagonal inverse), which
  leaves a block-tridiagonal system in the bit-line voltages with dense ``cols x cols`` blocks;
  a forward sweep from the open end of the bit lines to the sense end gives the bit-line
  currents for all ``rows`` unit inputs at once, in ``O(rows cols^3 + rows^2 cols^2)``
  (:func:`effective_matrix`, one or a few tiles in numpy/LAPACK: the reference; and
  ``method="block"`` of :func:`effective_matrices`);
* nested dissection (``method="nested"``, the default for tiles above 64 x 64): the tile is cut
  recursively into halves by separators of word- or bit-line nodes, and the nodal matrix is
  reduced to its Schur complement on the driven and sensed nodes front by front, about
  ``(rows cols)^1.5`` work (~150 MFLOP at 128 x 128 instead of ~540), all tiles of a batch and
  all fronts of one depth and shape in one batched dense Cholesky.

:func:`effective_matrices`: many tiles at once in torch (CPU threads or a GPU).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.linalg import lapack

from crossbar.nodal import CircuitConfig, check_inputs

__all__ = ["effective_matrix", "effective_matrices", "block_is_cheaper", "one_blas_thread", "run_chunks"]


# ----------------------------------------------------------------------------- one tile (numpy)


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
    g, _, _ = check_inputs(g_s)
    g3 = g[None] if g.ndim == 2 else g
    if c.r_wire_row_ohm == 0 and c.r_wire_col_ohm == 0 and c.r_source_ohm == 0 and c.r_sense_ohm == 0:
        return g3.copy()
    with one_blas_thread():
        return np.stack([_block_effective(gt, c) for gt in g3])


def one_blas_thread():
    """Single-threaded BLAS for the ``cols x cols`` blocks: threads only add overhead at this size,
    and on a busy machine OpenBLAS threads spinning for cores made the elimination 50x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own thread count
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def block_is_cheaper(rows: int, cols: int, k: int) -> bool:
    """Time model (single core, measured): block elimination ~0.8 ns x ``rows cols^2 (rows +
    cols)`` plus ~20 us per row of Python; Schur-complement PCG ~0.12 us per node per vector."""
    return 8e-10 * rows * cols * cols * (rows + cols) + 2e-5 * rows < 1.2e-7 * rows * cols * k


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


def _spd_inverse_torch(a, base: int = 64):
    """Inverse of a batch of SPD matrices ``a`` (T, n, n) by recursive 2x2 block elimination:
    ``A^-1``, the Schur complement ``D - B^T A^-1 B`` (SPD) and its inverse, assembled with four
    matmuls; Cholesky (``potrf`` + ``potri``) below ``base``. The same flops as ``potrf`` +
    ``potri`` (~``n^3``) but most of them in batched matmuls, which run several times faster per
    flop than LAPACK's factorizations on 64-128 blocks. Raises ``LinAlgError`` where a block is not
    positive definite (the base Cholesky of a Schur complement fails)."""
    import torch

    n = a.shape[-1]
    if n <= base:
        chol, info = torch.linalg.cholesky_ex(a)
        if bool((info != 0).any()):
            raise np.linalg.LinAlgError("bit-line block is not positive definite")
        return torch.cholesky_inverse(chol)
    h = n // 2
    a11, a12, a22 = a[..., :h, :h], a[..., :h, h:], a[..., h:, h:]
    i11 = _spd_inverse_torch(a11, base)
    x = torch.matmul(i11, a12)  # A^-1 B
    i22 = _spd_inverse_torch(torch.baddbmm(a22, a12.transpose(-1, -2), x, alpha=-1.0), base)
    xs = torch.matmul(x, i22)
    out = torch.empty_like(a)
    out[..., :h, :h] = torch.baddbmm(i11, xs, x.transpose(-1, -2))
    out[..., :h, h:] = xs.neg()
    out[..., h:, :h] = out[..., :h, h:].transpose(-1, -2)
    out[..., h:, h:] = i22
    return out


def _block_effective_torch(g, c: CircuitConfig, method: str = "block"):
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
    lower = torch.ones(cc, cc, dtype=torch.bool, device=g.device).tril()
    pi = None
    for i in range(r):
        sig = schur_row(i, full=False)  # lower triangle valid: Cholesky reads no more
        sig.diagonal(dim1=-2, dim2=-1).add_((gc if i > 0 else 0.0) + (gc if i < r - 1 else gout))
        if pi is not None:
            sig.add_(pi, alpha=-(gc * gc))
            y[:, :, :i] = torch.matmul(pi, y[:, :, :i]).mul_(gc)
        y[:, :, i] = h[:, i]
        if method == "block":
            sig = torch.where(lower, sig, sig.transpose(-1, -2))  # the blocks read both triangles
            pi = _spd_inverse_torch(sig)
        else:
            chol, info = torch.linalg.cholesky_ex(sig)
            if bool((info != 0).any()):
                raise np.linalg.LinAlgError("bit-line block is not positive definite")
            pi = torch.cholesky_inverse(chol)
    return torch.matmul(pi, y).mul_(gout).transpose(-1, -2)



# ----------------------------------------------------------------------------- nested dissection (torch)


@functools.lru_cache(maxsize=8)
def _nested_plan(rows: int, cols: int, both_sides: bool, leaf: int = 16):
    """The elimination plan of a ``rows x cols`` tile by nested dissection (shape only; cached).

    Nodes: word-line nodes ``u(i, j) = i cols + j``, bit-line nodes ``w(i, j) = rows cols + i cols
    + j``. Kept to the end (``B``): the driven word-line nodes (column 0; also column ``cols-1``
    for both sides) and the sensed bit-line nodes (row ``rows-1``). The rest is cut recursively,
    across the longer side: cutting the bit lines at row ``m`` (separator ``w(m, .)``) leaves the
    rows above, the rows below and word line ``m`` alone; cutting the word lines at column ``m``
    (separator ``u(., m)``) leaves the two sides and bit line ``m``; regions of at most ``leaf``
    nodes are eliminated whole. Each part is a *front*: its own nodes (pivots) and its boundary
    (the nodes of enclosing separators and ``B`` next to it), eliminated into a dense Schur
    complement on the boundary, which its parent adds to its own front.

    Returns ``(groups, n_in, in_weight)``: fronts of one depth and shape batched together, deepest
    first, the last the kept nodes (order: driven nodes, then sensed nodes), each a dict ``p``
    (pivots), ``b`` (boundary), ``n`` (fronts), ``pos`` / ``src`` (flat positions in the group's
    fronts of the circuit's matrix entries and their index in the value vector of
    :func:`_nested_values`) and ``kids`` ``{child group: (child fronts, flat positions)}``.
    """
    r, c = rows, cols
    rc = r * c
    b_in = [i * c for i in range(r)]
    in_weight = [1.0] * r
    if both_sides and c > 1:
        b_in += [i * c + c - 1 for i in range(r)]
        in_weight += [1.0] * r
    elif both_sides:
        in_weight = [2.0] * r  # one column: both drivers feed the same node
    b_out = [rc + (r - 1) * c + j for j in range(c)]
    kept = set(b_in) | set(b_out)

    def nbrs(n):
        """Neighbours of node ``n`` with the index of the conductance between them (values:
        word-line diagonals, bit-line diagonals, cells, word-line segment, bit-line segment)."""
        if n < rc:
            i, j = divmod(n, c)
            out = [(n + rc, 2 * rc + n)]
            if j > 0:
                out.append((n - 1, 3 * rc))
            if j < c - 1:
                out.append((n + 1, 3 * rc))
        else:
            i, j = divmod(n - rc, c)
            out = [(n - rc, rc + n)]
            if i > 0:
                out.append((n - c, 3 * rc + 1))
            if i < r - 1:
                out.append((n + c, 3 * rc + 1))
        return out

    fronts: list[dict] = []

    def add(piv, kids):
        fronts.append({"piv": piv, "kids": [k for k in kids if k is not None]})
        return len(fronts) - 1

    def region(r0, r1, c0, c1, word=True, bit=True):
        out = []
        for i in range(r0, r1):
            for j in range(c0, c1):
                if word and i * c + j not in kept:
                    out.append(i * c + j)
                if bit and rc + i * c + j not in kept:
                    out.append(rc + i * c + j)
        return out

    def cut(r0, r1, c0, c1):
        if r1 <= r0 or c1 <= c0:
            return None
        nodes = region(r0, r1, c0, c1)
        if not nodes:
            return None
        if len(nodes) <= leaf:
            return add(nodes, [])
        if r1 - r0 >= c1 - c0:
            m = (r0 + r1) // 2
            sep, line = region(m, m + 1, c0, c1, word=False), region(m, m + 1, c0, c1, bit=False)
            kids = [cut(r0, m, c0, c1), cut(m + 1, r1, c0, c1)]
        else:
            m = (c0 + c1) // 2
            sep, line = region(r0, r1, m, m + 1, bit=False), region(r0, r1, m, m + 1, word=False)
            kids = [cut(r0, r1, c0, m), cut(r0, r1, m + 1, c1)]
        if line:
            kids.append(add(line, []))
        return add(sep, kids)

    root = cut(0, r, 0, c)
    add(b_in + b_out, [root])
    depth = [0] * len(fronts)
    for k in range(len(fronts) - 1, -1, -1):
        for ch in fronts[k]["kids"]:
            depth[ch] = depth[k] + 1
            fronts[ch]["parent"] = k
    inside: list = [None] * len(fronts)  # nodes of each subtree, until its parent is built
    for k, f in enumerate(fronts):
        piv = set(f["piv"])
        sub, adj = set(piv), set()
        for ch in f["kids"]:
            sub |= inside[ch]
            adj.update(fronts[ch]["bnd"])
            inside[ch] = None
        for a in f["piv"]:
            adj.update(b for b, _ in nbrs(a))
        inside[k] = sub
        f["bnd"] = sorted(adj - sub)
        loc = {n: q for q, n in enumerate(f["piv"] + f["bnd"])}
        ent = []  # (row, col, value index): each entry once, at the first of its nodes to go
        for a in f["piv"]:
            la = loc[a]
            ent.append((la, la, a))  # diagonals: u(i, j) -> a, w(i, j) -> a (rc + ...)
            for b, vi in nbrs(a):
                if (b in piv and a < b) or (b not in piv and b in loc):
                    ent += [(la, loc[b], vi), (loc[b], la, vi)]
        f["ent"] = np.array(ent, dtype=np.int64).reshape(-1, 3)
    assert not fronts[-1]["bnd"]
    keys: dict = {}
    for k, f in enumerate(fronts):
        keys.setdefault((-depth[k], len(f["piv"]), len(f["bnd"])), []).append(k)
    order = sorted(keys)  # deepest first; the kept nodes (depth 0) last
    where = {}
    groups = []
    for gi, key in enumerate(order):
        ks = keys[key]
        f2 = (key[1] + key[2]) ** 2
        for q, k in enumerate(ks):
            where[k] = (gi, q)
        pos = np.concatenate([q * f2 + fronts[k]["ent"][:, 0] * (key[1] + key[2]) + fronts[k]["ent"][:, 1]
                              for q, k in enumerate(ks)])
        src = np.concatenate([fronts[k]["ent"][:, 2] for k in ks])
        groups.append({"p": key[1], "b": key[2], "n": len(ks), "pos": pos, "src": src, "kids": {}})
    for k, f in enumerate(fronts):
        if "parent" not in f:
            continue
        par = fronts[f["parent"]]
        pg, pq = where[f["parent"]]
        cg, cq = where[k]
        fsz = len(par["piv"]) + len(par["bnd"])
        loc = {n: q for q, n in enumerate(par["piv"] + par["bnd"])}
        idx = np.array([loc[n] for n in f["bnd"]], dtype=np.int64)
        sel, pos = groups[pg]["kids"].setdefault(cg, ([], []))
        sel.append(cq)
        pos.append((pq * fsz * fsz + idx[:, None] * fsz + idx[None, :]).ravel())
    for g in groups:
        g["kids"] = {cg: (np.array(sel, dtype=np.int64), np.concatenate(pos)) for cg, (sel, pos) in g["kids"].items()}
    return tuple(groups), len(b_in), np.array(in_weight)


def _nested_effective_torch(g, c: CircuitConfig, leaf: int = 16):
    """Effective matrices (T, R, C) of linear tiles ``g`` with resistive word and bit lines by
    nested dissection (:func:`_nested_plan`): the nodal matrix's Schur complement on the driven
    and sensed nodes, front by front (batched Cholesky, triangular solve and one matmul per group
    of fronts), then the block of its inverse from the drivers to the sense nodes."""
    import torch

    t, r, cc = g.shape
    both = c.drive == "both_sides"
    groups, n_in, in_weight = _nested_plan(r, cc, both, leaf)
    dev = g.device
    gw, gc = 1.0 / c.r_wire_row_ohm, 1.0 / c.r_wire_col_ohm
    gdrv = 1.0 / (c.r_source_ohm + c.r_wire_row_ohm)
    gout = 1.0 / (c.r_wire_col_ohm + c.r_sense_ohm)
    du = g.clone()
    du[..., 1:] += gw
    du[..., :-1] += gw
    du[..., 0] += gdrv
    if both:
        du[..., -1] += gdrv
    dw = g.clone()
    dw[:, 1:] += gc
    dw[:, :-1] += gc
    dw[:, -1] += gout
    wires = torch.tensor([-gw, -gc], dtype=g.dtype, device=dev).expand(t, 2)
    vals = torch.cat([du.reshape(t, -1), dw.reshape(t, -1), -g.reshape(t, -1), wires], 1)

    def ix(a):
        return torch.from_numpy(a).to(dev)

    uses: dict = {}
    for grp in groups:
        for cg in grp["kids"]:
            uses[cg] = uses.get(cg, 0) + 1
    upd: dict = {}
    for gi, grp in enumerate(groups):
        p, b, n = grp["p"], grp["b"], grp["n"]
        f = p + b
        front = torch.zeros(t, n * f * f, dtype=g.dtype, device=dev)
        front.index_add_(1, ix(grp["pos"]), vals[:, ix(grp["src"])])
        for cg, (sel, pos) in grp["kids"].items():
            u = upd[cg]
            u = u if len(sel) == u.shape[1] and bool((sel == np.arange(len(sel))).all()) else u[:, ix(sel)]
            front.index_add_(1, ix(pos), u.reshape(t, -1))
            uses[cg] -= 1
            if not uses[cg]:
                del upd[cg]
        front = front.view(t * n, f, f)
        if gi == len(groups) - 1:
            break
        if p == 0:
            upd[gi] = front.view(t, n, b, b)
            continue
        chol, info = torch.linalg.cholesky_ex(front[:, :p, :p])
        if bool((info != 0).any()):
            raise np.linalg.LinAlgError("nodal matrix is not positive definite")
        w = torch.linalg.solve_triangular(chol, front[:, :p, p:], upper=False)
        upd[gi] = torch.baddbmm(front[:, p:, p:], w.transpose(-1, -2), w, alpha=-1.0).view(t, n, b, b)
    # Schur complement on (driven, sensed): x = S^-1 b; the sensed block of S^-1 on the driven
    # columns is -(A_oo - A_oi A_ii^-1 A_io)^-1 A_oi A_ii^-1
    a_ii, a_io, a_oo = front[:, :n_in, :n_in], front[:, :n_in, n_in:], front[:, n_in:, n_in:]
    chol, info = torch.linalg.cholesky_ex(a_ii)
    w = torch.linalg.solve_triangular(chol, a_io, upper=False)
    chol_o, info_o = torch.linalg.cholesky_ex(torch.baddbmm(a_oo, w.transpose(-1, -2), w, alpha=-1.0))
    if bool((info != 0).any() | (info_o != 0).any()):
        raise np.linalg.LinAlgError("nodal matrix is not positive definite")
    v = torch.linalg.solve_triangular(chol.transpose(-1, -2), w, upper=True)  # A_ii^-1 A_io
    x = torch.cholesky_solve(v.transpose(-1, -2), chol_o)  # (T, C, n_in) = -(S^-1)_oi
    x = x * torch.as_tensor(in_weight, dtype=g.dtype, device=dev)
    if n_in > r:
        x = x[..., :r] + x[..., r:]
    return x.transpose(-1, -2).mul_(-gout * gdrv).contiguous()


def effective_matrices(g_s, circuit: CircuitConfig | None = None, *, tiles_per_call: int | None = None,
                       method: str = "auto"):
    """Exact effective matrices of many linear tiles at once, in torch (CPU or GPU).

    ``g_s``: torch tensor ``(tiles, rows, cols)`` float64 siemens (finite, >= 0), on any device;
    returns ``M`` of the same shape, dtype and device with ``i_out = v_in @ M[t]`` for tile ``t``,
    exact to rounding (~1e-12 relative to :func:`effective_matrix`, the numpy reference).
    ``method``:

    * ``"nested"``: nested dissection of the tile's nodal matrix (:func:`_nested_plan`): the
      Schur complement on the driven and sensed nodes, built front by front with batched dense
      Cholesky factorizations; ~150 MFLOP per 128x128 tile against ~540 for the sweep, most of
      it in fronts of 100-400 nodes. Needs resistive word and bit lines.
    * ``"block"``: the bit-line sweep of :func:`effective_matrix` (``O(rows cols^3 + rows^2
      cols^2)``), vectorized over tiles: word-line inverses from tridiagonal pivots in
      ``O(cols^2)`` per row, each row's SPD block inverted by recursive 2x2 block elimination
      (batched matmuls, Cholesky below 64 columns).
    * ``"cholesky"``: the same sweep with ``potrf`` + ``potri`` per block (the reference of
      issue 13, for benchmarks).
    * ``"auto"`` (default): ``"nested"`` for tiles of more than 64 x 64 cells with resistive
      word and bit lines (1.8x faster at 128 x 128, 3.9x at 256 x 256; equal at 64 x 64, slower
      at 32 x 32: BENCHMARKS.md), else ``"block"``.

    ``tiles_per_call`` tiles go through one batched pass (default: 4 for ``"nested"`` on the CPU,
    which kept its fronts in cache, 64 on a GPU; for the sweep about 4 MiB of blocks); on the CPU
    the chunks run on ``torch.get_num_threads()`` threads, one thread each.
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
    if method not in ("auto", "nested", "block", "cholesky"):
        raise ConfigError(f"method={method!r} is invalid: must be one of 'auto', 'nested', 'block', 'cholesky'")
    t, r, cc = g_s.shape
    if c.r_wire_row_ohm == 0 and c.r_wire_col_ohm == 0 and c.r_source_ohm == 0 and c.r_sense_ohm == 0:
        return g_s.clone()
    wired = c.r_wire_row_ohm > 0 and c.r_wire_col_ohm > 0
    if method == "nested" and not wired:
        raise ConfigError("method='nested' needs resistive word and bit lines (r_wire_row_ohm > 0 and r_wire_col_ohm > 0)")
    if method == "auto":
        method = "nested" if wired and r * cc > 64 * 64 else "block"
    if tiles_per_call is None:
        if method == "nested":
            tiles_per_call = 4 if g_s.device.type == "cpu" else 64
        else:
            tiles_per_call = max(1, (4 << 20) // (8 * cc * max(cc, r) * 3))  # blocks stay in cache
    out = torch.empty_like(g_s)
    starts = list(range(0, t, tiles_per_call))

    def run(t0: int) -> None:
        chunk = g_s[t0 : t0 + tiles_per_call]
        if method == "nested":
            out[t0 : t0 + tiles_per_call] = _nested_effective_torch(chunk, c)
        else:
            out[t0 : t0 + tiles_per_call] = _block_effective_torch(chunk.clone(), c, method)

    run_chunks(run, starts, g_s.device)
    return out


def run_chunks(run, starts, device) -> None:
    """``run(start)`` for every chunk start; on the CPU one chunk per torch thread, each chunk
    single-threaded inside (torch releases the GIL in its kernels), else in order.

    Intra-op threads on small blocks were catastrophic on a busy machine (50x slower per
    128x128 tile here, 2-16x for the IR-drop table's line sweeps: OpenMP threads waiting for
    cores), so they are off even for a single chunk."""
    import torch

    n_threads = torch.get_num_threads()
    if getattr(device, "type", str(device)) != "cpu" or n_threads <= 1:
        for t0 in starts:
            run(t0)
        return
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
