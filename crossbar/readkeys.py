"""Read-noise keys: which normal numbers one read of one input vector gets.

Read noise is drawn on every read (:func:`crossbar.read.add_read_noise`, the one place it is
applied). Drawn in batch order from one generator, a vector's noise would depend on how many
vectors came before it in its batch, i.e. on the batch size and on its batch mates (issue 20:
per-chip GLUE scores moved with ``--batch-size``). Instead, the noise of each input vector is a
pure function of a *key*: :class:`ReadKeys` holds one 63-bit seed for the read (the chip, the
layer and which read this is) and one integer key per input vector. Vector ``i`` with key ``k``
gets row ``k % block`` of a ``(block, ...)`` standard normal draw from a ``torch.Generator``
seeded with ``mix(seed, k // block)`` (SplitMix64, Steele et al., OOPSLA 2014,
doi:10.1145/2714064.2660195), drawn on the CPU in the compute dtype and moved to the tensors'
device: the same numbers on CPU and CUDA, whatever else is in the batch. ``block`` only saves
time (one generator seeding per ``block`` consecutive keys, e.g. 8 token positions of one
sentence); it is part of the key scheme, so a caller keeps it fixed.

Who keys what
-------------
* :mod:`nn.crossbar_linear` (GLUE evaluation, :func:`nn.crossbar_linear.read_keys`): the seed
  mixes the layer's noise seed (drawn with the chip), the pass (evaluation or calibration) and
  the layer's read count within the forward pass (ALBERT reads one layer many times); a token's
  key is ``example * 2**20 + position``, its example's index in the evaluated split and its
  position in the sentence. Padding is appended after the real tokens, so a real token's noise
  is the same whatever its batch is padded to.
* A plain-Python caller passes a ``torch.Generator`` to ``ProgrammedMatrix.matvec`` and gets
  :meth:`ReadKeys.from_content`: one seed per call drawn from the generator (every call is a new
  read: calling twice gives fresh noise, and the generator's seed reproduces it), each vector
  keyed by its content (the bits of its values) and, among equal vectors of the same call, by
  its occurrence (so a batch of copies of one vector gets independent draws, as repeated reads
  of one cell would). Within a call a vector's noise does not depend on where it sits or on its
  batch mates; split into two calls it is read twice. Content rather than position, so that a
  vector's noise does not move when the batch is reordered or split differently among rows;
  the cost is one hash per vector.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

__all__ = ["ReadKeys", "mix64", "NO_NOISE"]

_M64 = (1 << 64) - 1
_M63 = (1 << 63) - 1

#: the key of a row that takes no noise (the engine's alignment padding rows, all zero)
NO_NOISE = -1


def mix64(*parts: int) -> int:
    """A 63-bit seed from integers: SplitMix64's finalizer chained over ``parts``."""
    z = 0x6A09E667F3BCC908
    for p in parts:
        z = (z ^ (int(p) & _M64)) + 0x9E3779B97F4A7C15 & _M64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _M64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _M64
        z ^= z >> 31
    return z & _M63


@functools.lru_cache(maxsize=64)
def _content_weights(n_cols: int) -> torch.Tensor:
    """``(4 * n_cols,)`` int64 random weights below ``2**31`` (fixed: a content key must be the
    same in every read), one per 16-bit chunk of every value's float64 bits."""
    rng = np.random.default_rng([0x5EED, n_cols])
    return torch.from_numpy(rng.integers(1, 2**31, size=4 * n_cols, dtype=np.int64))


def _content_hash(x: torch.Tensor) -> list[int]:
    """One integer per row of ``x`` ``(n, d)``: a random linear form of the 16-bit chunks of its
    float64 bit patterns (exact integer arithmetic, so independent of the row's batch mates and
    the summation order; two different rows collide with probability <= 2**-31)."""
    n, d = x.shape
    b = x.detach().to("cpu", torch.float64).contiguous().view(torch.int64)  # widening is exact
    chunks = torch.stack([(b >> (16 * q)) & 0xFFFF for q in range(4)], dim=2).reshape(n, 4 * d)
    # every term < 2**47, every sum of 4 * d <= 2**14 terms < 2**61: exact in int64
    return (chunks * _content_weights(d)).sum(1).tolist()


