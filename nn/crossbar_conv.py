"""``CrossbarConv1d`` / ``CrossbarConv2d``: convolutions whose products run on simulated crossbars.

A convolution is mapped by im2col (:mod:`mapping.conv`, the one implementation of the
convention): each group's weight ``(O_g, C_g * K)`` is one crossbar matrix
(:class:`nn.crossbar_matrix.MatrixSlot` viewing the shared ``weight`` parameter), programmed
through the same engine, pipeline and :class:`nn.sim.SimConfig` as a ``CrossbarLinear`` (the
mapping plan, protections and fault-map-aware mapping apply per matrix), and every input patch
is one read of it (its own DAC step per patch with ``input_granularity="vector"``). The bias is
added digitally.

Built by :meth:`CrossbarConv2d.from_conv` (what :func:`nn.crossbar_linear.patch_model` calls),
sharing the original module's ``weight`` / ``bias`` parameters: parameter names, ``state_dict``
keys and checkpoints are unchanged. With ``simulated=False`` the forward is the original
``torch.nn.Conv*d`` forward, bit for bit. Matrix names: the module name for ``groups=1``,
``"<name>:g<k>"`` per group otherwise (:func:`mapping.conv.matrix_names`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mapping.conv import ConvGeometry, matrix_names
from nn.crossbar_matrix import MatrixSlot, crossbar_extra_repr, rebuild_module
from nn.sim import SimConfig

__all__ = ["CrossbarConv1d", "CrossbarConv2d", "GroupView"]

#: attributes a crossbar convolution adds to the plain module (dropped when unpatching)
_OWN = ("sim_cfg", "name", "simulated", "geometry", "matrices")


class GroupView:
    """``weight -> (O_g, C_g * K)`` matrix of group ``g`` (a view; picklable, unlike a lambda)."""

    def __init__(self, geometry: ConvGeometry, group: int) -> None:
        self.geometry, self.group = geometry, group

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return self.geometry.weight_matrices(weight)[self.group]


class _CrossbarConv:
    """What the 1-D and 2-D crossbar convolutions share (a mixin before ``nn.Conv*d``)."""

    sim_cfg: SimConfig
    name: str
    simulated: bool
    geometry: ConvGeometry
    matrices: list[MatrixSlot]
    _plain: type

    @classmethod
    def from_conv(cls, module: nn.Module, sim_cfg: SimConfig, name: str = "") -> Any:
        """A crossbar convolution sharing ``module``'s parameters (not copies)."""
        if type(module) is not cls._plain:
            raise ValueError(f"{name or 'module'} is a {type(module).__name__}, not an nn.{cls._plain.__name__}")
        geo = ConvGeometry.from_module(module)
        new = rebuild_module(module, cls)
        new.sim_cfg, new.name, new.simulated, new.geometry = sim_cfg, name, False, geo
        new.matrices = [MatrixSlot(mn, sim_cfg, new, "weight", GroupView(geo, g))
                        for g, mn in enumerate(matrix_names(name, geo))]
        return new

    def to_plain(self) -> nn.Module:
        """The plain ``torch.nn.Conv*d`` sharing this module's parameters."""
        return rebuild_module(self, self._plain, exclude=_OWN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.simulated and all(m.observer is None for m in self.matrices):
            return self._plain.forward(self, x)  # the original convolution, bit for bit
        geo = self.geometry
        unbatched = x.ndim == geo.ndim + 1
        size = geo.input_size(x)
        out_size = geo.output_size(size)
        cols = geo.im2col(x)  # (G, N * L, C_g K)
        if self.simulated:
            ys = [m.read(cols[g]) for g, m in enumerate(self.matrices)]
        else:  # digital through the matrices, for the observers (nn.sensitivity)
            ys = [m.digital(cols[g]) for g, m in enumerate(self.matrices)]
        n = 1 if unbatched else x.shape[0]
        y = geo.col2im(torch.stack(ys), n, out_size)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, *([1] * geo.ndim))
        return y.squeeze(0) if unbatched else y

    def extra_repr(self) -> str:
        return crossbar_extra_repr(self, self._plain.extra_repr(self))


class CrossbarConv1d(_CrossbarConv, nn.Conv1d):
    """An ``nn.Conv1d`` on simulated crossbars (module docstring)."""

    _plain = nn.Conv1d


class CrossbarConv2d(_CrossbarConv, nn.Conv2d):
    """An ``nn.Conv2d`` on simulated crossbars (module docstring)."""

    _plain = nn.Conv2d
