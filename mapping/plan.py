"""The mapping plan: which weight digit lives in which cell of which crossbar tile.

A :class:`MappingPlan` holds one :class:`LayerPlan` per weight matrix on crossbars (an
``nn.Linear`` weight, one group of a convolution in im2col form: :mod:`mapping.conv`, or one of
a recurrent layer's matrices). A layer plan records

* the tiles the layer occupies: a grid of ``R`` row blocks x ``C`` column blocks of
  ``tile_rows x tile_cols`` cells (``crossbar_count = R * C``);
* which word line of each row block carries which input (``row_in``), which bit line of each
  column block carries which output, slice and polarity (``col_out``, ``col_slice``,
  ``col_role``): together a :class:`crossbar.engine.TileLayout`, the structure the engine programs;
* the number format (:class:`crossbar.quant.QuantConfig` of the weights, and the binary points
  once known);
* the free (unused) rows and columns, and the copies placed in them.

Designed for fault protection (row/column pruning, duplication, MSB copies, Li et al. 2024,
arXiv 2401.11664): pruned inputs/outputs are simply not placed (:meth:`LayerPlan.build` with
``keep_in`` / ``keep_out`` packs the survivors), which frees rows/columns; copies go only into
free rows/columns of the tiles the layer already has (:meth:`LayerPlan.place_column_copy`,
:meth:`LayerPlan.place_row_copy`), and raise :class:`MappingError` rather than add a tile, so a
protected plan provably uses no more crossbars than the unprotected one
(:meth:`MappingPlan.crossbar_count`, :meth:`MappingPlan.check_no_extra_crossbars`).

Copies are programmed by the engine like any other cell; the default read ignores them (the
protection read that votes over copies is built on top).

Plans save to a self-describing HDF5 file (:meth:`MappingPlan.save`, through
:mod:`device.tables`) and print a summary (:meth:`MappingPlan.summary`).
"""

from __future__ import annotations

from device.errors import UserError

import dataclasses
import json
import os
from typing import Any, Iterable

import numpy as np

from crossbar.engine import FREE, NEG, POS, REF, CrossbarConfig, TileLayout, default_layout

__all__ = ["MappingError", "Copy", "LayerPlan", "MappingPlan", "PLAN_VERSION"]

PLAN_VERSION = 1


class MappingError(UserError):
    """A mapping request cannot be met (no free row/column left, unknown layer, bad index)."""


@dataclasses.dataclass(frozen=True)
class Copy:
    """One extra copy placed in free space.

    ``kind``: ``"col"`` (a bit line holding a copy of ``(out, slice, role)``) or ``"row"`` (a word
    line holding a copy of input ``source``'s weights). ``block`` / ``index``: where it sits.
    ``tag``: free text for the protection scheme (e.g. ``"msb"``).
    """

    kind: str
    block: int
    index: int
    source: tuple[int, ...]
    tag: str = ""


