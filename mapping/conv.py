"""Convolutions on crossbar tiles: the im2col convention, in one place.

A ``Conv1d`` / ``Conv2d`` with weight ``(out_channels, in_channels / groups, *kernel_size)`` runs
on crossbars as ``groups`` weight matrices, one per group::

    W_g = weight[g * O_g : (g + 1) * O_g].reshape(O_g, C_g * K)      (out_features, in_features)

with ``O_g = out_channels / groups``, ``C_g = in_channels / groups`` and ``K = prod(kernel_size)``
(the kernel's elements). A matrix row (a bit-line output) is one output channel; a matrix column (a
word-line input) is one ``(input channel, kernel offset)`` pair, channel-major, then kernel rows,
then kernel columns: the order of ``weight.reshape(out, -1)`` and of ``torch.nn.functional.unfold``.
Every output position of every example is one matrix-vector product (MVM) of each group's matrix
with the input patch under the kernel there (``im2col``)::

    y[n, g * O_g + o, p] = sum_j W_g[o, j] * cols[g, n * L + p, j]  (+ bias, digital)

so a layer reads its tiles ``mvms(input_size) = prod(output_size)`` times per example and group
(``L = prod(output_size)``), and the crossbar sees each patch as one input vector (its own DAC
step with ``crossbar.input_granularity="vector"``). A grouped convolution is ``groups`` separate
matrices, each on its own tiles with its own number format: a block-diagonal matrix on shared
tiles would program the zero blocks too.

Padding is applied to the input before the patches are taken, as torch's ``_ConvNd`` does:
zeros for ``padding_mode="zeros"``, else ``torch.nn.functional.pad`` with that mode;
``padding="same"`` puts ``dilation * (kernel - 1) // 2`` before and the rest after (torch's
rule); ``"valid"`` none.

:class:`ConvGeometry` holds the shape arithmetic and needs no torch (cost models import it for
layer shapes and MVM counts); :meth:`ConvGeometry.im2col`, :meth:`ConvGeometry.col2im` and
:meth:`ConvGeometry.weight_matrices` work on torch tensors (imported where used).
:func:`conv_geometries` lists the convolutions of a torch model. Matrix names: the module's name
for ``groups == 1`` (as a Linear), ``"<module>:g<k>"`` per group otherwise (:func:`matrix_names`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from device.errors import InputError, UserError

__all__ = ["ConvGeometry", "conv_geometries", "matrix_names", "PADDING_MODES"]

#: torch's ``_ConvNd.padding_mode`` values
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _tuple(v: Any, n: int, what: str) -> tuple[int, ...]:
    t = (v,) * n if isinstance(v, int) else tuple(v)
    if len(t) != n or not all(isinstance(x, int) and not isinstance(x, bool) for x in t):
        raise UserError(f"{what}={v!r} is invalid: must be an integer or {n} integers")
    return tuple(int(x) for x in t)


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """The shape arithmetic of one convolution on crossbars (see the module docstring).

    ``kernel_size``, ``stride``, ``dilation``: one entry per spatial dimension (1 or 2).
    ``padding``: ``(before, after)`` per spatial dimension (:meth:`make` resolves ints,
    ``"same"`` and ``"valid"``).
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int = 1
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        nd = len(self.kernel_size)
        if nd not in (1, 2):
            raise UserError(f"kernel_size={self.kernel_size!r} is invalid: 1-D and 2-D convolutions only")
        for name in ("stride", "dilation", "padding"):
            if len(getattr(self, name)) != nd:
                raise UserError(f"{name}={getattr(self, name)!r} is invalid: needs {nd} entries like kernel_size")
        for name in ("in_channels", "out_channels", "groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{name}={v!r} is invalid: must be an integer >= 1")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise UserError(
                f"groups={self.groups} is invalid: must divide in_channels={self.in_channels} and "
                f"out_channels={self.out_channels}"
            )
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise UserError("kernel_size, stride and dilation must be >= 1")
        if any(len(p) != 2 or min(p) < 0 for p in self.padding):
            raise UserError(f"padding={self.padding!r} is invalid: (before, after) >= 0 per dimension")
        if self.padding_mode not in PADDING_MODES:
            raise UserError(f"padding_mode={self.padding_mode!r} is invalid: must be one of {', '.join(PADDING_MODES)}")

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def make(
        cls,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        ndim: int | None = None,
    ) -> "ConvGeometry":
        """A geometry from ``torch.nn.Conv*d``-style arguments (``ndim`` spatial dimensions,
        default: the length of ``kernel_size``, else 2)."""
        nd = ndim if ndim is not None else (len(kernel_size) if not isinstance(kernel_size, int) else 2)
        k = _tuple(kernel_size, nd, "kernel_size")
        s = _tuple(stride, nd, "stride")
        d = _tuple(dilation, nd, "dilation")
        if isinstance(padding, str):
            if padding == "valid":
                pad = tuple((0, 0) for _ in range(nd))
            elif padding == "same":
                tot = [di * (ki - 1) for di, ki in zip(d, k)]
                pad = tuple((t // 2, t - t // 2) for t in tot)  # torch: left = total // 2
            else:
                raise UserError(f"padding={padding!r} is invalid: an integer, a tuple, 'same' or 'valid'")
        else:
            p = _tuple(padding, nd, "padding")
            pad = tuple((x, x) for x in p)
        return cls(in_channels=in_channels, out_channels=out_channels, kernel_size=k, stride=s, padding=pad,
                   dilation=d, groups=groups, padding_mode=padding_mode)

    @classmethod
    def from_module(cls, conv: Any) -> "ConvGeometry":
        """The geometry of a ``torch.nn.Conv1d`` / ``Conv2d`` (read from its attributes)."""
        k = tuple(conv.kernel_size)
        if len(k) not in (1, 2):
            raise UserError(f"{type(conv).__name__}: only 1-D and 2-D convolutions map onto crossbars")
        if getattr(conv, "transposed", False):
            raise UserError(f"{type(conv).__name__}: transposed convolutions are not supported")
        return cls.make(conv.in_channels, conv.out_channels, k, stride=tuple(conv.stride), padding=conv.padding,
                        dilation=tuple(conv.dilation), groups=conv.groups, padding_mode=conv.padding_mode, ndim=len(k))

    # ---- shapes (no torch) -----------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Spatial dimensions (1: Conv1d, 2: Conv2d)."""
        return len(self.kernel_size)

    @property
    def kernel_elems(self) -> int:
        """``K = prod(kernel_size)``."""
        return math.prod(self.kernel_size)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(out_features, in_features)`` of each group's matrix: ``(O_g, C_g * K)``."""
        return (self.out_channels // self.groups, self.in_channels // self.groups * self.kernel_elems)

    def output_size(self, input_size: int | Sequence[int]) -> tuple[int, ...]:
        """Spatial output size for spatial input size ``input_size`` (torch's formula
        ``floor((n + before + after - dilation * (k - 1) - 1) / stride) + 1``)."""
        n = _tuple(input_size, self.ndim, "input_size")
        out = tuple(
            (ni + lo + hi - di * (ki - 1) - 1) // si + 1
            for ni, (lo, hi), di, ki, si in zip(n, self.padding, self.dilation, self.kernel_size, self.stride)
        )
        if min(out) < 1:
            raise InputError(f"input size {n} is smaller than the (dilated) kernel {self.kernel_size}: no output")
        return out

    def mvms(self, input_size: int | Sequence[int]) -> int:
        """MVMs of each group's matrix per example: one per output position, ``prod(output_size)``."""
        return math.prod(self.output_size(input_size))

    def macs(self, input_size: int | Sequence[int]) -> int:
        """Multiply-accumulates per example (all groups): ``groups * mvms * O_g * C_g * K``."""
        o, i = self.matrix_shape
        return self.groups * self.mvms(input_size) * o * i

    # ---- tensors ---------------------------------------------------------------------------
    def weight_matrices(self, weight: Any) -> Any:
        """``(groups, O_g, C_g * K)`` view of a conv weight ``(out_channels, C_g, *kernel_size)``."""
        o, i = self.matrix_shape
        exp = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if tuple(weight.shape) != exp:
            raise InputError(f"weight has shape {tuple(weight.shape)}, this convolution's is {exp}")
        return weight.reshape(self.groups, o, i)

    def im2col(self, x: Any) -> Any:
        """Input patches ``(groups, N * L, C_g * K)`` of ``x`` ``(N, in_channels, *input_size)``
        (or unbatched ``(in_channels, *input_size)``, N = 1): row ``n * L + p`` is the patch of
        example ``n`` under output position ``p`` (row-major over the output grid), padded as the
        convolution pads."""
        import torch.nn.functional as F

        x = self._batched(x)
        pad = [v for lo_hi in reversed(self.padding) for v in lo_hi]  # F.pad: last dimension first
        if any(pad) and self.padding_mode != "zeros":
            x = F.pad(x, pad, mode=self.padding_mode)
            pad = [0] * len(pad)
        if self.ndim == 1:
            x = x.unsqueeze(2)
            pad = [pad[0], pad[1], 0, 0]
            k, s, d = (1, *self.kernel_size), (1, *self.stride), (1, *self.dilation)
        else:
            k, s, d = self.kernel_size, self.stride, self.dilation
        if any(pad):
            x = F.pad(x, pad)  # zeros; F.unfold pads symmetrically only
        cols = F.unfold(x, k, dilation=d, stride=s)  # (N, C * K, L), channel-major
        n, ck, L = cols.shape
        g = self.groups
        return cols.view(n, g, ck // g, L).permute(1, 0, 3, 2).reshape(g, n * L, ck // g)

    def col2im(self, y: Any, n: int, output_size: Sequence[int]) -> Any:
        """``(N, out_channels, *output_size)`` from per-group MVM outputs ``y`` ``(groups, N * L, O_g)``."""
        g, rows, og = y.shape
        L = math.prod(output_size)
        if g != self.groups or og != self.out_channels // self.groups or rows != n * L:
            raise InputError(f"outputs of shape {tuple(y.shape)} do not fit {n} examples of output size {tuple(output_size)}")
        return y.view(g, n, L, og).permute(1, 0, 3, 2).reshape(n, self.out_channels, *output_size)

    def input_size(self, x: Any) -> tuple[int, ...]:
        """The spatial input size of ``x`` (batched or not), checked against the channels."""
        x = self._batched(x)
        return tuple(int(v) for v in x.shape[2:])

    def _batched(self, x: Any) -> Any:
        if x.ndim == self.ndim + 1:
            x = x.unsqueeze(0)
        if x.ndim != self.ndim + 2 or x.shape[1] != self.in_channels:
            raise InputError(
                f"input has shape {tuple(x.shape)}: expected (batch, {self.in_channels}, {'length' if self.ndim == 1 else 'height, width'})"
            )
        return x


def matrix_names(name: str, geometry: ConvGeometry) -> list[str]:
    """The crossbar matrix names of convolution ``name``: ``[name]`` for one group, else
    ``["name:g0", "name:g1", ...]`` (``:`` never appears in torch module names)."""
    return [name] if geometry.groups == 1 else [f"{name}:g{k}" for k in range(geometry.groups)]


def conv_geometries(model: Any) -> dict[str, ConvGeometry]:
    """``{module name: ConvGeometry}`` of every ``torch.nn.Conv1d`` / ``Conv2d`` of ``model`` (in
    ``named_modules`` order; crossbar-patched convolutions are still these classes)."""
    import torch

    return {n: ConvGeometry.from_module(m) for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d))}
