"""Everything one simulated BERT run needs, in one config: :class:`SimConfig`, and its presets.

A :class:`SimConfig` composes the tile engine (:class:`crossbar.engine.CrossbarConfig`), the
stuck-at faults (:class:`device.faults.FaultConfig`), where the cell levels come from
(:class:`LevelsSpec`: a shipped write-verify level table or a synthetic one for sigma / on-off
sweeps), the wire parasitics for IR drop (:class:`crossbar.solver.CircuitConfig`), the IR-drop
table, which modules go on crossbars (``nn.Linear``, convolutions, LSTM / GRU; PEFT-style
``target_modules`` / ``exclude_modules`` regexes, by default the BERT family's encoder
Linears), the compute dtype, and fault-map-aware mapping of each chip
(:class:`mapping.faultaware.FaultAwareConfig`: ``faultaware.reencode`` re-encodes every weight
around the chip's stuck cells, ``faultaware.placement`` permutes rows and columns so faults land
where they cost least, ``faultaware.placement_weighting=fisher`` weighs that cost by each input's
mean square activation and each output's mean square loss gradient, estimated on training batches
by :mod:`nn.sensitivity`; all use the chip's fault map, as after a post-fabrication test).

Every physics parameter is reachable from the command line through
:func:`device.config.apply_overrides`::

    cfg = apply_overrides(PRESETS["default"](), ["crossbar.adc_bits=6", "faults.rate=0.01",
                                                 "levels.source=synthetic", "levels.sigma_rel=0.05",
                                                 "faultaware.reencode=true"])

:data:`PRESETS` is the one registry of named starting points; each factory cites its source
(``docs/REFERENCES.md`` gathers the published values).

When each effect is sampled (see :mod:`crossbar.engine`): programming variation and faults once
per programming (:func:`nn.crossbar_linear.program_model`, one numpy Generator per chip); read
noise on every read; the synthetic level table itself is drawn once from ``levels.seed`` (it is
the *device statistics*, not a chip).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from crossbar.engine import DEFAULT_G_OFF_S, DEFAULT_G_ON_S, CrossbarConfig, chip_read_noise
from crossbar.nodal import CircuitConfig
from device.config import (
    Config,
    ConfigError,
    check_choice,
    check_int_range,
    check_positive,
    check_range,
    config,
)
from device.data import data_dir, resolve_table
from device.faults import FaultConfig
from mapping.faultaware import FaultAwareConfig

__all__ = [
    "LevelsSpec",
    "SimConfig",
    "PRESETS",
    "DEFAULT_TARGET_MODULES",
    "DEFAULT_EXCLUDE_MODULES",
    "get_preset",
    "build_sim_config",
    "build_levels",
    "load_irdrop",
    "RelaxationSpec",
    "effective_crossbar",
    "load_relaxation",
    "check_relaxation_range",
    "check_chip",
    "config_hash",
    "level_table_path",
]

_DATA = data_dir()  # the shipped tables (device.data)

#: encoder attention projections and feed-forward layers of BERT / RoBERTa / ELECTRA
#: (``encoder.layer.N.attention.self.{query,key,value}``, ``attention.output.dense``,
#: ``intermediate.dense``, ``output.dense``; the same pattern as ``nn.dva.DEFAULT_DVA_TARGET``),
#: of DistilBERT (``transformer.layer.N.attention.{q,k,v,out}_lin``, ``ffn.lin{1,2}``) and of ALBERT
#: (``encoder.albert_layer_groups.G.albert_layers.N.attention.{query,key,value,dense}``, ``ffn``,
#: ``ffn_output``; one module per layer group, shared by the layers that use it). Not the
#: embeddings' projections (ELECTRA ``embeddings_project``, ALBERT ``embedding_hidden_mapping_in``).
DEFAULT_TARGET_MODULES: tuple[str, ...] = (
    r"encoder\..*(query|key|value|attention\.output\.dense|intermediate\.dense|output\.dense)$",
    r"transformer\.layer\.\d+\.(attention\.(q_lin|k_lin|v_lin|out_lin)|ffn\.(lin1|lin2))$",
    r"albert_layer_groups\.\d+\.albert_layers\.\d+\.(attention\.(query|key|value|dense)|ffn|ffn_output)$",
)
#: the task head and pooler stay digital (BERT ``pooler.dense``, ``classifier``; RoBERTa / ELECTRA
#: ``classifier.dense`` / ``classifier.out_proj``; DistilBERT ``pre_classifier``, ``classifier``;
#: ALBERT ``albert.pooler``, ``classifier``), even when a broad ``target_modules`` reaches them
DEFAULT_EXCLUDE_MODULES: tuple[str, ...] = (r"(^|\.)(classifier|pooler|pre_classifier)(\.|$)",)


@config
class LevelsSpec(Config):
    """Where the conductance levels of the cells come from."""

    #: "table": a write-verify level table (HDF5, device.programming.LevelTable.load);
    #: "synthetic": LevelTable.synthetic from the fields below (sigma / on-off sweeps)
    source: Literal["table", "synthetic"] = "table"
    #: level table path, or a shipped table's name ("levels_b3", device.data); None = the
    #: shipped data/levels_b{bits}.h5 for crossbar.bits_per_cell
    table_path: str | None = None
    #: synthetic: conductance of the highest level (LRS), S (10 kOhm, REFERENCES.md crossbar figures)
    g_on_s: float = DEFAULT_G_ON_S
    #: synthetic: g_on / g_off, HRS level 0 at g_on_s / on_off_ratio (100: 10 kOhm..1 MOhm)
    on_off_ratio: float = DEFAULT_G_ON_S / DEFAULT_G_OFF_S
    #: synthetic: programming variation, relative sigma of each level (0.05 = 5 %, NeuroSim style)
    sigma_rel: float = 0.0
    #: synthetic: "lognormal" or "normal" level distributions (mean = target either way)
    distribution: Literal["lognormal", "normal"] = "lognormal"
    #: synthetic: levels equally spaced in "conductance" or in "resistance"
    spacing: Literal["conductance", "resistance"] = "conductance"
    #: synthetic: samples per level in the table cells are drawn from
    n_samples: int = 4096
    #: synthetic: seed of the table's samples (the device statistics; chips are drawn per trial)
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("levels.source", self.source, ("table", "synthetic"))
        if self.table_path is not None and not isinstance(self.table_path, str):
            raise ConfigError(f"levels.table_path={self.table_path!r} is invalid: must be a path string or null")
        check_positive("levels.g_on_s", self.g_on_s)
        check_range("levels.on_off_ratio", self.on_off_ratio, 1.0, 1e9, lo_open=True)
        check_range("levels.sigma_rel", self.sigma_rel, 0.0, 1.0)
        check_choice("levels.distribution", self.distribution, ("lognormal", "normal"))
        check_choice("levels.spacing", self.spacing, ("conductance", "resistance"))
        check_int_range("levels.n_samples", self.n_samples, 2, 1 << 20)
        check_int_range("levels.seed", self.seed, 0, 2**63 - 1)

    @property
    def g_off_s(self) -> float:
        return self.g_on_s / self.on_off_ratio


@config
class RelaxationSpec(Config):
    """Conductance relaxation after programming (used when ``crossbar.read_time_s > 0``)."""

    #: relaxation table (HDF5 path or shipped name, device.relaxation.RelaxationModel.load); None = the shipped
    #: data/relaxation_techB.h5 (fitted to the tech-B measurements, see data/README.md)
    table_path: str | None = None
    #: programmed conductances outside the table's fitted range: "raise" (an error before any
    #: work, in every entry point) or "clamp" (those cells take the nearest fitted bin's law; the
    #: chip reports how many, ProgrammedMatrix.retention["clamped"])
    out_of_range: Literal["raise", "clamp"] = "raise"

    def __post_init__(self) -> None:
        if self.table_path is not None and not isinstance(self.table_path, str):
            raise ConfigError(f"relaxation.table_path={self.table_path!r} is invalid: must be a path string or null")
        check_choice("relaxation.out_of_range", self.out_of_range, ("raise", "clamp"))


@config
class SimConfig(Config):
    """A simulated crossbar run of a BERT-family model (see the module docstring)."""

    #: quantization, slicing, tiles, DAC/ADC, IR-drop mode, read noise
    crossbar: CrossbarConfig = dataclasses.field(default_factory=CrossbarConfig)
    #: stuck-at faults (SA0 = stuck at HRS, SA1 = stuck at LRS)
    faults: FaultConfig = dataclasses.field(default_factory=FaultConfig)
    #: fault-map-aware mapping from the chip's tested fault map: re-encoding, placement (mapping.faultaware)
    faultaware: FaultAwareConfig = dataclasses.field(default_factory=FaultAwareConfig)
    #: cell conductance levels: shipped table or synthetic
    levels: LevelsSpec = dataclasses.field(default_factory=LevelsSpec)
    #: wire / driver / sense parasitics (IR drop; crossbar.ir_drop="table" uses r_wire_row_ohm)
    circuit: CircuitConfig = dataclasses.field(default_factory=CircuitConfig)
    #: IR-drop table (path or shipped name) for crossbar.ir_drop="table"; None = the shipped data/irdrop_default.h5
    irdrop_table: str | None = None
    #: conductance relaxation model for crossbar.read_time_s > 0
    relaxation: RelaxationSpec = dataclasses.field(default_factory=RelaxationSpec)
    #: inference read noise (crossbar.engine.chip_read_noise, as program_matrix): "levels" =
    #: crossbar.read_noise_sigma_rel where set (> 0), else the relative read noise the level table
    #: was written and verified with (LevelTable.read_noise_rel: one setting for verify and
    #: inference; synthetic tables have none); "crossbar" = crossbar.read_noise_sigma_rel as set, 0 included
    read_noise: Literal["levels", "crossbar"] = "levels"
    #: regexes (re.search on qualified module names): modules put on crossbars (nn.Linear,
    #: Conv1d/Conv2d, LSTM/GRU: nn.crossbar_linear.CROSSBAR_CLASSES); [".*"] = every supported one
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    #: regexes: matching modules stay digital even if targeted (default: head and pooler)
    exclude_modules: tuple[str, ...] = DEFAULT_EXCLUDE_MODULES
    #: compute dtype of crossbar reads: "float32", or "float64" for exact integer checks
    dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", (self.target_modules,))
        if isinstance(self.exclude_modules, str):
            object.__setattr__(self, "exclude_modules", (self.exclude_modules,))
        if not self.target_modules:
            raise ConfigError("target_modules=() is invalid: must hold at least one regex")
        for name in ("target_modules", "exclude_modules"):
            for pat in getattr(self, name):
                if not isinstance(pat, str):
                    raise ConfigError(f"{name} entry {pat!r} is invalid: must be a regex string")
                try:
                    re.compile(pat)
                except re.error as exc:
                    raise ConfigError(f"{name} entry {pat!r} is invalid: not a regex ({exc})") from None
        if self.irdrop_table is not None and not isinstance(self.irdrop_table, str):
            raise ConfigError(f"irdrop_table={self.irdrop_table!r} is invalid: must be a path string or null")
        check_choice("dtype", self.dtype, ("float32", "float64"))
        check_choice("read_noise", self.read_noise, ("levels", "crossbar"))

    @property
    def torch_dtype(self) -> Any:
        import torch

        return torch.float64 if self.dtype == "float64" else torch.float32


def config_hash(data: Any) -> str:
    """Short stable hash (sha256, 16 hex digits) of a config or of a JSON-able dict."""
    import json

    if isinstance(data, Config):
        data = data.to_dict()
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# levels and IR drop, built once per model (shared by all its layers)


def level_table_path(bits_per_cell: int) -> Path:
    """The shipped level table for ``bits_per_cell``: ``data/levels_b{bits}.h5``."""
    return _DATA / f"levels_b{bits_per_cell}.h5"


def build_levels(cfg: SimConfig):
    """The ``device.programming.LevelTable`` cells are drawn from (see :class:`LevelsSpec`)."""
    from device.programming import LevelTable

    spec, bits = cfg.levels, cfg.crossbar.bits_per_cell
    if spec.source == "synthetic":
        return LevelTable.synthetic(
            bits_per_cell=bits, g_on_s=spec.g_on_s, g_off_s=spec.g_off_s, sigma_rel=spec.sigma_rel,
            distribution=spec.distribution, n_samples=spec.n_samples, rng=np.random.default_rng(spec.seed),
            spacing=spec.spacing,
        )
    path = resolve_table(spec.table_path) if spec.table_path else level_table_path(bits)
    if not path.is_file():
        raise ConfigError(
            f"level table {path} does not exist (levels.source='table'); give levels.table_path=PATH (or a shipped table's name) or "
            "use --set levels.source=synthetic"
        )
    table = LevelTable.load(path)
    if int(table.bits_per_cell) != bits:
        raise ConfigError(
            f"level table {path} has {table.bits_per_cell} bit(s) per cell but crossbar.bits_per_cell={bits}"
        )
    return table


def load_irdrop(cfg: SimConfig):
    """The IR-drop table for ``crossbar.ir_drop="table"`` (None otherwise: nothing to load)."""
    if cfg.crossbar.ir_drop != "table":
        return None
    from crossbar.irdrop import IRDropTable

    path = resolve_table(cfg.irdrop_table) if cfg.irdrop_table else _DATA / "irdrop_default.h5"
    if not path.is_file():
        raise ConfigError(f"IR-drop table {path} does not exist; give irdrop_table=PATH")
    return IRDropTable.load(path)


def effective_crossbar(cfg: SimConfig, levels: Any) -> CrossbarConfig:
    """The crossbar config a chip is programmed and read with: ``cfg.crossbar``, with the read
    noise of the level table when ``cfg.read_noise == "levels"`` (the noise its write-verify
    reads assumed; 0 for synthetic tables), so that programming and inference share one setting."""
    return chip_read_noise(cfg.crossbar, levels, cfg.read_noise)


@dataclasses.dataclass(frozen=True)
class _Relaxation:
    """The engine's relaxation hook: a model with the spec's out-of-range rule."""

    model: Any
    out_of_range: str
    #: the table file the model was loaded from (for messages)
    path: str = ""

    def sample_torch(self, g_s: Any, time_s: float, generator: Any) -> Any:
        return self.model.sample_torch(g_s, time_s, generator, out_of_range=self.out_of_range)

    def sample_path_torch(self, g_s: Any, t_prev_s: Any, z_prev: Any, t_new_s: Any, generator: Any) -> Any:
        return self.model.sample_path_torch(g_s, t_prev_s, z_prev, t_new_s, generator, out_of_range=self.out_of_range)

    def clamped_cells(self, g_s: Any) -> int:
        return self.model.clamped_cells(g_s) if self.out_of_range == "clamp" else 0

    def check_levels(self, levels: Any) -> None:
        self.model.check_levels(levels, out_of_range=self.out_of_range, table=self.path)

    @property
    def t_max_s(self) -> float:
        return self.model.t_max_s


def load_relaxation(cfg: SimConfig):
    """The relaxation model for ``crossbar.read_time_s > 0`` (None at 0: the effect is off);
    loaded once per (path, rule) and shared."""
    if cfg.crossbar.read_time_s == 0:
        return None
    path = resolve_table(cfg.relaxation.table_path) if cfg.relaxation.table_path else _DATA / "relaxation_techB.h5"
    if not path.is_file():
        raise ConfigError(f"relaxation table {path} does not exist; give relaxation.table_path=PATH")
    return _load_relaxation(str(path.resolve()), path.stat().st_mtime_ns, cfg.relaxation.out_of_range)


def check_relaxation_range(cfg: SimConfig, levels: Any = None) -> None:
    """Before any work: with ``crossbar.read_time_s > 0``, refuse a level table whose
    conductances leave the relaxation model's fitted range (unless ``relaxation.out_of_range`` is
    "clamp") and a read age outside the model's measured times (the read time, or the refresh
    period when shorter). Every entry point calls it (``program_matrix`` checks the table again)."""
    rel = load_relaxation(cfg)
    if rel is None:
        return
    rel.check_levels(build_levels(cfg) if levels is None else levels)
    r = cfg.crossbar.retention
    t = cfg.crossbar.read_time_s
    rel.model.quantiles_at(min(t, r.refresh_period_s) if r.refresh_period_s > 0 else t)
    if r.reprogram_rounds > 0:
        rel.model.quantiles_at(r.reprogram_wait_s)
        if not rel.model.has_time_correlation:
            rel.model.time_correlation(1.0, 2.0)  # the clear error: refit the table


def check_chip(cfg: SimConfig) -> None:
    """Before any work: build one tile of a chip of ``cfg`` the way a model's layers are built
    (:meth:`nn.crossbar_matrix.CrossbarMatrix.program`: level table, read-noise rule, faults,
    circuit, IR-drop table, relaxation model, fault-map-aware mapping) and read it, so that a
    setting refused only where a chip is programmed or read (a tile size the IR-drop table does
    not cover, levels outside its conductance window, relaxation-aware programming without a
    verify window, ...) fails before the first row is written, with the error the chip would
    raise. The tile holds seeded signed weights and is read with signed inputs; its numbers are
    discarded. Costs one tile's programming (plus one exact IR-drop solve where that is on)."""
    import torch

    from crossbar.engine import program_matrix

    levels = build_levels(cfg)
    check_relaxation_range(cfg, levels)
    xb = effective_crossbar(cfg, levels)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(xb.outputs_per_tile, xb.tile_rows, generator=gen, dtype=torch.float64)
    x = torch.randn(4, xb.tile_rows, generator=gen, dtype=torch.float64).to(cfg.torch_dtype)
    pm = program_matrix(
        w.to(cfg.torch_dtype), xb, levels, cfg.faults, np.random.default_rng(0), circuit=cfg.circuit,
        irdrop=load_irdrop(cfg), relaxation=load_relaxation(cfg), dtype=cfg.torch_dtype, read_noise="crossbar",
    )
    if cfg.faultaware.any:
        from mapping.faultaware import FaultAwareMapper

        ones = np.ones  # placement weights of a model come from nn.sensitivity; any positive ones do here
        pm = FaultAwareMapper(cfg.faultaware, in_weight=ones(xb.tile_rows), out_weight=ones(xb.outputs_per_tile))(pm)
    if xb.needs_calibration:
        pm = pm.calibrate(x)
    pm.matvec(x, generator=gen)


