"""Zero-space-cost fault protection of crossbar-mapped weights (Li et al. 2024, arXiv 2401.11664).

Three methods, each switched on in one :class:`ProtectionConfig` and freely combined:

1. **Pruning** (``prune``): learned row/column masks (:mod:`nn.pruning`) drop whole inputs
   (word lines) and outputs (bit lines). :func:`build_protection` packs the survivors
   (:meth:`mapping.plan.LayerPlan.build` with ``keep_in`` / ``keep_out``) *inside the unprotected
   layer's tile budget*: the packed layer keeps the unprotected layer's ``C`` column blocks
   (``regrid=False``, the default) on the row blocks the kept inputs need (``R' <= R``), so every
   column the pruned outputs held is free, in whole tiles where possible. With ``regrid=True``
   row blocks freed by input pruning are traded for column blocks (``C' = floor(R C / R')``), so
   freed rows become column budget too. Either way ``R' C' <= R C``: no crossbar is added.
2. **Duplication and voting** (``duplicate``): the ``duplicate_slices`` most-significant slices
   of the most fault-critical outputs get ``n_copies`` extra copies (a copy of a slice of a
   differential weight is its G+/G- column *pair*, placed in one column block so the pair can be
   subtracted in the analog domain as usual). Outputs are ranked by ``criterion`` (below) and
   copied best first into free columns until the free space is used (``dup_fraction=None``) or
   for the requested fraction of outputs (an error says what fits when it does not).
3. **Embedded MSB copies** (``msb_embed``): the ``msb_copies`` least-significant slices of every
   weight hold copies of the most-significant slice instead of low-order bits; see the bit layout
   below and ``docs/protection.md`` / ``docs/msb_layout.png``.

Where voting happens (what a crossbar can physically do)
    A crossbar gives column currents, sums over the word lines of one tile, never single cells.
    So voting acts on the **per-tile, per-column ADC outputs**: for row block ``r``, the ADC
    output ``P_k[r]`` of a protected column (pair) and of each of its replicas ``k``; they vote
    ``P[r] = vote_k(P_k[r])`` and only then enter the digital shift-and-add over slices and the
    accumulation over row blocks: ``y_o = sum_r fac[r, o] sum_s 2^(s b) P[r, s, o]``. With a
    bit-serial DAC each column's cycles are shift-added first (in the column's own digital
    accumulator), then voted. Voting needs per-column conversions: ``adc_scope="column"`` or an
    ideal ADC (``adc_bits=None``); ``adc_scope="tile"`` (one conversion of the shift-added
    partial sum of all slices) is refused.

Vote rules (``vote``, over ``n`` replicas of one column in one row block; ``tol = vote_tol``)
    ``median``          middle value (needs ``n = 3``: ``n_copies=2``); corrects any single fault.
    ``mean``            average (halves a single fault's error with two replicas).
    ``reject_outlier``  ``n >= 3``: drop the replica farthest from the median, average the rest;
                        ``n = 2``: if ``|P_0 - P_1| <= tol`` the mean, else the one of smaller
                        magnitude (the fault-physics rule of ``min_abs`` below).
    ``fault_aware``     **needs the chip's fault map from a post-fabrication test**: per row
                        block, the replica with the fewest faulty cells on driven rows (ties: the
                        original) is read; the others are ignored. Not blind: a different
                        assumption from the paper's voting (the default, ``median``).

MSB bit layout (``msb_embed``), 8-bit weights, 2-bit cells, differential pair (7 magnitude bits
``m6..m0``, slices (2, 2, 2, 1) bits LSB first)::

    slice (cell)        s3 (MSB)   s2        s1        s0
    unprotected         m6         m5 m4     m3 m2     m1 m0
    msb_embed, 1 copy   m6         m5 m4     m3 m2     0  m6      weight keeps m6..m2 (6-bit code)
    msb_embed, 2 copies m6         m5 m4     0  m6     0  m6      weight keeps m6..m4 (4-bit code)

The weight codes are re-quantized so the dropped bits are zero (magnitude rounded half up to a
multiple of ``2^b``, ``b`` = bits of the sacrificed slices, clamped to the largest such value):
that is the precision cost. The copy digit is written into the sacrificed slice's cell (at the
cell's low levels). Decode (``msb_decode``), per row block, on the MSB column's ADC output and its
embedded copies' ADC outputs (each copy column carries the MSB digit, so all are in the same
units): ``median`` of three (2 copies), or with one copy ``min_abs``: if the two agree within
``vote_tol`` their mean, else the one of **smaller magnitude**. Why: most weights are small, so
almost every MSB digit is 0 (HRS) and the fault-free MSB partial sum is 0 or small, while a stuck
SA1 cell reads the top level (3) and adds ``3 |x_i|`` to the magnitude; a disagreement is almost
always an SA1 in one of the two, and the smaller value is the fault-free one. (It picks wrong
when an SA0 erases a stored MSB ``1``, or when an SA1's added current happens to cancel a large
true partial sum: both rare; the tests measure the net gain.) ``auto`` = ``median`` with two
copies, ``min_abs`` with one. The sacrificed slices' ADC outputs are not added as data.

When duplication and MSB embedding are both on, the MSB slice is already protected by its
embedded copies, so the freed columns go to the next slices down: ``duplicate_slices`` counts
the data slices *below* the MSB (with 8-bit weights on 2-bit cells and one embedded copy:
``duplicate_slices=1`` duplicates slice 2, the bits ``m5 m4``).

Criterion (``criterion``), a score per output ``o`` from its weight row ``w_o`` (``(in,)``):
``magnitude`` = ``sum_i |w_oi|``; ``column_l2`` = ``||w_o||_2``; ``magnitude_x_sensitivity`` =
``sum_i |w_oi| s_oi`` with a user-supplied sensitivity ``s`` (``(out, in)`` e.g. ``|dL/dw|`` or a
Fisher diagonal, or ``(out,)`` per output), the first-order Taylor estimate of how much the loss
depends on the output. (A stuck SA1 corrupts an output whatever its weights, so the criterion
ranks how much an output *matters*; with only shapes and no weights, outputs tie and go in index
order.)

Zero space, proven
    :meth:`ProtectionPlan.check` asserts ``protected tiles <= unprotected tiles`` per layer
    (:meth:`mapping.plan.MappingPlan.check_no_extra_crossbars`) and every copy is placed in a free
    column of the layer's own tiles; :meth:`ProtectionPlan.summary` reports it per layer.

The read: :func:`protect_matrix` turns a :class:`crossbar.engine.ProgrammedMatrix` (programmed
with the plan's layout) into a :class:`ProtectedMatrix`: it re-draws the same chip from the
stored seed (the same variation and fault map; MSB-embedded codes where asked), folds the
*unvoted* columns into the engine's usual readout and the voted columns and all their replicas
into one ``(R, tile_rows, N)`` readout, so a read is the engine's read plus one batched matmul
over row blocks, a vote over a replica axis and an ``index_add`` (no loop over tiles).
:class:`ProtectedRead` is the ``read_fn`` for :func:`nn.crossbar_linear.set_read_fn`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
import torch

from crossbar.engine import FREE, NEG, POS, CrossbarConfig, ProgrammedMatrix, TileLayout, with_folded
from crossbar.pipeline import fold, level_step_s
from crossbar.read import CHUNK_ELEMS, ROW_ALIGN, adc_convert, add_read_noise, dac_cycles, pad_rows
from crossbar.readkeys import ReadKeys
from device.config import Config, ConfigError, check_choice, check_int_range, check_range, config
from mapping.plan import Copy, LayerPlan, MappingError, MappingPlan

__all__ = [
    "ProtectionConfig",
    "ProtectionError",
    "LayerReport",
    "ProtectionPlan",
    "build_protection",
    "protected_plan",
    "output_scores",
    "embed_msb",
    "ProtectedMatrix",
    "protect_matrix",
    "ProtectedRead",
    "vote",
]

VOTES = ("median", "mean", "reject_outlier", "fault_aware")
MSB_DECODES = ("auto", "median", "mean", "min_abs", "fault_aware")
CRITERIA = ("magnitude", "magnitude_x_sensitivity", "column_l2")


class ProtectionError(ConfigError):
    """A protection request that cannot be met (does not fit, conflicts, needs another chip setup)."""


@config
class ProtectionConfig(Config):
    """Which zero-space protections are on and how they are set (see the module docstring)."""

    #: pack the kept rows/columns of the learned row/column masks (nn.pruning), freeing tile lines
    prune: bool = False
    #: duplicate the most-significant slice(s) of the most critical outputs into free columns
    duplicate: bool = False
    #: extra copies per duplicated column pair: 1 (vote of 2) or 2 (vote of 3, median)
    n_copies: int = 2
    #: vote among a column and its copies: "median" | "mean" | "reject_outlier" | "fault_aware"
    vote: Literal["median", "mean", "reject_outlier", "fault_aware"] = "median"
    #: how many most-significant slices of an output are duplicated (1 = the MSB slice)
    duplicate_slices: int = 1
    #: fraction of each layer's kept outputs to duplicate; None = as many as fit, best first
    dup_fraction: float | None = None
    #: output ranking: "magnitude" (L1 of the row) | "magnitude_x_sensitivity" | "column_l2"
    criterion: Literal["magnitude", "magnitude_x_sensitivity", "column_l2"] = "magnitude"
    #: embed copies of the MSB slice into the lowest slice(s) of every weight (precision cost)
    msb_embed: bool = False
    #: embedded MSB copies: 1 (slice 0) or 2 (slices 0 and 1)
    msb_copies: int = 1
    #: decode of the MSB and its embedded copies: "auto" | "median" | "mean" | "min_abs" | "fault_aware"
    msb_decode: Literal["auto", "median", "mean", "min_abs", "fault_aware"] = "auto"
    #: replicas within this many ADC steps (ideal ADC: level steps x input LSB) agree; raise it
    #: with programming variation / read noise (copies then differ by more than a fault-free LSB)
    vote_tol: float = 0.5
    #: trade row blocks freed by input pruning for extra column blocks (R' C' <= R C still)
    regrid: bool = False

    def __post_init__(self) -> None:
        for name in ("prune", "duplicate", "msb_embed", "regrid"):
            if not isinstance(getattr(self, name), bool):
                raise ProtectionError(f"{name}={getattr(self, name)!r} is invalid: must be true or false")
        check_int_range("n_copies", self.n_copies, 1, 2)
        check_choice("vote", self.vote, VOTES)
        check_int_range("duplicate_slices", self.duplicate_slices, 1, 16)
        if self.dup_fraction is not None:
            check_range("dup_fraction", self.dup_fraction, 0.0, 1.0, lo_open=True)
        check_choice("criterion", self.criterion, CRITERIA)
        check_int_range("msb_copies", self.msb_copies, 1, 2)
        check_choice("msb_decode", self.msb_decode, MSB_DECODES)
        check_range("vote_tol", self.vote_tol, 0.0, None)
        if self.duplicate and self.vote == "median" and self.n_copies == 1 and not self.msb_embed:
            raise ProtectionError(
                "vote='median' needs three values (n_copies=2); with n_copies=1 (two values) use "
                "vote='mean', 'reject_outlier' or 'fault_aware'"
            )
        if self.msb_embed and self.msb_decode == "median" and self.msb_copies == 1:
            raise ProtectionError(
                "msb_decode='median' needs three values (msb_copies=2); with msb_copies=1 use 'min_abs' "
                "(the default 'auto'), 'mean' or 'fault_aware'"
            )

    @property
    def any(self) -> bool:
        """True when some protection is on."""
        return self.prune or self.duplicate or self.msb_embed

    @property
    def voting(self) -> bool:
        """True when reads vote over replicas (duplication or MSB embedding)."""
        return self.duplicate or self.msb_embed

    def decode_rule(self) -> str:
        """The MSB decode rule with ``auto`` resolved."""
        if self.msb_decode != "auto":
            return self.msb_decode
        return "median" if self.msb_copies == 2 else "min_abs"

    def data_slices(self, cfg: CrossbarConfig) -> list[int]:
        """Slices that hold weight bits (the sacrificed ones hold MSB copies), LSB first."""
        lo = self.msb_copies if self.msb_embed else 0
        return list(range(lo, cfg.n_slices))

    def dup_slices(self, cfg: CrossbarConfig) -> list[int]:
        """The slices duplicated into free columns, most significant first (below the MSB slice
        when msb_embed protects it already)."""
        cand = self.data_slices(cfg)[::-1]
        if self.msb_embed:
            cand = cand[1:]
        return cand[: self.duplicate_slices]

    def check_against(self, cfg: CrossbarConfig) -> None:
        """Raise :class:`ProtectionError` unless this protection fits the crossbar configuration."""
        if not isinstance(cfg, CrossbarConfig):
            raise ValueError(f"expected a CrossbarConfig, got {type(cfg).__name__}")
        if not self.voting:
            return
        if cfg.mapping != "differential":
            raise ProtectionError(
                f"duplication / MSB embedding are implemented for mapping='differential' (the paper's), not "
                f"{cfg.mapping!r}; use crossbar.mapping=differential or protection.prune only"
            )
        if cfg.adc_bits is not None and cfg.adc_scope != "column":
            raise ProtectionError(
                "voting needs one ADC conversion per column (adc_scope='column' or an ideal ADC); "
                f"adc_scope={cfg.adc_scope!r} converts the shift-added sum of all slices, so copies cannot vote"
            )
        S = cfg.n_slices
        if self.msb_embed:
            if S - self.msb_copies < 1:
                raise ProtectionError(
                    f"msb_embed with msb_copies={self.msb_copies} needs {self.msb_copies + 1} slices but "
                    f"{cfg.weight_bits}-bit weights on {cfg.bits_per_cell}-bit cells have {S} slice(s) "
                    f"{list(cfg.slice_bits)}: no lower slice to sacrifice; what fits: "
                    + ("msb_copies <= " + str(S - 1) if S > 1 else "none (use more slices: fewer bits_per_cell)")
                )
            top = cfg.slice_bits[-1]
            for k in range(self.msb_copies):
                if cfg.slice_bits[k] < top:
                    raise ProtectionError(
                        f"slice {k} has {cfg.slice_bits[k]} bit(s), fewer than the MSB slice's {top}: it cannot hold an MSB copy"
                    )
        if self.duplicate:
            n_data = len(self.data_slices(cfg)) - (1 if self.msb_embed else 0)
            if self.duplicate_slices > n_data:
                what = (
                    f" below the MSB slice (of the {S} slices, {self.msb_copies} hold embedded MSB copies and the "
                    "MSB slice is protected by them)" if self.msb_embed else ""
                )
                raise ProtectionError(
                    f"duplicate_slices={self.duplicate_slices} but only {n_data} slice(s) hold weight bits{what}; "
                    + (f"what fits: duplicate_slices <= {n_data}" if n_data else
                       "nothing is left to duplicate: switch duplicate off or use msb_copies=1")
                )

    def weight_bits_kept(self, cfg: CrossbarConfig) -> int:
        """Bits of the signed weight code that still carry the weight (sign included)."""
        lost = sum(cfg.slice_bits[: self.msb_copies]) if self.msb_embed else 0
        return cfg.weight_bits - lost


# --------------------------------------------------------------------------------------------
# criterion


def output_scores(w: torch.Tensor | None, criterion: str, sensitivity: Any = None, n_out: int | None = None) -> np.ndarray:
    """Fault-criticality score per output, ``(out,)`` float64 (see the module docstring).

    ``w``: ``(out, in)`` weights, or None (all scores 0: index order). ``sensitivity``:
    ``(out, in)`` or ``(out,)`` non-negative, needed by ``magnitude_x_sensitivity``.
    """
    check_choice("criterion", criterion, CRITERIA)
    if w is None:
        if n_out is None:
            raise ValueError("output_scores needs the weights or n_out")
        return np.zeros(n_out)
    a = w.detach().to(torch.float64).abs().cpu()
    if criterion == "magnitude":
        return a.sum(1).numpy()
    if criterion == "column_l2":
        return a.pow(2).sum(1).sqrt().numpy()
    if sensitivity is None:
        raise ProtectionError(
            "criterion='magnitude_x_sensitivity' needs a sensitivity per layer (e.g. |grad| or a Fisher "
            "diagonal, (out, in) or (out,)); pass sensitivity={name: tensor} or use criterion='magnitude'"
        )
    s = torch.as_tensor(sensitivity).detach().to(torch.float64).cpu()
    if s.shape == a.shape:
        return (a * s.abs()).sum(1).numpy()
    if s.shape == a.shape[:1]:
        return (a.sum(1) * s.abs()).numpy()
    raise ProtectionError(f"sensitivity has shape {tuple(s.shape)}; expected {tuple(a.shape)} or ({a.shape[0]},)")


# --------------------------------------------------------------------------------------------
# plan building


@dataclasses.dataclass
class LayerReport:
    """What protection did to one layer (one row of :meth:`ProtectionPlan.summary`)."""

    name: str
    shape: tuple[int, int]
    tiles_unprotected: int
    tiles_protected: int
    grid_unprotected: tuple[int, int]
    grid_protected: tuple[int, int]
    kept_in: int
    kept_out: int
    #: free word lines / bit lines of the protected grid after packing (the copies' budget)
    freed_rows: int
    freed_cols: int
    #: free word lines / bit lines left after the copies are placed
    free_rows: int
    free_cols: int
    #: column pairs (copies of one slice of one output) requested / placed
    copies_requested: int
    copies_placed: int
    outputs_duplicated: int
    weight_bits: int

    @property
    def copies_not_fitted(self) -> int:
        return self.copies_requested - self.copies_placed

    def line(self) -> str:
        o, i = self.shape
        return (
            f"{self.name:<44} {o:>5}x{i:<5} tiles {self.tiles_unprotected:>5} -> {self.tiles_protected:<5} "
            f"({self.grid_unprotected[0]}x{self.grid_unprotected[1]} -> {self.grid_protected[0]}x{self.grid_protected[1]})  "
            f"kept {self.kept_out}x{self.kept_in}  freed rows {self.freed_rows} cols {self.freed_cols} "
            f"(left {self.free_rows}/{self.free_cols})  copies placed {self.copies_placed} of {self.copies_requested} "
            f"({self.copies_not_fitted} not fitted; {self.outputs_duplicated} outputs)  w-bits {self.weight_bits}"
        )


@dataclasses.dataclass
class ProtectionPlan:
    """A protected mapping plan with its unprotected baseline and per-layer report."""

    prot: ProtectionConfig
    plan: MappingPlan
    baseline: MappingPlan
    reports: dict[str, LayerReport]

    def check(self) -> None:
        """Raise :class:`mapping.plan.MappingError` unless no layer uses more tiles than unprotected."""
        self.plan.check_no_extra_crossbars(self.baseline)

    def crossbar_counts(self) -> dict[str, tuple[int, int]]:
        """``{layer: (unprotected tiles, protected tiles)}``."""
        return {n: (self.baseline[n].crossbar_count(), lp.crossbar_count()) for n, lp in self.plan.layers.items()}

    def summary(self) -> str:
        cfg = self.plan.cfg
        p = self.prot
        on = [k for k in ("prune", "duplicate", "msb_embed") if getattr(p, k)] or ["none"]
        lines = [
            f"ProtectionPlan ({'+'.join(on)}): {len(self.reports)} layers, tiles {self.baseline.crossbar_count()} "
            f"unprotected -> {self.plan.crossbar_count()} protected ({cfg.tile_rows}x{cfg.tile_cols} tiles)"
        ]
        lines += ["  " + r.line() for r in self.reports.values()]
        req = sum(r.copies_requested for r in self.reports.values())
        got = sum(r.copies_placed for r in self.reports.values())
        extra = sum(max(0, p - b) for b, p in self.crossbar_counts().values())
        lines.append(f"  total: {got} of {req} requested copies placed, {req - got} not fitted; "
                     + ("no extra crossbars" if extra == 0 else f"{extra} EXTRA crossbars"))
        return "\n".join(lines)


def _extend_cols(layout: TileLayout, n_blocks: int) -> TileLayout:
    """``layout`` with free column blocks appended up to ``n_blocks``."""
    C = layout.n_col_blocks
    if n_blocks <= C:
        return layout
    add = n_blocks - C
    tc = layout.tile_cols

    def pad(a: np.ndarray, v) -> np.ndarray:
        return np.concatenate([a, np.full((add, tc), v, dtype=a.dtype)], axis=0)

    return dataclasses.replace(
        layout, col_out=pad(layout.col_out, -1), col_slice=pad(layout.col_slice, -1),
        col_role=pad(layout.col_role, FREE), col_copy=pad(layout.col_copy, False),
    )


def _shapes_and_weights(model_or_shapes: Any) -> tuple[dict[str, tuple[int, int]], dict[str, torch.Tensor]]:
    if isinstance(model_or_shapes, dict):
        shapes = {}
        for n, s in model_or_shapes.items():
            if isinstance(s, torch.Tensor):
                raise ValueError("pass shapes {name: (out, in)} or a model; give weights with weights={name: tensor}")
            o, i = (int(v) for v in s)
            shapes[n] = (o, i)
        return shapes, {}
    if not hasattr(model_or_shapes, "named_modules"):
        raise ValueError(f"expected a model or {{name: (out, in)}}, got {type(model_or_shapes).__name__}")
    # a patched model's crossbar matrices (nn layer, by duck type: each crossbar module lists its
    # matrices, a CrossbarLinear itself), else every plain nn.Linear
    patched = [(mat.name, mat) for _, m in model_or_shapes.named_modules() for mat in (getattr(m, "matrices", None) or ())]
    mods = patched or [(n, m) for n, m in model_or_shapes.named_modules() if isinstance(m, torch.nn.Linear)]
    if not mods:
        raise ValueError("the model has no nn.Linear modules")
    return {n: tuple(m.weight.shape) for n, m in mods}, {n: m.weight for n, m in mods}


def _crossbar_cfg(sim_cfg: Any) -> CrossbarConfig:
    if isinstance(sim_cfg, CrossbarConfig):
        return sim_cfg
    cb = getattr(sim_cfg, "crossbar", None)
    if isinstance(cb, CrossbarConfig):
        return cb
    raise ValueError(f"expected a SimConfig or CrossbarConfig, got {type(sim_cfg).__name__}")


def build_protection(
    model_or_shapes: Any,
    sim_cfg: Any,
    masks: dict[str, Any] | None,
    prot: ProtectionConfig,
    *,
    weights: dict[str, torch.Tensor] | None = None,
    sensitivity: dict[str, Any] | None = None,
) -> ProtectionPlan:
    """The protected mapping plan of every layer, its unprotected baseline and the report.

    ``model_or_shapes``: a model (its patched crossbar matrices: ``CrossbarLinear`` modules,
    convolution groups, RNN matrices; else every ``nn.Linear``) or ``{name: (out, in)}``. ``sim_cfg``: a ``SimConfig`` or ``CrossbarConfig``.
    ``masks``: ``{name: RowColMask}`` (:func:`nn.pruning.load_masks`; anything with boolean
    ``rows`` ``(in,)`` / ``cols`` ``(out,)``), required when ``prot.prune``; layers without a mask
    are kept whole. ``weights`` / ``sensitivity``: ``{name: tensor}`` for the criterion (taken
    from the model when one is given).
    """
    if not isinstance(prot, ProtectionConfig):
        raise ValueError(f"prot must be a ProtectionConfig, got {type(prot).__name__}")
    cfg = _crossbar_cfg(sim_cfg)
    prot.check_against(cfg)
    shapes, w_model = _shapes_and_weights(model_or_shapes)
    weights = {**w_model, **(weights or {})}
    masks = dict(masks or {})
    if prot.prune:
        if not masks:
            raise ProtectionError("prune=True needs row/column masks (nn.pruning.load_masks); none were given")
        unknown = sorted(set(masks) - set(shapes))
        if unknown:
            raise ProtectionError(
                f"masks name layers that are not mapped: {', '.join(unknown[:4])}"
                + (" ..." if len(unknown) > 4 else "") + f"; mapped layers: {', '.join(list(shapes)[:4])} ..."
            )
    baseline = MappingPlan.from_shapes(shapes, cfg)
    plan = MappingPlan(cfg)
    reports: dict[str, LayerReport] = {}
    for name, (o, i) in shapes.items():
        base = baseline[name]
        R, C = base.layout.n_row_blocks, base.layout.n_col_blocks
        keep_in = keep_out = None
        if prot.prune and name in masks:
            m = masks[name]
            keep_in = np.asarray(torch.as_tensor(m.rows).bool().cpu())
            keep_out = np.asarray(torch.as_tensor(m.cols).bool().cpu())
            if keep_in.shape != (i,) or keep_out.shape != (o,):
                raise ProtectionError(
                    f"{name}: mask rows/cols have shapes {keep_in.shape}/{keep_out.shape}, the layer is {o}x{i} "
                    f"(rows over in_features={i}, cols over out_features={o})"
                )
        lp = LayerPlan.build(name, o, i, cfg, keep_in=keep_in, keep_out=keep_out)
        R2, C2 = lp.layout.n_row_blocks, lp.layout.n_col_blocks
        if R2 > R or C2 > C:  # cannot happen for a subset of rows/cols; guard the invariant
            raise MappingError(f"{name}: packed grid {R2}x{C2} exceeds the unprotected {R}x{C}")
        C_t = (R * C) // R2 if prot.regrid else C
        lp.layout = _extend_cols(lp.layout, C_t)
        kept_out = int(np.unique(lp.layout.col_out[(lp.layout.col_role == POS) & ~lp.layout.col_copy]).size)
        freed_r = sum(f.size for f in lp.free_rows())
        freed_c = sum(f.size for f in lp.free_cols())
        requested = placed = n_dup = 0
        if prot.duplicate and kept_out:
            requested, placed, n_dup = _place_duplicates(
                lp, prot, output_scores(weights.get(name), prot.criterion, (sensitivity or {}).get(name), o), kept_out
            )
        fr = sum(f.size for f in lp.free_rows())
        fc = sum(f.size for f in lp.free_cols())
        plan.layers[name] = lp
        reports[name] = LayerReport(
            name=name, shape=(o, i), tiles_unprotected=base.crossbar_count(), tiles_protected=lp.crossbar_count(),
            grid_unprotected=(R, C), grid_protected=(lp.layout.n_row_blocks, lp.layout.n_col_blocks),
            kept_in=int(((lp.layout.row_in >= 0) & ~lp.layout.row_copy).sum()), kept_out=kept_out,
            freed_rows=freed_r, freed_cols=freed_c, free_rows=fr, free_cols=fc, copies_requested=requested, copies_placed=placed, outputs_duplicated=n_dup,
            weight_bits=prot.weight_bits_kept(cfg),
        )
    pp = ProtectionPlan(prot=prot, plan=plan, baseline=baseline, reports=reports)
    pp.check()
    if prot.duplicate and prot.dup_fraction is None and reports and not any(r.copies_placed for r in reports.values()):
        raise ProtectionError(
            "duplicate=True but no layer has a free column pair for a copy (the outputs fill every tile); "
            "switch prune on (freed columns are the copies' space) or use msb_embed, which needs no free space"
        )
    return pp


def _place_duplicates(lp: LayerPlan, prot: ProtectionConfig, scores: np.ndarray, kept_out: int) -> tuple[int, int, int]:
    """Place copies (G+/G- pairs in one column block) of the top slices of the best outputs."""
    cfg, lay = lp.cfg, lp.layout
    slices = prot.dup_slices(cfg)
    per_out = len(slices) * prot.n_copies  # column pairs per duplicated output
    main = (lay.col_role == POS) & ~lay.col_copy
    outs = np.unique(lay.col_out[main])
    order = outs[np.lexsort((outs, -scores[outs]))]  # best first, ties by index
    free = lay.col_role == FREE
    pairs = []  # (block, j_pos, j_neg) in block order
    for c in range(lay.n_col_blocks):
        f = np.flatnonzero(free[c])
        n = f.size // 2
        pairs += [(c, int(f[2 * k]), int(f[2 * k + 1])) for k in range(n)]
    n_fit = min(len(pairs) // per_out, kept_out)
    if prot.dup_fraction is not None:
        n_want = max(1, math.ceil(prot.dup_fraction * kept_out))
        if n_want > n_fit:
            raise ProtectionError(
                f"{lp.name}: duplicating {prot.dup_fraction:g} of its {kept_out} kept outputs ({n_want} outputs x "
                f"{len(slices)} slice(s) x {prot.n_copies} copies = {n_want * per_out} column pairs) does not fit in "
                f"its {len(pairs)} free column pairs; what fits: dup_fraction <= {n_fit / kept_out:.3f} "
                f"({n_fit} outputs), or fewer n_copies / duplicate_slices, or more pruning"
            )
    else:
        n_want = kept_out
    n_dup = min(n_want, n_fit)
    k = 0
    for o in order[:n_dup]:
        for s in slices:
            for _ in range(prot.n_copies):
                c, jp, jn = pairs[k]
                k += 1
                for j, rl in ((jp, POS), (jn, NEG)):
                    lay.col_out[c, j], lay.col_slice[c, j], lay.col_role[c, j], lay.col_copy[c, j] = int(o), s, rl, True
                    lp.copies.append(Copy("col", c, j, (int(o), s, rl), "dup"))
    return n_want * per_out, n_dup * per_out, n_dup


def protected_plan(
    model_or_shapes: Any,
    sim_cfg: Any,
    masks: dict[str, Any] | None,
    prot_cfg: ProtectionConfig,
    *,
    weights: dict[str, torch.Tensor] | None = None,
    sensitivity: dict[str, Any] | None = None,
) -> MappingPlan:
    """:func:`build_protection`'s plan only (checked: no layer uses more tiles than unprotected)."""
    return build_protection(model_or_shapes, sim_cfg, masks, prot_cfg, weights=weights, sensitivity=sensitivity).plan


