"""The bit-serial read kernel on the CPU: column currents from tables of 8-row partial currents.

In a bit-serial cycle every word-line input is 0 or 1, so the column current of 8 rows takes one of
256 values. :func:`lut_bit_serial` tabulates them once per row block and block of columns and sums
``rows / 8`` table rows per column current (``embedding_bag``) instead of ``rows`` multiply-adds;
every cycle's current is still converted by its own ADC before the shift-and-add. It computes the
same sum as the batched-matmul read of :mod:`crossbar.read` (bit-identical for integer-valued
currents, tested in ``tests/test_engine_lut.py``).
"""

from __future__ import annotations

import torch

__all__ = ["lut_bit_serial", "plane_bytes", "LUT_COLS", "LUT_TOKENS"]

#: readout columns and tokens per block of a table read: a block's currents (cycles x tokens x
#: columns, 8 x 256 x 128 float32 = 1 MiB) are rounded and shift-added while still in cache; its
#: tables (256 x rows / 8 x columns, 2 MiB) are reused by all tokens (sweep at 4096 tokens, 1 thread:
#: 128 x 256 was 8-12 % faster than 128 x 128, 64 x 256, 256 x 64 on 768x3072 and 3072x768)
LUT_COLS = 128
LUT_TOKENS = 256


def plane_bytes(u: torch.Tensor, bits: int, tokens: int) -> torch.Tensor:
    """Bit planes of the codes, 8 rows to a byte, laid out block by block of ``tokens`` tokens.

    ``u``: ``(R, n, rows)`` integer codes in ``[0, 2**bits)``, ``rows % 8 == 0``. Returns int32
    ``(R, blocks, bits, tokens, rows // 8)``: entry ``[r, b, k, t, g]`` has bit ``j`` set when bit
    ``k`` of the code of row ``8 g + j`` of token ``b * tokens + t`` is set (tokens past ``n``
    read 0).
    Eight rows' bytes are one int64; an 8x8 bit-matrix transpose (three masked swaps; Warren,
    Hacker's Delight, 2nd ed., sec. 7-3) turns byte ``j`` bit ``k`` into byte ``k`` bit ``j``.
    """
    R, n, rows = u.shape
    G, nb = rows // 8, -(-n // tokens)
    out = torch.empty(R, nb, bits, tokens, G, dtype=torch.int32, device=u.device)
    for b0 in range(0, bits, 8):
        kk = min(8, bits - b0)
        x = torch.nn.functional.pad(((u >> b0) & 255).to(torch.uint8), (0, 0, 0, nb * tokens - n))
        x = x.contiguous().view(torch.int64)  # (R, nb * tokens, G)
        # masks keep the top bits clear, so the arithmetic right shifts and the left shifts are exact
        t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AA
        x = x ^ t ^ (t << 7)
        t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCC
        x = x ^ t ^ (t << 14)
        t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0
        x = x ^ t ^ (t << 28)
        pb = x.view(torch.uint8).view(R, nb, tokens, G, 8)[..., :kk]  # [..., k]: plane b0 + k
        out[:, :, b0 : b0 + kk] = pb.permute(0, 1, 4, 2, 3)
    return out


