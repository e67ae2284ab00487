"""The tile engine: quantize, bit-slice, program and read a weight matrix on ReRAM crossbar tiles.

Every model layer runs through :func:`program_matrix` (once, or again per chip) and
:meth:`ProgrammedMatrix.matvec` (every forward pass). The engine is split by job:

=====================  ===========================================================================
module                 what it holds
=====================  ===========================================================================
crossbar.config        :class:`CrossbarConfig`: every setting of the engine
crossbar.quant         number formats: static / dynamic fixed point, real-valued scale
crossbar.layout        :class:`TileLayout`: which digit sits in which cell of which tile
crossbar.pipeline      programming: the ordered physical effects (digits, faults, re-encoding,
                       variation, relaxation, stuck cells, IR drop) and the fold into a readout
crossbar.read          the read: DAC, analog sum with read noise, ADC, shift-and-add
crossbar.bitserial     the CPU bit-serial kernel (tables of 8-row partial currents)
crossbar.engine        :func:`program_matrix` and :class:`ProgrammedMatrix`, which tie them together
=====================  ===========================================================================

Number formats and slicing
--------------------------
Weights are quantized to ``weight_bits``-bit symmetric signed codes ``q`` (:mod:`crossbar.quant`,
static or dynamic fixed point or a real-valued scale, per layer or per tile). The code stored per
column has

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

Programming (once per chip: :func:`program_matrix`, :meth:`ProgrammedMatrix.reprogram`)
--------------------------------------------------------------------------------------
:data:`crossbar.pipeline.PROGRAMMING_STEPS`, one public function per physical effect, each drawing
from its own generator seeded from the chip's seed (see :mod:`crossbar.pipeline`).

Read (every :meth:`ProgrammedMatrix.matvec`)
--------------------------------------------
DAC, analog sum, read noise, ADC and shift-and-add as documented in :mod:`crossbar.read`. The DAC
step is set per input vector by default (``input_granularity="vector"``) or fixed once by
:meth:`ProgrammedMatrix.calibrate`: never from the batch, so a vector's output is the same
whatever batch it arrives in.

Folding (why a read is cheap)
-----------------------------
For linear cells everything between the DAC and the ADC is linear, so at programming time the
engine folds slices, polarity/reference and IR drop into per-row-block readout matrices in units
of one ADC step (``(R, tile_rows, S * out)`` for column-scope ADCs, ``(R, tile_rows, out)`` for
tile scope) or, with an ideal ADC, into one ``(out, in)`` effective weight matrix: a read is
then one matmul plus the DAC quantization (:func:`crossbar.pipeline.fold`).

Nonlinear (sinh) cells (``circuit.cell_v0_v > 0``) keep this: a cell's current is its read
conductance at ``v_read_v`` times its voltage times a factor of the voltage alone, so a multi-bit
read is the folded linear read of the codes mapped through a ``2 q_max + 1``-entry table (exact
with ideal wires; the linear effective matrix of those conductances with wires, an
approximation measured against the Newton solver), and a bit-serial read is the linear one
(:func:`crossbar.read.cell_code_map`, :meth:`ProgrammedMatrix.drive`).

Memory
------
Kept per layer: the integer codes (int8/int16, ``out x in``), the folded readout matrix the read
mode needs (float32 by default), the read-noise variance matrix of the same shape when read noise
is on, fault counts per tile, and the seed of the chip. Cell conductances (``tiles x rows x
cols``, 8 cells per weight for 8-bit differential 2-bit cells: 680 M cells for BERT-base) are not
kept unless ``keep_conductances=True``: :meth:`ProgrammedMatrix.tile_state` re-draws them
bit-identically from the stored seed when a user inspects a layer.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np
import torch

from crossbar.config import DEFAULT_G_OFF_S, DEFAULT_G_ON_S, CrossbarConfig
from crossbar.layout import FREE, NEG, POS, REF, LayoutError, TileLayout, default_layout, is_default_layout
from crossbar.pipeline import (
    PROGRAMMING_STEPS,
    CellState,
    adc_flaws_step,
    FoldedReadout,
    ProgramContext,
    check_levels,
    default_levels,
    fold,
    level_step_s,
    load_irdrop,
    run_pipeline,
)
from crossbar.quant import QTensor, quantize, quantize_blocks
from crossbar.readkeys import ReadKeys
from crossbar.read import (
    apply_code_map,
    calibrate_input_step,
    cell_code_map,
    dac_codes,
    dac_cycles,
    input_step,
    pad_rows,
    read_adc,
    read_ideal_adc,
    slice_weights,
)
from device.config import ConfigError
from device.errors import InputError

__all__ = [
    "CrossbarConfig",
    "TileLayout",
    "TileState",
    "ProgrammedMatrix",
    "default_layout",
    "default_levels",
    "chip_read_noise",
    "READ_NOISE_SOURCES",
    "program_matrix",
    "quantize_weight",
    "with_folded",
    "retention_report",
    "retention_summary",
    "FREE",
    "POS",
    "NEG",
    "REF",
    "DEFAULT_G_ON_S",
    "DEFAULT_G_OFF_S",
]


@dataclasses.dataclass(frozen=True, eq=False)
class TileState:
    """What one chip's tiles of a layer look like (for inspection), tiles ``t = r * C + c``.

    ``levels``: ``(tiles, rows, cols)`` uint8 target digit of every cell.
    ``faults``: ``(tiles, rows, cols)`` int8 :class:`device.faults.Fault` codes.
    ``g_s``: ``(tiles, rows, cols)`` programmed read conductance, S (after variation, relaxation, faults;
    sinh cells: the chord at the chip's ``v_read_v``, :func:`crossbar.pipeline.read_voltage_step`).
    ``m_s``: ``(tiles, rows, cols)`` effective matrix with IR drop, S (``i_out = v_in @ m_s``).
    """

    tiles: np.ndarray
    levels: np.ndarray
    faults: np.ndarray
    g_s: np.ndarray
    m_s: np.ndarray

    @classmethod
    def from_cells(cls, st: CellState) -> "TileState":
        np_ = lambda t: t.detach().cpu().numpy()  # noqa: E731
        return cls(tiles=np.arange(st.digits.shape[0]), levels=np_(st.digits), faults=np_(st.faults),
                   g_s=np_(st.g_s), m_s=np_(st.m_s))


@dataclasses.dataclass(frozen=True, eq=False)
class ProgrammedMatrix:
    """One weight matrix programmed on crossbar tiles; call it (or :meth:`matvec`) to read it.

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
    #: folded readout: ``(out, in)`` (ideal ADC) or ``(R, tile_rows, L)`` in ADC steps
    readout: torch.Tensor
    #: read-noise variance matrix, same shape as ``readout``; None without read noise
    noise_var: torch.Tensor | None
    #: ``(R, out)`` weight step per row block and output
    w_step: torch.Tensor
    #: ``(R, S_adc)`` ADC step in level-step units per row block and slice (ones for an ideal ADC)
    adc_step: torch.Tensor
    #: ``(tiles, 3)`` cell counts: no fault, SA0, SA1
    fault_counts: np.ndarray
    calibrated: bool = False
    #: calibrated DAC step (input_granularity "layer": scalar, "tile": ``(R,)``), or None
    input_step: torch.Tensor | None = None
    kept: TileState | None = None
    relaxation: Any = None
    fault_map: Any = None
    encoder: Callable[..., torch.Tensor] | None = None
    #: the chip's ADCs with their flaws (crossbar.adc.AdcTransfer), drawn once per chip; None for
    #: flawless ideal quantizers
    adc_transfer: Any = None
    #: with i_col_max_a: every physical column's readout ``(R, tile_rows, 2 S out)`` in level steps,
    #: its read-noise variance, and the current limit in those units (crossbar.pipeline.fold)
    lines: torch.Tensor | None = None
    lines_var: torch.Tensor | None = None
    line_clip: float | None = None
    #: ``(out,)`` digital gain on each output from read-time drift compensation
    #: (``retention.compensation``, :meth:`compensate`), or None
    output_gain: torch.Tensor | None = None
    #: what programming did against relaxation (:func:`retention_report`), or None
    retention: dict[str, Any] | None = None

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
        return dataclasses.replace(
            self, qweight=self.qweight.to(device), readout=mv(self.readout), noise_var=mv(self.noise_var),
            w_step=mv(self.w_step), adc_step=mv(self.adc_step), input_step=mv(self.input_step),
            adc_transfer=None if self.adc_transfer is None else self.adc_transfer.to(device),
            lines=mv(self.lines), lines_var=mv(self.lines_var),
            output_gain=mv(self.output_gain),
        )

    # ---- the DAC and the word lines ----------------------------------------------------------
    def in_block(self, unmapped: int = 0) -> torch.Tensor:
        """``(in,)`` row block of every input; inputs no row block reads (pruned, or left out by
        a layout) get ``unmapped``."""
        lay = self.layout
        blk = np.full(self.in_features, unmapped, np.int64)
        m = (lay.row_in >= 0) & ~lay.row_copy
        blk[lay.row_in[m]] = np.broadcast_to(np.arange(lay.n_row_blocks)[:, None], lay.row_in.shape)[m]
        return torch.from_numpy(blk).to(self.device)

    @functools.cached_property
    def block_inputs(self) -> torch.Tensor:
        """``(R,)`` one input read by each row block (its first; 0 for a block that reads none):
        where the per-row-block step of ``input_granularity="tile_vector"`` is picked from the
        per-input step."""
        lay = self.layout
        first = np.zeros(lay.n_row_blocks, np.int64)
        for r in range(lay.n_row_blocks):
            ins = lay.row_in[r][(lay.row_in[r] >= 0) & ~lay.row_copy[r]]
            first[r] = ins[0] if ins.size else 0
        return torch.from_numpy(first).to(self.device)

    def row_gather(self) -> torch.Tensor:
        """``(R * tile_rows,)`` index into inputs padded with one zero column (free / copy rows)."""
        lay = self.layout
        idx = lay.row_in.astype(np.int64).copy()
        idx[(idx < 0) | lay.row_copy] = self.in_features
        return torch.from_numpy(idx.reshape(-1)).to(self.device)

    def dac(self, xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input codes ``(n, in)`` (integer-valued, compute dtype, a new tensor) and the DAC step,
        float64, broadcastable to them (scalar, ``(in,)`` per calibrated row block, ``(n, 1)`` per
        vector, or ``(n, in)`` per vector and row block): ``x ~= codes * step``
        (:func:`crossbar.read.input_step`, :func:`crossbar.read.dac_codes`)."""
        R = self.layout.n_row_blocks
        per_block = self.cfg.input_granularity == "tile_vector" or (self.input_step is not None and self.input_step.ndim)
        step = input_step(xf, self.cfg, self.input_step, self.in_block(R) if per_block else None, R)
        return dac_codes(xf, step, self.cfg, self.dtype), step

    @functools.cached_property
    def code_map(self) -> torch.Tensor | None:
        """The nonlinear cells' map of the DAC codes (:func:`crossbar.read.cell_code_map`), float64
        on the CPU; None for linear cells and bit-serial DACs."""
        v0 = 0.0 if self.circuit is None else float(self.circuit.cell_v0_v)
        return cell_code_map(self.cfg, v0)

    def drive(self, codes: torch.Tensor) -> torch.Tensor:
        """The word-line drive of ``codes`` (DAC codes or cycle planes) in linear-cell code units:
        the codes themselves for linear cells and bit-serial DACs, else mapped through
        :attr:`code_map` (the sinh cells' read at the code's voltage)."""
        return apply_code_map(codes, self.code_map)

    def word_lines(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-row-block word-line inputs ``(R, n, tile_rows)`` from ``(n, in)`` (or ``(K, n, in)``
        cycle planes: ``(K, R, n, rows)``), through :meth:`drive`; free and copy rows read 0."""
        codes = self.drive(codes)
        lead = codes.shape[:-1]
        pad = torch.cat([codes, codes.new_zeros(*lead, 1)], dim=-1).index_select(-1, self.row_gather())
        R, tr = self.layout.n_row_blocks, self.layout.tile_rows
        return pad.view(*lead, R, tr).movedim(-2, -3).contiguous()

    def read_inputs(self, xq: torch.Tensor) -> torch.Tensor:
        """What :func:`crossbar.read.read_adc` reads from codes ``xq`` ``(n, in)``: the word lines
        ``(R, n, rows)`` (one multi-bit cycle, or bit-serial cycles cut by the read), or with
        multi-bit input slices the drive of every cycle ``(R, K, n, rows)``."""
        if self.cfg.cycles > 1 and self.cfg.input_slice_bits > 1:
            planes, _ = dac_cycles(xq, self.cfg)
            return self.word_lines(planes).transpose(0, 1)
        return self.word_lines(xq)

    @property
    def line_readout(self) -> tuple | None:
        """``(lines, lines_var, line_clip, adc_step)`` for :func:`crossbar.read.read_adc` with a
        column-current limit (``i_col_max_a``), else None."""
        return None if self.lines is None else (self.lines, self.lines_var, self.line_clip, self.adc_step)

    def chan_scale(self, sx_r: torch.Tensor | None = None) -> torch.Tensor:
        """``(R, L)`` output units per ADC code of channel ``s * out + o`` in row block ``r``:
        weight step x ADC step of slice ``s`` x ``2**(s * bits_per_cell)`` (x the row block's
        input step ``sx_r`` where given). ``S = 1`` for tile-scope ADCs."""
        R, out = self.w_step.shape
        S = self.adc_step.shape[1]
        beta = slice_weights(self.cfg, S, self.dtype, self.device)
        cs = self.w_step.view(R, 1, out) * (self.adc_step * beta.view(1, S)).view(R, S, 1)
        if sx_r is not None:
            cs = cs * sx_r.to(self.dtype).view(R, 1, 1)
        return cs.reshape(R, S * out)

    def split_input_step(self, sx: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """How the DAC step of :meth:`dac` enters a per-row-block read: (per-row-block step ``(R,)``
        to fold into the channel scales, or None; per row block and vector ``(R, n)``, applied
        digitally to each block's partial sums before they are added (``tile_vector``), or None;
        the step to multiply the outputs by after the read, scalar or ``(n, 1)``, or None)."""
        if self.input_step is not None and self.input_step.ndim:
            return self.input_step, None, None
        if self.cfg.input_format != "static" and self.cfg.input_granularity == "tile_vector":
            return None, sx.index_select(1, self.block_inputs).T.contiguous(), None
        return None, None, sx

    # ---- read ---------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, generator: torch.Generator | ReadKeys | None = None) -> torch.Tensor:
        return self.matvec(x, generator=generator)

    def read_keys(self, x: torch.Tensor, generator: torch.Generator | ReadKeys | None) -> ReadKeys | None:
        """The read-noise keys of one read of ``x`` ``(n, in)`` (see :mod:`crossbar.readkeys`):
        ``generator`` itself when it is a :class:`ReadKeys` (one key per vector), else
        :meth:`ReadKeys.from_content` (one read seed drawn from the ``torch.Generator``, vectors
        keyed by content). None without read noise (``read_noise_sigma_rel == 0``)."""
        if self.cfg.read_noise_sigma_rel == 0:
            return None
        if generator is None:
            raise ConfigError("read noise is on (read_noise_sigma_rel > 0): pass a torch.Generator (or ReadKeys) to matvec")
        if isinstance(generator, ReadKeys):
            return generator
        if not isinstance(generator, torch.Generator):
            raise InputError(f"generator must be a torch.Generator or crossbar.readkeys.ReadKeys, got {type(generator).__name__}")
        return ReadKeys.from_content(x, generator)

    def matvec(self, x: torch.Tensor, generator: torch.Generator | ReadKeys | None = None) -> torch.Tensor:
        """Read the crossbar: ``(batch..., in_features) -> (batch..., out_features)``.

        ``generator`` says where the read noise comes from; it is required when
        ``read_noise_sigma_rel > 0`` and unused otherwise: a :class:`crossbar.readkeys.ReadKeys`
        (one key per input vector, the vectors in ``x``'s row order), or a ``torch.Generator`` on
        any device, from which each call draws one read seed, the vectors then keyed by their
        content (every call is a new read; :meth:`crossbar.readkeys.ReadKeys.from_content`). The
        result has ``x``'s dtype and approximates ``x @ W.T``. Each input vector is read on its
        own: its output, noise included, does not depend on the other vectors of the batch.
        """
        cfg = self.cfg
        self.check_input(x)
        if cfg.read_noise_sigma_rel > 0 and generator is None:
            raise ConfigError("read noise is on (read_noise_sigma_rel > 0): pass a torch.Generator to matvec")
        if cfg.adc_bits is not None and cfg.adc_range == "calibrated" and not self.calibrated:
            raise ConfigError("adc_range='calibrated' needs ProgrammedMatrix.calibrate(x) before the first read")
        lead = x.shape[:-1]
        n = int(np.prod(lead)) if lead else 1
        x2 = x.reshape(-1, self.in_features)
        keys = self.read_keys(x2, generator)
        xf = pad_rows(x2)  # aligned batch: the same bits in any batch
        keys = None if keys is None else keys.padded(xf.shape[0])
        xq, sx = self.dac(xf)
        if cfg.adc_bits is None and self.lines is None:
            planes = None
            if cfg.cycles > 1 and (self.noise_var is not None or self.code_map is not None):
                planes = self.drive(dac_cycles(xq, cfg)[0])
            y = read_ideal_adc(self.readout, self.noise_var, self.drive(xq) if planes is None else xq, sx, cfg,
                               keys, planes)
        else:
            sx_r, sx_rn, post = self.split_input_step(sx)
            y = read_adc(self.readout, self.noise_var, self.chan_scale(sx_r), self.read_inputs(xq), cfg, keys,
                         block_scale=sx_rn, transfer=self.adc_transfer, lines=self.line_readout,
                         quantize=cfg.adc_bits is not None)
            if post is not None:
                y.mul_(post.to(y.dtype))
        return y[:n].to(x.dtype).reshape(*lead, self.out_features)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is a float tensor ``(..., in_features)`` on this
        matrix's device."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise InputError(
                f"input has shape {tuple(x.shape)}: its last dimension must be in_features={self.in_features}"
            )
        if x.device != self.device:
            raise InputError(f"input is on {x.device} but the programmed matrix is on {self.device}; use .to()")
        if not torch.is_floating_point(x):
            raise InputError(f"input must be floating point, got {x.dtype}")

    # ---- calibration, reprogramming ------------------------------------------------------
    def calibrate(self, x: torch.Tensor) -> "ProgrammedMatrix":
        """Fix the data-dependent ranges on calibration inputs ``(batch..., in_features)``.

        With ``input_granularity`` "layer" or "tile" (dynamic or scaled inputs), the DAC step is
        set from ``x`` once and then used for every read. With ``adc_range="calibrated"``, the ADC
        step of each row block and slice is set so that the largest |current| seen on ``x``
        (noise-free) is that ADC's full scale (each slice its own reference). Calling it again on
        the result with more batches accumulates (widest input range, largest ADC range seen).
        Returns a new :class:`ProgrammedMatrix`.
        """
        cfg = self.cfg
        self.check_input(x)
        xf = x.reshape(-1, self.in_features)
        st = calibrate_input_step(xf, cfg, self.layout.n_row_blocks, self.in_block(self.layout.n_row_blocks))
        if st is not None and self.input_step is not None:  # accumulate: cover all ranges
            st = torch.maximum(st, self.input_step.to(st.dtype))
        pm = dataclasses.replace(self, input_step=st)
        if cfg.adc_bits is None or cfg.adc_range != "calibrated":
            return pm
        xq, sx = pm.dac(xf)
        peak = read_adc(pm.readout, None, pm.chan_scale(), pm.read_inputs(xq), cfg, None, quantize=False, measure=True,
                        lines=None if pm.lines is None else (pm.lines, None, pm.line_clip, pm.adc_step))
        step = torch.clamp(peak * pm.adc_step / (2 ** (cfg.adc_bits - 1) - 1), min=1.0)  # level steps
        if self.calibrated:  # accumulate over calibration batches: the largest range seen
            step = torch.maximum(step, self.adc_step)
        return pm.with_adc_step(step, calibrated=True)

    def with_adc_step(self, step: torch.Tensor, *, calibrated: bool) -> "ProgrammedMatrix":
        """This matrix with ADC steps ``step`` ``(R, S_adc)`` (level steps per ADC code): the
        readout (and read-noise variance) are rescaled to the new ADC units."""
        R, S = self.adc_step.shape
        step = step.to(device=self.device, dtype=self.dtype).reshape(R, S)
        ratio = self.adc_step / step  # (R, S)
        out = self.readout.shape[-1] // S
        rr = ratio.view(R, 1, S, 1).expand(R, 1, S, out).reshape(R, 1, S * out)
        nv = None if self.noise_var is None else self.noise_var * rr * rr
        return dataclasses.replace(self, readout=self.readout * rr, noise_var=nv, adc_step=step, calibrated=calibrated)

    def with_output_gain(self, gain: torch.Tensor) -> "ProgrammedMatrix":
        """This matrix with every output multiplied by ``gain`` ``(out,)`` after the read (a
        digital gain: folded into the readout where the read is one matmul, into the weight steps
        after the ADC otherwise; read noise scales with it). Gains compose."""
        g = gain.to(device=self.device, dtype=self.dtype).reshape(self.out_features)
        total = g if self.output_gain is None else self.output_gain * g
        if self.cfg.adc_bits is None and self.lines is None:  # the folded (out, in) read
            nv = None if self.noise_var is None else self.noise_var * (g * g).view(-1, 1)
            return dataclasses.replace(self, readout=self.readout * g.view(-1, 1), noise_var=nv, output_gain=total)
        return dataclasses.replace(self, w_step=self.w_step * g.view(1, -1), output_gain=total)

    def compensate(self, reads: int, generator: torch.Generator, mode: str = "column") -> "ProgrammedMatrix":
        """Read-time drift compensation: read ``reads`` random +-1 input vectors (known to the
        chip's controller, drawn from ``generator``) on this chip as it is now, with its read
        noise (the same ``generator``), and fit a digital gain that maps the reads onto the
        outputs the programmed codes should give, ``x @ (q * step).T``, by least squares: one per
        output (``mode="column"``) or one for the layer (``"global"``, the form of aihwkit's
        ``GlobalDriftCompensation``, which rescales by a ratio of mean |y| against a noisy
        reference read). The gain corrects what relaxation does to every cell of a column alike
        (the mean drift of its levels) and none of the cell-to-cell spread. Returns the matrix
        with :meth:`with_output_gain` applied."""
        if mode not in ("column", "global"):
            raise ConfigError(f"compensation={mode!r} is invalid: must be 'column' or 'global'")
        if self.cfg.needs_calibration and not self.calibrated:
            raise ConfigError("drift compensation reads the chip: calibrate its input / ADC ranges first")
        x = torch.randint(0, 2, (int(reads), self.in_features), generator=generator, device=self.device)
        x = x.to(torch.float64).mul_(2.0).sub_(1.0)
        y_ref = x @ self.qweight.dequantize(torch.float64).to(self.device).T
        y = self.matvec(x.to(self.dtype), generator=generator if self.cfg.read_noise_sigma_rel > 0 else None).to(torch.float64)
        if mode == "column":
            num, den = (y_ref * y).sum(0), (y * y).sum(0)
        else:
            num, den = (y_ref * y).sum().expand(self.out_features), (y * y).sum().expand(self.out_features)
        gain = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.ones_like(den))
        return self.with_output_gain(gain)

    def reprogram(
        self, rng: np.random.Generator, *, levels: Any = None, faults: Any = None, keep_conductances: bool = False
    ) -> "ProgrammedMatrix":
        """A new chip for the same integer codes and layout (the quantization is not recomputed).
        ``levels`` / ``faults`` replace the previous ones where given. Calibrated ADC steps are
        reset to full scale (calibrate again); a calibrated DAC step is kept."""
        return _program(
            self.qweight, self.layout, self.cfg, levels if levels is not None else self.levels,
            faults if faults is not None else self.faults, rng, circuit=self.circuit, irdrop=self.irdrop,
            device=self.device, dtype=self.dtype, keep_conductances=keep_conductances,
            input_step=self.input_step, relaxation=self.relaxation, fault_map=self.fault_map, encoder=self.encoder,
        )

    # ---- inspection ----------------------------------------------------------------------
    @property
    def cell_dtype(self) -> torch.dtype:
        """Precision of the cells the reads were folded from: float64 for float64 reads, else float32."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    def context(self, qweight: QTensor | None = None, layout: TileLayout | None = None,
                cell_dtype: torch.dtype | None = None) -> ProgramContext:
        """The programming context of this chip (same seed, tables and hooks), optionally for
        other codes or layout (e.g. MSB-embedded codes in :mod:`mapping.protection`) and cell
        precision (default: :attr:`cell_dtype`, the reads')."""
        return ProgramContext(
            cfg=self.cfg, qweight=self.qweight if qweight is None else qweight,
            layout=self.layout if layout is None else layout, levels=self.levels, seed=self.seed,
            device=self.device, faults=self.faults, fault_map=self.fault_map, circuit=self.circuit,
            irdrop=self.irdrop, relaxation=self.relaxation, encoder=self.encoder,
            cell_dtype=self.cell_dtype if cell_dtype is None else cell_dtype,
        )

    def cells(self, qweight: QTensor | None = None, cell_dtype: torch.dtype | None = None) -> CellState:
        """Every cell of this chip (re-drawn bit-identically from the seed): digits, faults,
        conductances and effective matrices as tensors on the matrix's device, in the reads'
        precision unless ``cell_dtype`` says otherwise (:meth:`tile_state` uses float64)."""
        return run_pipeline(self.context(qweight, cell_dtype=cell_dtype))

    def tile_state(self, tiles: Any = None) -> TileState:
        """Levels, fault maps, conductances and effective matrices of ``tiles`` (indices, default
        all), re-drawn bit-identically from the stored seed unless kept at programming."""
        st = self.kept if self.kept is not None else TileState.from_cells(self.cells(cell_dtype=torch.float64))
        if tiles is None:
            return st
        t = np.atleast_1d(np.asarray(tiles, dtype=np.int64))
        if np.any((t < 0) | (t >= self.n_tiles)):
            raise InputError(f"tile index out of range: this matrix has {self.n_tiles} tiles")
        pick = np.searchsorted(st.tiles, t)
        return TileState(tiles=t, levels=st.levels[pick], faults=st.faults[pick], g_s=st.g_s[pick], m_s=st.m_s[pick])

    def column_currents(self, x: torch.Tensor, tiles: Any = None) -> np.ndarray:
        """Bit-line currents, A, of every physical column (before the differential subtraction).

        ``x``: ``(n, in_features)``. Returns ``(cycles, n, len(tiles), tile_cols)``: word-line
        voltages ``v_read_v`` per '1' bit (bit-serial) or ``v_read_v * code / q_max`` (multi-bit)
        times the tile's effective matrix (multi-bit slices: ``v_read_v * slice / (2**dac_slice_bits - 1)``); sinh cells (``circuit.cell_v0_v > 0``): the codes through
        :meth:`drive` (the engine's nonlinear read). Noise-free.
        """
        self.check_input(x)
        xq, _ = self.dac(x.reshape(-1, self.in_features))
        planes, _ = dac_cycles(xq, self.cfg)
        planes = self.drive(planes) / self.cfg.dac_full_scale
        v = planes.double().cpu().numpy() * self.cfg.v_read_v
        v = np.concatenate([v, np.zeros(v.shape[:2] + (1,))], axis=2)
        st = self.tile_state(tiles)
        C = self.layout.n_col_blocks
        gather = self.row_gather().cpu().numpy().reshape(self.layout.n_row_blocks, -1)
        vin = v[:, :, gather[st.tiles // C]]  # (K, n, T, rows)
        return np.einsum("knti,tij->kntj", vin, st.m_s)

    def summary(self) -> str:
        """Tiles, utilization, cells per weight, formats, faults."""
        cfg, lay = self.cfg, self.layout
        cells = self.n_tiles * lay.tile_rows * lay.tile_cols
        per_w = cfg.n_slices * (2 if cfg.mapping == "differential" else 1)
        used = self.out_features * self.in_features * per_w
        fc = self.fault_counts.sum(0)
        if cfg.weight_format == "scaled":
            s = self.qweight.scale()
            fmt = f"step {float(s):.4g}" if s.ndim == 0 else f"step in [{float(s.min()):.4g}, {float(s.max()):.4g}] per tile"
        else:
            fb = self.qweight.frac_bits
            fmt = f"F={int(fb)}" if fb.ndim == 0 else f"F in [{int(fb.min())}, {int(fb.max())}] per tile"
        fmt_name = {"static": "static fixed point", "dynamic": "dynamic fixed point", "scaled": "scaled"}[cfg.weight_format]
        return "\n".join([
            f"ProgrammedMatrix {self.out_features}x{self.in_features} on {self.n_tiles} tiles "
            f"({lay.n_row_blocks}x{lay.n_col_blocks} of {lay.tile_rows}x{lay.tile_cols})",
            f"  weights: {cfg.weight_bits}-bit {fmt_name} ({fmt}), {cfg.mapping}, "
            f"{cfg.n_slices} slice(s) of {list(cfg.slice_bits)} bits, {per_w} cells per weight"
            + (" + reference columns" if cfg.mapping == "offset" else ""),
            f"  utilization: {used / cells:.1%} of {cells} cells",
            f"  read: {cfg.dac} DAC {cfg.input_bits}-bit {cfg.input_format} per {cfg.input_granularity}"
            + (f" in {cfg.cycles} cycles of {cfg.input_slice_bits} bit(s)" if cfg.cycles > 1 else "") + ", ADC "
            + ("ideal" if cfg.adc_bits is None else f"{cfg.adc_bits}-bit {cfg.adc_kind} {cfg.adc_range} per {cfg.adc_scope}, "
               f"step {float(self.adc_step.min()):.3g}-{float(self.adc_step.max()):.3g} level steps")
            + f", IR drop {cfg.ir_drop}, read noise {cfg.read_noise_sigma_rel:g}"
            + (f", sinh cells v0={self.circuit.cell_v0_v:g} V" if self.circuit is not None and not self.circuit.linear else "")
            + (f", read {cfg.read_time_s:g} s after programming" if cfg.read_time_s > 0 else ""),
            f"  faults: {int(fc[1])} SA0, {int(fc[2])} SA1 of {int(fc.sum())} cells ({(fc[1] + fc[2]) / max(1, fc.sum()):.3%})",
        ] + ([f"  retention: {retention_summary(self.retention)}"] if self.retention else []))


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
    relaxation: Any = None,
    fault_map: Any = None,
    encoder: Callable[..., torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    keep_conductances: bool = False,
    read_noise: str = "levels",
) -> ProgrammedMatrix:
    """Quantize, slice, map and program ``w`` ``(out_features, in_features)`` on crossbar tiles.

    Parameters
    ----------
    w: float tensor ``(out_features, in_features)``; its device is where programming and reads run.
    cfg: the crossbar configuration.
    levels: a ``device.programming.LevelTable`` with ``cfg.bits_per_cell`` bits per cell;
        ``None``: :func:`default_levels`.
    faults: a ``device.faults.FaultConfig``; ``None``: no faults.
    rng: ``numpy.random.Generator`` (required): the chip's seed is drawn from it; every physical
        effect then draws from its own stream (:meth:`crossbar.pipeline.ProgramContext.generator`).
    layout: where each digit goes (:func:`default_layout` if None; :mod:`mapping.plan` makes others).
    circuit: ``crossbar.solver.CircuitConfig`` for IR drop (its defaults if None).
    irdrop: ``crossbar.irdrop.IRDropTable`` or a path, for ``ir_drop="table"`` (the shipped
        ``data/irdrop_default.h5`` if None).
    relaxation: a relaxation model (``device.relaxation.RelaxationModel``) for ``read_time_s > 0``.
    fault_map: a tested chip's ``(tiles, rows, cols)`` fault map (instead of drawing one from ``faults``).
    encoder: fault-map-aware re-encoding hook ``encoder(digits, faults, ctx) -> digits``
        (:func:`crossbar.pipeline.encode_step`; supplied by :mod:`mapping`).
    dtype: compute dtype of reads (float32; float64 for exact integer checks on large sums).
    keep_conductances: keep every cell's conductance and fault code for :meth:`ProgrammedMatrix.tile_state`.
    read_noise: where the read noise comes from (:func:`chip_read_noise`, the rule the command line
        follows too): ``"levels"`` (default) ``cfg.read_noise_sigma_rel`` where it is > 0, else the
        level table's ``read_noise_rel``, the noise its write-verify reads were verified with (1 %
        for the shipped tables, 0 for synthetic ones); ``"crossbar"``: ``cfg.read_noise_sigma_rel``
        as given, 0 included. With read noise, reads need a ``torch.Generator`` (``chip(x, generator=g)``).
    """
    if not isinstance(cfg, CrossbarConfig):
        raise ConfigError(f"cfg must be a CrossbarConfig, got {type(cfg).__name__}")
    if not isinstance(w, torch.Tensor):
        raise InputError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if w.ndim != 2:
        raise InputError(f"w must be a 2-D weight matrix (out_features, in_features), got shape {tuple(w.shape)}")
    if not torch.is_floating_point(w):
        raise InputError(f"w must be floating point, got {w.dtype}")
    if not bool(torch.isfinite(w).all()):
        raise InputError("w holds NaN or infinite values")
    if not isinstance(rng, np.random.Generator):
        raise InputError("program_matrix needs rng, a numpy.random.Generator (the chip's seed is drawn from it)")
    levels = default_levels(cfg.bits_per_cell) if levels is None else levels
    cfg = chip_read_noise(cfg, levels, read_noise)
    out_f, in_f = w.shape
    layout = default_layout(out_f, in_f, cfg) if layout is None else layout
    layout.validate(out_f, in_f, cfg)
    qw = quantize_weight(w.detach(), cfg, layout)
    _check_unmapped_zero(qw, layout)
    return _program(
        qw, layout, cfg, levels, faults, rng, circuit=circuit, irdrop=irdrop, device=w.device, dtype=dtype,
        keep_conductances=keep_conductances, input_step=None, relaxation=relaxation, fault_map=fault_map,
        encoder=encoder,
    )


#: where a chip's read noise comes from (:func:`chip_read_noise`)
READ_NOISE_SOURCES = ("levels", "crossbar")


def chip_read_noise(cfg: CrossbarConfig, levels: Any, read_noise: str = "levels") -> CrossbarConfig:
    """The crossbar config a chip is programmed and read with: the one read-noise rule of the
    Python API (:func:`program_matrix`) and the command line (``nn.sim.effective_crossbar``,
    ``--set read_noise=...``). ``"levels"`` (the default everywhere): ``cfg.read_noise_sigma_rel``
    where it is set (> 0), else the relative read noise the level table's write-verify reads were
    verified with (``levels.read_noise_rel``; 1 % for the shipped tables, 0 for synthetic ones),
    so that programming and inference share one setting; ``"crossbar"``:
    ``cfg.read_noise_sigma_rel`` as set, 0 included (a noiseless read of a shipped table)."""
    if read_noise not in READ_NOISE_SOURCES:
        raise ConfigError(f"read_noise={read_noise!r} is invalid: must be one of {', '.join(READ_NOISE_SOURCES)}")
    if read_noise != "levels" or cfg.read_noise_sigma_rel > 0:
        return cfg
    sigma = float(getattr(levels, "read_noise_rel", 0.0) or 0.0)
    return cfg if sigma == cfg.read_noise_sigma_rel else cfg.replace(read_noise_sigma_rel=sigma)


def quantize_weight(w: torch.Tensor, cfg: CrossbarConfig, layout: TileLayout) -> QTensor:
    """Weight codes ``(out, in)``; per-tile formats use blocks of the default layout's tile
    (``outputs_per_tile x tile_rows``), one step per tile."""
    wq = cfg.weight_quant
    if wq.mode != "static" and wq.granularity == "tile":
        if not is_default_layout(layout, tuple(w.shape), cfg):
            raise LayoutError("per-tile weight formats need the default (dense) layout")
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
        raise LayoutError(f"the layout leaves out input {i} (pruned) but its weights are not all zero after quantization")
    if not cout.all() and bool(q[torch.from_numpy(~cout)].any()):
        o = int(np.flatnonzero(~cout)[0])
        raise LayoutError(f"the layout leaves out output {o} (pruned) but its weights are not all zero after quantization")


def _program(
    qweight: QTensor, layout: TileLayout, cfg: CrossbarConfig, levels, faults, rng, *, circuit, irdrop, device,
    dtype, keep_conductances, input_step, relaxation=None, fault_map=None, encoder=None,
) -> ProgrammedMatrix:
    if not isinstance(rng, np.random.Generator):
        raise InputError("rng must be a numpy.random.Generator")
    if levels is None:
        levels = default_levels(cfg.bits_per_cell)
    check_levels(levels, cfg)
    if cfg.ir_drop == "table":
        irdrop = load_irdrop(irdrop, cfg)
    if cfg.read_time_s > 0 and relaxation is None:
        raise ConfigError(f"read_time_s={cfg.read_time_s:g} needs a relaxation model (relaxation=...)")
    if cfg.read_time_s > 0 and hasattr(relaxation, "check_levels"):
        relaxation.check_levels(levels)  # the level table inside the model's fitted range, before any work
    seed = int(rng.integers(2**63))
    device = torch.device(device)
    ctx = ProgramContext(
        cfg=cfg, qweight=qweight, layout=layout, levels=levels, seed=seed, device=device, faults=faults,
        fault_map=fault_map, circuit=circuit, irdrop=irdrop, relaxation=relaxation, encoder=encoder,
        cell_dtype=torch.float64 if dtype == torch.float64 else torch.float32,
    )
    st = run_pipeline(ctx, PROGRAMMING_STEPS)
    adc_transfer = adc_flaws_step(ctx, dtype)
    folded = fold(st.m_s, qweight, layout, cfg, level_step_s(levels), device, dtype)
    report = retention_report(st, cfg)
    if keep_conductances and ctx.cell_dtype != torch.float64:  # inspection: the float64 cells
        st = run_pipeline(dataclasses.replace(ctx, cell_dtype=torch.float64), PROGRAMMING_STEPS)
    fc = _fault_counts(st.faults)
    pm = ProgrammedMatrix(
        cfg=cfg, qweight=qweight, layout=layout, levels=levels, faults=faults, circuit=circuit, irdrop=irdrop,
        seed=seed, fault_counts=fc, kept=TileState.from_cells(st) if keep_conductances else None,
        input_step=input_step, relaxation=relaxation, fault_map=fault_map, encoder=encoder,
        readout=folded.readout, noise_var=folded.noise_var, w_step=folded.w_step, adc_step=folded.adc_step,
        adc_transfer=adc_transfer, lines=folded.lines, lines_var=folded.lines_var, line_clip=folded.line_clip,
        retention=report,
    )
    r = cfg.retention
    if r.compensation != "none":
        if cfg.needs_calibration:
            raise ConfigError(
                "retention.compensation reads the programmed chip before its first use; it does not combine with "
                "calibrated input or ADC ranges (input_granularity layer/tile, adc_range calibrated)"
            )
        pm = pm.compensate(r.compensation_reads, ctx.generator("compensation"), r.compensation)
    return pm


def retention_report(st: CellState, cfg: CrossbarConfig) -> dict[str, Any] | None:
    """What programming did against relaxation, for one chip's layer (None when nothing did):
    ``cells`` (healthy cells), ``writes`` (histogram: cells written 1, 2, ... times),
    ``rewrites_per_level`` / ``cells_per_level`` (levels,) extra writes and cells per digit, and
    ``clamped`` (cells outside the relaxation model's fitted range, given the nearest bin's law)."""
    if st.writes is None and st.clamped == 0:
        return None
    healthy = (st.faults == 0) if st.faults is not None else torch.ones_like(st.digits, dtype=torch.bool)
    n_lv = 2**cfg.bits_per_cell
    d = st.digits[healthy].to(torch.int64)
    out: dict[str, Any] = {"cells": int(healthy.sum()), "clamped": int(st.clamped),
                           "cells_per_level": torch.bincount(d, minlength=n_lv).cpu().numpy()}
    if st.writes is not None:
        w = st.writes[healthy].to(torch.int64)
        out["writes"] = torch.bincount(w, minlength=cfg.retention.reprogram_rounds + 2).cpu().numpy()
        out["rewrites_per_level"] = torch.bincount(d, weights=(w - 1).to(torch.float64), minlength=n_lv).cpu().numpy()
    return out


def retention_summary(report: dict[str, Any] | None) -> str:
    """One line for :func:`retention_report`'s dictionary."""
    if not report:
        return ""
    parts = []
    if "writes" in report:
        extra = float(report["rewrites_per_level"].sum())
        parts.append(f"{extra / max(1, report['cells']):.3f} re-programs per cell")
    if report.get("clamped"):
        parts.append(f"{report['clamped']} cells outside the relaxation model's fitted range (nearest bin's law)")
    return ", ".join(parts)


def _fault_counts(faults: torch.Tensor) -> np.ndarray:
    """``(tiles, 3)`` int64 counts of healthy, SA0 and SA1 cells per tile (from the few faulty ones)."""
    T = faults.shape[0]
    per = faults[0].numel() if T else 0
    bad = torch.nonzero(faults.reshape(-1)).view(-1)
    fc = np.zeros((T, 3), np.int64)
    if bad.numel():
        codes = faults.reshape(-1)[bad].to(torch.int64)
        fc[:, 1:] = torch.bincount((bad // per) * 3 + codes, minlength=3 * T).view(T, 3)[:, 1:].cpu().numpy()
    fc[:, 0] = per - fc[:, 1] - fc[:, 2]
    return fc


def with_folded(pm: ProgrammedMatrix, folded: FoldedReadout, *, qweight: QTensor | None = None,
                layout: TileLayout | None = None) -> ProgrammedMatrix:
    """``pm`` with another folded readout (and the codes / layout it was folded for), keeping
    ``pm``'s ADC calibration (used by :mod:`mapping.protection` for the unvoted columns)."""
    out = dataclasses.replace(
        pm, readout=folded.readout, noise_var=folded.noise_var, w_step=folded.w_step, adc_step=folded.adc_step,
        lines=folded.lines, lines_var=folded.lines_var, line_clip=folded.line_clip,
        qweight=pm.qweight if qweight is None else qweight, layout=pm.layout if layout is None else layout,
        output_gain=None,
    )
    if pm.cfg.adc_bits is not None:
        out = out.with_adc_step(pm.adc_step, calibrated=pm.calibrated)
    if pm.output_gain is not None:  # the compensation's digital gain stays on the new readout
        out = out.with_output_gain(pm.output_gain)
    return out