# --------------------------------------------------------------------------------------------
# MSB embedding


def embed_msb(qweight: Any, cfg: CrossbarConfig, msb_copies: int) -> Any:
    """Codes with the ``msb_copies`` lowest slices holding copies of the MSB slice.

    ``qweight``: a :class:`crossbar.quant.QTensor` (differential mapping: sign + magnitude).
    Returns ``(stored, kept)``: ``stored`` the QTensor to program (magnitude re-quantized to a
    multiple of ``2^b`` plus the MSB digit copied into each sacrificed slice) and ``kept`` the
    QTensor of the weight value it represents (the re-quantized codes, low bits zero).
    """
    q = qweight.q.to(torch.int64)
    sign = torch.sign(q)
    m = q.abs()
    bpc = cfg.bits_per_cell
    b = sum(cfg.slice_bits[:msb_copies])
    top_shift = (cfg.n_slices - 1) * bpc
    m_max = ((1 << cfg.code_bits) - 1) >> b << b
    m_hi = torch.clamp(((m + (1 << (b - 1))) >> b) << b, max=m_max)
    d = m_hi >> top_shift
    stored = m_hi.clone()
    for k in range(msb_copies):
        stored |= d << (k * bpc)
    dt = qweight.q.dtype
    return (
        dataclasses.replace(qweight, q=(sign * stored).to(dt)),
        dataclasses.replace(qweight, q=(sign * m_hi).to(dt)),
    )