@dataclasses.dataclass
class LayerPlan:
    """The tiles of one weight matrix ``(out_features, in_features)`` and what each cell holds."""

    name: str
    out_features: int
    in_features: int
    cfg: CrossbarConfig
    layout: TileLayout
    copies: list[Copy] = dataclasses.field(default_factory=list)
    #: binary point(s) of the weights once quantized (None until recorded)
    frac_bits: list | int | None = None

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        name: str,
        out_features: int,
        in_features: int,
        cfg: CrossbarConfig,
        *,
        keep_in: Iterable[int] | np.ndarray | None = None,
        keep_out: Iterable[int] | np.ndarray | None = None,
    ) -> "LayerPlan":
        """Dense layout of the kept inputs/outputs (all by default), packed in order.

        Pruned inputs/outputs (not in ``keep_*``) take no row/column: their weights must be zero
        when the matrix is programmed (the engine checks).
        """
        ki = _keep(keep_in, in_features, "keep_in")
        ko = _keep(keep_out, out_features, "keep_out")
        base = default_layout(max(1, ko.size), max(1, ki.size), cfg)
        row_in = np.where(base.row_in >= 0, ki[np.maximum(base.row_in, 0)] if ki.size else -1, -1).astype(np.int32)
        col_out = np.where(base.col_out >= 0, ko[np.maximum(base.col_out, 0)] if ko.size else -1, -1).astype(np.int32)
        col_slice, col_role = base.col_slice.copy(), base.col_role.copy()
        if ko.size == 0:
            col_slice[col_role != REF] = -1
            col_role[col_role != REF] = FREE
        if ki.size == 0:
            row_in[:] = -1
        layout = dataclasses.replace(base, row_in=row_in, col_out=col_out, col_slice=col_slice, col_role=col_role)
        return cls(name=name, out_features=out_features, in_features=in_features, cfg=cfg, layout=layout)

    # ---- accounting ---------------------------------------------------------------------
    def crossbar_count(self) -> int:
        """Number of tiles (crossbars) this layer occupies."""
        return self.layout.n_tiles

    def free_rows(self) -> list[np.ndarray]:
        """Per row block, the indices of word lines that hold nothing."""
        return [np.flatnonzero(r < 0) for r in self.layout.row_in]

    def free_cols(self) -> list[np.ndarray]:
        """Per column block, the indices of bit lines that hold nothing."""
        return [np.flatnonzero(r == FREE) for r in self.layout.col_role]

    def used_cells(self) -> int:
        """Cells that hold a digit (weights, references, copies) on driven or copy rows."""
        lay = self.layout
        rows = (lay.row_in >= 0).sum(axis=1)  # (R,)
        cols = (lay.col_role != FREE).sum(axis=1)  # (C,)
        return int(rows.sum() * cols.sum())

    def total_cells(self) -> int:
        return self.crossbar_count() * self.layout.tile_rows * self.layout.tile_cols

    def utilization(self) -> float:
        return self.used_cells() / self.total_cells()

    def cells_per_weight(self) -> float:
        """Cells per stored weight, references and copies included."""
        lay = self.layout
        n_in = int(((lay.row_in >= 0) & ~lay.row_copy).sum())
        n_out = np.unique(lay.col_out[(lay.col_role == POS) & ~lay.col_copy]).size
        return self.used_cells() / max(1, n_in * n_out)

    # ---- protection: copies in free space -------------------------------------------------
    def _find_out_block(self, out: int) -> int:
        lay = self.layout
        hit = np.argwhere((lay.col_out == out) & ~lay.col_copy & (lay.col_role == POS))
        if hit.size == 0:
            raise MappingError(f"{self.name}: output {out} is not mapped (pruned or out of range)")
        return int(hit[0, 0])

    def place_column_copy(
        self, out: int, slice_: int, *, role: int = POS, block: int | None = None, tag: str = ""
    ) -> Copy:
        """Put a copy of the bit line ``(out, slice_, role)`` into a free column.

        Prefers the output's own column block, then any other column block of this layer (all
        column blocks share the same word lines). Raises :class:`MappingError` if no free column
        is left: a copy never adds a crossbar.
        """
        if not 0 <= slice_ < self.cfg.n_slices:
            raise MappingError(f"{self.name}: slice {slice_} outside 0..{self.cfg.n_slices - 1}")
        if role not in (POS, NEG) or (role == NEG and self.cfg.mapping != "differential"):
            raise MappingError(f"{self.name}: role {role} is not a weight column of {self.cfg.mapping} mapping")
        home = self._find_out_block(out)
        order = [home] + [c for c in range(self.layout.n_col_blocks) if c != home] if block is None else [block]
        for c in order:
            free = self.free_cols()[c]
            if free.size:
                j = int(free[0])
                self._set_col(c, j, out, slice_, role)
                cp = Copy("col", c, j, (out, slice_, role), tag)
                self.copies.append(cp)
                return cp
        raise MappingError(
            f"{self.name}: no free column left for a copy of output {out} slice {slice_} "
            f"({self.crossbar_count()} tiles are full; a copy may not add a crossbar)"
        )

    def _set_col(self, c: int, j: int, out: int, s: int, role: int) -> None:
        lay = self.layout
        lay.col_out[c, j], lay.col_slice[c, j], lay.col_role[c, j], lay.col_copy[c, j] = out, s, role, True
        if self.cfg.mapping == "offset":  # the copy needs its slice's reference column in this block
            if not np.any((lay.col_role[c] == REF) & (lay.col_slice[c] == s)):
                raise MappingError(f"{self.name}: column block {c} has no reference column for slice {s}")

    def place_row_copy(self, source_in: int, *, block: int | None = None, tag: str = "") -> Copy:
        """Put a copy of input ``source_in``'s word line (its weights in every column block) into
        a free row; raises :class:`MappingError` if none is left."""
        lay = self.layout
        if not np.any((lay.row_in == source_in) & ~lay.row_copy):
            raise MappingError(f"{self.name}: input {source_in} is not mapped (pruned or out of range)")
        order = range(lay.n_row_blocks) if block is None else [block]
        for r in order:
            free = self.free_rows()[r]
            if free.size:
                i = int(free[0])
                lay.row_in[r, i], lay.row_copy[r, i] = source_in, True
                cp = Copy("row", r, i, (source_in,), tag)
                self.copies.append(cp)
                return cp
        raise MappingError(f"{self.name}: no free row left for a copy of input {source_in}")

    def record_format(self, frac_bits: Any) -> None:
        """Record the binary point(s) chosen when the weights were quantized."""
        fb = np.asarray(frac_bits)
        self.frac_bits = int(fb) if fb.ndim == 0 else fb.tolist()

    def summary_line(self) -> str:
        lay = self.layout
        fr = sum(f.size for f in self.free_rows())
        fc = sum(f.size for f in self.free_cols())
        return (
            f"{self.name:<40} {self.out_features:>5}x{self.in_features:<5} tiles {self.crossbar_count():>5} "
            f"({lay.n_row_blocks}x{lay.n_col_blocks})  util {self.utilization():6.1%}  "
            f"cells/weight {self.cells_per_weight():5.2f}  free rows {fr} cols {fc}  copies {len(self.copies)}"
        )


