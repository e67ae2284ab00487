"""The tile engine: quantize, bit-slice, program and read a weight matrix on ReRAM crossbar tiles.

Every model layer runs through :func:`program_matrix` (once, or again per fault/variation draw)
and :meth:`ProgrammedMatrix.matvec` (every forward pass).

Geometry
--------
A tile is a ``(tile_rows, tile_cols)`` array of cells. A weight matrix ``W`` of shape
``(out_features, in_features)`` (the ``nn.Linear`` convention) is mapped with inputs on word
lines (rows) and outputs x weight slices x polarity on bit lines (columns). The tiles of a layer
form a grid of ``R`` row blocks x ``C`` column blocks (:class:`TileLayout`); tile ``t = r * C + c``.
The default layout (:func:`default_layout`) puts input ``i`` on row ``i % tile_rows`` of row
block ``i // tile_rows``, and the columns of output ``o`` side by side::

    differential: column (o_local * S + s) * 2 + p      p = 0: G+, p = 1: G-
    offset:       column  o_local * S + s               plus S reference columns at k * S + s

with ``S`` slices per weight and ``k`` outputs per tile. Unused ("free") cells are left in HRS
(level 0): they leak no signal (no voltage on free rows) but they load the wires for IR drop.
A :class:`TileLayout` may be any permutation of this (the mapping plan in :mod:`mapping.plan`
builds them, and can mark rows/columns as copies for fault protection: copies are programmed
but not read by the default read).

Number formats and slicing
--------------------------
Weights are quantized to ``weight_bits``-bit symmetric signed codes ``q`` (:mod:`crossbar.quant`,
static or dynamic fixed point, per layer or per tile). The code stored per column has

* differential pair: ``weight_bits - 1`` magnitude bits; ``|q|`` goes to G+ for ``q > 0``,
  to G- for ``q < 0``, the other cell of the pair stays at level 0;
* offset: ``weight_bits`` bits of ``u = q + 2**(weight_bits-1)``; a reference column per slice
  holds the digits of ``2**(weight_bits-1)`` and is subtracted.

The code is cut into ``S = ceil(code_bits / bits_per_cell)`` slices, least significant first,
one cell (one column) per slice. **When bits_per_cell does not divide the code bits**, the
default ``partial_slice="msb"`` stores the remaining ``code_bits mod bits_per_cell`` bits in the
most-significant slice, whose cells then use only their lowest ``2**r`` levels (this is what a
chip with uniform cells would do); ``partial_slice="error"`` refuses such a configuration.
Example: 8-bit weights on differential pairs have 7 magnitude bits: with 2 bits/cell that is
slices of 2, 2, 2, 1 bits.

Programming (sampled once per :func:`program_matrix` / :meth:`ProgrammedMatrix.reprogram`)
--------------------------------------------------------------------------------------------
Each cell's digit ``d`` is drawn from the level table's read-conductance samples for level ``d``
(programming variation: ``LevelTable.sample``), then the stuck-at map of
:func:`device.faults.sample_fault_map` overrides it (SA0 -> ``g_sa0_s``, HRS; SA1 -> ``g_sa1_s``,
LRS). IR drop turns the conductances ``G`` of a tile into its effective matrix ``M`` with
``i_out = v_in @ M`` (input-independent for linear cells): ``ideal`` ``M = G``; ``table``
``M = G * A(G)`` from :class:`crossbar.irdrop.IRDropTable` at the wire resistance of ``circuit``; ``exact`` ``M`` from
:func:`crossbar.solver.effective_matrix`.

Read (every :meth:`ProgrammedMatrix.matvec`)
--------------------------------------------
Inputs are quantized at the DAC to ``input_bits``-bit codes (static or dynamic fixed point) and
applied either all at once as a bipolar voltage (``dac="multi_bit"``) or one two's-complement
bit per cycle (``dac="bit_serial"``; the MSB cycle is weighted ``-2**(input_bits-1)``).
Differential subtraction (G+ minus G-, or column minus reference) is done in the analog domain,
before the ADC (current mirror at the column pair): the ADC digitizes the signed difference
current. The ADC (``adc_bits``; ``None`` = ideal) has a signed range of ``+-(2**(adc_bits-1)-1)``
steps; its step is ``max(1, FS / (2**(adc_bits-1) - 1))`` level-step currents, where ``FS`` is
the largest possible value (``adc_range="full_scale"``) or the largest value seen on
calibration data (``"calibrated"``, :meth:`ProgrammedMatrix.calibrate`). A step finer than one
level step carries no information for an ideal array and is not used. ``adc_scope="column"``
converts every slice column in every cycle (then shift-and-add digitally over slices and input
bits); ``"tile"`` converts the tile's shift-added partial sum of each output (a faster, coarser
model). Read noise (``read_noise_sigma_rel``) perturbs each cell by ``N(0, (sigma * M)^2)`` on
every read; it enters as a Gaussian column current with the exact variance
``sum_i v_i^2 sigma^2 M_ij^2``, drawn from a ``torch.Generator``.

Folding (why a read is cheap)
-----------------------------
For linear cells everything between the DAC and the ADC is linear, so at programming time the
engine folds slices, polarity/reference and IR drop into per-row-block readout matrices in units
of one level step (``D``: ``(R, tile_rows, S * out)`` for column-scope ADCs, ``(R, tile_rows,
out)`` for tile scope) or, with an ideal ADC, into one ``(out, in)`` effective weight matrix: a
read is then one matmul plus the DAC quantization. Bit-serial reads with per-cycle ADC run all
cycles and slices of all tiles as one ``bmm`` over a stacked dimension, in chunks of the batch; on
the CPU (no read noise) each cycle's 0/1 inputs instead select rows of tables of 8-row partial
currents, 16 adds per 128-row column current instead of 128 multiply-adds (``_lut_bit_serial``).

Memory
------
Kept per layer: the integer codes (int8/int16, ``out x in``), the folded readout matrix the read
mode needs (float32 by default: ``in x out`` ideal-ADC or tile scope, ``S x in x out`` column
scope), the read-noise variance matrix of the same shape when read noise is on, fault counts per
tile, and the seed of the draw. Cell conductances (``tiles x rows x cols``, 8 cells per weight
for 8-bit differential 2-bit cells: 680 M cells for BERT-base) are not kept unless
``keep_conductances=True``: :meth:`ProgrammedMatrix.tile_state` re-draws them bit-identically
from the stored seed when a user inspects a layer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from crossbar.quant import QTensor, QuantConfig, dfp_frac_bits, q_max, quantize, quantize_blocks
from device.config import Config, ConfigError, check_choice, check_int_range, check_positive, check_range, config

__all__ = [
    "CrossbarConfig",
    "TileLayout",
    "TileState",
    "ProgrammedMatrix",
    "default_layout",
    "default_levels",
    "program_matrix",
    "FREE",
    "POS",
    "NEG",
    "REF",
    "DEFAULT_G_ON_S",
    "DEFAULT_G_OFF_S",
]

#: column roles in a :class:`TileLayout`
FREE, POS, NEG, REF = 0, 1, 2, 3

#: default level window when no table is given: 10 kOhm LRS, 1 MOhm HRS, the range of the
#: crossbar figures in REFERENCES.md ("10 kohm-1 Mohm cells"); no programming variation
DEFAULT_G_ON_S = 100e-6
DEFAULT_G_OFF_S = 1e-6

_DATA = Path(__file__).resolve().parents[1] / "data"

#: target number of float elements of one chunk of a bit-serial / column-ADC read
_CHUNK_ELEMS = 1 << 23

#: bit-serial reads on the CPU sum each cycle's column currents from tables of partial currents
#: of 8 rows (:func:`_lut_bit_serial`); False forces the batched-matmul path (benchmarks, tests)
_BIT_SERIAL_LUT = True
#: readout columns and tokens per block of a table read: a block's currents (cycles x tokens x
#: columns, 8 x 256 x 128 float32 = 1 MiB) are rounded and shift-added while still in cache; its
#: tables (256 x rows / 8 x columns, 2 MiB) are reused by all tokens (sweep at 4096 tokens, 1 thread:
#: 128 x 256 was 8-12 % faster than 128 x 128, 64 x 256, 256 x 64 on 768x3072 and 3072x768)
_LUT_COLS = 128
_LUT_TOKENS = 256

#: cells per chunk of tiles when applying the IR-drop table at programming (~1 MiB of float64)
_TILE_CHUNK_CELLS = 1 << 17


@config
class CrossbarConfig(Config):
    """How a weight matrix is quantized, sliced, mapped, programmed and read on crossbar tiles."""

    #: word lines per tile (NeuroSim default sub-array: 128)
    tile_rows: int = 128
    #: bit lines per tile
    tile_cols: int = 128
    #: bits of the signed weight code, sign included (symmetric, see crossbar.quant)
    weight_bits: int = 8
    #: weight number format: "static" or "dynamic" fixed point (DFP, Long et al. DATE 2019)
    weight_format: Literal["static", "dynamic"] = "dynamic"
    #: static weight format: bits after the binary point
    weight_frac_bits: int = 6
    #: dynamic weight format: one binary point per "layer" or per "tile"
    weight_granularity: Literal["layer", "tile"] = "layer"
    #: bits stored per cell (levels 2**bits_per_cell), 1..4
    bits_per_cell: int = 2
    #: when bits_per_cell does not divide the code bits: "msb" (top slice holds the rest) or "error"
    partial_slice: Literal["msb", "error"] = "msb"
    #: signed weights: "differential" (G+ and G- columns) or "offset" (code + 2**(N-1), reference column)
    mapping: Literal["differential", "offset"] = "differential"
    #: bits of the signed input code at the DAC, sign included
    input_bits: int = 8
    #: input number format at the DAC: "static" or "dynamic" fixed point
    input_format: Literal["static", "dynamic"] = "dynamic"
    #: static input format: bits after the binary point
    input_frac_bits: int = 4
    #: dynamic input format: one binary point per "layer" or per row block ("tile")
    input_granularity: Literal["layer", "tile"] = "layer"
    #: "multi_bit": the whole input code as one bipolar voltage; "bit_serial": one bit per cycle
    dac: Literal["multi_bit", "bit_serial"] = "multi_bit"
    #: word-line voltage of a full-scale input (multi_bit) or of a '1' bit (bit_serial), V
    v_read_v: float = 0.2
    #: ADC resolution in bits, signed; None = ideal (no quantization of column currents)
    adc_bits: int | None = None
    #: ADC range: "full_scale" (largest possible sum) or "calibrated" (largest seen on data)
    adc_range: Literal["full_scale", "calibrated"] = "full_scale"
    #: what one ADC conversion digitizes: each slice "column" per cycle, or the "tile" partial sum
    adc_scope: Literal["column", "tile"] = "column"
    #: IR-drop model: "ideal" (none), "table" (crossbar.irdrop LUT), "exact" (crossbar.solver)
    ir_drop: Literal["ideal", "table", "exact"] = "ideal"
    #: read noise: relative sigma of each cell's conductance, drawn on every read
    read_noise_sigma_rel: float = 0.0

    def __post_init__(self) -> None:
        check_int_range("tile_rows", self.tile_rows, 1, 4096)
        check_int_range("tile_cols", self.tile_cols, 2, 4096)
        check_int_range("weight_bits", self.weight_bits, 2, 16)
        check_choice("weight_format", self.weight_format, ("static", "dynamic"))
        check_choice("weight_granularity", self.weight_granularity, ("layer", "tile"))
        check_int_range("bits_per_cell", self.bits_per_cell, 1, 4)
        check_choice("partial_slice", self.partial_slice, ("msb", "error"))
        check_choice("mapping", self.mapping, ("differential", "offset"))
        check_int_range("input_bits", self.input_bits, 2, 16)
        check_choice("input_format", self.input_format, ("static", "dynamic"))
        check_choice("input_granularity", self.input_granularity, ("layer", "tile"))
        check_choice("dac", self.dac, ("multi_bit", "bit_serial"))
        check_positive("v_read_v", self.v_read_v)
        check_choice("adc_range", self.adc_range, ("full_scale", "calibrated"))
        check_choice("adc_scope", self.adc_scope, ("column", "tile"))
        check_choice("ir_drop", self.ir_drop, ("ideal", "table", "exact"))
        check_range("read_noise_sigma_rel", self.read_noise_sigma_rel, 0.0, 1.0)
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
    def weight_quant(self) -> QuantConfig:
        return QuantConfig(
            bits=self.weight_bits, mode=self.weight_format, frac_bits=self.weight_frac_bits,
            granularity=self.weight_granularity,
        )

    @property
    def input_quant(self) -> QuantConfig:
        return QuantConfig(
            bits=self.input_bits, mode=self.input_format, frac_bits=self.input_frac_bits,
            granularity=self.input_granularity,
        )

    @property
    def cycles(self) -> int:
        """DAC cycles per read: input_bits (bit_serial) or 1."""
        return self.input_bits if self.dac == "bit_serial" else 1


# --------------------------------------------------------------------------------------------
# layout


@dataclasses.dataclass(frozen=True, eq=False)
class TileLayout:
    """Where each weight digit of one matrix sits: a grid of ``R x C`` tiles (crossbar-level part
    of a mapping plan; :mod:`mapping.plan` records and edits these).

    Tiles in row block ``r`` share the word-line assignment ``row_in[r]``; tiles in column block
    ``c`` share the bit-line assignment ``col_*[c]``.

    ``row_in``: ``(R, tile_rows)`` int, input feature on each word line, -1 free.
    ``row_copy``: ``(R, tile_rows)`` bool, the row holds a copy of ``row_in``'s weights (programmed,
    not driven by the default read).
    ``col_out``: ``(C, tile_cols)`` int, output feature of each bit line (-1: free or reference).
    ``col_slice``: ``(C, tile_cols)`` int, weight slice of the bit line (0 = LSB; -1 free).
    ``col_role``: ``(C, tile_cols)`` int, :data:`FREE`, :data:`POS`, :data:`NEG` or :data:`REF`.
    ``col_copy``: ``(C, tile_cols)`` bool, the column is a copy (programmed, not read by default).
    """

    tile_rows: int
    tile_cols: int
    row_in: np.ndarray
    col_out: np.ndarray
    col_slice: np.ndarray
    col_role: np.ndarray
    row_copy: np.ndarray
    col_copy: np.ndarray

    @property
    def n_row_blocks(self) -> int:
        return int(self.row_in.shape[0])

    @property
    def n_col_blocks(self) -> int:
        return int(self.col_out.shape[0])

    @property
    def n_tiles(self) -> int:
        return self.n_row_blocks * self.n_col_blocks

    def tile_index(self, r: int, c: int) -> int:
        return r * self.n_col_blocks + c

    def copy(self) -> "TileLayout":
        return dataclasses.replace(self, **{f: getattr(self, f).copy() for f in _LAYOUT_ARRAYS})

    def validate(self, out_features: int, in_features: int, cfg: CrossbarConfig) -> None:
        """Raise ValueError unless this layout holds every digit of an ``(out, in)`` matrix once."""
        R, C, tr, tc = self.n_row_blocks, self.n_col_blocks, self.tile_rows, self.tile_cols
        if (tr, tc) != (cfg.tile_rows, cfg.tile_cols):
            raise ValueError(f"layout tiles are {tr}x{tc} but the crossbar config has {cfg.tile_rows}x{cfg.tile_cols}")
        for name, shape in (("row_in", (R, tr)), ("row_copy", (R, tr)), ("col_out", (C, tc)),
                            ("col_slice", (C, tc)), ("col_role", (C, tc)), ("col_copy", (C, tc))):
            if getattr(self, name).shape != shape:
                raise ValueError(f"layout {name} has shape {getattr(self, name).shape}, expected {shape}")
        if np.any(self.row_in >= in_features) or np.any(self.row_in < -1):
            raise ValueError("layout row_in has an index outside the inputs")
        rin = self.row_in[(self.row_in >= 0) & ~self.row_copy]
        if np.unique(rin).size != rin.size:
            raise ValueError("layout rows hold an input more than once (mark extra rows as copies)")
        if np.any(self.row_copy & ~np.isin(self.row_in, rin)):
            raise ValueError("layout has a copy row of an input that is not mapped")
        role, s, o, cp = self.col_role, self.col_slice, self.col_out, self.col_copy
        S = cfg.n_slices
        roles = (POS, NEG) if cfg.mapping == "differential" else (POS,)
        if np.any(~np.isin(role, (FREE, *roles, *((REF,) if cfg.mapping == "offset" else ())))):
            raise ValueError(f"layout has column roles not used by {cfg.mapping} mapping")
        w = (role == POS) | (role == NEG)
        if np.any(w & ((o < 0) | (o >= out_features) | (s < 0) | (s >= S))):
            raise ValueError("layout weight column with an output or slice index out of range")
        main = w & ~cp
        key = (o[main].astype(np.int64) * S + s[main]) * 3 + role[main]
        if np.unique(key).size != key.size:
            raise ValueError("layout holds an (output, slice, polarity) in more than one column (mark copies)")
        per_out = np.bincount(o[main], minlength=out_features)
        if np.any((per_out != 0) & (per_out != S * len(roles))):
            raise ValueError(f"layout must hold all {S} slice(s){' and both polarities' if len(roles) > 1 else ''} of each mapped output")
        blocks = np.broadcast_to(np.arange(C)[:, None], o.shape)
        ob = np.full(out_features, -1)
        for rl in roles:  # every digit of one output must sit in one column block
            for ss in range(S):
                m = main & (role == rl) & (s == ss)
                if ss == 0 and rl == POS:
                    ob[o[m]] = blocks[m]
                elif np.any(ob[o[m]] != blocks[m]):
                    raise ValueError("layout splits the columns of one output over several column blocks")
        if cfg.mapping == "offset":
            for c in range(C):
                used = np.unique(s[c][main[c]])
                for ss in used:
                    n_ref = int(np.sum((role[c] == REF) & (s[c] == ss) & ~cp[c]))
                    if n_ref != 1:
                        raise ValueError(f"column block {c} needs exactly one reference column for slice {ss}, has {n_ref}")


_LAYOUT_ARRAYS = ("row_in", "col_out", "col_slice", "col_role", "row_copy", "col_copy")


def default_layout(out_features: int, in_features: int, cfg: CrossbarConfig) -> TileLayout:
    """The dense layout: inputs in order on rows, outputs in order on columns (see module doc)."""
    if out_features < 1 or in_features < 1:
        raise ValueError(f"weight shape ({out_features}, {in_features}) must be positive")
    tr, tc, S, k = cfg.tile_rows, cfg.tile_cols, cfg.n_slices, cfg.outputs_per_tile
    R, C = -(-in_features // tr), -(-out_features // k)
    row_in = np.arange(R * tr, dtype=np.int32).reshape(R, tr)
    row_in[row_in >= in_features] = -1
    col_out = np.full((C, tc), -1, np.int32)
    col_slice = np.full((C, tc), -1, np.int8)
    col_role = np.full((C, tc), FREE, np.int8)
    ol = np.arange(k)
    for s in range(S):
        if cfg.mapping == "differential":
            for p, rl in ((0, POS), (1, NEG)):
                j = (ol * S + s) * 2 + p
                col_out[:, j] = np.arange(C)[:, None] * k + ol
                col_slice[:, j] = s
                col_role[:, j] = rl
        else:
            j = ol * S + s
            col_out[:, j] = np.arange(C)[:, None] * k + ol
            col_slice[:, j] = s
            col_role[:, j] = POS
            col_slice[:, k * S + s] = s
            col_role[:, k * S + s] = REF
    over = col_out >= out_features
    col_out[over], col_slice[over], col_role[over] = -1, -1, FREE
    return TileLayout(
        tile_rows=tr, tile_cols=tc, row_in=row_in, col_out=col_out, col_slice=col_slice, col_role=col_role,
        row_copy=np.zeros((R, tr), bool), col_copy=np.zeros((C, tc), bool),
    )


# --------------------------------------------------------------------------------------------
# levels, faults, IR drop (the device-side effects; each imported where used)


def default_levels(bits_per_cell: int):
    """Level table used when none is given: ``LevelTable.synthetic`` between
    :data:`DEFAULT_G_OFF_S` (1 MOhm, level 0) and :data:`DEFAULT_G_ON_S` (10 kOhm), evenly spaced
    in conductance, no programming variation (``sigma_rel=0``)."""
    from device.programming import LevelTable

    return LevelTable.synthetic(
        bits_per_cell=bits_per_cell, g_on_s=DEFAULT_G_ON_S, g_off_s=DEFAULT_G_OFF_S, sigma_rel=0.0,
        rng=np.random.default_rng(0),
    )


def _level_step_s(levels: Any) -> float:
    g = np.asarray(levels.g_target_s, dtype=np.float64)
    return float((g[-1] - g[0]) / (g.size - 1))


def _check_levels(levels: Any, cfg: CrossbarConfig) -> None:
    if int(levels.bits_per_cell) != cfg.bits_per_cell:
        raise ValueError(
            f"level table has {levels.bits_per_cell} bit(s) per cell but the crossbar config has "
            f"bits_per_cell={cfg.bits_per_cell}"
        )
    g = np.asarray(levels.g_target_s, dtype=np.float64)
    if g.shape != (2**cfg.bits_per_cell,) or not np.all(np.diff(g) > 0):
        raise ValueError(f"level table g_target_s must hold {2**cfg.bits_per_cell} ascending conductances")


def _load_irdrop(irdrop: Any, cfg: CrossbarConfig):
    from crossbar.irdrop import IRDropTable

    if irdrop is None:
        irdrop = _DATA / "irdrop_default.h5"
        if not irdrop.exists():
            raise ValueError(f"ir_drop='table' needs an IR-drop table: the default {irdrop} is missing; pass irdrop=PATH")
    if isinstance(irdrop, (str, Path)):
        irdrop = IRDropTable.load(irdrop)
    sizes = tuple(int(s) for s in np.atleast_1d(irdrop.rows))
    if cfg.tile_rows != cfg.tile_cols or cfg.tile_rows not in sizes:
        raise ValueError(
            f"IR-drop table covers square tiles of sizes {list(sizes)} but the crossbar config uses "
            f"{cfg.tile_rows}x{cfg.tile_cols} tiles; tabulate this size or use ir_drop='exact'"
        )
    return irdrop


def _irdrop_wire_ohm(circuit: Any) -> float:
    """Wire resistance per segment for the IR-drop table (its model has equal row/col wires)."""
    from crossbar.solver import CircuitConfig

    c = circuit if circuit is not None else CircuitConfig()
    if c.r_wire_row_ohm != c.r_wire_col_ohm:
        raise ValueError(
            f"the IR-drop table models equal row and column wires; circuit has r_wire_row_ohm={c.r_wire_row_ohm} "
            f"and r_wire_col_ohm={c.r_wire_col_ohm} (use ir_drop='exact')"
        )
    return float(c.r_wire_row_ohm)


# --------------------------------------------------------------------------------------------
# the programmed matrix


@dataclasses.dataclass(frozen=True, eq=False)
class TileState:
    """What one draw of a layer's tiles looks like (for inspection), tiles ``t = r * C + c``.

    ``levels``: ``(tiles, rows, cols)`` uint8 target digit of every cell.
    ``faults``: ``(tiles, rows, cols)`` int8 :class:`device.faults.Fault` codes.
    ``g_s``: ``(tiles, rows, cols)`` programmed read conductance, S (after variation and faults).
    ``m_s``: ``(tiles, rows, cols)`` effective matrix with IR drop, S (``i_out = v_in @ m_s``).
    """

    tiles: np.ndarray
    levels: np.ndarray
    faults: np.ndarray
    g_s: np.ndarray
    m_s: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class ProgrammedMatrix:
    """One weight matrix programmed on crossbar tiles; call :meth:`matvec` to read it.

    Build with :func:`program_matrix`. Immutable: :meth:`reprogram` and :meth:`calibrate` return
    new objects that share the integer codes.
    """

    cfg: CrossbarConfig
    qweight: QTensor
    layout: TileLayout
    levels: Any
    faults: Any
    circuit: Any
    irdrop: Any
    seed: int
    #: ``(R, 1, out)`` per-row-block output factor: weight step (x ADC step for ADC modes)
    out_scale: torch.Tensor
    #: folded readout: ``(out, in)`` (ideal ADC) or ``(R, tile_rows, L)`` in ADC steps
    readout: torch.Tensor
    #: read-noise variance matrix, same shape as ``readout``; None without read noise
    noise_var: torch.Tensor | None
    #: ``(R,)`` ADC step in level-step units (ones for an ideal ADC)
    adc_step: torch.Tensor
    #: ``(tiles, 3)`` cell counts: no fault, SA0, SA1
    fault_counts: np.ndarray
    calibrated: bool = False
    input_frac_bits: torch.Tensor | None = None
    kept: TileState | None = None

    # ---- shapes -------------------------------------------------------------------------
    @property
    def out_features(self) -> int:
        return int(self.qweight.q.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.qweight.q.shape[1])

    @property
    def device(self) -> torch.device:
        return self.readout.device

    @property
    def dtype(self) -> torch.dtype:
        return self.readout.dtype

    @property
    def n_tiles(self) -> int:
        return self.layout.n_tiles

    def to(self, device: str | torch.device) -> "ProgrammedMatrix":
        """A copy with its tensors on ``device`` (e.g. ``"cuda"``)."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        qw = dataclasses.replace(self.qweight, q=self.qweight.q.to(device), frac_bits=self.qweight.frac_bits.to(device))
        return dataclasses.replace(
            self, qweight=qw, out_scale=mv(self.out_scale), readout=mv(self.readout), noise_var=mv(self.noise_var),
            adc_step=mv(self.adc_step), input_frac_bits=mv(self.input_frac_bits),
        )

    # ---- read ---------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.matvec(x, generator=generator)

    def matvec(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Read the crossbar: ``(batch..., in_features) -> (batch..., out_features)``.

        ``generator`` (a ``torch.Generator`` on the tensors' device) draws the read noise; it is
        required when ``read_noise_sigma_rel > 0`` and unused otherwise. The result has ``x``'s
        dtype and approximates ``x @ W.T``.
        """
        cfg = self.cfg
        self._check_input(x)
        if cfg.read_noise_sigma_rel > 0 and generator is None:
            raise ValueError("read noise is on (read_noise_sigma_rel > 0): pass a torch.Generator to matvec")
        if cfg.adc_bits is not None and cfg.adc_range == "calibrated" and not self.calibrated:
            raise ValueError("adc_range='calibrated' needs ProgrammedMatrix.calibrate(x) before the first read")
        lead = x.shape[:-1]
        xf = x.reshape(-1, self.in_features)
        xq, sx = self._dac(xf)
        if cfg.adc_bits is None:
            y = self._read_ideal_adc(xq, sx, generator)
        else:
            y = self._read_adc(xq, sx, generator, quantize_adc=True)
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"input has shape {tuple(x.shape)}: its last dimension must be in_features={self.in_features}"
            )
        if x.device != self.device:
            raise ValueError(f"input is on {x.device} but the programmed matrix is on {self.device}; use .to()")
        if not torch.is_floating_point(x):
            raise ValueError(f"input must be floating point, got {x.dtype}")

    def _in_block(self) -> torch.Tensor:
        """``(in,)`` row block of every input."""
        lay = self.layout
        blk = np.zeros(self.in_features, np.int64)
        m = (lay.row_in >= 0) & ~lay.row_copy
        blk[lay.row_in[m]] = np.broadcast_to(np.arange(lay.n_row_blocks)[:, None], lay.row_in.shape)[m]
        return torch.from_numpy(blk).to(self.device)

    def _input_frac_bits(self, xf: torch.Tensor) -> torch.Tensor:
        """Binary point(s) of the inputs: scalar, or ``(R,)`` per row block. Raises on NaN/inf."""
        cfg = self.cfg
        if self.input_frac_bits is not None and cfg.input_format == "dynamic":
            return self.input_frac_bits
        if cfg.input_format == "static" or cfg.input_granularity == "layer":
            # one fused pass: max |x| (NaN propagates), also the finiteness check
            m = torch.linalg.vector_norm(xf.detach(), ord=float("inf")) if xf.numel() else xf.new_zeros(())
            if not bool(torch.isfinite(m)):
                raise ValueError("input holds NaN or infinite values")
            if cfg.input_format == "static":
                return torch.tensor(cfg.input_frac_bits, dtype=torch.int64, device=xf.device)
            return dfp_frac_bits(m, cfg.input_bits)
        a = xf.detach().abs()
        if not bool(torch.isfinite(a).all()):
            raise ValueError("input holds NaN or infinite values")
        col_max = a.amax(0) if a.shape[0] else a.new_zeros(self.in_features)
        m = torch.zeros(self.layout.n_row_blocks, dtype=a.dtype, device=a.device)
        m = m.scatter_reduce(0, self._in_block(), col_max, reduce="amax", include_self=True)
        return dfp_frac_bits(m, cfg.input_bits)

    def _dac(self, xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input codes ``(n, in)`` (integer-valued, compute dtype, a new tensor) and the input
        step: a scalar or ``(in,)`` per input. Codes round half to even and saturate at
        ``+-q_max(input_bits)`` (static format; DFP never saturates on the data it was set from)."""
        cfg = self.cfg
        f = self._input_frac_bits(xf)
        if f.ndim:
            f = f[self._in_block()]
        step = torch.exp2(-f.to(torch.float64)).to(self.dtype)
        qm = q_max(cfg.input_bits)
        xq = xf.to(self.dtype) * torch.exp2(f.to(torch.float64)).to(self.dtype)  # exact: power of two
        xq.round_().clamp_(-qm, qm)
        return xq, step
    def _planes(self, xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DAC cycles: ``(K, n, in)`` word-line inputs in input-LSB units and ``(K,)`` weights."""
        cfg = self.cfg
        if cfg.dac == "multi_bit":
            return xq.unsqueeze(0), torch.ones(1, dtype=self.dtype, device=self.device)
        B = cfg.input_bits
        u = torch.remainder(xq.to(torch.int64), 1 << B)  # two's complement
        k = torch.arange(B, device=self.device)
        planes = ((u.unsqueeze(0) >> k.view(B, 1, 1)) & 1).to(self.dtype)
        a = torch.exp2(k.to(torch.float64))
        a[-1] = -a[-1]
        return planes, a.to(self.dtype)

    def _read_ideal_adc(self, xq: torch.Tensor, sx: torch.Tensor, generator) -> torch.Tensor:
        # readout is (out, in) with the weight steps folded in: one matmul, as plain torch
        if self.noise_var is not None and self.cfg.dac == "bit_serial":
            planes, a = self._planes(xq)
            xv = torch.einsum("k,kni->ni", a * a, planes) * (sx * sx)
        xs = xq.mul_(sx)  # xq is our own tensor
        y = torch.nn.functional.linear(xs, self.readout)
        if self.noise_var is not None:
            if self.cfg.dac != "bit_serial":
                xv = xs * xs
            std = torch.nn.functional.linear(xv, self.noise_var).clamp_(min=0).sqrt_()
            y = y + std * torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        return y

    def _row_gather(self) -> torch.Tensor:
        """``(R * tile_rows,)`` index into inputs padded with one zero column (free / copy rows)."""
        lay = self.layout
        idx = lay.row_in.astype(np.int64).copy()
        idx[(idx < 0) | lay.row_copy] = self.in_features
        return torch.from_numpy(idx.reshape(-1)).to(self.device)

    def _read_adc(self, xq, sx, generator, *, quantize_adc: bool, measure: bool = False) -> torch.Tensor:
        """Per-cycle, per-tile reads with an ADC, as one ``bmm`` per chunk of the batch.

        ``readout`` ``(R, rows, L)``, ``L = S * out`` (column scope, channel ``s * out + o``) or
        ``out`` (tile scope), in ADC steps. Returns ``(n, out)``; with ``measure`` the ``(R,)``
        largest unquantized |current| in level steps instead.

        The DAC cycles are stacked into the token dimension: per chunk of ``m`` tokens one
        ``(R, K * m, rows) @ (R, rows, L)`` bmm gives every cycle's column currents, which are then
        rounded in place, clamped only when the ADC range can actually be exceeded (see
        :meth:`_adc_can_clip`), and shift-added: cycles and row blocks by one ``(1, R * K)`` GEMV
        per chunk when the output factor is the same for all outputs of a row block (layer-wide
        weight step), slices once for the whole batch; few large ops, since on a shared machine
        every parallel op can cost a scheduler time slice. In the
        compute dtype: with float32 the rounded ADC codes and their shift-and-add sums are integers
        below ``2**24`` (``|code| <= 2**(adc_bits-1)``, times ``2**input_bits`` and ``2**code_bits``),
        hence exact whenever ``adc_bits + input_bits + code_bits + log2(K * S) <= 24``; otherwise
        the sums are rounded like any float32 matmul (pass ``dtype=torch.float64`` for exact checks).

        On the CPU without read noise, bit-serial reads (``K > 1``) take :func:`_lut_bit_serial`
        instead (same ADC per cycle and column, currents summed from 8-row tables; about 4x faster at
        BERT-base shapes, ``bench/bench_engine.py``); ``measure``, read noise, multi-bit DACs and GPUs keep the ``bmm``.
        """
        cfg, lay = self.cfg, self.layout
        R, tr = lay.n_row_blocks, lay.tile_rows
        n, out = xq.shape[0], self.out_features
        S = cfg.n_slices if cfg.adc_scope == "column" else 1
        L = self.readout.shape[-1]
        K, dt, dev = cfg.cycles, self.dtype, self.device
        # word-line codes per row block, (R, n, rows); free and copy rows read 0
        xw = torch.cat([xq, xq.new_zeros(n, 1)], dim=1).index_select(1, self._row_gather())
        xw = xw.view(n, R, tr).transpose(0, 1).contiguous()
        lo, hi = -(2 ** (cfg.adc_bits - 1)), 2 ** (cfg.adc_bits - 1) - 1
        clip = quantize_adc and not measure and self._adc_can_clip(lo, hi)
        if K > 1:
            a = torch.exp2(torch.arange(K, device=dev, dtype=torch.float64))
            a[-1] = -a[-1]  # the MSB cycle weighs -2**(B-1)
            a = a.to(dt).view(1, 1, K)
        beta = torch.exp2(torch.arange(S, device=dev, dtype=torch.float64) * cfg.bits_per_cell).to(dt).view(1, 1, S)
        # per-row-block input step: scalar for a layer-wide input format
        if sx.ndim:
            sx_r = sx.new_zeros(R).scatter_(0, self._in_block(), sx)
        else:
            sx_r = sx.expand(R)
        fac = self.out_scale * sx_r.view(R, 1, 1)  # (R, 1, out)
        w_rs = (beta.view(1, 1, S, 1) * fac.view(R, 1, 1, out)) if S > 1 else fac  # (R, 1, S, out) / (R, 1, out)
        ak = None
        if bool((fac == fac[:, :, :1]).all()):
            # the usual case (layer-wide weight step): fac[r, o] = c_r, so cycles and row blocks
            # contract in one (1, R*K) GEMV over the whole chunk, w_s = 2**(s*bits_per_cell)
            ak = (fac[:, 0, :1] * (a.view(1, K) if K > 1 else torch.ones(1, 1, dtype=dt, device=dev))).reshape(1, R * K)
            w_s = beta.view(1, S, 1)
        if (_BIT_SERIAL_LUT and K > 1 and not measure and self.noise_var is None and dev.type == "cpu"
                and dt in (torch.float32, torch.float64)):
            u = torch.remainder(xw.to(torch.int32), 1 << cfg.input_bits)  # two's complement codes
            if ak is not None:
                ak_r, col_fac = ak.view(R, 1, K), None
            else:  # per-output factors (per-tile weight formats): (R, L), channel s * out + o
                ak_r, col_fac = a.view(1, 1, K).expand(R, 1, K), fac.view(R, 1, out).expand(R, S, out).reshape(R, L)
            return _lut_bit_serial(u, cfg.input_bits, self.readout, ak_r, out, 2.0**cfg.bits_per_cell,
                                   quantize_adc, (lo, hi) if clip else None, col_fac)
        if ak is not None:
            zs = torch.empty(n * L, dtype=dt, device=dev)  # (n, S, out) cycle- and block-summed codes
        nc = max(1, min(n, _CHUNK_ELEMS // max(1, R * K * L)))  # tokens per chunk
        n_chunks = -(-n // nc)
        if K > 1:
            # two's complement bits of all cycles as 0/1 bytes, laid out chunk by chunk,
            # (R, chunks, K, nc, rows), so that a chunk's bmm operand (R, K * nc, rows) is a view;
            # converted to the compute dtype a group of chunks at a time (few, large ops)
            it = torch.uint8 if cfg.input_bits <= 8 else torch.int16
            u = torch.remainder(xw.to(torch.int32), 1 << cfg.input_bits)
            if it == torch.int16:
                u = u - ((u >> 15) << 16)  # reinterpret the top bit as sign so the int16 cast is exact
            u = torch.nn.functional.pad(u.to(it), (0, 0, 0, n_chunks * nc - n)).view(R, n_chunks, 1, nc, tr)
            shifts = torch.arange(K, dtype=it, device=dev).view(1, 1, K, 1, 1)
            bits = (u >> shifts) & 1
            del u
            group = max(1, (1 << 24) // (R * K * nc * tr))
        y = torch.empty(n, out, dtype=dt, device=dev)
        peak = torch.zeros(R, dtype=dt, device=dev)
        for i0 in range(0, n, nc):  # chunks of the batch (memory), never tiles or bits
            i1 = min(n, i0 + nc)
            m = i1 - i0
            if K > 1:  # bit planes (R, K, m, rows) -> rows of the bmm ordered (cycle, token)
                c, j = divmod(i0 // nc, group)
                if j == 0:
                    planes = bits[:, c * group : (c + 1) * group].to(dt)
                X = planes[:, j].view(R, K * nc, tr) if m == nc else planes[:, j, :, :m].reshape(R, K * m, tr)
            else:
                X = xw[:, i0:i1]
            cur = torch.bmm(X, self.readout)  # (R, K*m, L) in ADC steps
            if self.noise_var is not None:
                var = torch.bmm(X * X, self.noise_var).clamp_(min=0).sqrt_()
                cur.addcmul_(var, torch.randn(cur.shape, generator=generator, dtype=cur.dtype, device=cur.device))
            if measure:
                peak = torch.maximum(peak, cur.abs().amax(dim=(1, 2)) * self.adc_step)
                continue
            if quantize_adc:
                cur.round_()
                if clip:
                    cur.clamp_(lo, hi)
            if ak is not None:
                # cur is (R * K, m * L) row-major: cycles and row blocks in one GEMV
                torch.mm(ak, cur.view(R * K, m * L), out=zs[i0 * L : i1 * L].view(1, m * L))
                continue
            # shift-and-add over DAC cycles (two's complement), then slices and row blocks in one
            # weighted sum, w_rs = 2**(s*bits_per_cell) * fac[r]
            z = torch.matmul(a, cur.view(R, K, m * L)) if K > 1 else cur  # (R, 1, m*L)
            if S > 1:
                torch.sum(z.view(R, m, S, out) * w_rs, dim=(0, 2), out=y[i0:i1])
            else:
                torch.sum(z.view(R, m, out) * w_rs, dim=0, out=y[i0:i1])
        if measure:
            return peak
        if ak is not None:  # slices, once for the whole batch (few large ops: see _CHUNK_ELEMS)
            torch.sum(zs.view(n, S, out) * w_s, dim=1, out=y)
        return y

    def _adc_can_clip(self, lo: int, hi: int) -> bool:
        """Whether any column current can round outside the ADC codes ``[lo, hi]``: the sum of
        the positive (negative) readout entries of a column bounds its current for 0/1 bit-serial
        inputs, times ``q_max`` for multi-bit codes. Read noise is unbounded. The 0.25-step margin
        covers float round-off of the sums; when it holds the clamp is a no-op and is skipped."""
        if self.noise_var is not None:
            return True
        d = self.readout
        if self.cfg.dac == "bit_serial":
            top, bottom = d.clamp(min=0).sum(1).max(), d.clamp(max=0).sum(1).min()
        else:
            top = d.abs().sum(1).max() * q_max(self.cfg.input_bits)
            bottom = -top
        return not (float(top) < hi + 0.25 and float(bottom) > lo - 0.25)

    # ---- calibration, reprogramming ------------------------------------------------------
    def calibrate(self, x: torch.Tensor) -> "ProgrammedMatrix":
        """Fix the data-dependent ranges on calibration inputs ``(batch..., in_features)``.

        With a dynamic input format, the binary point(s) of the DAC are set from ``x`` (instead of
        from each batch). With ``adc_range="calibrated"``, each row block's ADC step is set so that
        the largest |current| seen on ``x`` (noise-free) is the ADC's full scale. Calling it again on
        the result with more batches accumulates (widest binary point, largest ADC range seen).
        Returns a new :class:`ProgrammedMatrix`.
        """
        cfg = self.cfg
        self._check_input(x)
        xf = x.reshape(-1, self.in_features)
        fb = None
        if cfg.input_format == "dynamic":
            fb = dataclasses.replace(self, input_frac_bits=None)._input_frac_bits(xf)
            if self.input_frac_bits is not None:  # accumulate over calibration batches: cover all ranges
                fb = torch.minimum(fb, self.input_frac_bits)
        pm = dataclasses.replace(self, input_frac_bits=fb)
        if cfg.adc_bits is None or cfg.adc_range != "calibrated":
            return pm
        xq, sx = pm._dac(xf)
        quiet = dataclasses.replace(pm, noise_var=None)
        peak = quiet._read_adc(xq, sx, None, quantize_adc=False, measure=True)  # level steps
        step = torch.clamp(peak / (2 ** (cfg.adc_bits - 1) - 1), min=1.0)
        if self.calibrated:  # accumulate over calibration batches: the largest range seen
            step = torch.maximum(step, self.adc_step)
        return pm._with_adc_step(step, calibrated=True)

    def _with_adc_step(self, step: torch.Tensor, *, calibrated: bool) -> "ProgrammedMatrix":
        ratio = (self.adc_step / step).view(-1, 1, 1)
        out_scale = self.out_scale / self.adc_step.view(-1, 1, 1) * step.view(-1, 1, 1)
        nv = None if self.noise_var is None else self.noise_var * ratio * ratio
        return dataclasses.replace(
            self, readout=self.readout * ratio, noise_var=nv, adc_step=step, out_scale=out_scale, calibrated=calibrated
        )

    def reprogram(
        self, rng: np.random.Generator, *, levels: Any = None, faults: Any = None, keep_conductances: bool = False
    ) -> "ProgrammedMatrix":
        """A new draw of programming variation and faults for the same integer codes and layout
        (the quantization is not recomputed). ``levels`` / ``faults`` replace the previous ones
        where given. Calibrated ADC steps are reset to full scale (calibrate again)."""
        return _program(
            self.qweight, self.layout, self.cfg, levels if levels is not None else self.levels,
            faults if faults is not None else self.faults, rng, circuit=self.circuit, irdrop=self.irdrop,
            device=self.device, dtype=self.dtype, keep_conductances=keep_conductances,
            input_frac_bits=self.input_frac_bits,
        )

    # ---- inspection ----------------------------------------------------------------------
    def tile_state(self, tiles: Any = None) -> TileState:
        """Levels, fault maps, conductances and effective matrices of ``tiles`` (indices, default
        all), re-drawn bit-identically from the stored seed unless kept at programming."""
        st = self.kept if self.kept is not None else _draw(
            self.qweight, self.layout, self.cfg, self.levels, self.faults, self.seed, self.circuit, self.irdrop
        )
        if tiles is None:
            return st
        t = np.atleast_1d(np.asarray(tiles, dtype=np.int64))
        if np.any((t < 0) | (t >= self.n_tiles)):
            raise ValueError(f"tile index out of range: this matrix has {self.n_tiles} tiles")
        pick = np.searchsorted(st.tiles, t)
        return TileState(tiles=t, levels=st.levels[pick], faults=st.faults[pick], g_s=st.g_s[pick], m_s=st.m_s[pick])

    def column_currents(self, x: torch.Tensor, tiles: Any = None) -> np.ndarray:
        """Bit-line currents, A, of every physical column (before the differential subtraction).

        ``x``: ``(n, in_features)``. Returns ``(cycles, n, len(tiles), tile_cols)``: word-line
        voltages ``v_read_v`` per '1' bit (bit-serial) or ``v_read_v * code / q_max`` (multi-bit)
        times the tile's effective matrix. Noise-free.
        """
        self._check_input(x)
        xq, _ = self._dac(x.reshape(-1, self.in_features))
        planes, _ = self._planes(xq)
        if self.cfg.dac == "multi_bit":
            planes = planes / q_max(self.cfg.input_bits)
        v = planes.double().cpu().numpy() * self.cfg.v_read_v
        v = np.concatenate([v, np.zeros(v.shape[:2] + (1,))], axis=2)
        st = self.tile_state(tiles)
        C = self.layout.n_col_blocks
        gather = self._row_gather().cpu().numpy().reshape(self.layout.n_row_blocks, -1)
        vin = v[:, :, gather[st.tiles // C]]  # (K, n, T, rows)
        return np.einsum("knti,tij->kntj", vin, st.m_s)

    def summary(self) -> str:
        """Tiles, utilization, cells per weight, formats, faults."""
        cfg, lay = self.cfg, self.layout
        cells = self.n_tiles * lay.tile_rows * lay.tile_cols
        per_w = cfg.n_slices * (2 if cfg.mapping == "differential" else 1)
        used = self.out_features * self.in_features * per_w
        fc = self.fault_counts.sum(0)
        fb = self.qweight.frac_bits
        fmt = f"F={int(fb)}" if fb.ndim == 0 else f"F in [{int(fb.min())}, {int(fb.max())}] per tile"
        return "\n".join([
            f"ProgrammedMatrix {self.out_features}x{self.in_features} on {self.n_tiles} tiles "
            f"({lay.n_row_blocks}x{lay.n_col_blocks} of {lay.tile_rows}x{lay.tile_cols})",
            f"  weights: {cfg.weight_bits}-bit {cfg.weight_format} fixed point ({fmt}), {cfg.mapping}, "
            f"{cfg.n_slices} slice(s) of {list(cfg.slice_bits)} bits, {per_w} cells per weight"
            + (" + reference columns" if cfg.mapping == "offset" else ""),
            f"  utilization: {used / cells:.1%} of {cells} cells",
            f"  read: {cfg.dac} DAC {cfg.input_bits}-bit, ADC "
            + ("ideal" if cfg.adc_bits is None else f"{cfg.adc_bits}-bit {cfg.adc_range} per {cfg.adc_scope}, "
               f"step {float(self.adc_step.min()):.3g}-{float(self.adc_step.max()):.3g} level steps")
            + f", IR drop {cfg.ir_drop}, read noise {cfg.read_noise_sigma_rel:g}",
            f"  faults: {int(fc[1])} SA0, {int(fc[2])} SA1 of {int(fc.sum())} cells ({(fc[1] + fc[2]) / max(1, fc.sum()):.3%})",
        ])


# --------------------------------------------------------------------------------------------
# programming


def program_matrix(
    w: torch.Tensor,
    cfg: CrossbarConfig,
    levels: Any = None,
    faults: Any = None,
    rng: np.random.Generator | None = None,
    *,
    layout: TileLayout | None = None,
    circuit: Any = None,
    irdrop: Any = None,
    dtype: torch.dtype = torch.float32,
    keep_conductances: bool = False,
) -> ProgrammedMatrix:
    """Quantize, slice, map and program ``w`` ``(out_features, in_features)`` on crossbar tiles.

    Parameters
    ----------
    w: float tensor ``(out_features, in_features)``; its device is where reads run.
    cfg: the crossbar configuration.
    levels: a ``device.programming.LevelTable`` with ``cfg.bits_per_cell`` bits per cell;
        ``None``: :func:`default_levels`.
    faults: a ``device.faults.FaultConfig``; ``None``: no faults.
    rng: ``numpy.random.Generator`` for variation and faults (one seed is drawn from it).
    layout: where each digit goes (:func:`default_layout` if None; :mod:`mapping.plan` makes others).
    circuit: ``crossbar.solver.CircuitConfig`` for ``ir_drop="exact"`` (its defaults if None).
    irdrop: ``crossbar.irdrop.IRDropTable`` or a path, for ``ir_drop="table"`` (the shipped
        ``data/irdrop_default.h5`` if None).
    dtype: compute dtype of reads (float32; float64 for exact integer checks on large sums).
    keep_conductances: keep every cell's conductance and fault code for :meth:`ProgrammedMatrix.tile_state`.
    """
    if not isinstance(cfg, CrossbarConfig):
        raise ValueError(f"cfg must be a CrossbarConfig, got {type(cfg).__name__}")
    if not isinstance(w, torch.Tensor):
        raise ValueError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if w.ndim != 2:
        raise ValueError(f"w must be a 2-D weight matrix (out_features, in_features), got shape {tuple(w.shape)}")
    if not torch.is_floating_point(w):
        raise ValueError(f"w must be floating point, got {w.dtype}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w holds NaN or infinite values")
    if rng is None:
        raise ValueError("program_matrix needs rng, a numpy.random.Generator (variation and faults are drawn from it)")
    out_f, in_f = w.shape
    layout = default_layout(out_f, in_f, cfg) if layout is None else layout
    layout.validate(out_f, in_f, cfg)
    qw = quantize_weight(w.detach(), cfg, layout)
    _check_unmapped_zero(qw, layout)
    return _program(
        qw, layout, cfg, levels, faults, rng, circuit=circuit, irdrop=irdrop, device=w.device, dtype=dtype,
        keep_conductances=keep_conductances, input_frac_bits=None,
    )


def quantize_weight(w: torch.Tensor, cfg: CrossbarConfig, layout: TileLayout) -> QTensor:
    """Weight codes ``(out, in)``; per-tile DFP uses blocks of the default layout's tile
    (``outputs_per_tile x tile_rows``), one binary point per tile."""
    wq = cfg.weight_quant
    if wq.mode == "dynamic" and wq.granularity == "tile":
        if not _is_default(layout, w.shape, cfg):
            raise ValueError("per-tile dynamic fixed point needs the default (dense) layout")
        return quantize_blocks(w.to(torch.float64), wq, (cfg.outputs_per_tile, cfg.tile_rows))
    return quantize(w.to(torch.float64), wq)


def _check_unmapped_zero(qw: QTensor, layout: TileLayout) -> None:
    """Inputs / outputs a layout leaves out (pruned) must have all-zero weight codes."""
    out_f, in_f = qw.q.shape
    rin = np.zeros(in_f, bool)
    rin[layout.row_in[layout.row_in >= 0]] = True
    cout = np.zeros(out_f, bool)
    cout[layout.col_out[(layout.col_role == POS) & ~layout.col_copy]] = True
    q = qw.q.detach().cpu()
    if not rin.all() and bool(q[:, torch.from_numpy(~rin)].any()):
        i = int(np.flatnonzero(~rin)[0])
        raise ValueError(f"the layout leaves out input {i} (pruned) but its weights are not all zero after quantization")
    if not cout.all() and bool(q[torch.from_numpy(~cout)].any()):
        o = int(np.flatnonzero(~cout)[0])
        raise ValueError(f"the layout leaves out output {o} (pruned) but its weights are not all zero after quantization")


def _is_default(layout: TileLayout, shape, cfg) -> bool:
    d = default_layout(shape[0], shape[1], cfg)
    return all(np.array_equal(getattr(d, f), getattr(layout, f)) for f in _LAYOUT_ARRAYS)


def _cell_levels(qweight: QTensor, layout: TileLayout, cfg: CrossbarConfig) -> np.ndarray:
    """Target digit of every cell, ``(tiles, rows, cols)`` uint8, tiles ``r * C + c``."""
    q = qweight.q.detach().cpu().numpy().astype(np.int32)
    out_f, in_f = q.shape
    qp = np.zeros((out_f + 1, in_f + 1), np.int32)  # index -1 -> zero padding
    qp[:out_f, :in_f] = q
    R, C, tr, tc = layout.n_row_blocks, layout.n_col_blocks, layout.tile_rows, layout.tile_cols
    rows = layout.row_in  # (R, tr)
    cols = layout.col_out  # (C, tc)
    qq = qp[cols[None, :, None, :], rows[:, None, :, None]]  # (R, C, tr, tc)
    role = layout.col_role[None, :, None, :]
    half = 1 << (cfg.weight_bits - 1)
    if cfg.mapping == "differential":
        code = np.where(role == POS, np.maximum(qq, 0), np.where(role == NEG, np.maximum(-qq, 0), 0))
    else:
        code = np.where(role == POS, qq + half, np.where(role == REF, half, 0))
    sl = np.maximum(layout.col_slice, 0).astype(np.int32)
    shift = (sl * cfg.bits_per_cell)[None, :, None, :]
    width = np.asarray(cfg.slice_bits, np.int32)[sl][None, :, None, :]
    digit = (code >> shift) & ((1 << width) - 1)
    digit = np.where(role == FREE, 0, digit)
    digit = np.where((rows < 0)[:, None, :, None], 0, digit)  # free rows stay in HRS
    return digit.astype(np.uint8).reshape(R * C, tr, tc)


def _draw(qweight, layout, cfg, levels, faults, seed, circuit, irdrop) -> TileState:
    """One draw of variation and faults from ``seed``: the only place cells get conductances."""
    from device.faults import Fault, sample_fault_map

    rng = np.random.default_rng(seed)
    lv = _cell_levels(qweight, layout, cfg)
    # the random draws cover the whole matrix in one call each (the stream defines the draw)
    g = np.asarray(levels.sample(lv, rng), dtype=np.float64)
    if g.shape != lv.shape:
        raise ValueError(f"LevelTable.sample returned shape {g.shape} for levels of shape {lv.shape}")
    if faults is not None and faults.rate > 0:
        fm = np.asarray(sample_fault_map(lv.shape, faults, rng), dtype=np.int8)
        # overwrite only the faulty cells (~rate of them) instead of two full-size selects
        bad = np.flatnonzero(fm)
        if bad.size:
            if not (g.flags.writeable and g.flags.owndata):  # never write into the table's arrays
                g = g.copy()
            g.reshape(-1)[bad] = np.where(fm.reshape(-1)[bad] == Fault.SA0, float(levels.g_sa0_s), float(levels.g_sa1_s))
    else:
        fm = np.zeros(lv.shape, np.int8)
    if cfg.ir_drop == "ideal":
        m = g
    elif cfg.ir_drop == "table":
        # tile by tile in cache-sized chunks: the table's cumulative sums and interpolation are
        # per tile, so this is bit-identical to one call on all tiles and ~2.5x faster
        r_ohm = _irdrop_wire_ohm(circuit)
        m = np.empty_like(g)
        step = max(1, _TILE_CHUNK_CELLS // (g.shape[1] * g.shape[2]))
        for t0 in range(0, g.shape[0], step):
            gt = g[t0 : t0 + step]
            np.multiply(gt, np.asarray(irdrop.attenuation(gt, r_ohm), dtype=np.float64), out=m[t0 : t0 + step])
    else:
        from crossbar.solver import CircuitConfig, effective_matrix

        m = np.asarray(effective_matrix(g, circuit if circuit is not None else CircuitConfig()), dtype=np.float64)
    return TileState(tiles=np.arange(lv.shape[0]), levels=lv, faults=fm, g_s=g, m_s=m)


def _program(
    qweight: QTensor, layout: TileLayout, cfg: CrossbarConfig, levels, faults, rng, *, circuit, irdrop, device,
    dtype, keep_conductances, input_frac_bits,
) -> ProgrammedMatrix:
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator")
    if levels is None:
        levels = default_levels(cfg.bits_per_cell)
    _check_levels(levels, cfg)
    if cfg.ir_drop == "table":
        irdrop = _load_irdrop(irdrop, cfg)
    seed = int(rng.integers(2**63))
    st = _draw(qweight, layout, cfg, levels, faults, seed, circuit, irdrop)
    folded = _fold(st.m_s, qweight, layout, cfg, _level_step_s(levels), device, dtype)
    fc = np.stack([(st.faults == k).sum(axis=(1, 2)) for k in range(3)], axis=1)
    return ProgrammedMatrix(
        cfg=cfg, qweight=qweight, layout=layout, levels=levels, faults=faults, circuit=circuit, irdrop=irdrop,
        seed=seed, fault_counts=fc, kept=st if keep_conductances else None, input_frac_bits=input_frac_bits,
        **folded,
    )


def _fold(m_s, qweight, layout, cfg, dg_s, device, dtype) -> dict[str, Any]:
    """Fold slices, polarity / reference and the weight step into the readout the read mode needs."""
    R, C, tr, tc = layout.n_row_blocks, layout.n_col_blocks, layout.tile_rows, layout.tile_cols
    out_f, in_f = qweight.q.shape
    S = cfg.n_slices
    m = torch.from_numpy(m_s).view(R, C, tr, tc) / dg_s  # level steps per unit input, float64 (CPU)
    sig = cfg.read_noise_sigma_rel
    role, sl, co, cp = layout.col_role, layout.col_slice, layout.col_out, layout.col_copy
    read = ((role == POS) | (role == NEG)) & ~cp  # (C, tc)
    sign = np.where(role == NEG, -1.0, 1.0)
    # offset mapping: index of the block's reference column for each weight column's slice
    cc, jj = np.nonzero(read)
    ref_j = np.full((C, tc), -1)
    if cfg.mapping == "offset":
        for c in range(C):
            for s in np.unique(sl[c][read[c]]):
                ref_j[c][read[c] & (sl[c] == s)] = np.flatnonzero((role[c] == REF) & (sl[c] == s) & ~cp[c])[0]
    chan = sl[cc, jj].astype(np.int64) * out_f + co[cc, jj]  # channel s * out + o
    cols = m[:, cc, :, jj]  # (n_read, R, tr)
    cols = cols.permute(1, 2, 0) * torch.from_numpy(sign[cc, jj])  # (R, tr, n_read)
    var = None
    if sig > 0:
        var = sig**2 * m[:, cc, :, jj].permute(1, 2, 0) ** 2
    if cfg.mapping == "offset":
        refs = m[:, cc, :, ref_j[cc, jj]].permute(1, 2, 0)
        cols = cols - refs
        if var is not None:
            var = var + sig**2 * refs**2
    d = torch.zeros(R, tr, S * out_f, dtype=torch.float64).index_add_(2, torch.from_numpy(chan), cols)
    v = None if var is None else torch.zeros(R, tr, S * out_f, dtype=torch.float64).index_add_(2, torch.from_numpy(chan), var)
    # weight step per (row block, output): per-tile DFP -> blocks of the default layout
    ws = qweight.scale()
    if ws.ndim == 0:
        w_step = ws.expand(R, out_f)
    else:
        w_step = ws.repeat_interleave(qweight.block[0], 0)[:out_f].T  # (R, out)
    beta = 2.0 ** (np.arange(S) * cfg.bits_per_cell)
    ones = torch.ones(R, dtype=torch.float64)
    if cfg.adc_bits is None:
        t = (d.view(R, tr, S, out_f) * torch.from_numpy(beta).view(1, 1, S, 1)).sum(2) * w_step.view(R, 1, out_f)
        rows = _row_index(layout, in_f)
        w_eff = torch.zeros(in_f + 1, out_f, dtype=torch.float64).index_add_(0, rows, t.reshape(R * tr, out_f))[:in_f]
        nv = None
        if v is not None:
            tv = (v.view(R, tr, S, out_f) * torch.from_numpy(beta**2).view(1, 1, S, 1)).sum(2) * w_step.view(R, 1, out_f) ** 2
            nv = torch.zeros(in_f + 1, out_f, dtype=torch.float64).index_add_(0, rows, tv.reshape(R * tr, out_f))[:in_f]
            nv = nv.T.contiguous().to(device=device, dtype=dtype)
        return dict(
            readout=w_eff.T.contiguous().to(device=device, dtype=dtype), noise_var=nv,
            out_scale=torch.ones(R, 1, out_f, dtype=dtype, device=device), adc_step=ones.to(device=device, dtype=dtype),
        )
    rows_used = np.sum((layout.row_in >= 0) & ~layout.row_copy, axis=1)
    x_max = 1 if cfg.dac == "bit_serial" else q_max(cfg.input_bits)
    if cfg.adc_scope == "tile":
        d = (d.view(R, tr, S, out_f) * torch.from_numpy(beta).view(1, 1, S, 1)).sum(2)
        if v is not None:
            v = (v.view(R, tr, S, out_f) * torch.from_numpy(beta**2).view(1, 1, S, 1)).sum(2)
        d_max = (2**cfg.code_bits - 1) if cfg.mapping == "differential" else 2 ** (cfg.weight_bits - 1)
    else:
        d_max = 2 ** min(cfg.bits_per_cell, cfg.code_bits) - 1
    fs = torch.from_numpy(rows_used * float(d_max) * x_max)
    step = torch.clamp(fs / (2 ** (cfg.adc_bits - 1) - 1), min=1.0)
    d = d / step.view(R, 1, 1)
    if v is not None:
        v = v / (step * step).view(R, 1, 1)
    return dict(
        readout=d.to(device=device, dtype=dtype).contiguous(),
        noise_var=None if v is None else v.to(device=device, dtype=dtype).contiguous(),
        out_scale=(w_step * step.view(R, 1)).view(R, 1, out_f).to(device=device, dtype=dtype),
        adc_step=step.to(device=device, dtype=dtype),
    )


def _row_index(layout: TileLayout, in_f: int) -> torch.Tensor:
    idx = layout.row_in.astype(np.int64).copy()
    idx[(idx < 0) | layout.row_copy] = in_f
    return torch.from_numpy(idx.reshape(-1))


def _plane_bytes(u: torch.Tensor, bits: int, tokens: int) -> torch.Tensor:
    """Bit planes of the codes, 8 rows to a byte, laid out block by block of ``tokens`` tokens.

    ``u``: ``(R, n, rows)`` integer codes in ``[0, 2**bits)``, ``rows % 8 == 0``. Returns int32
    ``(R, blocks, bits, tokens, rows // 8)``: entry ``[r, b, k, t, g]`` has bit ``j`` set when bit
    ``k`` of the code of row ``8 g + j`` of token ``b * tokens + t`` is set (tokens past ``n``
    read 0).
    Eight rows' bytes are one int64; an 8x8 bit-matrix transpose (three masked swaps; Warren,
    Hacker's Delight, 2nd ed., sec. 7-3) turns byte ``j`` bit ``k`` into byte ``k`` bit ``j``.
    """
    R, n, rows = u.shape
    G, nb = rows // 8, -(-n // tokens)
    out = torch.empty(R, nb, bits, tokens, G, dtype=torch.int32, device=u.device)
    for b0 in range(0, bits, 8):
        kk = min(8, bits - b0)
        x = torch.nn.functional.pad(((u >> b0) & 255).to(torch.uint8), (0, 0, 0, nb * tokens - n))
        x = x.contiguous().view(torch.int64)  # (R, nb * tokens, G)
        # masks keep the top bits clear, so the arithmetic right shifts and the left shifts are exact
        t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AA
        x = x ^ t ^ (t << 7)
        t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCC
        x = x ^ t ^ (t << 14)
        t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0
        x = x ^ t ^ (t << 28)
        pb = x.view(torch.uint8).view(R, nb, tokens, G, 8)[..., :kk]  # [..., k]: plane b0 + k
        out[:, :, b0 : b0 + kk] = pb.permute(0, 1, 4, 2, 3)
    return out


def _lut_bit_serial(u, bits, readout, ak, out, beta, quantize, clip, col_fac=None) -> torch.Tensor:
    """Bit-serial read with an ADC on every column in every cycle, from tables of partial currents.

    ``u``: ``(R, n, rows)`` two's-complement input codes in ``[0, 2**bits)``; ``readout``
    ``(R, rows, L)`` in ADC steps, ``L = S * out`` (channel ``s * out + o``); ``ak`` ``(R, 1, K)``
    cycle weights times the row block's output factor; ``beta`` the slice base
    ``2**bits_per_cell``; ``clip`` ``(lo, hi)`` ADC codes or None; ``col_fac`` ``(R, L)`` an
    optional per-channel output factor (per-tile weight formats; ``ak`` then holds the cycle
    weights only). Returns ``(n, out)``: ``sum_s beta**s sum_r col_fac[r, l] sum_k ak[r, k] *
    adc(I[r, k, :, l])``, ``l = s * out + o``, the same sum as the ``bmm`` path of
    :meth:`ProgrammedMatrix._read_adc`.

    A cycle's inputs are 0/1, so its column current over 8 rows takes one of 256 values: for each
    row block and block of ``_LUT_COLS`` columns the table ``T[c, g] = sum_j bit_j(c) D[8 g + j]``
    is built once (by doubling: ``T[c + 2**j] = T[c] + D[8 g + j]`` for ``c < 2**j``, eight
    adds), and every cycle's current is the sum of ``rows / 8`` table rows (``embedding_bag``):
    16 table rows per current for 128-row tiles instead of 128 multiply-adds. Each cycle's current is still formed and converted on its own (rounded,
    clamped when it can clip) before the shift-and-add; only the order of the float additions
    differs from the matmul (integer-valued currents are exact in both). ``_LUT_TOKENS`` tokens'
    currents are converted and summed over cycles (one ``(1, K)`` GEMV) while in cache.
    """
    R, n, rows = u.shape
    K, L = ak.shape[-1], readout.shape[-1]
    dt, dev = readout.dtype, readout.device
    rp = -(-rows // 8) * 8
    if rp != rows:  # pad the tile to whole bytes of rows: zero codes, zero conductance
        u = torch.nn.functional.pad(u, (0, rp - rows))
        readout = torch.nn.functional.pad(readout, (0, 0, 0, rp - rows))
    G = rp // 8
    m = max(1, min(n, _LUT_TOKENS))
    idx = _plane_bytes(u, bits, m)  # (R, nb, K, m, G)
    nb = idx.shape[1]
    idx *= G
    idx += torch.arange(G, dtype=torch.int32, device=dev)  # table row c * G + g
    idx = idx.view(R, nb, K * m, G)
    lut = torch.zeros(256, G, min(L, _LUT_COLS), dtype=dt, device=dev)
    y = torch.zeros(n, out, dtype=dt, device=dev)
    zbuf = torch.empty(nb * m * min(L, _LUT_COLS), dtype=dt, device=dev)
    for l0 in range(0, L, _LUT_COLS):
        l1 = min(L, l0 + _LUT_COLS)
        lw = l1 - l0
        z = zbuf[: nb * m * lw]
        t = lut if lw == lut.shape[-1] else torch.zeros(256, G, lw, dtype=dt, device=dev)
        for r in range(R):
            for j in range(8):  # T[2**j + c] = T[c] + D[8 g + j], c < 2**j (T[0] = 0)
                torch.add(t[: 1 << j], readout[r, j::8, l0:l1], out=t[1 << j : 2 << j])
            tab = t.view(256 * G, lw)
            for b in range(nb):
                cur = torch.nn.functional.embedding_bag(idx[r, b], tab, mode="sum")  # (K * m, lw)
                if quantize:
                    cur.round_()
                    if clip is not None:
                        cur.clamp_(*clip)
                zb = z[b * m * lw : (b + 1) * m * lw].view(1, m * lw)
                if col_fac is not None:
                    zk = torch.mm(ak[r], cur.view(K, m * lw)).view(m, lw)
                    if r == 0:
                        torch.mul(zk, col_fac[r, l0:l1], out=zb.view(m, lw))
                    else:
                        zb.view(m, lw).addcmul_(zk, col_fac[r, l0:l1])
                elif r == 0:
                    torch.mm(ak[r], cur.view(K, m * lw), out=zb)
                else:
                    zb.addmm_(ak[r], cur.view(K, m * lw))
        z = z.view(nb * m, lw)[:n]
        for s in range(l0 // out, (l1 - 1) // out + 1):  # slices: shift-add into the outputs
            a0, a1 = max(l0, s * out), min(l1, (s + 1) * out)
            y[:, a0 - s * out : a1 - s * out].add_(z[:, a0 - l0 : a1 - l0], alpha=beta**s)
    return y