@functools.lru_cache(maxsize=8)
def _load_relaxation(path: str, mtime_ns: int, out_of_range: str) -> _Relaxation:
    from device.relaxation import RelaxationModel

    return _Relaxation(RelaxationModel.load(path), out_of_range, path)


# --------------------------------------------------------------------------------------------
# presets


def _default() -> SimConfig:
    """The toolkit's reference chip: 8-bit dynamic fixed-point weights per layer (DFP, Long et al.
    DATE 2019), 2 bits/cell on differential pairs (4 slices of 2,2,2,1 magnitude bits), 128x128
    tiles (NeuroSim sub-array, REFERENCES.md), 8-bit multi-bit DAC inputs (DFP per input vector), ideal
    ADC, the shipped write-verify level table ``data/levels_b2.h5``, no faults, no IR drop, no
    read noise."""
    return SimConfig()


def _ideal() -> SimConfig:
    """Quantization only: 8-bit DFP weights and inputs on noiseless synthetic levels
    (10 kOhm..1 MOhm, sigma 0), ideal ADC, no faults, no IR drop. The floor every other preset's
    error is measured against."""
    return SimConfig(levels=LevelsSpec(source="synthetic", sigma_rel=0.0))


def _neurosim() -> SimConfig:
    """NeuroSim inference defaults (REFERENCES.md "Conductance windows ... NeuroSim"): 128x128
    sub-arrays, 5-bit ADC (here per column, full-scale range), on/off ratio 10, multiplicative
    Gaussian device variation 0.05, bit-serial 8-bit inputs; weights 8-bit, 2 bits per cell."""
    return SimConfig(
        crossbar=CrossbarConfig(dac="bit_serial", adc_bits=5, adc_scope="column", adc_range="full_scale"),
        levels=LevelsSpec(source="synthetic", on_off_ratio=10.0, sigma_rel=0.05, distribution="normal"),
    )


