"""What a mapping costs: energy, latency and area of the chip that runs a mapped model.

The model counts, per layer and per inference, what the chip physically does, from the layer's
tile layout (:class:`crossbar.layout.TileLayout`: the mapping plan, with pruning, copies and the
protection's extra reads), its crossbar configuration (slices, DAC, ADC bits and scope), the
engine's own programmed conductances and statistics of the DAC codes of real inputs; it then
prices each count with the component models of :mod:`mapping.technology`.

Counts per matrix-vector product (MVM) of one layer (``R x C`` tiles, ``K`` input cycles)
---------------------------------------------------------------------------------------
* **cell reads**: every read column conducts while it is sensed; the array energy is
  ``v_read^2 t_read sum_r sum_i d_ri g_ri`` over the driven rows, ``g_ri`` the summed conductance
  of the read cells of word line ``i`` of row block ``r`` over all its column blocks (the engine's
  conductances after variation, faults and relaxation), ``d_ri`` the mean over MVMs of the
  squared drive summed over cycles (``sum_k (code_k / q_max)^2`` multi-bit, the count of 1 bits
  bit-serial, the pulse count for pulse-count inputs). A column that no read senses (free
  columns, copies the plain read ignores) floats and draws nothing.
* **row lines**: each driven row of each tile is charged per cycle in proportion to ``d_ri``
  (the same drive statistics); **gate lines** per the technology (:attr:`TechConfig.gate_lines`).
* **ADC conversions**: per row block read (``ceil(driven rows / rows_parallel)`` sub-reads), per
  cycle, one per read channel: a differential pair or an offset column (subtracted in the analog
  domain before the ADC, as the engine reads), one per output with ``adc_scope="tile"``;
  duplicated columns add their copies' channels when the read votes over them.
* **shift-and-add**: one accumulator add per conversion; **accumulation**: one add per output
  per further row block and slice.
* **buffers**: the input vector read and the output vector written once per MVM.
* **voting / MSB-copy decode** (protection): one compare per replica per voted group and row
  block; one per copy and output for the MSB decode.

Latency: tiles, row blocks and column blocks work in parallel; a tile read takes ``K`` cycles of
its sub-reads, each converting its channels on ``ceil(channels / crossbar.adc_columns_per_adc)``
ADCs in turn (the ADC description is the chip's :class:`crossbar.adc.AdcConfig`).
Layers run one after the other (``latency_s``); with ``TechConfig.pipelined`` the throughput is set
by the slowest layer. Area: cells, ADCs (or neurons), row drivers, shift-and-add, accumulation,
buffers and protection logic of the tiles a layer occupies.

Inputs come from :func:`drive_stats` (DAC codes of real inputs) and :func:`row_conductance` (the
engine's cells); :mod:`nn.cost` gathers both for a model. Everything here is numpy and pure.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

import numpy as np

from crossbar.config import CrossbarConfig
from crossbar.layout import FREE, NEG, POS, REF, TileLayout
from mapping.technology import ADDER_TRANSISTORS, DFF_TRANSISTORS, TechConfig

__all__ = [
    "COMPONENTS",
    "DriveStats",
    "LayerWork",
    "LayerCost",
    "CostReport",
    "drive_stats",
    "read_columns",
    "row_conductance",
    "expected_row_conductance",
    "neurram_phases",
    "adc_bits_for",
    "adc_conversion",
    "cost_layer",
    "cost_layers",
]

#: the components every energy / area breakdown names, in display order
COMPONENTS: tuple[str, ...] = (
    "array", "row_drivers", "gate_lines", "adc", "shift_add", "accumulation", "buffers", "voting", "msb_decode",
)


# --------------------------------------------------------------------------------------------
# inputs: drive statistics and conductances


@dataclasses.dataclass(frozen=True)
class DriveStats:
    """Word-line drive of one layer's inputs, averaged over the MVMs it was measured on.

    ``drive_sq``: ``(in,)`` mean over MVMs of ``sum over input cycles of (V_i / v_read)^2``.
    ``active``: ``(in,)`` mean number of cycles in which input ``i`` drives its row (nonzero).
    ``n``: MVMs measured.
    """

    drive_sq: np.ndarray
    active: np.ndarray
    n: int

    def merge(self, other: "DriveStats") -> "DriveStats":
        """The statistics of both sets of MVMs together (weighted by their counts)."""
        n = self.n + other.n
        if n == 0:
            return self
        w1, w2 = self.n / n, other.n / n
        return DriveStats(self.drive_sq * w1 + other.drive_sq * w2, self.active * w1 + other.active * w2, n)

    @classmethod
    def uniform(cls, in_features: int, drive_sq: float, active: float) -> "DriveStats":
        """Every input with the same statistics (shape-only estimates, anchors)."""
        return cls(np.full(in_features, float(drive_sq)), np.full(in_features, float(active)), 1)


def neurram_phases(magnitude_bits: int, max_one_phase: int) -> tuple[int, ...]:
    """NeuRRAM's input phases (CiMLoop ``bits2phase_2phase``): one phase of all magnitude bits
    up to ``max_one_phase``, else ``(ceil(b / 2), floor(b / 2))``, most significant first."""
    if magnitude_bits <= max_one_phase:
        return (magnitude_bits,)
    return (-(-magnitude_bits // 2), magnitude_bits // 2)


def drive_stats(codes: Any, cfg: CrossbarConfig, tech: TechConfig) -> DriveStats:
    """Drive statistics of integer DAC codes ``codes`` ``(n, in)`` (as
    :meth:`crossbar.engine.ProgrammedMatrix.dac` makes them, in ``[-q_max, q_max]``).

    Voltage encoding: multi-bit DACs drive ``code / q_max`` of ``v_read`` in one cycle;
    bit-serial DACs one two's-complement bit per cycle (``input_bits`` cycles), multi-bit slices
    (``crossbar.dac_slice_bits``) ``slice / (2^b - 1)`` per cycle (:func:`crossbar.read.dac_cycles`). Pulse-count
    encoding: the magnitude's digits of each phase (:func:`neurram_phases`) as that many pulses.
    """
    c = np.asarray(codes.detach().cpu().numpy() if hasattr(codes, "detach") else codes, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"codes must be (n, in), got shape {c.shape}")
    n = c.shape[0]
    qm = 2 ** (cfg.input_bits - 1) - 1
    if n == 0:
        z = np.zeros(c.shape[1])
        return DriveStats(z, z.copy(), 0)
    if tech.input_encoding == "pulse_count":
        m = np.abs(c).astype(np.int64)
        phases = neurram_phases(cfg.input_bits - 1, tech.max_bits_one_phase)
        pulses = np.zeros_like(m)
        active = np.zeros_like(m)
        shift = sum(phases)
        for p in phases:
            shift -= p
            digit = (m >> shift) & ((1 << p) - 1)
            pulses += digit
            active += digit > 0
        return DriveStats(pulses.mean(0), active.mean(0), n)
    if cfg.cycles > 1:  # bit-serial or multi-bit slices: the engine's own cycles
        import torch

        from crossbar.read import dac_cycles

        sl, _ = dac_cycles(torch.from_numpy(c), cfg)
        v = sl.numpy() / cfg.dac_full_scale  # (K, n, in) of v_read
        return DriveStats((v**2).sum(0).mean(0), (v != 0).sum(0).mean(0), n)
    return DriveStats(((c / qm) ** 2).mean(0), (c != 0).mean(0), n)


def read_columns(layout: TileLayout, *, copies_read: bool) -> np.ndarray:
    """``(C, tile_cols)`` bool: the bit lines a read senses (data pairs, offset and reference
    columns; copies only when ``copies_read``, i.e. the read votes over them)."""
    used = layout.col_role != FREE
    if not copies_read:
        used &= ~layout.col_copy
    return used


def row_conductance(g_s: Any, layout: TileLayout, columns: np.ndarray) -> np.ndarray:
    """``(R, tile_rows)`` summed conductance, S, of the cells of each word line over the
    ``columns`` (``(C, tile_cols)`` bool, :func:`read_columns`) of all its tiles, from the
    engine's cell conductances ``g_s`` ``(tiles, rows, cols)`` (tiles ``t = r * C + c``)."""
    g = np.asarray(g_s.detach().cpu().numpy() if hasattr(g_s, "detach") else g_s, dtype=np.float64)
    R, C = layout.n_row_blocks, layout.n_col_blocks
    if g.shape != (R * C, layout.tile_rows, layout.tile_cols):
        raise ValueError(f"conductances of shape {g.shape} do not fit a {R}x{C} grid of {layout.tile_rows}x{layout.tile_cols} tiles")
    g = g.reshape(R, C, layout.tile_rows, layout.tile_cols)
    return np.einsum("rcij,cj->ri", g, columns.astype(np.float64))