def lut_bit_serial(u, bits, readout, ak, out, beta, quantize, clip, col_fac=None, tok_fac=None) -> torch.Tensor:
    """Bit-serial read with an ADC on every column in every cycle, from tables of partial currents.

    ``u``: ``(R, n, rows)`` two's-complement input codes in ``[0, 2**bits)``; ``readout``
    ``(R, rows, L)`` in ADC steps, ``L = S * out`` (channel ``s * out + o``); ``ak`` ``(R, 1, K)``
    cycle weights times the row block's output factor; ``beta`` the slice base
    ``2**bits_per_cell``; ``clip`` ``(lo, hi)`` ADC codes or None; ``col_fac`` ``(R, L)`` an
    optional per-channel output factor (per-tile weight formats; ``ak`` then holds the cycle
    weights only); ``tok_fac`` ``(R, n)`` an optional factor per row block and token (per-tile
    input steps of each vector). Returns ``(n, out)``: ``sum_s beta**s sum_r col_fac[r, l]
    tok_fac[r, t] sum_k ak[r, k] * adc(I[r, k, t, l])``, ``l = s * out + o``, the same sum as the
    ``bmm`` path of :func:`crossbar.read.read_adc`.

    A cycle's inputs are 0/1, so its column current over 8 rows takes one of 256 values: for each
    row block and block of ``LUT_COLS`` columns the table ``T[c, g] = sum_j bit_j(c) D[8 g + j]``
    is built once (by doubling: ``T[c + 2**j] = T[c] + D[8 g + j]`` for ``c < 2**j``, eight
    adds), and every cycle's current is the sum of ``rows / 8`` table rows (``embedding_bag``):
    16 table rows per current for 128-row tiles instead of 128 multiply-adds. Each cycle's current is still formed and converted on its own (rounded,
    clamped when it can clip) before the shift-and-add; only the order of the float additions
    differs from the matmul (integer-valued currents are exact in both). ``LUT_TOKENS`` tokens'
    currents are converted and summed over cycles (one ``(1, K)`` GEMV) while in cache.
    """
    R, n, rows = u.shape
    K, L = ak.shape[-1], readout.shape[-1]
    dt, dev = readout.dtype, readout.device
    rp = -(-rows // 8) * 8
    if rp != rows:  # pad the tile to whole bytes of rows: zero codes, zero conductance
        u = torch.nn.functional.pad(u, (0, rp - rows))
        readout = torch.nn.functional.pad(readout, (0, 0, 0, rp - rows))
    G = rp // 8
    m = max(1, min(n, LUT_TOKENS))
    idx = plane_bytes(u, bits, m)  # (R, nb, K, m, G)
    nb = idx.shape[1]
    idx *= G
    idx += torch.arange(G, dtype=torch.int32, device=dev)  # table row c * G + g
    idx = idx.view(R, nb, K * m, G)
    if tok_fac is not None:  # padded tokens read zero currents
        tok_fac = torch.nn.functional.pad(tok_fac, (0, nb * m - n))
    lut = torch.zeros(256, G, min(L, LUT_COLS), dtype=dt, device=dev)
    y = torch.zeros(n, out, dtype=dt, device=dev)
    zbuf = torch.empty(nb * m * min(L, LUT_COLS), dtype=dt, device=dev)
    for l0 in range(0, L, LUT_COLS):
        l1 = min(L, l0 + LUT_COLS)
        lw = l1 - l0
        z = zbuf[: nb * m * lw]
        t = lut if lw == lut.shape[-1] else torch.zeros(256, G, lw, dtype=dt, device=dev)
        for r in range(R):
            for j in range(8):  # T[2**j + c] = T[c] + D[8 g + j], c < 2**j (T[0] = 0)
                torch.add(t[: 1 << j], readout[r, j::8, l0:l1], out=t[1 << j : 2 << j])
            tab = t.view(256 * G, lw)
            for b in range(nb):
                cur = torch.nn.functional.embedding_bag(idx[r, b], tab, mode="sum")  # (K * m, lw)
                if quantize:
                    cur.round_()
                    if clip is not None:
                        cur.clamp_(*clip)
                zb = z[b * m * lw : (b + 1) * m * lw].view(1, m * lw)
                if tok_fac is not None:
                    zk = torch.mm(ak[r], cur.view(K, m * lw)).view(m, lw)
                    zk.mul_(tok_fac[r, b * m : (b + 1) * m].view(m, 1))
                    if col_fac is not None:
                        zk.mul_(col_fac[r, l0:l1])
                    if r == 0:
                        zb.copy_(zk.view(1, m * lw))
                    else:
                        zb.add_(zk.view(1, m * lw))
                elif col_fac is not None:
                    zk = torch.mm(ak[r], cur.view(K, m * lw)).view(m, lw)
                    if r == 0:
                        torch.mul(zk, col_fac[r, l0:l1], out=zb.view(m, lw))
                    else:
                        zb.view(m, lw).addcmul_(zk, col_fac[r, l0:l1])
                elif r == 0:
                    torch.mm(ak[r], cur.view(K, m * lw), out=zb)
                else:
                    zb.addmm_(ak[r], cur.view(K, m * lw))
        z = z.view(nb * m, lw)[:n]
        for s in range(l0 // out, (l1 - 1) // out + 1):  # slices: shift-add into the outputs
            a0, a1 = max(l0, s * out), min(l1, (s + 1) * out)
            y[:, a0 - s * out : a1 - s * out].add_(z[:, a0 - l0 : a1 - l0], alpha=beta**s)
    return y
