"""Fault-map-aware mapping of a tested chip: re-encode weights around stuck cells, and place them
where faults cost least.

Fault-map-aware mapping: re-encode weights around stuck cells, and place them where faults cost least.

After fabrication a chip is tested (a march test), so its stuck-at map is known before the weights
are written. Two uses of it, both at zero extra crossbars:

The two parts live in their own modules: re-encoding in :mod:`mapping.reencode`
(:func:`~mapping.reencode.best_digits`, :func:`~mapping.reencode.reencode_cells`, the engine's
encode hook :class:`~mapping.reencode.FaultAwareEncoder`), placement in :mod:`mapping.placement`
(:func:`~mapping.placement.place_layer`). This module holds their configuration
(:class:`FaultAwareConfig`, ``--set faultaware.*``) and :class:`FaultAwareMapper`, which applies
both to a programmed chip; their public names are re-exported here.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from crossbar.engine import TileLayout
from device.config import Config, check_choice, check_int_range, config
from mapping.placement import (
    PlacementReport,
    ResidualTable,
    layout_digits,
    line_weight,
    place_layer,
    placement_cost,
)
from mapping.plan import MappingError
from mapping.reencode import (
    FaultAwareEncoder,
    WeightCells,
    best_digits,
    code_digits,
    frozen_slices,
    level_values,
    readback,
    reencode_cells,
    weight_cells,
)

__all__ = [
    "FaultAwareConfig",
    "PLACEMENT_WEIGHTINGS",
    "FaultAwareMapper",
    # re-exported from mapping.reencode and mapping.placement
    "best_digits",
    "WeightCells",
    "weight_cells",
    "level_values",
    "reencode_cells",
    "readback",
    "code_digits",
    "layout_digits",
    "FaultAwareEncoder",
    "place_layer",
    "placement_cost",
    "PlacementReport",
    "ResidualTable",
    "frozen_slices",
]

#: the placement cost's weightings (FaultAwareConfig.placement_weighting)
PLACEMENT_WEIGHTINGS = ("none", "activation", "fisher")

_BIG = float("inf")
#: faulty weights re-encoded per vectorized chunk (memory: ~ chunk x 256 x 8 bytes per tensor)
_CHUNK = 16384


@config
class FaultAwareConfig(Config):
    """Fault-map-aware mapping of a chip (needs its stuck-at map: a post-fabrication march test)."""

    #: re-encode every weight around its stuck cells (the closest representable value)
    reencode: bool = False
    #: permute each layer's rows and columns so that faults land where they cost least
    placement: bool = False
    #: healthy cells may use every level of the cell, also above a partial most-significant slice
    full_levels: bool = True
    #: alternating row / column assignment rounds of the placement (each never raises the cost)
    placement_rounds: int = 2
    #: what the placement's cost weighs each weight's squared residual with: "none" (1),
    #: "activation" (its input's mean square activation E[x_i^2]), "fisher" (E[x_i^2] times its
    #: output's mean square loss gradient E[(dL/dy_o)^2]); the weights are estimated on training
    #: batches of the model (nn.sensitivity) and handed to each layer's FaultAwareMapper. On
    #: MiniLM "none" lowers the summed residual yet costs accuracy, "fisher" is what works (RESULTS.md)
    placement_weighting: Literal["none", "activation", "fisher"] = "none"

    def __post_init__(self) -> None:
        for name in ("reencode", "placement", "full_levels"):
            if not isinstance(getattr(self, name), bool):
                from device.config import ConfigError

                raise ConfigError(f"faultaware.{name}={getattr(self, name)!r} is invalid: must be true or false")
        check_int_range("faultaware.placement_rounds", self.placement_rounds, 1, 20)
        check_choice("faultaware.placement_weighting", self.placement_weighting, PLACEMENT_WEIGHTINGS)

    @property
    def any(self) -> bool:
        return self.reencode or self.placement


# --------------------------------------------------------------------------------------------
# the chip: the placed layout and the encode hook on the same cells


#: residual tables of the placement, keyed by what they are computed from (crossbar config,
#: stuck values, re-encoding, level use): shared by every layer and chip of that configuration
_TABLES: dict[tuple, "ResidualTable"] = {}


class FaultAwareMapper:
    """Fault-map-aware mapping of a programmed chip: ``mapper(pm, base_layout) -> pm``.

    Reads the chip's fault map (the same cells whatever the layout: the map is a property of the
    tiles, drawn from the chip's seed, or given by a test), then with ``placement`` chooses a
    layout from ``base_layout`` (:func:`place_layer`), and re-programs the *same chip* (same seed:
    same faults, same variation streams) with that layout and, with ``reencode``, the
    :class:`FaultAwareEncoder` hook. The placement's residual tables are kept for the next layers
    and chips of the same configuration (content-keyed). ``report``: the last call's placement
    report. Placement's cost assumes every slice may be re-encoded (slices a protection votes
    over are re-encoded by no one: there it is an approximation).

    ``in_weight`` ``(in,)`` / ``out_weight`` ``(out,)``: the layer's weights of the placement cost
    (:func:`place_layer`); required when ``fa.placement_weighting`` is not "none" ("activation"
    needs ``in_weight``, "fisher" both), so a weighting that was asked for is never silently left
    out (a model run gets them from ``nn.sensitivity``: one mapper per layer).
    """

    def __init__(self, fa: FaultAwareConfig, prot: Any = None, *, in_weight: Any = None,
                 out_weight: Any = None) -> None:
        if not isinstance(fa, FaultAwareConfig):
            raise ValueError(f"expected a FaultAwareConfig, got {type(fa).__name__}")
        self.fa = fa
        self.prot = prot
        self.in_weight = None if in_weight is None else line_weight(in_weight, np.size(in_weight), "in_weight")
        self.out_weight = None if out_weight is None else line_weight(out_weight, np.size(out_weight), "out_weight")
        self.encoder = FaultAwareEncoder(full_levels=fa.full_levels, prot=prot) if fa.reencode else None
        self.report: PlacementReport | None = None

    def _weights(self) -> dict[str, Any]:
        """The ``in_weight`` / ``out_weight`` that ``placement_weighting`` uses (the others None)."""
        w = self.fa.placement_weighting
        return {"in_weight": self.in_weight if w in ("activation", "fisher") else None,
                "out_weight": self.out_weight if w == "fisher" else None}

    def fault_map(self, pm: Any, layout: TileLayout | None = None) -> torch.Tensor:
        """``(tiles, rows, cols)`` fault map of ``pm``'s chip (the test result a chip maker has)."""
        from crossbar.pipeline import cell_digits_step, fault_map_step, run_pipeline

        return run_pipeline(pm.context(layout=layout), (cell_digits_step, fault_map_step)).faults

    def __call__(self, pm: Any, base_layout: TileLayout | None = None) -> Any:
        import dataclasses as dc

        from crossbar.engine import with_folded
        from crossbar.pipeline import fold, level_step_s, run_pipeline

        if not self.fa.any:
            return pm
        from crossbar.engine import default_layout

        # always from the plan's layout (not the previous chip's placement): a chip is a function
        # of its seed, whatever was programmed before
        layout = default_layout(*pm.qweight.q.shape, pm.cfg) if base_layout is None else base_layout
        if self.fa.placement:
            need = {"none": (), "activation": ("in_weight",), "fisher": ("in_weight", "out_weight")}
            missing = [n for n in need[self.fa.placement_weighting] if getattr(self, n) is None]
            if missing:
                raise MappingError(
                    f"faultaware.placement_weighting={self.fa.placement_weighting!r} needs the layer's "
                    f"{' and '.join(missing)} (estimated on the model: nn.sensitivity.attach_placement_weights)")
            fm = self.fault_map(pm, layout)
            cfg = pm.cfg
            out_f, in_f = pm.qweight.q.shape
            key = (cfg.to_json(), tuple(level_values(pm.levels)[1]), self.fa.reencode, self.fa.full_levels)
            res = _TABLES.get(key)
            if res is None:
                lv, sv = level_values(pm.levels)
                wc = weight_cells(layout, cfg, out_f, in_f, full_levels=self.fa.full_levels)
                if len(_TABLES) >= 8:
                    _TABLES.pop(next(iter(_TABLES)))
                res = _TABLES[key] = ResidualTable(cfg, wc, lv, sv, self.fa.reencode)
            layout, self.report = place_layer(pm.qweight, layout, cfg, fm, levels=pm.levels, reencode=self.fa.reencode,
                                              full_levels=self.fa.full_levels, rounds=self.fa.placement_rounds,
                                              residuals=res, **self._weights())
        new = dc.replace(pm, layout=layout, encoder=self.encoder, kept=None)
        st = run_pipeline(new.context())
        folded = fold(st.m_s, new.qweight, layout, new.cfg, level_step_s(new.levels), new.device, new.dtype)
        return with_folded(new, folded, layout=layout)