def expected_row_conductance(layout: TileLayout, columns: np.ndarray, g_mean_s: float) -> np.ndarray:
    """Shape-only estimate of :func:`row_conductance`: every read cell at ``g_mean_s``."""
    per_row = float(columns.sum()) * g_mean_s
    return np.full((layout.n_row_blocks, layout.tile_rows), per_row)


# --------------------------------------------------------------------------------------------
# the ADC


def adc_bits_for(cfg: CrossbarConfig) -> int:
    """The ADC resolution the cost assumes: ``crossbar.adc_bits``, or for an ideal ADC the
    lossless resolution of one channel's largest sum (``tile_rows (2^bits_per_cell - 1)`` times
    the largest cycle input, signed)."""
    if cfg.adc_bits is not None:
        return int(cfg.adc_bits)
    q_in = 1 if cfg.dac == "bit_serial" else 2 ** (cfg.input_bits - 1) - 1
    top = cfg.tile_rows * (2**cfg.bits_per_cell - 1) * q_in
    if cfg.adc_scope == "tile":
        top *= 2 ** cfg.code_bits
    return int(math.ceil(math.log2(top + 1))) + 1


@dataclasses.dataclass(frozen=True)
class AdcConversion:
    """One conversion of one channel: energy (J), time (s) and the area of one ADC (m^2)."""

    energy_j: float
    time_s: float
    area_m2: float