def _paper1() -> SimConfig:
    """The fault setup of Li et al. 2024 (arXiv 2401.11664) as far as known (REFERENCES.md "Seed
    papers"; details beyond the abstract are approximate): BERT on GLUE with random stuck-at
    faults, SA0 (stuck at HRS) the majority (they use 0.5-0.9 SA0; 0.9 here), 1 % of cells faulty
    (sweep ``faults.rate``), 8-bit weights, 2 bits/cell, otherwise the default chip and noiseless
    levels so faults are the only device effect."""
    return SimConfig(
        faults=FaultConfig(rate=0.01, sa0_fraction=0.9, pattern="random"),
        levels=LevelsSpec(source="synthetic", sigma_rel=0.0),
    )


def _paper2() -> SimConfig:
    """Long, She, Mukhopadhyay, DATE 2019 style variation setup (REFERENCES.md "Seed papers"):
    dynamic fixed-point weights and inputs, lognormal programming variation of the cells (sigma
    0.1 here; the paper sweeps it), 1 bit per cell (binary ReRAM) with 8-bit weights, no faults."""
    return SimConfig(
        crossbar=CrossbarConfig(bits_per_cell=1, weight_format="dynamic", input_format="dynamic"),
        levels=LevelsSpec(source="synthetic", sigma_rel=0.1, distribution="lognormal"),
    )


#: the one registry of named simulation setups; each factory's docstring cites its source
PRESETS: dict[str, Callable[[], SimConfig]] = {
    "default": _default,
    "ideal": _ideal,
    "neurosim": _neurosim,
    "paper1": _paper1,
    "paper2": _paper2,
}


def get_preset(name: str) -> SimConfig:
    """``PRESETS[name]()``, with a clear error for an unknown name."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]()


def build_sim_config(preset: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> SimConfig:
    """A preset with ``--set``-style ``key=value`` overrides applied (type-checked)."""
    from device.config import apply_overrides

    return apply_overrides(get_preset(preset), list(overrides))
