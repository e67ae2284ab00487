"""Reading programmed tiles: DAC, analog column sums, ADC, shift-and-add.

Every read of a layer (:meth:`crossbar.engine.ProgrammedMatrix.matvec`, the voted read of
:mod:`mapping.protection`, calibration) goes through these functions; each piece of the read
lives in exactly one of them.

DAC (:func:`input_step`, :func:`dac_codes`, :func:`dac_cycles`)
    Inputs are quantized to ``input_bits``-bit symmetric codes with a step from the input format
    (:mod:`crossbar.quant`): static fixed point, or a dynamic (power-of-two) or scaled (real)
    step set per input vector (``input_granularity="vector"``, the default: what a per-vector
    shifter does; a vector's read never depends on the other vectors of its batch), per input
    vector and row block (``"tile_vector"``: each tile's DAC at its own inputs' range, the tile's
    converted partial sums rescaled digitally before they are added) or fixed once on
    calibration data per layer / row block. Codes are applied either all at once as a bipolar
    voltage (``dac="multi_bit"``), one two's-complement bit per cycle (``dac="bit_serial"``;
    the MSB cycle weighs ``-2**(input_bits-1)``), or in slices of ``dac_slice_bits`` bits per
    cycle (multi-level voltages, the top slice signed; cycle ``j`` weighs ``2**(j b)``).
Cell I-V (:func:`cell_code_map`, :func:`apply_code_map`)
    With sinh cells (``CircuitConfig.cell_v0_v > 0``) a cell at word-line voltage ``V`` passes
    ``g V h(V) / h(v_read_v)`` with ``h(V) = sinh(V/v0) / (V/v0)``, ``g`` its read conductance at
    the chip's ``v_read_v`` (the level table's conductance converted from the table's read
    voltage by :func:`crossbar.pipeline.read_voltage_step`); a multi-bit read is then exactly the
    linear read of distorted codes (see
    :func:`cell_code_map`); bit-serial reads are unchanged.
Analog sum
    Column currents per unit input code are the folded readout (:func:`crossbar.pipeline.fold`);
    differential subtraction (G+ minus G-, or column minus reference) happens in the analog
    domain, before the ADC. Read noise (``read_noise_sigma_rel``) perturbs each cell by
    ``N(0, (sigma M)^2)`` on every read; it enters as a Gaussian column current with the exact
    variance ``sum_i v_i^2 sigma^2 M_ij^2`` (:func:`add_read_noise`), its standard normals keyed
    per input vector (:class:`crossbar.readkeys.ReadKeys`): a vector's noise never depends on its
    batch mates or the batch size.
Column-current limit (:func:`clipped_column_currents`)
    With ``i_col_max_a`` every physical column's current (HRS cells included) clips at the limit
    before the analog subtraction, in every DAC cycle.
ADC (:func:`adc_convert`)
    ``adc_bits`` signed codes ``[-2**(adc_bits-1), 2**(adc_bits-1) - 1]``; the step (in level
    steps) per row block and slice is the full-scale range or calibrated on data
    (:meth:`crossbar.engine.ProgrammedMatrix.calibrate`, each slice its own ADC reference, as
    CrossSim calibrates per slice). ``adc_scope="column"`` converts every slice column in every
    cycle, ``"tile"`` the shift-added partial sum of each output. The ideal quantizer rounds;
    a circuit kind (``adc_kind``: SAR, ramp, pipeline, cyclic) or any ADC flaw converts through
    the chip's per-ADC transfer functions drawn once per chip (:mod:`crossbar.adc`).
Shift-and-add
    Digital: over DAC cycles (``2**k``, the MSB negative) and slices (``2**(s * bits_per_cell)``),
    times each channel's output scale, summed over row blocks.
"""

from __future__ import annotations

import torch

from crossbar.bitserial import lut_bit_serial
from crossbar.config import CrossbarConfig
from crossbar.quant import q_max, step_for
from crossbar.readkeys import ReadKeys
from device.config import ConfigError
from device.errors import InputError

__all__ = [
    "input_step",
    "calibrate_input_step",
    "dac_codes",
    "dac_cycles",
    "cell_code_map",
    "apply_code_map",
    "cycle_weights",
    "slice_weights",
    "adc_code_range",
    "adc_convert",
    "adc_can_clip",
    "add_read_noise",
    "read_ideal_adc",
    "clipped_column_currents",
    "read_adc",
    "BIT_SERIAL_LUT",
    "CHUNK_ELEMS",
    "ROW_ALIGN",
    "pad_rows",
]