def adc_model_for(cfg: CrossbarConfig, tech: TechConfig) -> str:
    """The energy model of the chip's ADC: ``tech.adc_model``, but the Walden model for the
    kinds the NeuroSim SAR fit does not describe (``crossbar.adc_kind`` ramp, pipeline, cyclic)."""
    if tech.adc_model == "neurosim_sar" and cfg.adc_kind in ("ramp", "pipeline", "cyclic"):
        return "walden"
    return tech.adc_model


def adc_conversion(bits: int, tech: TechConfig, r_col_ohm: float, v_read_v: float, *, kind: str = "sar",
                   model: str | None = None) -> AdcConversion:
    """The ADC of ``model`` (default ``tech.adc_model``) at ``bits`` (see :mod:`mapping.technology`);
    ``kind`` (``crossbar.adc_kind``) sets the Walden model's clock cycles per conversion.

    ``r_col_ohm``: the resistance of a sensed column (NeuroSim's SAR fit has a term in it,
    defined at 0.5 V reads: scaled by ``0.5 / v_read_v`` as NeuroSim does); unused otherwise.
    The ``neurram`` model's conversion energy is per step and is costed per MVM in
    :func:`cost_layer` (here: one step)."""
    from crossbar.adc import conversion_cycles

    model = tech.adc_model if model is None else model
    a_t = tech.transistor_area_m2
    if model == "neurosim_sar":
        r = max(r_col_ohm, 1.0) * 0.5 / v_read_v
        p_w = tech.sar_a_w * bits + tech.sar_b_w + tech.sar_c_w * math.exp(-tech.sar_k * math.log10(r))
        t = (bits + 1) * tech.t_clock_s
        n_tr = (269 + 109 * (bits - 1)) + (209 + 73 * (bits - 1))
        return AdcConversion(p_w * t, t, n_tr * a_t)
    if model == "walden":
        k = "sar" if kind == "ideal" else kind
        return AdcConversion(tech.adc_fom_j * 2.0**bits, conversion_cycles(k, bits) * tech.t_clock_s, tech.a_adc_walden_m2)
    return AdcConversion(tech.e_adc_step_j, tech.t_adc_step_s, tech.a_neuron_m2)


