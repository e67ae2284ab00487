"""Batches whose size does not change a number: equal-length batches and row-aligned layers.

An evaluation's scores must not depend on ``--batch-size`` (issue 20), down to the last bit,
so that a row keyed without the batch size is the same row at any batch size. Three things
made a sentence's logits depend on its batch:

* read noise drawn in batch order: keyed by example instead (:mod:`crossbar.readkeys`,
  :func:`nn.crossbar_linear.keyed_reads`);
* padding: a sentence padded to a longer batch mate runs attention over more (masked) keys,
  which changes the summation order of its softmax and of ``probs @ V``. :func:`length_batches`
  pads every sentence to a width of its own (its token count rounded up to a multiple of
  :data:`BUCKET_TOKENS`) and batches only sentences of one width;
* BLAS: a GEMM's row results depend on the row count (a single row takes a GEMV path, other
  counts other blockings). The engine pads its reads to ``crossbar.read.ROW_ALIGN`` rows;
  :func:`aligned_linears` does the same for the digital ``nn.Linear`` layers (the task head, the
  pooler, every layer of the digital model), so every layer sees a row count that is a multiple
  of it. Zero rows cost at most ``ROW_ALIGN - 1`` rows per layer call.

Checked bit for bit at batch sizes 1, 7, 32 and 64 (``tests/test_batch_free.py``). Torch's
thread count and the device still change float sums (they are pinned per study task, see
:func:`nn.executor.task_threads`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

__all__ = ["length_batches", "aligned_linears", "BUCKET_TOKENS"]


#: sentences are padded to a multiple of this many tokens (their *bucket*): fewer, fuller batches
#: than one batch per token count, at about the same padding (measured on SST-2 / MRPC / STS-B
#: dev with MiniLM's tokenizer: 5-9 % more rows than the real tokens, as sorted batches of 64)
BUCKET_TOKENS = 4


def length_batches(lengths: np.ndarray, batch_size: int, bucket: int = BUCKET_TOKENS) -> list[tuple[np.ndarray, int]]:
    """``(row indices, padded width)`` batch by batch. Every row is padded to its *bucket*, its
    token count rounded up to a multiple of ``bucket`` (at most the longest row): a function of
    the row alone, so a sentence is always computed at the same width. Rows are sorted by
    bucket (stable) and each bucket cut into batches of at most ``batch_size``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return []
    width = np.minimum(-(-lengths // bucket) * bucket, lengths.max())
    order = np.argsort(width, kind="stable")
    cuts = np.flatnonzero(np.diff(width[order])) + 1
    out: list[tuple[np.ndarray, int]] = []
    for run in np.split(order, cuts):
        w = int(width[run[0]])
        out += [(run[i : i + batch_size], w) for i in range(0, run.size, batch_size)]
    return out


@contextlib.contextmanager
def aligned_linears(model: Any) -> Iterator[None]:
    """Inside the block every digital ``nn.Linear`` of ``model`` computes on its input rows
    padded with zero rows to a multiple of ``crossbar.read.ROW_ALIGN`` (forward hooks; outputs
    cut back): a row's result is then the same bits whatever the row count of the call.
    Crossbar layers reading the crossbar (``simulated``) pad their own reads and are left alone."""
    from torch import nn

    from crossbar.read import pad_rows

    lead: dict[int, tuple] = {}

    def pre(mod: Any, args: tuple) -> Any:
        if getattr(mod, "simulated", False) or not args:
            return None
        x = args[0]
        lead[id(mod)] = tuple(x.shape[:-1])
        return (pad_rows(x.reshape(-1, x.shape[-1])), *args[1:])

    def post(mod: Any, args: tuple, out: Any) -> Any:
        shape = lead.pop(id(mod), None)
        if shape is None:
            return None
        return out[: int(np.prod(shape, dtype=np.int64))].reshape(*shape, out.shape[-1])

    handles = []
    try:
        for m in model.modules():
            if isinstance(m, nn.Linear):
                handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        yield
    finally:
        for h in handles:
            h.remove()