#: target number of float elements of one chunk of a bit-serial / column-ADC read
CHUNK_ELEMS = 1 << 23

#: reads run on batches padded to a multiple of this many input vectors (zero vectors), in chunks
#: that are multiples of it: BLAS kernels give every row the same summation order when the row
#: count is a multiple of their register block (16 on the CPUs measured; a vector alone takes a
#: GEMV path with another order), so a vector's output is the same bits in any batch
ROW_ALIGN = 64


def pad_rows(x: torch.Tensor, align: int = ROW_ALIGN) -> torch.Tensor:
    """``x`` ``(n, ...)`` with zero rows appended up to a multiple of ``align`` (``x`` itself when
    it already is one)."""
    pad = (-x.shape[0]) % align
    if pad == 0:
        return x
    return torch.cat([x, x.new_zeros(pad, *x.shape[1:])])

#: bit-serial reads on the CPU sum each cycle's column currents from tables of partial currents
#: of 8 rows (:func:`crossbar.bitserial.lut_bit_serial`); False forces the batched-matmul path
#: (benchmarks, tests)
BIT_SERIAL_LUT = True


# --------------------------------------------------------------------------------------------
# DAC


def _check_finite_max(a: torch.Tensor) -> None:
    if not bool(torch.isfinite(a).all()):
        raise InputError("input holds NaN or infinite values")


def input_step(xf: torch.Tensor, cfg: CrossbarConfig, calibrated: torch.Tensor | None, in_block: torch.Tensor | None,
               n_row_blocks: int = 1) -> torch.Tensor:
    """The DAC step of inputs ``xf`` ``(n, in)``, float64, broadcastable to ``(n, in)``.

    Static format: a scalar ``2**-input_frac_bits``. Dynamic / scaled with
    ``input_granularity="vector"``: ``(n, 1)``, each vector's own step from its ``max|x|``.
    "tile_vector": ``(n, in)``, each vector's step per row block from the ``max|x|`` of the
    block's inputs (``in_block``: ``(in,)`` row block of each input, ``n_row_blocks`` for inputs
    no block reads, which then take block 0's step: their rows read 0).
    "layer" / "tile": the step fixed by calibration (``calibrated``: a scalar, or ``(R,)`` per row
    block expanded to ``(in,)`` through ``in_block``); raises if not calibrated. Raises on NaN/inf.
    """
    x = xf.detach()
    if cfg.input_format != "static" and cfg.input_granularity == "vector":
        m = x.abs().amax(1, keepdim=True) if x.shape[1] else x.new_zeros(x.shape[0], 1)
        _check_finite_max(m)
        return step_for(m, cfg.input_quant)
    if cfg.input_format != "static" and cfg.input_granularity == "tile_vector":
        R = n_row_blocks
        m = x.new_zeros(x.shape[0], R + 1).scatter_reduce_(1, in_block.view(1, -1).expand(x.shape[0], -1), x.abs(),
                                                           reduce="amax", include_self=True)
        _check_finite_max(m)
        st = step_for(m[:, :R], cfg.input_quant)  # (n, R)
        return st.index_select(1, in_block.clamp(max=R - 1))
    m = torch.linalg.vector_norm(x, ord=float("inf")) if x.numel() else x.new_zeros(())
    _check_finite_max(m)
    if cfg.input_format == "static":
        return torch.tensor(2.0 ** -cfg.input_frac_bits, dtype=torch.float64, device=x.device)
    if calibrated is None:
        raise ConfigError(
            f"input_granularity={cfg.input_granularity!r} fixes the DAC step once on calibration data: call "
            "ProgrammedMatrix.calibrate(x) first (or use input_granularity='vector')"
        )
    return calibrated if calibrated.ndim == 0 else calibrated[in_block.clamp(max=calibrated.numel() - 1)]


