"""Effective matrices of linear crossbar tiles: ``i_out = v_in @ M``, exact, by block elimination.

For linear cells the map from word-line voltages to bit-line currents does not depend on the
input, so IR drop costs one matmul per tile at inference once ``M`` is known
(:func:`crossbar.pipeline.ir_drop_step` with ``crossbar.ir_drop="exact"``). Each word line is
eliminated exactly (its tridiagonal inverse), which leaves a block-tridiagonal system in the
bit-line voltages with dense ``cols x cols`` blocks; a forward sweep from the open end of the bit
lines to the sense end gives the bit-line currents for all ``rows`` unit inputs at once, in
``O(rows * cols^3)``. :func:`effective_matrix`: one or a few tiles in numpy (LAPACK);
:func:`effective_matrices`: many tiles at once in torch (CPU threads or a GPU). The circuit is
:mod:`crossbar.nodal`'s.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from crossbar.nodal import CircuitConfig, check_inputs

__all__ = ["effective_matrix", "effective_matrices", "block_is_cheaper", "one_blas_thread"]


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


def effective_matrices(g_s, circuit: CircuitConfig | None = None, *, tiles_per_call: int | None = None,
                       method: str = "block"):
    """Exact effective matrices of many linear tiles at once, in torch (CPU or GPU).

    ``g_s``: torch tensor ``(tiles, rows, cols)`` float64 siemens (finite, >= 0), on any device;
    returns ``M`` of the same shape, dtype and device with ``i_out = v_in @ M[t]`` for tile ``t``.
    The same block elimination as :func:`effective_matrix` (``O(rows cols^3)`` per tile, exact to
    rounding), vectorized over tiles: the word-line inverses come from tridiagonal pivots in
    ``O(cols^2)`` per row, and the bit-line sweep inverts each row's SPD block by recursive 2x2
    block elimination (batched matmuls, Cholesky below 64 columns: ``torch.cholesky_inverse`` on
    128 x 128 blocks was ~70 % of the time) and carries the collected columns with batched
    matmuls over ``tiles_per_call`` tiles at a time (default: about 4 MiB of blocks); on
    the CPU the chunks run on ``torch.get_num_threads()`` threads, one thread each.
    ``method``: ``"block"`` (the recursive block inverse) or ``"cholesky"`` (``potrf`` +
    ``potri`` per block: the reference, for benchmarks; both exact to rounding, ~1e-12).
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
    if method not in ("block", "cholesky"):
        raise ConfigError(f"method={method!r} is invalid: must be one of 'block', 'cholesky'")
    t, r, cc = g_s.shape
    if c.r_wire_row_ohm == 0 and c.r_wire_col_ohm == 0 and c.r_source_ohm == 0 and c.r_sense_ohm == 0:
        return g_s.clone()
    if tiles_per_call is None:
        tiles_per_call = max(1, (4 << 20) // (8 * cc * max(cc, r) * 3))  # blocks stay in cache
    out = torch.empty_like(g_s)
    starts = list(range(0, t, tiles_per_call))

    def run(t0: int) -> None:
        out[t0 : t0 + tiles_per_call] = _block_effective_torch(g_s[t0 : t0 + tiles_per_call].clone(), c, method)

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
