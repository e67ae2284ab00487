"""The crossbar configuration: how a weight matrix is quantized, sliced, mapped, programmed and read.

One frozen :class:`CrossbarConfig` holds every setting of the tile engine (:mod:`crossbar.engine`);
its fields are reachable from the CLI as ``--set crossbar.FIELD=VALUE``. Which physical effect
each field switches on, when that effect is sampled and which function applies it is tabulated
in ``CONTRIBUTING.md`` ("Physical effects").
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from crossbar.adc import AdcConfig
from crossbar.quant import QuantConfig
from device.config import Config, ConfigError, check_choice, check_int_range, check_positive, check_range, config

__all__ = ["CrossbarConfig", "RetentionConfig", "DEFAULT_G_ON_S", "DEFAULT_G_OFF_S"]

#: default level window when no table is given: 10 kOhm LRS, 1 MOhm HRS, the range of the
#: crossbar figures in docs/REFERENCES.md ("10 kohm-1 Mohm cells"); no programming variation
DEFAULT_G_ON_S = 100e-6
DEFAULT_G_OFF_S = 1e-6


@config
class RetentionConfig(Config):
    """Remedies against conductance relaxation, for a chip read ``read_time_s > 0`` after
    programming (the fourth remedy, level placement, is the level table itself:
    ``levels.table_path`` from ``reram-cosim device levels optimize``). Each is applied in one
    place (``CONTRIBUTING.md``, "Physical effects")."""

    #: relaxation-aware programming: rounds of (wait reprogram_wait_s, re-verify every cell,
    #: re-program the cells outside their verify window); 0 = off. The iterative scheme of the
    #: NeuRRAM chip (Wan et al., Nature 2022) and of relaxation-aware programming studies; a
    #: re-programmed cell relaxes afresh from its new programming time (crossbar.pipeline.reverify_step)
    reprogram_rounds: int = 0
    #: wait between a programming pass and its re-verify, s (at least the relaxation model's
    #: first measured time: 0.01 s for tech B)
    reprogram_wait_s: float = 1.0
    #: re-verify window: 0 = the level table's own write-verify window (its tolerance and guard
    #: band), else a half-width of this fraction of the level step, S / S
    reverify_window_frac: float = 0.0
    #: reads averaged per re-verify (their noise: the chip's read noise / sqrt(reads))
    reverify_reads: int = 4
    #: refresh: every cell is re-written (and re-verified, if reprogram_rounds > 0) every
    #: refresh_period_s seconds; a read at read_time_s is taken at the worst phase of the cycle,
    #: min(read_time_s, refresh_period_s) after the last write; 0 = never
    refresh_period_s: float = 0.0
    #: read-time drift compensation: a digital gain per layer ("global", aihwkit's
    #: GlobalDriftCompensation) or per output ("column"), fitted by least squares from
    #: compensation_reads reads of known inputs on the chip at read_time_s; "none" = off
    compensation: Literal["none", "global", "column"] = "none"
    #: reference reads for the compensation fit: random +-1 input vectors, read with the chip's
    #: read noise (the fit's own noise)
    compensation_reads: int = 64

    def __post_init__(self) -> None:
        check_int_range("retention.reprogram_rounds", self.reprogram_rounds, 0, 64)
        check_range("retention.reprogram_wait_s", self.reprogram_wait_s, 0.0, 1e6, lo_open=True)
        check_range("retention.reverify_window_frac", self.reverify_window_frac, 0.0, 0.5)
        check_int_range("retention.reverify_reads", self.reverify_reads, 1, 1024)
        check_range("retention.refresh_period_s", self.refresh_period_s, 0.0, 1e9)
        check_choice("retention.compensation", self.compensation, ("none", "global", "column"))
        check_int_range("retention.compensation_reads", self.compensation_reads, 1, 1 << 16)

    @property
    def any(self) -> bool:
        """Whether any remedy is on."""
        return self.reprogram_rounds > 0 or self.refresh_period_s > 0 or self.compensation != "none"


@config
class CrossbarConfig(Config):
    """How a weight matrix is quantized, sliced, mapped, programmed and read on crossbar tiles."""

    #: word lines per tile (NeuroSim default sub-array: 128)
    tile_rows: int = 128
    #: bit lines per tile
    tile_cols: int = 128
    #: bits of the signed weight code, sign included (symmetric, see crossbar.quant)
    weight_bits: int = 8
    #: weight number format: "static" or "dynamic" fixed point (DFP, Long et al. DATE 2019), or
    #: "scaled" (real-valued step max|w| / q_max, as CrossSim and aihwkit; see crossbar.quant)
    weight_format: Literal["static", "dynamic", "scaled"] = "dynamic"
    #: static weight format: bits after the binary point
    weight_frac_bits: int = 6
    #: dynamic / scaled weight format: one step per "layer" or per "tile"
    weight_granularity: Literal["layer", "tile"] = "layer"
    #: bits stored per cell (levels 2**bits_per_cell), 1..4
    bits_per_cell: int = 2
    #: when bits_per_cell does not divide the code bits: "msb" (top slice holds the rest) or "error"
    partial_slice: Literal["msb", "error"] = "msb"
    #: signed weights: "differential" (G+ and G- columns) or "offset" (code + 2**(N-1), reference column)
    mapping: Literal["differential", "offset"] = "differential"
    #: bits of the signed input code at the DAC, sign included
    input_bits: int = 8
    #: input number format at the DAC: "static" or "dynamic" fixed point, or "scaled" (real step)
    input_format: Literal["static", "dynamic", "scaled"] = "dynamic"
    #: static input format: bits after the binary point
    input_frac_bits: int = 4
    #: dynamic / scaled input format: one step per input "vector" (set by each vector itself, as a
    #: per-vector shifter does: the default, needs no calibration data), one per row block of
    #: each vector ("tile_vector": each tile's DAC gets the step of its own tile_rows inputs, the
    #: partial sums are rescaled digitally before they are added; aihwkit's per-tile ABS_MAX), or
    #: one per "layer" / per row block ("tile") fixed once by ProgrammedMatrix.calibrate on
    #: calibration data. Never set from the batch: a vector's output does not depend on which
    #: other vectors share its batch.
    input_granularity: Literal["vector", "tile_vector", "layer", "tile"] = "vector"
    #: "multi_bit": the whole input code as one bipolar voltage; "bit_serial": one bit per cycle
    dac: Literal["multi_bit", "bit_serial"] = "multi_bit"
    #: bits of the input code applied per DAC cycle: 1 = bit-serial, input_bits = one multi-bit
    #: cycle, between: slices of that many bits, least significant first, as multi-level voltages
    #: (the lower slices unsigned, the top one signed two's complement), converted and shift-added
    #: per cycle (CrossSim's slice_size); None = from dac (bit_serial: 1, multi_bit: input_bits)
    dac_slice_bits: int | None = None
    #: word-line voltage of a full-scale input (multi_bit) or of a '1' bit (bit_serial), V
    v_read_v: float = 0.2
    #: ADC resolution in bits, signed; None = ideal (no quantization of column currents)
    adc_bits: int | None = None
    #: ADC range: "full_scale" (largest possible sum) or "calibrated" (largest seen on data)
    adc_range: Literal["full_scale", "calibrated"] = "full_scale"
    #: what one ADC conversion digitizes: each slice "column" per cycle, or the "tile" partial sum
    adc_scope: Literal["column", "tile"] = "column"
    #: ADC architecture (crossbar.adc): "ideal" quantizer, "sar", "ramp", "pipeline", "cyclic"
    adc_kind: Literal["ideal", "sar", "ramp", "pipeline", "cyclic"] = "ideal"
    #: ADC inputs (differential pairs / columns minus reference, or tile outputs) converted in
    #: turn by one ADC (ramp: sharing one ramp generator); its flaws are theirs
    adc_columns_per_adc: int = 1
    #: input-referred offset of each ADC, sigma relative to V_ref (half the full scale); per chip
    adc_offset_sigma_rel: float = 0.0
    #: gain error of each ADC, relative sigma; drawn once per chip
    adc_gain_sigma_rel: float = 0.0
    #: unit-capacitor mismatch of the CDAC (sar, ramp) or of C_s, C_f (pipeline, cyclic),
    #: relative sigma (Pelgrom scaling with capacitor size); drawn once per chip
    adc_cap_sigma_rel: float = 0.0
    #: comparator offset, sigma relative to V_ref (sar, ramp, pipeline, cyclic); drawn once per chip
    adc_comparator_sigma_rel: float = 0.0
    #: open-loop gain of the 1.5-bit stage's residue amplifier, dB (pipeline, cyclic); None = infinite
    adc_opamp_gain_db: float | None = None
    #: largest current one bit line (a G+ or G- column, or a reference column) passes to its
    #: sense circuit, A: every column's current clips at +-i_col_max_a in every DAC cycle, before
    #: the differential subtraction (CrossSim's Icol_max, there in units of one cell's largest
    #: current); None = no limit
    i_col_max_a: float | None = None
    #: IR-drop model: "ideal" (none), "table" (crossbar.irdrop LUT), "exact" (crossbar.solver)
    ir_drop: Literal["ideal", "table", "exact"] = "ideal"
    #: read noise: relative sigma of each cell's conductance, drawn on every read
    read_noise_sigma_rel: float = 0.0
    #: time between programming and the reads, s: conductance relaxation (0 = off; needs a
    #: relaxation model, device.relaxation, passed to program_matrix)
    read_time_s: float = 0.0
    #: remedies against relaxation: relaxation-aware programming, refresh, drift compensation
    retention: RetentionConfig = dataclasses.field(default_factory=RetentionConfig)

    def __post_init__(self) -> None:
        check_int_range("tile_rows", self.tile_rows, 1, 4096)
        check_int_range("tile_cols", self.tile_cols, 2, 4096)
        check_int_range("weight_bits", self.weight_bits, 2, 16)
        check_choice("weight_format", self.weight_format, ("static", "dynamic", "scaled"))
        check_choice("weight_granularity", self.weight_granularity, ("layer", "tile"))
        check_int_range("bits_per_cell", self.bits_per_cell, 1, 4)
        check_choice("partial_slice", self.partial_slice, ("msb", "error"))
        check_choice("mapping", self.mapping, ("differential", "offset"))
        check_int_range("input_bits", self.input_bits, 2, 16)
        check_choice("input_format", self.input_format, ("static", "dynamic", "scaled"))
        check_choice("input_granularity", self.input_granularity, ("vector", "tile_vector", "layer", "tile"))
        check_choice("dac", self.dac, ("multi_bit", "bit_serial"))
        if self.dac_slice_bits is not None:
            check_int_range("dac_slice_bits", self.dac_slice_bits, 1, self.input_bits)
            if self.dac == "bit_serial" and self.dac_slice_bits != 1:
                raise ConfigError(
                    f"dac_slice_bits={self.dac_slice_bits} is invalid with dac='bit_serial' (one bit per cycle); "
                    "use dac='multi_bit' for multi-bit slices"
                )
        check_positive("v_read_v", self.v_read_v)
        check_choice("adc_range", self.adc_range, ("full_scale", "calibrated"))
        check_choice("adc_scope", self.adc_scope, ("column", "tile"))
        check_choice("ir_drop", self.ir_drop, ("ideal", "table", "exact"))
        if self.i_col_max_a is not None:
            check_positive("i_col_max_a", self.i_col_max_a)
        check_range("read_noise_sigma_rel", self.read_noise_sigma_rel, 0.0, 1.0)
        check_range("read_time_s", self.read_time_s, 0.0, 1e9)
        if not isinstance(self.retention, RetentionConfig):
            raise ConfigError(f"retention={self.retention!r} is invalid: must be a RetentionConfig")
        # the quantization sub-configs validate the fraction bits
        self.weight_quant, self.input_quant  # noqa: B018
        if self.partial_slice == "error" and self.code_bits % self.bits_per_cell:
            what = (
                f"the {self.code_bits} magnitude bits of a {self.weight_bits}-bit weight on a differential pair"
                if self.mapping == "differential"
                else f"the {self.code_bits} bits of a {self.weight_bits}-bit offset-coded weight"
            )
            raise ConfigError(
                f"bits_per_cell={self.bits_per_cell} does not divide {what}; set partial_slice='msb' to store "
                f"the remaining {self.code_bits % self.bits_per_cell} bit(s) in the most-significant slice"
            )
        if self.outputs_per_tile < 1:
            need = 2 * self.n_slices
            raise ConfigError(
                f"tile_cols={self.tile_cols} is invalid: one {self.mapping} output with {self.n_slices} slice(s) "
                f"needs {need} columns; use tile_cols >= {need}"
            )
        if self.adc_bits is not None:
            if isinstance(self.adc_bits, bool) or not isinstance(self.adc_bits, int):
                raise ConfigError(f"adc_bits={self.adc_bits!r} is invalid: must be an integer or None")
            lo = self.bits_per_cell + 1
            if self.adc_bits < lo:
                raise ConfigError(
                    f"adc_bits={self.adc_bits} is invalid: a signed ADC needs at least bits_per_cell + 1 = {lo} bits "
                    f"to resolve one level step of a {self.bits_per_cell}-bit cell"
                )
            check_int_range("adc_bits", self.adc_bits, lo, 32)
        self.adc  # noqa: B018  (validates the adc_* fields)

    @property
    def code_bits(self) -> int:
        """Bits of the unsigned code stored per column: magnitude (differential) or offset code."""
        return self.weight_bits - 1 if self.mapping == "differential" else self.weight_bits

    @property
    def n_slices(self) -> int:
        """Cells (columns) per weight per polarity: ``ceil(code_bits / bits_per_cell)``."""
        return -(-self.code_bits // self.bits_per_cell)

    @property
    def slice_bits(self) -> tuple[int, ...]:
        """Bits held by each slice, least significant first (the last may be partial)."""
        b, c = self.bits_per_cell, self.code_bits
        return tuple(min(b, c - s * b) for s in range(self.n_slices))

    @property
    def outputs_per_tile(self) -> int:
        """Outputs one tile holds in the default layout."""
        s = self.n_slices
        return self.tile_cols // (2 * s) if self.mapping == "differential" else (self.tile_cols - s) // s

    @property
    def adc(self) -> AdcConfig:
        """The ADC description (:class:`crossbar.adc.AdcConfig`) built from the ``adc_*`` fields:
        what the engine draws its flaws from and what the cost model prices."""
        return AdcConfig(
            kind=self.adc_kind, bits=self.adc_bits, columns_per_adc=self.adc_columns_per_adc,
            offset_sigma_rel=self.adc_offset_sigma_rel, gain_sigma_rel=self.adc_gain_sigma_rel,
            cap_sigma_rel=self.adc_cap_sigma_rel, comparator_sigma_rel=self.adc_comparator_sigma_rel,
            opamp_gain_db=self.adc_opamp_gain_db,
        )

    @property
    def adc_inputs_per_tile(self) -> int:
        """ADC inputs of one tile in the default layout: every slice of every output
        (``adc_scope="column"``: ``n_slices x outputs_per_tile``) or every output ("tile")."""
        return self.outputs_per_tile * (self.n_slices if self.adc_scope == "column" else 1)

    @property
    def weight_quant(self) -> QuantConfig:
        return QuantConfig(
            bits=self.weight_bits, mode=self.weight_format, frac_bits=self.weight_frac_bits,
            granularity=self.weight_granularity,
        )

    @property
    def input_quant(self) -> QuantConfig:
        return QuantConfig(
            bits=self.input_bits, mode=self.input_format, frac_bits=self.input_frac_bits,
            granularity="vector" if self.input_granularity == "tile_vector" else self.input_granularity,
        )

    @property
    def input_needs_calibration(self) -> bool:
        """Whether the DAC's input step is fixed once on calibration data (dynamic or scaled
        input format with ``input_granularity`` "layer" or "tile")."""
        return self.input_format != "static" and self.input_granularity in ("layer", "tile")

    @property
    def needs_calibration(self) -> bool:
        """Whether :meth:`crossbar.engine.ProgrammedMatrix.calibrate` must run before the first read."""
        return self.input_needs_calibration or (self.adc_bits is not None and self.adc_range == "calibrated")

    @property
    def input_slice_bits(self) -> int:
        """Input bits per DAC cycle: ``dac_slice_bits``, or 1 (bit_serial) / input_bits (multi_bit)."""
        if self.dac_slice_bits is not None:
            return self.dac_slice_bits
        return 1 if self.dac == "bit_serial" else self.input_bits

    @property
    def cycles(self) -> int:
        """DAC cycles per read: ``ceil(input_bits / input_slice_bits)`` (input_bits bit-serial, 1
        multi-bit)."""
        return -(-self.input_bits // self.input_slice_bits)

    @property
    def dac_full_scale(self) -> int:
        """Largest |value| a DAC cycle applies, the value applied at ``v_read_v``: ``q_max`` of the
        input code (one cycle), 1 (bit-serial: a '1' bit), ``2**dac_slice_bits - 1`` (slices)."""
        if self.cycles == 1:
            return (1 << (self.input_bits - 1)) - 1
        return (1 << self.input_slice_bits) - 1