def calibrate_input_step(xf: torch.Tensor, cfg: CrossbarConfig, n_row_blocks: int, in_block: torch.Tensor) -> torch.Tensor | None:
    """The calibrated DAC step for ``input_granularity`` "layer" (scalar) or "tile" (``(R,)``, per
    row block; ``in_block`` ``(in,)`` row block of each input, ``n_row_blocks`` for inputs no
    block reads) from calibration inputs ``xf`` ``(n, in)``; None when the format needs none."""
    if not cfg.input_needs_calibration:
        return None
    a = xf.detach().abs()
    _check_finite_max(torch.linalg.vector_norm(a, ord=float("inf")) if a.numel() else a.new_zeros(()))
    if cfg.input_granularity == "layer":
        return step_for(a.max() if a.numel() else a.new_zeros(()), cfg.input_quant)
    col_max = a.amax(0) if a.shape[0] else a.new_zeros(a.shape[1])
    m = torch.zeros(n_row_blocks + 1, dtype=a.dtype, device=a.device)
    m = m.scatter_reduce(0, in_block, col_max, reduce="amax", include_self=True)
    return step_for(m[:n_row_blocks], cfg.input_quant)


def dac_codes(xf: torch.Tensor, step: torch.Tensor, cfg: CrossbarConfig, dtype: torch.dtype) -> torch.Tensor:
    """Input codes ``(n, in)``, integer-valued in ``dtype`` (a new tensor): ``x / step`` rounded
    half to even and saturated at ``+-q_max(input_bits)`` (only static formats and calibrated
    steps ever saturate). For power-of-two steps the division is exact."""
    qm = q_max(cfg.input_bits)
    xq = xf.to(dtype) / step.to(dtype)
    return xq.round_().clamp_(-qm, qm)


def cycle_weights(cfg: CrossbarConfig, dtype: torch.dtype, device) -> torch.Tensor:
    """``(K,)`` weight of each DAC cycle: ``[1]`` (one multi-bit cycle); ``2**k`` with the MSB
    cycle ``-2**(input_bits-1)`` (bit-serial two's complement); ``2**(j * dac_slice_bits)`` for
    multi-bit slices (the top slice carries the sign in its own value)."""
    K = cfg.cycles
    if K == 1:
        return torch.ones(1, dtype=dtype, device=device)
    a = torch.exp2(torch.arange(K, device=device, dtype=torch.float64) * cfg.input_slice_bits)
    if cfg.input_slice_bits == 1:
        a[-1] = -a[-1]
    return a.to(dtype)