@dataclasses.dataclass(frozen=True, eq=False)
class ReadKeys:
    """The keys of one read's noise (see the module docstring).

    ``seed``: ``[0, 2**63)``, the read (chip, layer, pass, read count). ``rows``: ``(n,)`` int64 on
    the CPU, one key ``>= 0`` per input vector, or :data:`NO_NOISE`. ``block``: keys ``k`` with the
    same ``k // block`` share one generator seeding (cost only).
    """

    seed: int
    rows: torch.Tensor
    block: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.rows, torch.Tensor) and self.rows.ndim == 1 and self.rows.dtype == torch.int64):
            raise ValueError("ReadKeys.rows must be a 1-D int64 tensor, one key per input vector")
        if self.rows.device.type != "cpu":
            object.__setattr__(self, "rows", self.rows.cpu())
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"ReadKeys.block={self.block!r} is invalid: must be an integer >= 1")
        if not 0 <= int(self.seed) <= _M63:
            raise ValueError(f"ReadKeys.seed={self.seed} is invalid: must be in [0, 2**63)")

    def __len__(self) -> int:
        return int(self.rows.numel())

    @classmethod
    def from_content(cls, x: torch.Tensor, generator: torch.Generator) -> "ReadKeys":
        """The keys of one read of ``x`` ``(n, d)`` by a caller without its own keys: the read's
        seed drawn from ``generator`` (one draw per call), each row keyed by its content and its
        occurrence among equal rows of ``x``."""
        seed = int(torch.randint(_M63, (1,), generator=generator, device=generator.device).item())
        seen: dict[int, int] = {}
        keys = []
        for h in _content_hash(x):
            k = seen.get(h, 0)
            seen[h] = k + 1
            keys.append(mix64(h, k))
        return cls(seed=seed, rows=torch.tensor(keys, dtype=torch.int64).reshape(-1))

    def salted(self, salt: int) -> "ReadKeys":
        """The same rows in an independent stream (another part of the same read, e.g. the
        replica columns of a voted read)."""
        return dataclasses.replace(self, seed=mix64(self.seed, salt))

    def padded(self, n: int) -> "ReadKeys":
        """Keys for ``n`` rows: these, then :data:`NO_NOISE` for the engine's padding rows."""
        m = len(self)
        if n < m:
            raise ValueError(f"ReadKeys has {m} rows but the read has {n} input vectors")
        if n == m:
            return self
        pad = torch.full((n - m,), NO_NOISE, dtype=torch.int64)
        return dataclasses.replace(self, rows=torch.cat([self.rows, pad]))

    def normal(self, lead: tuple[int, ...], tail: tuple[int, ...], dtype: torch.dtype, device,
               i0: int = 0, i1: int | None = None) -> torch.Tensor:
        """Standard normals ``(*lead, m, *tail)`` for rows ``i0:i1`` (``m`` of them): row ``i``'s
        ``(*lead, *tail)`` numbers depend on ``seed``, its key, ``block`` and the shape only;
        zero for :data:`NO_NOISE` rows; contiguous."""
        rows = self.rows[i0:i1]
        m = int(rows.numel())
        n_lead, n_tail = int(np.prod(lead, dtype=np.int64)), int(np.prod(tail, dtype=np.int64))
        valid = rows >= 0
        keys = rows[valid]
        if not keys.numel():
            return torch.zeros((*lead, m, *tail), dtype=dtype, device=device)
        blocks, where = torch.unique(keys // self.block, return_inverse=True)
        nb = int(blocks.numel()) * self.block
        # every block's draw, rows in key order, then one zero row for the NO_NOISE rows; one
        # gather puts each row's numbers in place, already laid out (*lead, m, *tail)
        z = torch.empty((nb + 1, n_lead, n_tail), dtype=dtype)
        z[nb].zero_()
        shape = (self.block, *lead, *tail)
        g = torch.Generator()
        for j, b in enumerate(blocks.tolist()):
            g.manual_seed(mix64(self.seed, b))
            torch.randn(shape, generator=g, dtype=dtype, out=z[j * self.block : (j + 1) * self.block].view(shape))
        src = torch.full((m,), nb, dtype=torch.int64)
        src[valid] = where * self.block + keys % self.block
        out = z.transpose(0, 1).index_select(1, src)  # (n_lead, m, n_tail)
        return out.view(*lead, m, *tail).to(device)