# --------------------------------------------------------------------------------------------
# one layer


@dataclasses.dataclass(frozen=True)
class LayerWork:
    """Everything the cost of one crossbar matrix depends on.

    ``mvms``: MVMs per inference (tokens of a sequence, output positions of a convolution).
    ``g_row_s``: ``(R, tile_rows)`` from :func:`row_conductance` (or :func:`expected_row_conductance`).
    ``stats``: :class:`DriveStats` of the layer's inputs ``(in,)``.
    ``voted``: the read votes over the duplicated columns (their copies are converted too);
    ``vote_replicas``: replicas per voted group; ``msb_copies``: embedded MSB copies decoded per
    output and row block (0: none).
    """

    name: str
    cfg: CrossbarConfig
    layout: TileLayout
    in_features: int
    out_features: int
    mvms: float
    stats: DriveStats
    g_row_s: np.ndarray
    voted: bool = False
    vote_replicas: int = 0
    msb_copies: int = 0
    #: copies of the layer's weights on the chip, each reading its own share of the MVMs
    #: (NeuroSim's weight duplication for pipeline speed-up, V1.4 manual section 5.4): area x d,
    #: latency / d, energy unchanged (the same reads, spread over the copies)
    duplicates: int = 1


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """The cost of one layer per inference: energy and area per component (J, m^2), latency (s),
    and the counts they come from."""

    name: str
    shape: tuple[int, int]
    tiles: int
    mvms: float
    ops: float
    conversions: float
    adc_bits: int
    energy_j: dict[str, float]
    area_m2: dict[str, float]
    latency_s: float

    @property
    def energy_total_j(self) -> float:
        return float(sum(self.energy_j.values()))

    @property
    def area_total_m2(self) -> float:
        return float(sum(self.area_m2.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "shape": list(self.shape), "tiles": self.tiles, "mvms": self.mvms, "ops": self.ops,
            "conversions": self.conversions, "adc_bits": self.adc_bits, "energy_j": self.energy_total_j,
            "latency_s": self.latency_s, "area_m2": self.area_total_m2,
            "energy_components_j": dict(self.energy_j), "area_components_m2": dict(self.area_m2),
        }


def _channels(layout: TileLayout, cfg: CrossbarConfig, copies_read: bool) -> np.ndarray:
    """``(C,)`` ADC channels per tile read of each column block."""
    if cfg.adc_scope == "tile":
        outs = []
        for c in range(layout.n_col_blocks):
            m = (layout.col_role[c] == POS) & ~layout.col_copy[c]
            outs.append(len(np.unique(layout.col_out[c][m])))
        return np.asarray(outs, np.int64)
    m = layout.col_role == POS
    if not copies_read:
        m = m & ~layout.col_copy
    return m.sum(1).astype(np.int64)


def cost_layer(work: LayerWork, tech: TechConfig) -> LayerCost:
    """The cost of one layer per inference (see the module docstring for every count)."""
    cfg, lay = work.cfg, work.layout
    R, C, tr, tc = lay.n_row_blocks, lay.n_col_blocks, lay.tile_rows, lay.tile_cols
    T = R * C
    v_read = tech.v_read_v if tech.v_read_v is not None else cfg.v_read_v
    bits = adc_bits_for(cfg)
    acc_bits = bits + cfg.input_bits + cfg.code_bits + max(0, math.ceil(math.log2(max(1, R))))
    add_j = tech.add_bit_j

    # drive per physical row (R, rows); free and copy rows are not driven
    driven = (lay.row_in >= 0) & ~lay.row_copy
    idx = np.where(driven, lay.row_in, 0)
    d_sq = np.where(driven, work.stats.drive_sq[idx], 0.0)
    act = np.where(driven, work.stats.active[idx], 0.0)
    n_driven = driven.sum(1)  # (R,)
    sub = np.where(n_driven > 0, -(-n_driven // tech.rows_parallel) if tech.rows_parallel else 1, 0)
    ch = _channels(lay, cfg, work.voted)  # (C,)
    from crossbar.adc import adc_units

    n_adc = max(1, adc_units(cfg.adc, int(ch.max(initial=0))))  # ADCs per tile (crossbar.adc_columns_per_adc)
    model = adc_model_for(cfg, tech)
    K = cfg.cycles if tech.input_encoding == "voltage" else len(neurram_phases(cfg.input_bits - 1, tech.max_bits_one_phase))

    # conversions per MVM and the column resistance an ADC sees
    conv_mvm = float(K * sub.sum() * ch.sum())
    # mean conductance of a sensed column in one sub-read cycle (the SAR fit's R_col): the
    # on-conductance of all driven rows, spread over every sensed (sub-read, column)
    cols_read = read_columns(lay, copies_read=work.voted)
    sensed = float(sub.sum()) * float(cols_read.sum())
    g_col = float((work.g_row_s * act).sum()) / max(1, K) / sensed if sensed > 0 else 0.0
    r_col = 1.0 / g_col if g_col > 0 else 1e12
    adc = adc_conversion(bits, tech, r_col, v_read, kind=cfg.adc_kind, model=model)

    mag = cfg.input_bits - 1
    if model == "neurram":
        phases = neurram_phases(mag, tech.max_bits_one_phase)
        int_steps = sum(2**p - 1 for p in phases)
        adc_steps = sum(max(bits - sum(phases[:i]), 0) for i in range(len(phases)))
        chans_mvm = float((sub > 0).sum() * ch.sum())
        e_adc = chans_mvm * (tech.e_adc_step_j * adc_steps + tech.e_sample_j * mag + tech.e_integrate_step_j * int_steps)
        e_shift = chans_mvm * tech.e_shift_add_step_j * adc_steps
        t_conv_slot = tech.t_integrate_step_s * int_steps + tech.t_adc_step_s * adc_steps + tech.t_inter_phase_s * len(phases)
        t_mvm = t_conv_slot * float(sub.max(initial=0)) * math.ceil(int(ch.max(initial=0)) / n_adc)
        conv_mvm = chans_mvm * adc_steps
        t_read = tech.t_read_s if tech.t_read_s is not None else tech.t_integrate_step_s
    else:
        e_adc = conv_mvm * adc.energy_j
        e_shift = conv_mvm * acc_bits * add_j
        t_mvm = K * float(sub.max(initial=0)) * math.ceil(int(ch.max(initial=0)) / n_adc) * adc.time_s
        t_read = tech.t_read_s if tech.t_read_s is not None else tech.t_clock_s

    e = dict.fromkeys(COMPONENTS, 0.0)
    e["array"] = v_read**2 * t_read * float((d_sq * work.g_row_s).sum())
    c_row = tech.c_row_per_cell_f * tc + tech.c_row_driver_f
    e["row_drivers"] = c_row * v_read**2 * float(d_sq.sum()) * C
    if tech.gate_lines == "rows":
        e["gate_lines"] = (tech.c_gate_per_cell_f * tc + tech.c_gate_driver_f) * tech.v_gate_v**2 * float(act.sum()) * C
    elif tech.gate_lines == "cols":
        cycles = mag if tech.input_encoding == "pulse_count" else K
        e["gate_lines"] = (tech.c_gate_per_cell_f * tr + tech.c_gate_driver_f) * tech.v_gate_v**2 * tc * T * cycles
    e["adc"] = e_adc
    e["shift_add"] = e_shift
    S = cfg.n_slices if cfg.adc_scope == "column" else 1
    r_used = int((n_driven > 0).sum())
    e["accumulation"] = work.out_features * max(0, r_used * S - 1) * acc_bits * add_j
    e["buffers"] = float(tech.buffers) * (work.in_features + work.out_features) * cfg.input_bits * tech.buffer_bit_j
    col_bits = bits + cfg.input_bits
    if work.voted:
        n_copy_pairs = int(((lay.col_role == POS) & lay.col_copy).sum())
        groups = n_copy_pairs / max(1, work.vote_replicas - 1)
        e["voting"] = r_used * groups * work.vote_replicas * col_bits * add_j
    if work.msb_copies:
        e["msb_decode"] = r_used * work.out_features * (work.msb_copies + 1) * col_bits * add_j
    energy = {k: v * work.mvms for k, v in e.items()}

    a_t = tech.transistor_area_m2
    area = dict.fromkeys(COMPONENTS, 0.0)
    area["array"] = T * tr * tc * tech.cell_area_m2
    area["row_drivers"] = T * tr * tech.row_driver_transistors * a_t
    if model == "neurram":
        area["adc"] = T * tc * tech.a_neuron_m2  # one neuron per column, shift-and-add inside
    else:
        area["adc"] = T * n_adc * adc.area_m2
        area["shift_add"] = T * n_adc * acc_bits * (ADDER_TRANSISTORS + DFF_TRANSISTORS) * a_t
    area["accumulation"] = work.out_features * acc_bits * (ADDER_TRANSISTORS + DFF_TRANSISTORS) * a_t
    area["buffers"] = float(tech.buffers) * (work.in_features + work.out_features) * cfg.input_bits * tech.buffer_area_bit_f2 * tech.feature_m**2
    # one comparator of col_bits per voted group (voting) or per output (MSB decode) of a tile
    if work.voted:
        groups_tile = int(((lay.col_role == POS) & lay.col_copy).sum()) / max(1, work.vote_replicas - 1) / max(1, C)
        area["voting"] = T * math.ceil(groups_tile) * col_bits * ADDER_TRANSISTORS * a_t
    if work.msb_copies:
        area["msb_decode"] = T * math.ceil(work.out_features / max(1, C)) * col_bits * ADDER_TRANSISTORS * a_t
    d = int(work.duplicates)
    if d < 1:
        raise ValueError(f"{work.name}: duplicates={work.duplicates} must be >= 1")
    if d > 1:  # every copy holds its own tiles and periphery; the activation buffers are shared
        area = {k: (v if k == "buffers" else v * d) for k, v in area.items()}
    ops = 2.0 * work.in_features * work.out_features * work.mvms
    return LayerCost(
        name=work.name, shape=(work.out_features, work.in_features), tiles=T * d, mvms=float(work.mvms), ops=ops,
        conversions=conv_mvm * work.mvms, adc_bits=bits, energy_j=energy, area_m2=area,
        latency_s=t_mvm * math.ceil(work.mvms / d) if d > 1 else t_mvm * work.mvms,
    )


# --------------------------------------------------------------------------------------------
# a whole chip


@dataclasses.dataclass(frozen=True)
class CostReport:
    """The cost of a mapped model per inference: per layer and in total."""

    layers: tuple[LayerCost, ...]
    tech: TechConfig
    #: extra energy outside the crossbars (e.g. attention matmuls in digital), J, by name
    extra_energy_j: dict[str, float] = dataclasses.field(default_factory=dict)
    #: description of what was costed (model, sequence length, preset ...)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def components_energy_j(self) -> dict[str, float]:
        out = {k: float(sum(l.energy_j[k] for l in self.layers)) for k in COMPONENTS}
        out.update(self.extra_energy_j)
        return out

    @property
    def components_area_m2(self) -> dict[str, float]:
        return {k: float(sum(l.area_m2[k] for l in self.layers)) for k in COMPONENTS}

    @property
    def energy_j(self) -> float:
        return float(sum(self.components_energy_j.values()))

    @property
    def area_m2(self) -> float:
        return float(sum(self.components_area_m2.values()))

    @property
    def latency_s(self) -> float:
        """Layer by layer: the sum of the layers' latencies."""
        return float(sum(l.latency_s for l in self.layers))

    @property
    def period_s(self) -> float:
        """Time between inferences: the slowest layer when pipelined, else :attr:`latency_s`."""
        if self.tech.pipelined and self.layers:
            return float(max(l.latency_s for l in self.layers))
        return self.latency_s

    @property
    def ops(self) -> float:
        return float(sum(l.ops for l in self.layers))

    @property
    def tops(self) -> float:
        return self.ops / self.period_s / 1e12 if self.period_s > 0 else float("inf")

    @property
    def tops_per_w(self) -> float:
        e = self.energy_j * self.tech.tops_per_w_energy_factor
        return self.ops / e / 1e12 if e > 0 else float("inf")

    @property
    def tops_per_mm2(self) -> float:
        return self.tops / (self.area_m2 * 1e6) if self.area_m2 > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: totals at the top (``energy_j``, ``latency_s``, ``area_m2``,
        ``tops_per_w`` ...), ``components`` and ``layers`` breakdowns, ``tech``, ``meta``."""
        return {
            "energy_j": self.energy_j, "latency_s": self.latency_s, "area_m2": self.area_m2,
            "tops_per_w": self.tops_per_w, "tops": self.tops, "tops_per_mm2": self.tops_per_mm2,
            "period_s": self.period_s, "ops": self.ops, "tiles": int(sum(l.tiles for l in self.layers)),
            "components": {"energy_j": self.components_energy_j, "area_m2": self.components_area_m2},
            "layers": [l.to_dict() for l in self.layers],
            "tech": self.tech.to_dict(), "meta": dict(self.meta),
        }

    def table(self) -> str:
        """A readable table (display units: uJ, us, mm^2)."""
        comps = [k for k in COMPONENTS if any(l.energy_j[k] or l.area_m2[k] for l in self.layers)]
        lines = [
            f"{'layer':<44} {'tiles':>6} {'MVMs':>7} {'energy uJ':>10} {'latency us':>11} {'area mm2':>9}",
        ]
        for l in self.layers:
            lines.append(f"{l.name[-44:]:<44} {l.tiles:>6} {l.mvms:>7.0f} {l.energy_total_j * 1e6:>10.4g} "
                         f"{l.latency_s * 1e6:>11.4g} {l.area_total_m2 * 1e6:>9.4g}")
        ce, ca = self.components_energy_j, self.components_area_m2
        lines.append("")
        lines.append(f"{'component':<20} {'energy uJ':>10} {'share':>6} {'area mm2':>9} {'share':>6}")
        for k in comps + list(self.extra_energy_j):
            lines.append(f"{k:<20} {ce[k] * 1e6:>10.4g} {ce[k] / self.energy_j:>6.1%} {ca.get(k, 0.0) * 1e6:>9.4g} "
                         f"{ca.get(k, 0.0) / self.area_m2:>6.1%}")
        lines.append("")
        lines.append(f"total: {self.energy_j * 1e6:.4g} uJ, {self.latency_s * 1e6:.4g} us, {self.area_m2 * 1e6:.4g} mm2, "
                     f"{self.tops_per_w:.4g} TOPS/W, {self.tops:.4g} TOPS, {self.tops_per_mm2:.4g} TOPS/mm2 "
                     f"({self.ops / 1e9:.4g} GOP per inference)")
        return "\n".join(lines)


def cost_layers(works: Iterable[LayerWork], tech: TechConfig, *, extra_energy_j: dict[str, float] | None = None,
                meta: dict[str, Any] | None = None) -> CostReport:
    """:func:`cost_layer` of every layer, gathered in a :class:`CostReport`."""
    return CostReport(layers=tuple(cost_layer(w, tech) for w in works), tech=tech,
                      extra_energy_j=dict(extra_energy_j or {}), meta=dict(meta or {}))