def dac_cycles(xq: torch.Tensor, cfg: CrossbarConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-line inputs per DAC cycle ``(K, n, in)`` in input-LSB units and the cycles' weights
    ``(K,)``: the whole code (one multi-bit cycle), its two's-complement bits (bit-serial), or
    its slices of ``dac_slice_bits`` bits, least significant first: ``(u >> j b) & (2**b - 1)``
    of the two's-complement code ``u``, the top slice's remaining bits read as a signed number
    (so ``sum_j 2**(j b) slice_j`` is the code)."""
    a = cycle_weights(cfg, xq.dtype, xq.device)
    K, b, B = cfg.cycles, cfg.input_slice_bits, cfg.input_bits
    if K == 1:
        return xq.unsqueeze(0), a
    u = torch.remainder(xq.to(torch.int64), 1 << B)  # two's complement
    k = torch.arange(K, device=xq.device) * b
    sl = (u.unsqueeze(0) >> k.view(K, 1, 1)) & ((1 << b) - 1)
    if b > 1:
        r = B - b * (K - 1)  # bits of the top slice
        top = sl[-1]
        sl[-1] = torch.where(top >= (1 << (r - 1)), top - (1 << r), top)
    return sl.to(xq.dtype), a


def cell_code_map(cfg: CrossbarConfig, cell_v0_v: float) -> torch.Tensor | None:
    """The nonlinear (sinh) cell read as a map of the DAC codes: ``(2 q_max + 1,)`` float64, entry
    ``c + q_max`` the linear-cell code that gives code ``c``'s column current; None for linear
    cells (``cell_v0_v == 0``) and bit-serial DACs (where it is the identity). With multi-bit
    input slices (``dac_slice_bits``) the codes are a slice's values, ``q_max`` its full scale
    ``2**dac_slice_bits - 1`` (:attr:`CrossbarConfig.dac_full_scale`).

    The cell: ``I(V) = g0 v0 sinh(V / v0)`` (the compact model's read I-V, ``crossbar.solver``;
    Stanford-PKU ``v0 = 0.25 V``), ``v0`` the same for every level. Write ``I = g(V) V`` with the
    chord conductance ``g(V) = g0 h(V)``, ``h(V) = sinh(V/v0) / (V/v0)`` (even, ``h(0) = 1``,
    :func:`device.compact.small_signal_to_read_s`: the one place of the sinh chord). Because
    ``h`` depends on the voltage only, a cell's current is its chord conductance *at one
    reference voltage* times a factor of the voltage alone. The reference is the chip's
    ``v_read_v``: the cells' conductances reach the read as chords at that voltage (a level table
    records them at *its* read voltage, ``LevelTable.v_read_v``, 0.1 V for write-verify tables;
    :func:`crossbar.pipeline.read_voltage_step` converts them, the one place), so
    ``I(V) = g V h(V) / h(v_read_v)`` with ``g`` the cell's chord at ``v_read_v``. Hence, with
    ideal wires, exactly:

    * multi-bit DAC (``V = v_read_v c / q_max`` for code ``c``): the column current of codes
      ``c_i`` is the linear read of ``e(c_i) = c_i h(v_read_v c_i / q_max) / h(v_read_v)``, a
      fixed odd map of the ``2 q_max + 1`` codes: a table lookup before the matmul, and the
      folded readout is the linear one. ``|e(c)| <= |c|`` with equality at 0 and full scale.
    * bit-serial DAC: the only nonzero voltage is ``v_read_v``, where every cell reads its
      chord at ``v_read_v``: the read equals the linear read of those chords.

    With wire resistance (``ir_drop`` "table" / "exact") the engine keeps the codes map and the
    linear effective matrix of the cells' chord conductances at ``v_read_v``: the approximation ignores that the cells' chord falls with the cell voltage
    the wires lower (and the loading changes with it): the drop reaches a cell's current through
    its differential conductance ``g0 cosh(V/v0)``, set by the row's own voltage, while the
    bit-line drop is set by the whole column's current, a product no fixed matrix holds. Its
    error against the Newton solution (:func:`crossbar.solver.solve`; RMS over RMS column
    current, ``bench/bench_nonlinear_read.py``, BENCHMARKS.md): 0.3-0.7 % at 32 x 32 and 1 ohm,
    0.6-4.4 % at 64 x 64 and 1-2.5 ohm, 0.8-7 % at 128 x 128 and 1-2.5 ohm (where the
    nonlinearity itself is 3-16 %). Exact per input vector: the Newton solver.
    """
    if cell_v0_v == 0.0 or cfg.input_slice_bits == 1:
        return None
    from device.compact import small_signal_to_read_s  # sinh(x)/x: the one place

    qm = cfg.dac_full_scale  # the value applied at v_read_v (q_max, or a slice's 2**b - 1)
    c = torch.arange(1, qm + 1, dtype=torch.float64)
    h = torch.tensor([float(small_signal_to_read_s(1.0, cfg.v_read_v * k / qm, cell_v0_v)) for k in range(1, qm + 1)],
                     dtype=torch.float64)
    e = c * (h / h[-1])
    e[-1] = qm  # full scale is the reference: exact, not rounded
    return torch.cat([-e.flip(0), e.new_zeros(1), e])


def apply_code_map(codes: torch.Tensor, code_map: torch.Tensor | None) -> torch.Tensor:
    """``codes`` (integer-valued, any shape, saturated at ``+-q_max``) through ``code_map``
    (:func:`cell_code_map`) in ``codes``' dtype; ``codes`` itself when the map is None."""
    if code_map is None:
        return codes
    qm = (code_map.numel() - 1) // 2
    lut = code_map.to(device=codes.device, dtype=codes.dtype)
    return torch.take(lut, codes.to(torch.int64) + qm)