def _keep(keep: Any, n: int, name: str) -> np.ndarray:
    if keep is None:
        return np.arange(n)
    k = np.asarray(keep)
    if k.dtype == bool:
        if k.shape != (n,):
            raise MappingError(f"{name} mask has shape {k.shape}, expected ({n},)")
        return np.flatnonzero(k)
    k = np.unique(k.astype(np.int64))
    if k.size and (k[0] < 0 or k[-1] >= n):
        raise MappingError(f"{name} has an index outside 0..{n - 1}")
    return k


@dataclasses.dataclass
class MappingPlan:
    """The mapping of every Linear weight of a model; see the module docstring."""

    cfg: CrossbarConfig
    layers: dict[str, LayerPlan] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, int]], cfg: CrossbarConfig) -> "MappingPlan":
        """``{name: (out_features, in_features)}`` -> dense plans."""
        return cls(cfg, {n: LayerPlan.build(n, o, i, cfg) for n, (o, i) in shapes.items()})

    @classmethod
    def from_module(cls, model: Any, cfg: CrossbarConfig, *, include: Iterable[str] | None = None) -> "MappingPlan":
        """Dense plans for every ``torch.nn.Linear`` of ``model`` (names from ``named_modules``)
        and every ``Conv1d`` / ``Conv2d`` (one matrix per group, im2col: :mod:`mapping.conv`), or
        only those whose name contains one of ``include``."""
        import torch

        from mapping.conv import ConvGeometry, matrix_names

        inc = tuple(include) if include is not None else None
        shapes: dict[str, tuple[int, int]] = {}
        for n, m in model.named_modules():
            if inc is not None and not any(s in n for s in inc):
                continue
            if isinstance(m, torch.nn.Linear):
                shapes[n] = tuple(m.weight.shape)
            elif isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
                geo = ConvGeometry.from_module(m)
                shapes.update(dict.fromkeys(matrix_names(n, geo), geo.matrix_shape))
        return cls.from_shapes(shapes, cfg)

    def __getitem__(self, name: str) -> LayerPlan:
        if name not in self.layers:
            raise MappingError(f"no layer {name!r} in the plan; known: {', '.join(self.layers) or '(none)'}")
        return self.layers[name]

    def crossbar_count(self) -> int:
        """Tiles used by all layers."""
        return sum(lp.crossbar_count() for lp in self.layers.values())

    def check_no_extra_crossbars(self, baseline: "MappingPlan") -> None:
        """Raise :class:`MappingError` unless every layer uses no more tiles than in ``baseline``."""
        for n, lp in self.layers.items():
            b = baseline[n].crossbar_count()
            if lp.crossbar_count() > b:
                raise MappingError(f"{n}: {lp.crossbar_count()} tiles, more than the baseline's {b}")

    def summary(self) -> str:
        """One line per layer plus totals: tiles, utilization, cells per weight, free space."""
        cfg = self.cfg
        used = sum(lp.used_cells() for lp in self.layers.values())
        total = sum(lp.total_cells() for lp in self.layers.values())
        lines = [
            f"MappingPlan: {len(self.layers)} layers on {self.crossbar_count()} tiles of {cfg.tile_rows}x{cfg.tile_cols}; "
            f"{cfg.weight_bits}-bit {cfg.weight_format} weights, {cfg.mapping}, {cfg.bits_per_cell} bit(s)/cell, "
            f"{cfg.n_slices} slice(s)",
        ]
        lines += ["  " + lp.summary_line() for lp in self.layers.values()]
        lines.append(f"  total: {self.crossbar_count()} tiles, utilization {used / max(1, total):.1%}, "
                     f"{sum(len(lp.copies) for lp in self.layers.values())} copies")
        return "\n".join(lines)

    # ---- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the plan as a self-describing HDF5 bundle (via :mod:`device.tables`)."""
        from device import tables

        arrays: dict[str, tables.Array] = {}
        meta = []
        for k, (name, lp) in enumerate(self.layers.items()):
            g = f"layer{k:04d}"
            lay = lp.layout
            dims_r, dims_c = ("row_block", "tile_row"), ("col_block", "tile_col")
            arrays[f"{g}/row_in"] = tables.Array(lay.row_in.astype(np.int32), "index", dims_r, "input on each word line, -1 free")
            arrays[f"{g}/row_copy"] = tables.Array(lay.row_copy.astype(np.int8), "1", dims_r, "1 = word line holds a copy")
            arrays[f"{g}/col_out"] = tables.Array(lay.col_out.astype(np.int32), "index", dims_c, "output on each bit line, -1 free/reference")
            arrays[f"{g}/col_slice"] = tables.Array(lay.col_slice.astype(np.int8), "index", dims_c, "weight slice, 0 = LSB, -1 free")
            arrays[f"{g}/col_role"] = tables.Array(lay.col_role.astype(np.int8), "index", dims_c, "0 free, 1 G+, 2 G-, 3 reference")
            arrays[f"{g}/col_copy"] = tables.Array(lay.col_copy.astype(np.int8), "1", dims_c, "1 = bit line holds a copy")
            meta.append({
                "group": g, "name": name, "out_features": lp.out_features, "in_features": lp.in_features,
                "frac_bits": lp.frac_bits, "copies": [dataclasses.asdict(c) for c in lp.copies],
            })
        tables.write_table(
            path, kind="bundle", arrays=arrays, config={"crossbar": self.cfg.to_dict()},
            attrs={"plan_version": PLAN_VERSION, "plan_json": json.dumps(meta)},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MappingPlan":
        """Read a plan written by :meth:`save` (validated; a foreign file raises ``TableError``)."""
        from device import tables

        t = tables.read_table(path)
        if "plan_version" not in t.attrs or "plan_json" not in t.attrs:
            raise tables.TableError(f"{path}: not a mapping plan (no plan_version / plan_json attribute)")
        if int(t.attrs["plan_version"]) != PLAN_VERSION:
            raise tables.TableError(f"{path}: mapping plan version {t.attrs['plan_version']} is not {PLAN_VERSION}")
        cfg = CrossbarConfig.from_dict(t.config["crossbar"])
        plan = cls(cfg)
        for m in json.loads(t.attrs["plan_json"]):
            g = m["group"]
            layout = TileLayout(
                tile_rows=cfg.tile_rows, tile_cols=cfg.tile_cols,
                row_in=t[f"{g}/row_in"].astype(np.int32), col_out=t[f"{g}/col_out"].astype(np.int32),
                col_slice=t[f"{g}/col_slice"].astype(np.int8), col_role=t[f"{g}/col_role"].astype(np.int8),
                row_copy=t[f"{g}/row_copy"].astype(bool), col_copy=t[f"{g}/col_copy"].astype(bool),
            )
            copies = [Copy(c["kind"], c["block"], c["index"], tuple(c["source"]), c["tag"]) for c in m["copies"]]
            plan.layers[m["name"]] = LayerPlan(
                name=m["name"], out_features=m["out_features"], in_features=m["in_features"], cfg=cfg,
                layout=layout, copies=copies, frac_bits=m["frac_bits"],
            )
        return plan