# --------------------------------------------------------------------------------------------
# the protected read


def vote(v: torch.Tensor, rule: str, tol: float, sel: torch.Tensor | None = None) -> torch.Tensor:
    """Vote over replicas: ``v`` ``(R, n, k, G)`` (k replicas) -> ``(R, n, G)``.

    ``rule``: ``median`` | ``mean`` | ``reject_outlier`` | ``min_abs`` | ``fault_aware`` (with
    ``sel`` ``(R, G)``: the replica to read per row block and group). See the module docstring.
    """
    k = v.shape[2]
    if rule == "fault_aware":
        idx = sel.view(sel.shape[0], 1, 1, sel.shape[1]).expand(v.shape[0], v.shape[1], 1, v.shape[3])
        return v.gather(2, idx).squeeze(2)
    if k == 1:
        return v[:, :, 0]
    if rule == "mean":
        return v.mean(2)
    # two and three replicas (the usual cases) with elementwise min/max: sort / argmin over a
    # strided replica axis are an order of magnitude slower on CPU
    if k == 2 and rule in ("reject_outlier", "min_abs"):
        a, b = v[:, :, 0], v[:, :, 1]
        pick = torch.where(a.abs() <= b.abs(), a, b)
        return torch.where((a - b).abs() <= tol, 0.5 * (a + b), pick)
    if k == 2 and rule == "median":
        return 0.5 * (v[:, :, 0] + v[:, :, 1])
    if k == 3 and rule in ("median", "reject_outlier"):
        a, b, c = v[:, :, 0], v[:, :, 1], v[:, :, 2]
        lo_ab, hi_ab = torch.minimum(a, b), torch.maximum(a, b)
        med = torch.maximum(lo_ab, torch.minimum(hi_ab, c))
        if rule == "median":
            return med
        lo, hi = torch.minimum(lo_ab, c), torch.maximum(hi_ab, c)
        return torch.where(hi - med > med - lo, 0.5 * (lo + med), 0.5 * (med + hi))
    if rule == "median":
        s = v.sort(dim=2).values
        return s[:, :, k // 2] if k % 2 else 0.5 * (s[:, :, k // 2 - 1] + s[:, :, k // 2])
    if rule == "reject_outlier" and k >= 3:
        s = v.sort(dim=2).values
        med = s[:, :, k // 2] if k % 2 else 0.5 * (s[:, :, k // 2 - 1] + s[:, :, k // 2])
        far = (v - med.unsqueeze(2)).abs().argmax(dim=2, keepdim=True)
        return (v.sum(2) - v.gather(2, far).squeeze(2)) / (k - 1)
    if rule in ("reject_outlier", "min_abs"):
        spread = v.amax(2) - v.amin(2)
        pick = v.gather(2, v.abs().argmin(dim=2, keepdim=True)).squeeze(2)
        return torch.where(spread <= tol, v.mean(2), pick)
    raise ValueError(f"unknown vote rule {rule!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class _Part:
    """Groups with the same replica count and rule: columns ``[start, start + k * G)`` of the
    voted readout, replica-major (``k`` blocks of ``G``)."""

    start: int
    k: int
    rule: str
    out_idx: torch.Tensor  # (G,) output of each group
    fac: torch.Tensor  # (R, G) w_step[r, o] * adc_step[r, s] * 2^(s b)
    sel: torch.Tensor | None  # (R, G) fault-aware choice


@dataclasses.dataclass(frozen=True, eq=False)
class ProtectedMatrix:
    """A programmed matrix read with voting over its replicas (build with :func:`protect_matrix`).

    ``base``: the engine's programmed matrix of the *unvoted* columns (same chip, same read path).
    ``voted``: ``(R, tile_rows, N)`` readout of every voted column pair and replica (ADC steps, or
    level steps with an ideal ADC); ``voted_var`` its read-noise variance or None.
    """

    base: ProgrammedMatrix
    voted: torch.Tensor
    voted_var: torch.Tensor | None
    parts: tuple[_Part, ...]
    source: ProgrammedMatrix
    #: the weight codes the read represents (re-quantized with msb_embed), QTensor
    represented: Any
    #: agreement tolerance of the vote rules (ProtectionConfig.vote_tol)
    tol: float = 0.5
    #: ``(R, N)`` factor bringing each voted column's ADC output to the units of its group's
    #: first replica (per-slice calibrated ADCs: MSB copies sit in other slices); None = all 1
    unit: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def n_voted_columns(self) -> int:
        return int(self.voted.shape[-1])

    def __call__(self, x: torch.Tensor, generator: torch.Generator | ReadKeys | None = None) -> torch.Tensor:
        return self.matvec(x, generator)

    def matvec(self, x: torch.Tensor, generator: torch.Generator | ReadKeys | None = None) -> torch.Tensor:
        """``(batch..., in) -> (batch..., out)``: the unvoted read plus the voted columns.

        The voted columns go through the engine's own read pieces (:mod:`crossbar.read`: DAC
        cycles, read noise, ADC), each replica converted by the ADC of its own slice, then
        brought to the units of the group's first replica (``unit``) and voted. ``generator``: as
        in :meth:`crossbar.engine.ProgrammedMatrix.matvec`; the voted columns' noise is keyed
        like the unvoted read's, in a stream of its own (:meth:`ReadKeys.salted`)."""
        pm = self.base
        lead = x.shape[:-1]
        pm.check_input(x)
        x2 = x.reshape(-1, pm.in_features)
        n_in = x2.shape[0]
        keys = pm.read_keys(x2, generator)
        xf = pad_rows(x2)  # aligned batch: the same bits in any batch
        keys = None if keys is None else keys.padded(xf.shape[0])
        y = pm.matvec(xf, keys if keys is not None else generator).to(pm.dtype)  # checks device, calibration
        if not self.parts:
            return y[:n_in].to(x.dtype).reshape(*lead, pm.out_features)
        cfg, lay = pm.cfg, pm.layout
        R, tr = lay.n_row_blocks, lay.tile_rows
        xq, sx = pm.dac(xf)
        sx_r, sx_rn, post = pm.split_input_step(sx)
        planes, a = dac_cycles(xq, cfg)  # (K, n, in)
        K, n = planes.shape[0], planes.shape[1]
        xw = pm.word_lines(planes)  # (K, R, n, rows)
        N = self.voted.shape[-1]
        adc = cfg.adc_bits is not None
        nc = max(ROW_ALIGN, CHUNK_ELEMS // 2 // max(1, R * K * N) // ROW_ALIGN * ROW_ALIGN)
        for i0 in range(0, n, nc):  # chunks of the batch (memory), never tiles or replicas
            i1 = min(n, i0 + nc)
            m = i1 - i0
            X = xw[:, :, i0:i1].permute(1, 0, 2, 3).reshape(R, K * m, tr)  # (R, K*m, rows), cycle-major
            cur = torch.bmm(X, self.voted)  # (R, K*m, N)
            if self.voted_var is not None:
                add_read_noise(cur, X * X, self.voted_var, keys.salted(1), torch.bmm, lead=(R, K), rows=(i0, i1))
            if adc:
                adc_convert(cur, cfg)
            if K > 1:
                cur = torch.matmul(a.view(1, 1, K), cur.view(R, K, m * N))
            cur = cur.view(R, m, N)
            if self.unit is not None:
                cur = cur * self.unit.view(R, 1, N)
            for p in self.parts:
                G = p.out_idx.numel()
                v = cur[:, :, p.start : p.start + p.k * G].view(R, m, p.k, G)
                w = vote(v, p.rule, self.tol, p.sel)  # (R, m, G)
                fac = p.fac if sx_r is None else p.fac * sx_r.to(p.fac.dtype).view(R, 1)
                if sx_rn is not None:  # per-tile input steps of each vector
                    w = w * sx_rn[:, i0:i1].to(w.dtype).view(R, m, 1)
                contrib = (w * fac.view(R, 1, G)).sum(0)  # (m, G)
                if post is not None:
                    contrib = contrib * (post[i0:i1] if post.ndim else post).to(contrib.dtype)
                y[i0:i1].index_add_(1, p.out_idx, contrib)
        return y[:n_in].to(x.dtype).reshape(*lead, pm.out_features)


def protect_matrix(pm: ProgrammedMatrix, prot: ProtectionConfig) -> ProtectedMatrix:
    """Build the voting read of ``pm`` (programmed with the protection plan's layout).

    Re-draws the chip from ``pm.seed`` (the same programming variation and fault map; with
    ``msb_embed`` the stored codes carry the MSB copies), then folds: the unvoted columns into an
    engine readout (:attr:`ProtectedMatrix.base`), the voted columns and their replicas into one
    voted readout. Costs one draw of the layer's cells (the fault-aware rule reads its fault map).
    """
    if not isinstance(pm, ProgrammedMatrix):
        raise ValueError(f"expected a ProgrammedMatrix, got {type(pm).__name__}")
    cfg, lay = pm.cfg, pm.layout
    prot.check_against(cfg)
    if (pm.adc_transfer is not None or cfg.i_col_max_a is not None) and prot.duplicate:
        raise ConfigError(
            "the voted read of duplicated columns converts with flawless ideal ADCs and unlimited column currents "
            f"only (adc_kind={cfg.adc_kind!r}, i_col_max_a={cfg.i_col_max_a}); use no duplication with these"
        )
    R, C, tr, tc = lay.n_row_blocks, lay.n_col_blocks, lay.tile_rows, lay.tile_cols
    S = cfg.n_slices
    out_f = pm.out_features
    if prot.msb_embed:
        stored, kept = embed_msb(pm.qweight, cfg, prot.msb_copies)
    else:
        stored = kept = pm.qweight
    st = pm.cells(stored)  # the same chip, bit-identically (same seed, same steps)
    role, sl, co, cp = lay.col_role, lay.col_slice, lay.col_out, lay.col_copy
    # main column of every (output, slice, role)
    where: dict[tuple[int, int, int], tuple[int, int]] = {}
    for c, j in zip(*np.nonzero(((role == POS) | (role == NEG)) & ~cp)):
        where[(int(co[c, j]), int(sl[c, j]), int(role[c, j]))] = (int(c), int(j))
    copies: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    negs: dict[tuple[int, int, int], list[int]] = {}
    for c, j in zip(*np.nonzero((role == NEG) & cp)):
        negs.setdefault((int(c), int(co[c, j]), int(sl[c, j])), []).append(int(j))
    for c, j in zip(*np.nonzero((role == POS) & cp)):
        key = (int(c), int(co[c, j]), int(sl[c, j]))
        if not negs.get(key):
            raise ProtectionError(f"copy column {j} of block {c} (output {key[1]}, slice {key[2]}) has no G- partner in its block")
        copies.setdefault((key[1], key[2]), []).append((int(c), int(j), negs[key].pop(0)))
    mapped = sorted({o for (o, s, r) in where if r == POS})

    def pair(o: int, s: int) -> tuple[int, int, int]:
        c, jp = where[(o, s, POS)]
        _, jn = where[(o, s, NEG)]  # the layout keeps all columns of an output in one block (validated)
        return c, jp, jn

    groups: list[tuple[int, int, list[tuple[int, int, int]], str]] = []  # (out, slice, replicas, rule)
    excluded: list[tuple[int, int]] = []  # (output, slice) main columns left out of the unvoted fold
    top = S - 1
    for o in mapped:
        if prot.msb_embed:
            reps = [pair(o, top)] + [pair(o, k) for k in range(prot.msb_copies)] + copies.get((o, top), [])
            rule = prot.decode_rule() if len(reps) == prot.msb_copies + 1 else _dup_rule(prot, len(reps))
            groups.append((o, top, reps, rule))  # (MSB copies in free columns only from a hand-made plan)
            excluded += [(o, k) for k in range(prot.msb_copies)] + [(o, top)]
        for s in range(S):
            if prot.msb_embed and (s == top or s < prot.msb_copies):
                continue
            if (o, s) in copies:
                reps = [pair(o, s)] + copies[(o, s)]
                groups.append((o, s, reps, _dup_rule(prot, len(reps))))
                excluded.append((o, s))
    # unvoted fold: the excluded main columns are marked as copies (the engine's fold skips them)
    lay_u = lay.copy()
    for o, s in excluded:
        for rl in (POS, NEG):
            c, j = where[(o, s, rl)]
            lay_u.col_copy[c, j] = True
    dg = level_step_s(pm.levels)
    base = with_folded(pm, fold(st.m_s, stored, lay_u, cfg, dg, pm.device, pm.dtype), qweight=stored, layout=lay_u)
    # voted readout: partitions by (replica count, rule), replica-major inside a partition
    m = st.m_s.detach().to(device="cpu", dtype=torch.float64).view(R, C, tr, tc)
    adc = cfg.adc_bits is not None
    w_step = base.w_step.detach().to(torch.float64).cpu()  # (R, out)
    adc_step = base.adc_step.detach().to(torch.float64).cpu()  # (R, S_adc): level steps per ADC code
    sig = cfg.read_noise_sigma_rel
    driven = torch.from_numpy(((lay.row_in >= 0) & ~lay.row_copy).astype(np.int64))  # (R, tr)
    fmap = (st.faults != 0).to(torch.int64).cpu().view(R, C, tr, tc)
    keys = sorted({(len(g[2]), g[3]) for g in groups})
    cols, var, parts, steps, units, start = [], [], [], [], [], 0
    for k, rule in keys:
        sel_g = [g for g in groups if (len(g[2]), g[3]) == (k, rule)]
        G = len(sel_g)
        reps = np.asarray([g[2] for g in sel_g], dtype=np.int64)  # (G, k, 3)
        cb, jp, jn = (torch.from_numpy(reps[:, :, t].T.reshape(-1)) for t in range(3))  # replica-major (k*G,)
        mp, mn = m[:, cb, :, jp], m[:, cb, :, jn]  # (k*G, R, tr)
        cols.append(((mp - mn) / dg).permute(1, 2, 0))
        if sig > 0:
            var.append((sig**2 * (mp**2 + mn**2) / dg**2).permute(1, 2, 0))
        o_idx = torch.tensor([g[0] for g in sel_g], dtype=torch.int64)
        s_grp = torch.tensor([g[1] for g in sel_g], dtype=torch.int64)
        beta = torch.tensor([2.0 ** (g[1] * cfg.bits_per_cell) for g in sel_g], dtype=torch.float64)
        fac = w_step[:, o_idx] * beta.view(1, G)
        if adc:
            # each replica is converted by the ADC of its own slice, then expressed in the
            # units of the group's slice (the one the shift-and-add weighs)
            s_rep = torch.from_numpy(sl[reps[:, :, 0].T.reshape(-1), reps[:, :, 1].T.reshape(-1)].astype(np.int64))
            a_col = adc_step.shape[1] > 1
            st_rep = adc_step[:, s_rep] if a_col else adc_step[:, :1].expand(R, k * G)
            st_grp = adc_step[:, s_grp] if a_col else adc_step[:, :1].expand(R, G)
            fac = fac * st_grp
            steps.append(st_rep)
            units.append(st_rep / st_grp.repeat(1, k))
        sel = None
        if rule == "fault_aware":
            bad_p = (fmap[:, cb, :, jp] * driven.view(1, R, tr)).sum(-1)  # (k*G, R) faulty driven cells
            bad_n = (fmap[:, cb, :, jn] * driven.view(1, R, tr)).sum(-1)
            bad = (bad_p + bad_n).view(k, G, R)
            sel = bad.argmin(dim=0).T.contiguous()  # (R, G): first minimum -> the original on ties
            sel = sel.to(pm.device)
        parts.append(_Part(start=start, k=k, rule=rule, out_idx=o_idx.to(pm.device),
                           fac=fac.to(device=pm.device, dtype=pm.dtype), sel=sel))
        start += k * G
    unit = None
    if cols:
        voted = torch.cat(cols, dim=2)
        vv = torch.cat(var, dim=2) if var else None
        if adc:
            step = torch.cat(steps, dim=1).view(R, 1, -1)
            voted = voted / step
            vv = None if vv is None else vv / (step * step)
            u = torch.cat(units, dim=1)
            unit = None if bool((u == 1).all()) else u.to(device=pm.device, dtype=pm.dtype)
    else:
        voted, vv = torch.zeros(R, tr, 0, dtype=torch.float64), None
    out = ProtectedMatrix(
        base=base, voted=voted.to(device=pm.device, dtype=pm.dtype).contiguous(),
        voted_var=None if vv is None else vv.to(device=pm.device, dtype=pm.dtype).contiguous(),
        parts=tuple(parts), source=pm, represented=kept, tol=float(prot.vote_tol), unit=unit,
    )
    return out


def _dup_rule(prot: ProtectionConfig, k: int) -> str:
    if prot.vote == "median" and k % 2 == 0:
        return "reject_outlier"  # an even count has no middle value: drop the outlier, average the rest
    return prot.vote


class ProtectedRead:
    """``read_fn(programmed, x, generator)`` for :func:`nn.crossbar_linear.set_read_fn`.

    Builds the :class:`ProtectedMatrix` of each new programmed matrix (a new chip, a calibration)
    on its first read and keeps it while the layer reads that same object (identity check, no
    stale state: a new ``ProgrammedMatrix`` object means a rebuild).
    """

    def __init__(self, prot: ProtectionConfig) -> None:
        if not isinstance(prot, ProtectionConfig):
            raise ValueError(f"expected a ProtectionConfig, got {type(prot).__name__}")
        self.prot = prot
        self._src: ProgrammedMatrix | None = None
        self._pmat: ProtectedMatrix | None = None

    def protected(self, pm: ProgrammedMatrix) -> ProtectedMatrix:
        if self._src is not pm:
            self._pmat = protect_matrix(pm, self.prot)
            self._src = pm
        return self._pmat

    def __call__(self, pm: ProgrammedMatrix, x: torch.Tensor, generator: torch.Generator | ReadKeys | None) -> torch.Tensor:
        return self.protected(pm).matvec(x, generator)