def slice_weights(cfg: CrossbarConfig, n: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``(n,)`` shift-and-add weights of the slices: ``2**(s * bits_per_cell)``."""
    return torch.exp2(torch.arange(n, device=device, dtype=torch.float64) * cfg.bits_per_cell).to(dtype)


# --------------------------------------------------------------------------------------------
# analog sum and ADC


def adc_code_range(cfg: CrossbarConfig) -> tuple[int, int]:
    """The ADC's signed output codes ``(lo, hi)``."""
    return -(2 ** (cfg.adc_bits - 1)), 2 ** (cfg.adc_bits - 1) - 1


def adc_convert(cur: torch.Tensor, cfg: CrossbarConfig, clip: bool = True, transfer=None, rows=None, cols=None
                ) -> torch.Tensor:
    """The ADC, in place: currents in ADC steps -> codes, the one place a conversion happens.

    Without ``transfer``: rounded, clamped to the code range when ``clip`` (skip the clamp only
    when :func:`adc_can_clip` proved it a no-op). With ``transfer`` (the chip's ADCs with their
    flaws, :class:`crossbar.adc.AdcTransfer`): each channel's code is its ADC's transfer function
    at the current, ``codes[#{breaks < v}]``, found through the transfer's search grid
    (:class:`crossbar.adc.TransferIndex`: a grid lookup, then one comparison with the next break
    per climb, gathered in place in the currents' own layout; exactly ``torch.searchsorted``'s
    index), or by ``floor`` and one comparison when every ADC has the ideal transitions (a
    flawless circuit). ``cur``: ``(R, X, L)`` (every row block and channel) or, with ``rows``
    (a row block) and ``cols`` (a slice of channels), ``(X, l)``.
    """
    if transfer is None:
        cur.round_()
        if clip:
            cur.clamp_(*adc_code_range(cfg))
        return cur
    if not cur.is_contiguous():  # the search gathers by flat position
        return cur.copy_(adc_convert(cur.contiguous(), cfg, clip, transfer, rows, cols))
    ix = transfer.index
    M = transfer.breaks.shape[1]
    if transfer.codes is None and M != 2**cfg.adc_bits - 1:
        raise ValueError(f"a monotonic ADC transfer of {M} breaks does not convert to adc_bits={cfg.adc_bits}")
    if ix.identity:  # the ideal transitions lo + k - 1/2: ties go down, as #{breaks < v} does
        f = torch.floor(cur)
        return cur.gt_(f + 0.5).add_(f).clamp_(ix.lo, ix.lo + M)  # floor(v) + 1/2 is exact
    tab = transfer.table if rows is None else transfer.table[rows, cols]
    tab = tab.unsqueeze(-2)  # (R, 1, L) or (1, l): broadcast over the input vectors
    T = ix.n_rows
    g = torch.mul(cur, 2.0**ix.shift) if ix.shift else cur.clone()
    g.floor_().clamp_(ix.g0 - 1, ix.g0 + ix.n_grid - 1)  # grid cell, below the grid -> g0 - 1
    pos = g.to(torch.int64).add_(1 - ix.g0).mul_(T).add_(tab)
    del g
    pos = torch.take(ix.start, pos)  # flat index of the first break not below the cell's point
    if ix.climbs:
        pos.add_(torch.take(ix.breaks_flat, pos) < cur, alpha=T)
    if ix.climbs > 1:  # the few inputs whose cell holds more breaks below them climb on alone
        more = (torch.take(ix.breaks_flat, pos) < cur).view(-1).nonzero().squeeze(1)
        if more.numel():
            p, v = pos.view(-1)[more] + T, cur.reshape(-1)[more]
            for _ in range(ix.climbs - 2):
                p.add_(torch.take(ix.breaks_flat, p) < v, alpha=T)
            pos.view(-1)[more] = p
    return torch.take(ix.codes_flat, pos, out=cur)


def adc_can_clip(readout: torch.Tensor, noise_var: torch.Tensor | None, cfg: CrossbarConfig) -> bool:
    """Whether any column current can round outside the ADC codes: the sum of the positive
    (negative) readout entries of a column bounds its current for 0/1 bit-serial inputs, the
    sum of |entries| times the DAC's full scale for multi-bit codes and slices. Read noise is unbounded. The 0.25-step margin covers float
    round-off of the sums; when it holds the clamp is a no-op and is skipped."""
    if noise_var is not None:
        return True
    lo, hi = adc_code_range(cfg)
    d = readout
    if cfg.input_slice_bits == 1 and cfg.cycles > 1:
        top, bottom = d.clamp(min=0).sum(1).max(), d.clamp(max=0).sum(1).min()
    else:
        top = d.abs().sum(1).max() * cfg.dac_full_scale
        bottom = -top
    return not (float(top) < hi + 0.25 and float(bottom) > lo - 0.25)


def add_read_noise(cur: torch.Tensor, x_sq: torch.Tensor, noise_var: torch.Tensor, keys: ReadKeys,
                   matmul, *, lead: tuple[int, ...] = (), rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Read noise, the one place it is drawn: in place, ``cur += sqrt(matmul(x_sq, noise_var)) *
    z`` with ``x_sq`` the squared word-line inputs (summed over cycles with their squared
    weights when the cycles are combined before the noise is added): the exact variance of the
    column current when each cell's conductance has relative sigma ``read_noise_sigma_rel`` (the
    variance matrix is folded like the currents). Drawn on every read; the standard normals
    ``z`` of each input vector come from its key (:meth:`crossbar.readkeys.ReadKeys.normal`), so
    they do not depend on the other vectors of the batch. ``cur`` is ``(*lead, m, L)`` or, with
    ``lead = (R, K)``, ``(R, K * m, L)`` (cycle-major rows); ``rows = (i0, i1)``: which input
    vectors of the read these ``m`` are (default all)."""
    sd = matmul(x_sq, noise_var).clamp_(min=0).sqrt_()
    i0, i1 = rows if rows is not None else (0, None)
    z = keys.normal(lead, (cur.shape[-1],), cur.dtype, cur.device, i0, i1)
    return cur.addcmul_(sd, z.reshape(cur.shape))


def clipped_column_currents(X: torch.Tensor, lines: torch.Tensor, lines_var: torch.Tensor | None, line_clip: float,
                            adc_step: torch.Tensor, cfg: CrossbarConfig, keys: ReadKeys | None,
                            rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Column-current clipping, the one place it lives: every physical column's current (G+, G-
    or reference column, HRS cells included) is formed from ``lines`` (:func:`crossbar.pipeline.fold`,
    level steps per unit of word-line drive), gets its read noise, and is clipped at
    ``+-line_clip`` (``i_col_max_a`` in those units) before the analog subtraction. ``X``
    ``(R, K * m, rows)`` word-line drive (cycle-major rows); ``keys``, ``rows``: the read noise's
    (:func:`add_read_noise`). Returns the ADC inputs ``(R, K * m, L)`` in ADC steps
    (``adc_step`` ``(R, S_adc)``): per slice channel, or shift-added per output (tile scope)."""
    R, m = X.shape[0], X.shape[1]
    S = cfg.n_slices
    cl = torch.bmm(X, lines)  # (R, m, 2 S out)
    if lines_var is not None:
        add_read_noise(cl, X * X, lines_var, keys, torch.bmm, lead=(R, cfg.cycles), rows=rows)
    cl.clamp_(-line_clip, line_clip)
    half = cl.shape[-1] // 2
    d = (cl[..., :half] - cl[..., half:]).view(R, m, S, half // S)
    if cfg.adc_scope == "tile":
        d = torch.einsum("rmso,s->rmo", d, slice_weights(cfg, S, d.dtype, d.device)).unsqueeze(2)
    d = d / adc_step.view(R, 1, -1, 1)
    return d.reshape(R, m, -1)


def read_ideal_adc(readout: torch.Tensor, noise_var: torch.Tensor | None, xq: torch.Tensor, sx: torch.Tensor,
                   cfg: CrossbarConfig, keys: ReadKeys | None, planes: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Read with an ideal ADC: ``readout`` ``(out, in)`` has slices, polarity, IR drop and weight
    steps folded in, so a read is one matmul of the dequantized inputs (``xq * sx``), plus read
    noise keyed by ``keys``. ``planes`` (``(K, n, in)`` word-line drive per DAC cycle, :func:`dac_cycles` through the
    cells' code map) where the cycles differ from the code itself (sinh cells with input slices)
    or read noise needs them (variance ``sum_k a_k**2 planes_k**2``). Returns ``(n, out)``.
    Consumes ``xq``."""
    if planes is not None:
        a = cycle_weights(cfg, planes.dtype, planes.device)
        if noise_var is not None:
            xv = torch.einsum("k,kni->ni", a * a, planes * planes) * (sx * sx).to(planes.dtype)
        xq = torch.einsum("k,kni->ni", a, planes)
    xs = xq.mul_(sx.to(xq.dtype))
    y = torch.nn.functional.linear(xs, readout)
    if noise_var is not None:
        if planes is None:
            xv = xs * xs
        add_read_noise(y, xv, noise_var, keys, torch.nn.functional.linear)
    return y


def read_adc(readout: torch.Tensor, noise_var: torch.Tensor | None, chan_scale: torch.Tensor, xw: torch.Tensor,
             cfg: CrossbarConfig, keys: ReadKeys | None, *, quantize: bool = True,
             measure: bool = False, block_scale: torch.Tensor | None = None, transfer=None,
             lines: tuple | None = None) -> torch.Tensor:
    """Per-cycle, per-tile reads with an ADC on each channel.

    ``readout`` ``(R, rows, L)`` in ADC steps, ``L = S * out`` (column scope, channel
    ``s * out + o``) or ``out`` (tile scope, ``S = 1``); ``chan_scale`` ``(R, L)`` output units
    per ADC code (weight step x ADC step x slice weight x per-row-block input step); ``xw``
    ``(R, n, rows)`` word-line input codes (free and copy rows 0; bit-serial cycles are cut from
    them here), or ``(R, K, n, rows)`` the word-line drive of each DAC cycle (multi-bit slices);
    ``block_scale`` ``(R, n)``
    the DAC step of each row block and input vector (``input_granularity="tile_vector"``): the
    digital rescaling of each block's converted partial sums before they are added;
    ``transfer`` the chip's ADCs with their flaws (:func:`adc_convert`), None for ideal
    quantizers; ``lines`` ``(lines, lines_var, line_clip, adc_step)`` with a column-current
    limit: the currents then come from :func:`clipped_column_currents` (``quantize=False``
    without an ADC); ``keys``: the read noise's (:func:`add_read_noise`). Returns
    ``(n, out)``; with ``measure`` the ``(R, S)`` largest unquantized |current| in ADC steps
    instead (calibration).

    The DAC cycles are stacked into the token dimension: per chunk of ``m`` tokens one
    ``(R, K * m, rows) @ (R, rows, L)`` bmm gives every cycle's column currents, which are then
    rounded in place, clamped only when the ADC range can be exceeded (:func:`adc_can_clip`), and
    shift-added: cycles and row blocks by one ``(1, R * K)`` GEMV per chunk when the channel
    scales are one factor per row block times the slice weight (layer-wide weight step, equal ADC
    steps over slices), slices once for the whole batch; otherwise a weighted sum over row blocks
    and slices. In the compute dtype: with float32 the rounded ADC codes and their shift-and-add
    sums are integers below ``2**24`` (``|code| <= 2**(adc_bits-1)``, times ``2**input_bits`` and
    ``2**code_bits``), hence exact whenever ``adc_bits + input_bits + code_bits + log2(K * S) <=
    24``; otherwise rounded like any float32 matmul (use float64 for exact checks).

    On the CPU without read noise, bit-serial reads (``K > 1``) take
    :func:`crossbar.bitserial.lut_bit_serial` (same ADC per cycle and column, currents summed
    from 8-row tables; ``bench/bench_engine.py``); ``measure``, read noise, multi-bit DACs and
    GPUs keep the ``bmm``.
    """
    R, tr, L = readout.shape
    n = xw.shape[-2]
    sliced = xw.ndim == 4  # (R, K, n, rows): cycles given
    if not sliced and cfg.cycles > 1 and cfg.input_slice_bits > 1:
        raise ValueError("multi-bit input slices need the word-line drive of every cycle, (R, K, n, rows)")
    S = cfg.n_slices if cfg.adc_scope == "column" else 1
    out = L // S
    K, dt, dev = cfg.cycles, readout.dtype, readout.device
    lo, hi = adc_code_range(cfg) if cfg.adc_bits is not None else (None, None)
    clip = quantize and not measure and (lines is not None or adc_can_clip(readout, noise_var, cfg))
    a = cycle_weights(cfg, dt, dev)
    beta = slice_weights(cfg, S, dt, dev)
    base = chan_scale.view(R, S, out) / beta.view(1, S, 1)  # exact: beta is a power of two
    ak = None
    if bool((base == base[:, :1, :1]).all()):
        # the usual case: chan_scale[r, s*out+o] = c_r * 2**(s*bits_per_cell), so cycles and row
        # blocks contract in one (1, R*K) GEMV over the whole chunk
        ak = (base[:, 0, :1] * a.view(1, K)).reshape(1, R * K)
        w_s = beta.view(1, S, 1)
    if (BIT_SERIAL_LUT and K > 1 and not sliced and not measure and noise_var is None and dev.type == "cpu"
            and dt in (torch.float32, torch.float64) and transfer is None and lines is None):
        u = torch.remainder(xw.to(torch.int32), 1 << cfg.input_bits)  # two's complement codes
        if ak is not None:
            ak_r, col_fac = ak.view(R, 1, K), None
        else:  # per-channel factors: (R, L), channel s * out + o
            ak_r, col_fac = a.view(1, 1, K).expand(R, 1, K), base.reshape(R, L)
        return lut_bit_serial(u, cfg.input_bits, readout, ak_r, out, 2.0**cfg.bits_per_cell,
                              quantize, (lo, hi) if clip else None, col_fac,
                              None if block_scale is None else block_scale.to(dt))
    if ak is not None:
        zs = torch.empty(n * L, dtype=dt, device=dev)  # (n, S, out) cycle- and block-summed codes
    # tokens per chunk: a multiple of ROW_ALIGN that does not depend on n (batch-independent bits)
    nc = max(ROW_ALIGN, CHUNK_ELEMS // max(1, R * K * L) // ROW_ALIGN * ROW_ALIGN)
    nc = min(nc, -(-n // ROW_ALIGN) * ROW_ALIGN) if n else nc
    n_chunks = -(-n // nc)
    if K > 1 and not sliced:
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
    peak = torch.zeros(R, S, dtype=dt, device=dev)
    base_l = base.reshape(R, L)
    for i0 in range(0, n, nc):  # chunks of the batch (memory), never tiles or bits
        i1 = min(n, i0 + nc)
        m = i1 - i0
        if sliced:  # (R, K, m, rows) -> rows of the bmm ordered (cycle, token)
            X = xw[:, :, i0:i1].reshape(R, K * m, tr)
        elif K > 1:  # bit planes (R, K, m, rows) -> rows of the bmm ordered (cycle, token)
            c, j = divmod(i0 // nc, group)
            if j == 0:
                planes = bits[:, c * group : (c + 1) * group].to(dt)
            X = planes[:, j].view(R, K * nc, tr) if m == nc else planes[:, j, :, :m].reshape(R, K * m, tr)
        else:
            X = xw[:, i0:i1]
        if lines is not None:
            cur = clipped_column_currents(X, *lines[:3], lines[3], cfg, keys, (i0, i1))
        else:
            cur = torch.bmm(X, readout)  # (R, K*m, L) in ADC steps
            if noise_var is not None:
                add_read_noise(cur, X * X, noise_var, keys, torch.bmm, lead=(R, K), rows=(i0, i1))
        if measure:
            peak = torch.maximum(peak, cur.abs().view(R, K * m, S, out).amax(dim=(1, 3)))
            continue
        if quantize:
            adc_convert(cur, cfg, clip, transfer)
        if block_scale is not None:  # each row block's partial sums at its own input step
            cur.view(R, K, m, L).mul_(block_scale[:, i0:i1].to(dt).view(R, 1, m, 1))
        if ak is not None:
            # cur is (R * K, m * L) row-major: cycles and row blocks in one GEMV
            torch.mm(ak, cur.view(R * K, m * L), out=zs[i0 * L : i1 * L].view(1, m * L))
            continue
        # shift-and-add over DAC cycles (two's complement; exact: integer codes, powers of two),
        # then row blocks weighted by the channel factors, then slices: the order of the table
        # read, so the two paths agree bit for bit
        z = torch.matmul(a.view(1, 1, K), cur.view(R, K, m * L)) if K > 1 else cur  # (R, 1, m*L)
        z = z.view(R, m, L)
        acc = torch.mul(z[0], base_l[0])
        for r in range(1, R):
            acc.addcmul_(z[r], base_l[r])
        yc = y[i0:i1]
        yc.zero_()
        for s_ in range(S):
            yc.add_(acc[:, s_ * out : (s_ + 1) * out], alpha=float(2.0 ** (s_ * cfg.bits_per_cell)))
    if measure:
        return peak
    if ak is not None:  # slices, once for the whole batch (few large ops: see CHUNK_ELEMS)
        torch.sum(zs.view(n, S, out) * w_s, dim=1, out=y)
    return y
