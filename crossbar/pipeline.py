"""Programming a weight matrix onto crossbar tiles: one ordered list of physical effects.

A chip is made by running :data:`PROGRAMMING_STEPS` in order on a :class:`CellState` (every cell
of every tile of one layer, ``(tiles, rows, cols)`` tensors on the weight's device), then
:func:`fold` turns the cells into what a read uses. Each step is a public function
``step(state, ctx) -> state`` that models one physical effect, says when it is sampled and the
range it is valid for, and raises outside it. A new effect is one new step here plus its config
fields (``CONTRIBUTING.md``, "Physical effects", has the table of effect -> when sampled ->
config field -> function).

==================  =============================================  ===============================
step                what it models                                 sampled
==================  =============================================  ===============================
cell_digits_step    slicing of the weight codes into cell digits   deterministic
fault_map_step      stuck-at map (drawn, or given by a chip test)  once per chip
encode_step         fault-map-aware re-encoding (mapping layer)    once per chip (deterministic)
variation_step      programming (write-verify) variation           once per chip
reverify_step       relaxation-aware programming: rounds of wait,  once per chip and read time
                    re-verify, re-program the cells that left
                    their window
relaxation_step     conductance relaxation after ``read_time_s``   once per chip and read time
                    (refresh: at most ``refresh_period_s``)
stuck_at_step       stuck cells read g_sa0_s / g_sa1_s             once per chip
read_voltage_step   sinh cells: the table's chord conductance at   deterministic
                    its read voltage -> the chip's ``v_read_v``
ir_drop_step        wire resistance: effective matrix ``M(G)``     once per chip (sinh cells: at
                                                                   the chord at ``v_read_v``)
==================  =============================================  ===============================

The ADCs' flaws (:mod:`crossbar.adc`: capacitor mismatch, comparator and input offsets, gain
errors) are drawn once per chip by :func:`adc_flaws_step`, from the chip's generator like the
steps, as a transfer function per ADC input that the read applies. Read noise is sampled on
every read and lives in the read (:mod:`crossbar.read`).

Randomness: every step draws from its own ``torch.Generator`` on the tensors' device, seeded from
the chip's seed and the step's name (:meth:`ProgramContext.generator`), so a chip is a pure
function of ``(weights, config, tables, seed)``, adding a step never changes the draws of the
others, and the same seed gives a bit-identical chip on the CPU.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from crossbar.config import DEFAULT_G_OFF_S, DEFAULT_G_ON_S, CrossbarConfig
from crossbar.layout import FREE, NEG, POS, REF, TileLayout
from crossbar.quant import QTensor
from device.config import ConfigError
from device.data import data_dir

__all__ = [
    "CellState",
    "ProgramContext",
    "PROGRAMMING_STEPS",
    "cell_digits",
    "cell_digits_step",
    "fault_map_step",
    "encode_step",
    "variation_step",
    "reverify_step",
    "reverify_window_s",
    "relaxation_step",
    "stuck_at_step",
    "read_voltage_step",
    "chord_ratio",
    "ir_drop_step",
    "run_pipeline",
    "fold",
    "level_step_s",
    "check_levels",
    "default_levels",
    "load_irdrop",
    "weight_steps",
    "FoldedReadout",
    "adc_flaws_step",
    "adc_of_channels",
]

_DATA = data_dir()  # the shipped tables (device.data)


@dataclasses.dataclass(frozen=True, eq=False)
class CellState:
    """Every cell of one layer's tiles, ``(tiles, rows, cols)``, tiles ``t = r * C + c``.

    ``digits``: uint8 digit written to each cell (0 = HRS; free cells 0).
    ``faults``: int8 :class:`device.faults.Fault` codes (0 none, 1 SA0, 2 SA1), or None before
    :func:`fault_map_step`.
    ``g_s``: float64 read conductance, S (after variation, relaxation, faults), or None.
    ``m_s``: float64 effective matrix with IR drop, S (``i_out = v_in @ m_s`` per tile), or None.
    ``age_s``, ``z``: after relaxation-aware programming (:func:`reverify_step`), each cell's
    time since its last write when programming ends, s, and the normal score of its relaxation
    at its last verify (0 for a cell written last); None otherwise (every cell written at once).
    ``writes``: uint8 writes of each cell (1 + re-programs), or None (one each).
    ``clamped``: cells whose programmed conductance lay outside the relaxation model's fitted
    range and took the nearest bin's law (``relaxation.out_of_range="clamp"``).
    """

    digits: torch.Tensor
    faults: torch.Tensor | None = None
    g_s: torch.Tensor | None = None
    m_s: torch.Tensor | None = None
    age_s: torch.Tensor | None = None
    z: torch.Tensor | None = None
    writes: torch.Tensor | None = None
    clamped: int = 0

    def replace(self, **kw: Any) -> "CellState":
        return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True, eq=False)
class ProgramContext:
    """What the programming steps of one layer read: the configuration, the codes, the layout,
    the device tables and the chip's seed.

    ``levels``: a ``device.programming.LevelTable``; ``faults``: a ``device.faults.FaultConfig``
    or None; ``fault_map``: a given ``(tiles, rows, cols)`` fault map (a tested chip) or None (then
    drawn from ``faults``); ``circuit``: a ``crossbar.solver.CircuitConfig`` or None;
    ``irdrop``: a ``crossbar.irdrop.IRDropTable`` (``ir_drop="table"``) or None; ``relaxation``:
    a model with ``sample_torch(g_s, time_s, generator)`` (``device.relaxation``) or None;
    ``encoder``: ``encoder(digits, faults, ctx) -> digits`` (fault-map-aware re-encoding, supplied
    by the mapping layer) or None.
    """

    cfg: CrossbarConfig
    qweight: QTensor
    layout: TileLayout
    levels: Any
    seed: int
    device: torch.device
    faults: Any = None
    fault_map: Any = None
    circuit: Any = None
    irdrop: Any = None
    relaxation: Any = None
    encoder: Callable[..., torch.Tensor] | None = None
    #: precision of the cells' conductances: float64 for float64 reads (exact checks), float32
    #: for float32 reads (half the memory traffic; 1e-7 relative, far below any device spread)
    cell_dtype: torch.dtype = torch.float64

    def generator(self, step: str) -> torch.Generator:
        """The ``torch.Generator`` of step ``step`` on :attr:`device`: seeded from the chip's seed
        and the step's name (independent streams, stable when steps are added)."""
        s = np.random.SeedSequence([int(self.seed) & (2**64 - 1), zlib.crc32(step.encode())])
        g = torch.Generator(device=self.device)
        g.manual_seed(int(s.generate_state(1, np.uint64)[0]) & (2**63 - 1))
        return g

    def numpy_rng(self, step: str) -> np.random.Generator:
        """A numpy Generator for step ``step`` (fault patterns, whose statistics live in numpy
        code, and CPU draws: numpy's PCG64 is faster than torch's CPU generator)."""
        return np.random.default_rng([int(self.seed) & (2**64 - 1), zlib.crc32(step.encode())])


# --------------------------------------------------------------------------------------------
# level tables and IR-drop tables (the device-side inputs of the steps)


def default_levels(bits_per_cell: int):
    """Level table used when none is given: ``LevelTable.synthetic`` between
    :data:`crossbar.config.DEFAULT_G_OFF_S` (1 MOhm, level 0) and ``DEFAULT_G_ON_S`` (10 kOhm),
    evenly spaced in conductance, no programming variation (``sigma_rel=0``)."""
    from device.programming import LevelTable

    return LevelTable.synthetic(
        bits_per_cell=bits_per_cell, g_on_s=DEFAULT_G_ON_S, g_off_s=DEFAULT_G_OFF_S, sigma_rel=0.0,
        rng=np.random.default_rng(0),
    )


def level_step_s(levels: Any) -> float:
    """The conductance of one digit step, S: ``(g_target[-1] - g_target[0]) / (levels - 1)``.

    The read decodes column currents in these units (the ADC's LSB is a multiple of it). Where a
    table's levels are not equally spaced (measured tables), digit ``d`` reads
    ``(g_d - g_0) / step``, not ``d``: that error is part of the simulation, not assumed away."""
    g = np.asarray(levels.g_target_s, dtype=np.float64)
    return float((g[-1] - g[0]) / (g.size - 1))


def check_levels(levels: Any, cfg: CrossbarConfig) -> None:
    """Raise :class:`ConfigError` unless ``levels`` has ``cfg.bits_per_cell`` bits per cell and
    ascending targets."""
    if int(levels.bits_per_cell) != cfg.bits_per_cell:
        raise ConfigError(
            f"level table has {levels.bits_per_cell} bit(s) per cell but the crossbar config has "
            f"bits_per_cell={cfg.bits_per_cell}"
        )
    g = np.asarray(levels.g_target_s, dtype=np.float64)
    if g.shape != (2**cfg.bits_per_cell,) or not np.all(np.diff(g) > 0):
        raise ConfigError(f"level table g_target_s must hold {2**cfg.bits_per_cell} ascending conductances")


def load_irdrop(irdrop: Any, cfg: CrossbarConfig):
    """The IR-drop table for ``ir_drop="table"``: ``irdrop`` (a table or a path), or the shipped
    ``data/irdrop_default.h5``; raises unless it covers ``cfg``'s tile size."""
    from crossbar.irdrop import IRDropTable

    if irdrop is None:
        irdrop = _DATA / "irdrop_default.h5"
        if not irdrop.exists():
            raise ConfigError(f"ir_drop='table' needs an IR-drop table: the default {irdrop} is missing; pass irdrop=PATH")
    if isinstance(irdrop, (str, Path)):
        irdrop = IRDropTable.load(irdrop)
    sizes = tuple(int(s) for s in np.atleast_1d(irdrop.rows))
    if cfg.tile_rows != cfg.tile_cols or cfg.tile_rows not in sizes:
        raise ConfigError(
            f"IR-drop table covers square tiles of sizes {list(sizes)} but the crossbar config uses "
            f"{cfg.tile_rows}x{cfg.tile_cols} tiles; tabulate this size or use ir_drop='exact'"
        )
    return irdrop


# --------------------------------------------------------------------------------------------
# the steps


def cell_digits(qweight: QTensor, layout: TileLayout, cfg: CrossbarConfig, device: Any = None) -> torch.Tensor:
    """Target digit of every cell, ``(tiles, rows, cols)`` uint8 on ``device`` (default: the codes').

    Differential: G+ holds the slices of ``max(q, 0)``, G- those of ``max(-q, 0)``; offset: the
    column holds ``q + 2**(weight_bits-1)`` and the reference column ``2**(weight_bits-1)``. Slice
    ``s`` of a code is ``(code >> s * bits_per_cell) & (2**slice_bits[s] - 1)``. Free cells, free
    rows and free columns hold 0 (HRS).
    """
    dev = torch.device(device) if device is not None else qweight.q.device
    R, C, tr, tc = layout.n_row_blocks, layout.n_col_blocks, layout.tile_rows, layout.tile_cols
    it = torch.int16 if cfg.weight_bits <= 14 else torch.int32
    q = qweight.q.to(device=dev, dtype=it)
    out_f, in_f = q.shape
    qp = torch.zeros(out_f + 1, in_f + 1, dtype=it, device=dev)  # index -1 -> zero padding
    qp[:out_f, :in_f] = q
    role = layout.col_role
    half = 1 << (cfg.weight_bits - 1)
    # code = max(q * mul + add, 0) per column: one multiply-add for every mapping and role
    if cfg.mapping == "differential":
        mul = np.where(role == POS, 1, np.where(role == NEG, -1, 0))
        add = np.zeros_like(mul)
    else:
        mul = np.where(role == POS, 1, 0)
        add = np.where((role == POS) | (role == REF), half, 0)
    sl = np.maximum(layout.col_slice, 0).astype(np.int64)
    shift = sl * cfg.bits_per_cell
    mask = np.where(role == FREE, 0, (1 << np.asarray(cfg.slice_bits, np.int64)[sl]) - 1)
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=it, device=dev).view(1, C, 1, tc)  # noqa: E731
    cols = torch.as_tensor(layout.col_out.astype(np.int64), device=dev).view(1, C, 1, tc)
    rows = torch.as_tensor(layout.row_in.astype(np.int64), device=dev).view(R, 1, tr, 1)
    qq = qp[cols, rows]  # (R, C, tr, tc); -1 indices read the zero padding
    code = qq.mul_(t(mul)).add_(t(add)).clamp_(min=0)
    code = code.bitwise_right_shift_(t(shift)).bitwise_and_(t(mask))
    code.mul_((rows >= 0).to(it))  # free rows stay in HRS (offset reference cells included)
    return code.to(torch.uint8).view(R * C, tr, tc)


def cell_digits_step(state: CellState | None, ctx: ProgramContext) -> CellState:
    """Slicing: the digit each cell is written to (:func:`cell_digits`). Deterministic."""
    return CellState(digits=cell_digits(ctx.qweight, ctx.layout, ctx.cfg, ctx.device))


def fault_map_step(state: CellState, ctx: ProgramContext) -> CellState:
    """Stuck-at faults: the chip's fault map, once per chip. A given ``ctx.fault_map`` (a chip
    tested after fabrication) is used as it is; otherwise the map is drawn from ``ctx.faults``
    (``device.faults.sample_fault_map``: the one place fault statistics live; random, clustered,
    row and column patterns). Valid for any rate in [0, 1]."""
    shape = tuple(state.digits.shape)
    if ctx.fault_map is not None:
        fm = torch.as_tensor(np.asarray(ctx.fault_map) if not isinstance(ctx.fault_map, torch.Tensor) else ctx.fault_map)
        if tuple(fm.shape) != shape:
            raise ConfigError(f"the given fault map has shape {tuple(fm.shape)}, the layer's tiles are {shape}")
        if fm.numel() and (int(fm.min()) < 0 or int(fm.max()) > 2):
            raise ConfigError("a fault map holds codes 0 (none), 1 (SA0) and 2 (SA1) only")
        return state.replace(faults=fm.to(device=ctx.device, dtype=torch.int8))
    if ctx.faults is None or ctx.faults.rate == 0:
        return state.replace(faults=torch.zeros(shape, dtype=torch.int8, device=ctx.device))
    from device.faults import sample_fault_map

    fm = np.asarray(sample_fault_map(shape, ctx.faults, ctx.numpy_rng("faults")), dtype=np.int8)
    return state.replace(faults=torch.from_numpy(fm).to(ctx.device))


def encode_step(state: CellState, ctx: ProgramContext) -> CellState:
    """Fault-map-aware re-encoding: ``ctx.encoder(digits, faults, ctx)`` chooses the digits of the
    healthy cells knowing the stuck ones (the mapping layer supplies it; None: unchanged).
    Deterministic given the fault map. The encoder must return digits of the same shape, in
    ``[0, 2**bits_per_cell)``."""
    if ctx.encoder is None:
        return state
    d = ctx.encoder(state.digits, state.faults, ctx)
    if not isinstance(d, torch.Tensor) or tuple(d.shape) != tuple(state.digits.shape):
        raise ValueError("the encoder must return a digits tensor of the same shape")
    if d.numel() and int(d.max()) >= 2**ctx.cfg.bits_per_cell:
        raise ValueError(f"the encoder returned a digit >= {2**ctx.cfg.bits_per_cell}")
    return state.replace(digits=d.to(torch.uint8))


def variation_step(state: CellState, ctx: ProgramContext) -> CellState:
    """Programming variation: each cell's read conductance is drawn from its digit's samples in
    the level table (``LevelTable.sample_torch``: measured or write-verify-simulated spread,
    each digit its own distribution, so unequally spaced measured levels stay unequal). Once per
    chip. Valid for the table's read voltage (``LevelTable.v_read_v``)."""
    gen = ctx.numpy_rng("variation") if ctx.device.type == "cpu" else ctx.generator("variation")
    return state.replace(g_s=ctx.levels.sample_torch(state.digits, gen, ctx.cell_dtype))


def reverify_window_s(levels: Any, cfg: CrossbarConfig) -> np.ndarray:
    """(levels,) half-width of the re-verify window of each level, S: the level table's own
    write-verify window (``LevelTable.verify_half_window_s``) when
    ``retention.reverify_window_frac`` is 0, else that fraction of the level step."""
    frac = cfg.retention.reverify_window_frac
    n = 2**cfg.bits_per_cell
    if frac > 0:
        return np.full(n, frac * level_step_s(levels))
    hw = getattr(levels, "verify_half_window_s", None)
    if hw is None:
        raise ConfigError(
            "retention.reprogram_rounds > 0 re-verifies against the level table's write-verify window, and this "
            "level table does not record one (a measured or synthetic table): set retention.reverify_window_frac"
        )
    return np.asarray(hw, dtype=np.float64)


def _path_model(ctx: ProgramContext, what: str) -> Any:
    rel = ctx.relaxation
    if rel is None:
        raise ConfigError(f"{what} needs a relaxation model (a relaxation table; see device.relaxation)")
    if not hasattr(rel, "sample_path_torch"):
        raise ConfigError(f"{what} needs a relaxation model that continues a cell's relaxation (sample_path_torch)")
    return rel


def reverify_step(state: CellState, ctx: ProgramContext) -> CellState:
    """Relaxation-aware programming (``retention.reprogram_rounds`` rounds): after each
    programming pass the chip waits ``retention.reprogram_wait_s``, every healthy cell is read
    (the mean of ``retention.reverify_reads`` reads with the chip's read noise), and the cells
    whose read leaves their re-verify window (:func:`reverify_window_s`) are re-programmed. Once
    per chip and read time; off at ``read_time_s = 0`` (the reference chip, as programmed).

    What it assumes, per cell: while a cell waits, its relaxation follows the relaxation model
    and continues from what the verify saw (the table's Gaussian copula between times,
    ``RelaxationModel.sample_path_torch``: the measured dependence of a cell's later change on its
    earlier one); a re-programmed cell gets a fresh conductance from its level's write-verify
    distribution (the same statistics whatever state it started from) and relaxes afresh from
    its new programming time, independent of its history (tech-B programmed each cell once, so
    the data cannot show whether a cell that relaxed far once does again). Stuck cells are not
    re-verified (they read their stuck value whatever is written). Returns the state with the
    final programmed conductances, each cell's age and normal score at the end of programming
    (for :func:`relaxation_step`) and its write count."""
    r = ctx.cfg.retention
    if r.reprogram_rounds == 0 or ctx.cfg.read_time_s == 0:
        return state
    model = _path_model(ctx, "retention.reprogram_rounds > 0")
    dev, dt = state.g_s.device, state.g_s.dtype
    digits = state.digits.to(torch.int64)
    target = torch.as_tensor(np.asarray(ctx.levels.g_target_s, np.float64), dtype=dt, device=dev)[digits]
    hw = torch.as_tensor(reverify_window_s(ctx.levels, ctx.cfg), dtype=dt, device=dev)[digits]
    healthy = state.faults == 0 if state.faults is not None else torch.ones_like(digits, dtype=torch.bool)
    sig = ctx.cfg.read_noise_sigma_rel / float(np.sqrt(r.reverify_reads))
    gen = ctx.generator("reverify")
    vary = ctx.generator("reverify_variation")
    g0 = state.g_s.clone()
    age = torch.zeros(g0.shape, dtype=torch.float64, device=dev)
    z = torch.zeros(g0.shape, dtype=dt, device=dev)
    writes = torch.ones(g0.shape, dtype=torch.uint8, device=dev)
    tw = float(r.reprogram_wait_s)
    for _ in range(r.reprogram_rounds):
        g_now, z_new = model.sample_path_torch(g0, age, z, age + tw, gen)
        read = g_now
        if sig > 0:
            read = g_now * (1.0 + sig * torch.randn(g0.shape, generator=gen, device=dev, dtype=dt))
        out = ((read - target).abs() > hw) & healthy
        age = age + tw
        z = z_new.to(dt)
        if bool(out.any()):
            g0[out] = ctx.levels.sample_torch(state.digits[out], vary, dt).to(device=dev, dtype=dt)
            age[out] = 0.0
            z[out] = 0.0
            writes[out] += 1
    return state.replace(g_s=g0, age_s=age, z=z, writes=writes)


def relaxation_step(state: CellState, ctx: ProgramContext) -> CellState:
    """Conductance relaxation: the cells' conductances ``read_time_s`` after programming, drawn
    from the relaxation model given the programmed conductance
    (``ctx.relaxation.sample_torch(g_s, time_s, generator)``, e.g. ``device.relaxation``). Once
    per chip and read time; off at ``read_time_s = 0``. Valid inside the model's fitted time and
    conductance range (the model raises outside it; ``relaxation.out_of_range="clamp"`` gives
    the cells outside the nearest bin's law and counts them, ``CellState.clamped``).

    Refresh (``retention.refresh_period_s = P > 0``): every cell is re-written every ``P``
    seconds, so a read at ``read_time_s`` is taken at the worst phase of the cycle,
    ``min(read_time_s, P)`` after the last write. After relaxation-aware programming
    (:func:`reverify_step`) each cell continues from its state at the end of programming: age
    ``age_s + t`` and its last verify's normal score (``sample_path_torch``); an age beyond the
    model's last measured time by no more than the programming rounds' duration
    (``reprogram_rounds * reprogram_wait_s``) is read at that last time."""
    t = ctx.cfg.read_time_s
    if t == 0:
        return state
    if ctx.relaxation is None:
        raise ConfigError(f"read_time_s={t:g} needs a relaxation model (a relaxation table; see device.relaxation)")
    r = ctx.cfg.retention
    if r.refresh_period_s > 0:
        t = min(t, r.refresh_period_s)
    counter = getattr(ctx.relaxation, "clamped_cells", None)
    clamped = int(counter(state.g_s)) if counter is not None else 0
    if state.age_s is None:
        g = ctx.relaxation.sample_torch(state.g_s, float(t), ctx.generator("relaxation"))
        return state.replace(g_s=g.to(ctx.cell_dtype), clamped=clamped)
    model = _path_model(ctx, "relaxation after relaxation-aware programming")
    ages = state.age_s + float(t)
    t_last = getattr(model, "t_max_s", None)
    if t_last is not None:
        slack = r.reprogram_rounds * r.reprogram_wait_s
        ages = torch.where((ages > t_last) & (ages <= t_last + slack * (1 + 1e-9)), torch.full_like(ages, t_last), ages)
    g, _ = model.sample_path_torch(state.g_s, state.age_s, state.z, ages, ctx.generator("relaxation"))
    return state.replace(g_s=g.to(ctx.cell_dtype), clamped=clamped)


def stuck_at_step(state: CellState, ctx: ProgramContext) -> CellState:
    """Stuck cells read the level table's stuck conductances whatever was written: SA0 ->
    ``g_sa0_s`` (HRS), SA1 -> ``g_sa1_s`` (LRS). Once per chip (after variation and relaxation:
    a stuck cell neither programs nor relaxes)."""
    fm = state.faults
    if fm is None:
        return state
    bad = torch.nonzero(fm.view(-1)).view(-1)  # ~rate of the cells: overwrite only those
    if bad.numel() == 0:
        return state
    g = state.g_s  # the pipeline's own tensor (every step returns new or its own tensors)
    stuck = torch.tensor([0.0, float(ctx.levels.g_sa0_s), float(ctx.levels.g_sa1_s)], dtype=g.dtype, device=g.device)
    g.view(-1)[bad] = stuck[fm.view(-1)[bad].to(torch.int64)]
    return state.replace(g_s=g)


def chord_ratio(v_from_v: float, v_to_v: float, cell_v0_v: float) -> float:
    """``g(v_to) / g(v_from)`` of a sinh cell ``I = g0 v0 sinh(V / v0)``: the ratio of its chord
    (read) conductances ``I(V) / V`` at two read voltages, ``h(v_to) / h(v_from)`` with
    ``h(V) = sinh(V/v0) / (V/v0)`` (:func:`device.compact.small_signal_to_read_s`); 1 for linear
    cells (``cell_v0_v = 0``). Stanford-PKU ``v0 = 0.25 V`` from 0.1 V: 1.081 at 0.2 V, 1.225 at
    0.3 V."""
    if cell_v0_v == 0.0 or v_from_v == v_to_v:
        return 1.0
    from device.compact import read_to_small_signal_s, small_signal_to_read_s

    return float(small_signal_to_read_s(read_to_small_signal_s(1.0, v_from_v, cell_v0_v), v_to_v, cell_v0_v))


def read_voltage_step(state: CellState, ctx: ProgramContext) -> CellState:
    """The read voltage of the level table -> the chip's: a level table records each cell's
    conductance as verified at *its* read voltage (``LevelTable.v_read_v``, 0.1 V for the shipped
    write-verify tables); a sinh cell (``circuit.cell_v0_v > 0``) read at the chip's
    ``crossbar.v_read_v`` has another chord conductance, larger by :func:`chord_ratio` (8.1 % at
    0.2 V, 22 % at 0.3 V for Stanford-PKU cells verified at 0.1 V). Every cell, stuck ones too
    (the table recorded them at its voltage), is scaled here, the one place; the read's code map
    (:func:`crossbar.read.cell_code_map`) and the IR-drop step then work with chords at the chip's
    read voltage. The digital side keeps the table's nominal levels (:func:`level_step_s`), as a
    chip calibrated on the table would: its outputs are off by what the physics makes them.
    Identity for linear cells, for tables that do not record their read voltage (synthetic ones:
    taken as read at the chip's voltage) and when the voltages agree. Deterministic."""
    c = ctx.circuit
    v_tab = getattr(ctx.levels, "v_read_v", None)
    if c is None or c.linear or v_tab is None or state.g_s is None:
        return state
    s = chord_ratio(float(v_tab), float(ctx.cfg.v_read_v), float(c.cell_v0_v))
    if s == 1.0:
        return state
    return state.replace(g_s=state.g_s * s)


def ir_drop_step(state: CellState, ctx: ProgramContext) -> CellState:
    """IR drop on the row and column wires: the effective matrix ``M`` of each tile with
    ``i_out = v_in @ M`` (input-independent for linear cells). ``ideal``: ``M = G``; ``table``:
    the tabulated model (:meth:`crossbar.irdrop.IRDropTable.effective_matrix`), which raises for
    circuits, tile sizes and conductances outside what it was fitted and validated on; ``exact``:
    the nodal solution of every tile, batched on the tensors' device
    (:func:`crossbar.solver.effective_matrices`). Once per chip.

    Sinh cells (``circuit.cell_v0_v > 0``): the read maps the DAC codes
    (:func:`crossbar.read.cell_code_map`) and the effective matrix is the linear one of the
    cells' read conductances at ``v_read_v`` (the circuit with ``cell_v0_v = 0``): exact with
    ideal wires, an approximation with wires (``bench/bench_nonlinear_read.py`` measures it
    against the Newton solver)."""
    from crossbar.nodal import CircuitConfig

    cfg = ctx.cfg
    g = state.g_s
    if cfg.ir_drop == "ideal":
        return state.replace(m_s=g)
    c = ctx.circuit if ctx.circuit is not None else CircuitConfig()
    if not c.linear:  # the cell I-V lives in the read's code map; the wires see the chord at v_read_v
        c = dataclasses.replace(c, cell_v0_v=0.0)
    g64 = g.to(torch.float64)  # the circuit models work in float64
    if cfg.ir_drop == "table":
        m = ctx.irdrop.effective_matrix(g64, c)
    else:
        from crossbar.effective import effective_matrices

        m = effective_matrices(g64, c)
    return state.replace(m_s=m.to(g.dtype))


#: the effects in the order a chip is made (see the module docstring)
PROGRAMMING_STEPS: tuple[Callable[[CellState, ProgramContext], CellState], ...] = (
    cell_digits_step,
    fault_map_step,
    encode_step,
    variation_step,
    reverify_step,
    relaxation_step,
    stuck_at_step,
    read_voltage_step,
    ir_drop_step,
)


def run_pipeline(ctx: ProgramContext, steps: tuple = PROGRAMMING_STEPS) -> CellState:
    """Run ``steps`` in order from nothing: the cells of one chip (bit-identical for one seed)."""
    state: CellState | None = None
    for step in steps:
        state = step(state, ctx)
    return state


# --------------------------------------------------------------------------------------------
# the fold: cells -> what a read uses


@dataclasses.dataclass(frozen=True, eq=False)
class FoldedReadout:
    """What a read of one layer uses (see :func:`fold`).

    ``readout``: ``(out, in)`` effective weights (ideal ADC, weight steps folded in) or
    ``(R, tile_rows, L)`` signed column currents per unit input code in ADC steps, ``L = S * out``
    (column-scope ADC, channel ``s * out + o``) or ``out`` (tile scope).
    ``noise_var``: read-noise variance matrix of the same shape, or None.
    ``w_step``: ``(R, out)`` weight step per row block and output.
    ``adc_step``: ``(R, S_adc)`` level steps per ADC code (ones for an ideal ADC); ``S_adc`` is
    the number of slices for a column-scope ADC, 1 otherwise.
    ``lines``: with ``i_col_max_a`` set, ``(R, tile_rows, 2 S out)`` every physical column's
    current per unit input code in level steps (absolute conductances, HRS cells included):
    the G+ (or offset) column of channel ``s * out + o`` at ``s * out + o``, its G- (or reference)
    column at ``S * out + s * out + o``; ``lines_var`` their read-noise variances or None;
    ``line_clip`` ``i_col_max_a`` in the same units. None without a current limit.
    """

    readout: torch.Tensor
    noise_var: torch.Tensor | None
    w_step: torch.Tensor
    adc_step: torch.Tensor
    lines: torch.Tensor | None = None
    lines_var: torch.Tensor | None = None
    line_clip: float | None = None


def weight_steps(qweight: QTensor, n_row_blocks: int) -> torch.Tensor:
    """``(R, out)`` float64 weight step per row block and output (per-tile formats: blocks of the
    default layout)."""
    out_f = qweight.q.shape[0]
    ws = qweight.scale().detach().to(torch.float64).cpu()
    if ws.ndim == 0:
        return ws.expand(n_row_blocks, out_f).clone()
    return ws.repeat_interleave(qweight.block[0], 0)[:out_f].T.contiguous()  # (R, out)


def _channel_columns(layout: TileLayout, cfg: CrossbarConfig, out_f: int) -> tuple[np.ndarray, ...]:
    """Flat column index ``c * tile_cols + j`` of the G+ (or offset) column, the G- (or reference)
    column of every channel ``s * out + o``; ``-1`` where the channel is not mapped."""
    S = cfg.n_slices
    role, sl, co, cp = layout.col_role, layout.col_slice, layout.col_out, layout.col_copy
    tc = layout.tile_cols
    pos = np.full(S * out_f, -1, np.int64)
    neg = np.full(S * out_f, -1, np.int64)
    main = ~cp
    c_i, j_i = np.nonzero((role == POS) & main)
    pos[sl[c_i, j_i].astype(np.int64) * out_f + co[c_i, j_i]] = c_i * tc + j_i
    if cfg.mapping == "differential":
        c_i, j_i = np.nonzero((role == NEG) & main)
        neg[sl[c_i, j_i].astype(np.int64) * out_f + co[c_i, j_i]] = c_i * tc + j_i
    else:
        c_i, j_i = np.nonzero((role == POS) & main)
        ch = sl[c_i, j_i].astype(np.int64) * out_f + co[c_i, j_i]
        for c in np.unique(c_i):
            for s in np.unique(sl[c][(role[c] == POS) & main[c]]):
                ref = np.flatnonzero((role[c] == REF) & (sl[c] == s) & main[c])[0]
                pick = (c_i == c) & (sl[c_i, j_i] == s)
                neg[ch[pick]] = c * tc + ref
    return pos, neg


def fold(m_s: torch.Tensor, qweight: QTensor, layout: TileLayout, cfg: CrossbarConfig, dg_s: float, device: Any,
         dtype: torch.dtype) -> FoldedReadout:
    """Fold slices, polarity / reference columns, IR drop and the weight step into the readout the
    read mode needs (linear cells: everything between DAC and ADC is linear).

    ``m_s``: ``(tiles, rows, cols)`` effective matrices, S. ``dg_s``: the level step
    (:func:`level_step_s`). With read noise (``read_noise_sigma_rel > 0``) the variance matrix of
    the folded currents (``sigma^2 M^2`` per cell, summed like the currents) comes along. With
    an ideal ADC the result is one ``(out, in)`` matrix (a read is one matmul); with an ADC it is
    per row block, in ADC steps of the full-scale range (:meth:`crossbar.engine.ProgrammedMatrix.calibrate`
    sets calibrated ranges).
    """
    R, C, tr, tc = layout.n_row_blocks, layout.n_col_blocks, layout.tile_rows, layout.tile_cols
    out_f, in_f = qweight.q.shape
    S = cfg.n_slices
    L = S * out_f
    sig = cfg.read_noise_sigma_rel
    # columns first, (C * cols + 1, R * rows) in level steps, the last column zero for unmapped
    # channels: gathering whole columns is a contiguous row copy
    ft = torch.float64 if m_s.dtype == torch.float64 else torch.float32
    mcol = torch.empty(C * tc + 1, R * tr, dtype=ft)
    mcol[: C * tc].view(C, tc, R, tr).copy_(m_s.detach().to("cpu").view(R, C, tr, tc).permute(1, 3, 0, 2))
    mcol[C * tc].zero_()
    mcol[: C * tc].mul_(1.0 / dg_s)
    pos, neg = _channel_columns(layout, cfg, out_f)
    zero = C * tc
    mp = mcol.index_select(0, torch.from_numpy(np.where(pos < 0, zero, pos)))
    mn = mcol.index_select(0, torch.from_numpy(np.where(neg < 0, zero, neg)))
    del mcol
    d = mp - mn  # (L, R * rows): G+ - G- (differential) or column - reference (offset)
    lines = lines_var = None
    if cfg.i_col_max_a is not None:  # every physical column on its own, for the current limit
        lines = torch.cat([mp, mn])
        if sig > 0:
            lines_var = lines.square().mul_(sig**2)
    v = None
    if sig > 0:
        v = mp.square_().add_(mn.square_()).mul_(sig**2)
    del mp, mn
    w_step = weight_steps(qweight, R).to(ft)  # (R, out)
    beta = 2.0 ** (np.arange(S) * cfg.bits_per_cell)

    def slice_sum(a: torch.Tensor, weights) -> torch.Tensor:  # (S * out, X) -> (out, X)
        a = a.view(S, out_f, -1)
        t = a[0] * float(weights[0])
        for s_ in range(1, S):
            t.add_(a[s_], alpha=float(weights[s_]))
        return t

    def to_rows_last(a: torch.Tensor) -> torch.Tensor:  # (L', R * rows) -> (R, rows, L') in dtype
        out = torch.empty(R, tr, a.shape[0], dtype=dtype)
        out.copy_(a.view(-1, R, tr).permute(1, 2, 0))
        return out.to(device)

    extra = {}
    if lines is not None:
        v_unit = cfg.v_read_v / cfg.dac_full_scale  # volts per unit of word-line drive
        extra = dict(lines=to_rows_last(lines), lines_var=None if lines_var is None else to_rows_last(lines_var),
                     line_clip=float(cfg.i_col_max_a / (dg_s * v_unit)))
    if cfg.adc_bits is None and lines is None:
        t = slice_sum(d, beta).view(out_f, R, tr).mul_(w_step.T.reshape(out_f, R, 1))
        inv = _input_rows(layout, in_f)
        w_eff = torch.cat([t.view(out_f, R * tr), t.new_zeros(out_f, 1)], dim=1).index_select(1, inv)  # (out, in)
        nv = None
        if v is not None:
            tv = slice_sum(v, beta**2).view(out_f, R, tr).mul_(w_step.T.square().reshape(out_f, R, 1))
            nv = torch.cat([tv.view(out_f, R * tr), tv.new_zeros(out_f, 1)], dim=1).index_select(1, inv)
            nv = nv.to(device=device, dtype=dtype)
        return FoldedReadout(
            readout=w_eff.to(device=device, dtype=dtype), noise_var=nv,
            w_step=w_step.to(device=device, dtype=dtype), adc_step=torch.ones(R, 1, dtype=dtype, device=device),
        )
    rows_used = np.sum((layout.row_in >= 0) & ~layout.row_copy, axis=1)
    x_max = cfg.dac_full_scale  # largest |value| of a DAC cycle
    if cfg.adc_scope == "tile":
        d = slice_sum(d, beta)
        if v is not None:
            v = slice_sum(v, beta**2)
        d_max = (2**cfg.code_bits - 1) if cfg.mapping == "differential" else 2 ** (cfg.weight_bits - 1)
        n_adc = 1
    else:
        d_max = 2 ** min(cfg.bits_per_cell, cfg.code_bits) - 1
        n_adc = S
    fs = torch.from_numpy(rows_used * float(d_max) * x_max).to(ft)
    if cfg.adc_bits is None:  # an unquantized read of clipped columns: ADC steps are level steps
        step = torch.ones(R, n_adc, dtype=ft)
    else:
        step = torch.clamp(fs / (2 ** (cfg.adc_bits - 1) - 1), min=1.0).view(R, 1).expand(R, n_adc).contiguous()
    # full scale: one step per row block for all slices
    d = d.view(-1, R, tr).div_(step[:, :1].view(1, R, 1))
    if v is not None:
        v = v.view(-1, R, tr).div_(step[:, :1].square().view(1, R, 1))
    return FoldedReadout(
        readout=to_rows_last(d),
        noise_var=None if v is None else to_rows_last(v),
        w_step=w_step.to(device=device, dtype=dtype), adc_step=step.to(device=device, dtype=dtype), **extra,
    )


def _input_rows(layout: TileLayout, in_f: int) -> torch.Tensor:
    """``(in,)`` flat row ``r * tile_rows + i`` holding each input (``R * tile_rows``: none)."""
    inv = np.full(in_f, layout.n_row_blocks * layout.tile_rows, np.int64)
    m = (layout.row_in >= 0) & ~layout.row_copy
    flat = np.arange(layout.row_in.size).reshape(layout.row_in.shape)
    inv[layout.row_in[m]] = flat[m]
    return torch.from_numpy(inv)


# --------------------------------------------------------------------------------------------
# the chip's ADCs


def adc_of_channels(layout: TileLayout, cfg: CrossbarConfig, out_f: int) -> tuple[np.ndarray, int]:
    """``(R, L)`` the ADC converting each channel of each row block (``L = S * out`` channels
    ``s * out + o`` for column-scope ADCs, ``out`` for tile scope) and the number of ADCs.

    Each tile has its own ADCs; its ADC inputs (channels whose G+ or offset column it holds; for
    tile scope the outputs, placed by their first slice's column) are taken in the order of
    their columns and shared ``cfg.adc_columns_per_adc`` to an ADC (neighbouring columns share a
    multiplexer). Unmapped channels read zero current and take ADC 0 of their row block."""
    R, C, tc = layout.n_row_blocks, layout.n_col_blocks, layout.tile_cols
    pos, _ = _channel_columns(layout, cfg, out_f)
    if cfg.adc_scope == "tile":
        pos = pos[:out_f]
    N = cfg.adc_columns_per_adc
    blk = np.where(pos >= 0, pos // tc, 0)
    order = np.lexsort((pos, blk))  # by tile, then by column
    rank = np.empty_like(order)
    starts = np.searchsorted(blk[order], np.arange(C))
    rank[order] = np.arange(order.size) - starts[blk[order]]
    per_tile = max(1, -(-int(np.bincount(blk, minlength=C).max()) // N))
    adc = np.where(pos >= 0, blk * per_tile + rank // N, 0)
    n_per_block = C * per_tile
    return adc[None, :] + n_per_block * np.arange(R)[:, None], R * n_per_block


def adc_flaws_step(ctx: ProgramContext, dtype: torch.dtype):
    """The chip's ADCs with their flaws (``cfg.adc``, :func:`crossbar.adc.draw_transfer`): an
    :class:`crossbar.adc.AdcTransfer` per layer, or None for flawless ideal quantizers and
    unquantized reads. Once per chip, from the chip's generator (stream "adc")."""
    from crossbar.adc import AdcTransfer, draw_transfer

    cfg = ctx.cfg
    if not cfg.adc.is_circuit:
        return None
    chan, n_adcs = adc_of_channels(ctx.layout, cfg, int(ctx.qweight.q.shape[0]))
    t, codes, table = draw_transfer(cfg.adc, n_adcs, chan.reshape(-1), ctx.numpy_rng("adc"))
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device=ctx.device, dtype=dtype)  # noqa: E731
    return AdcTransfer(breaks=as_t(t), codes=None if codes is None else as_t(codes),
                       table=torch.from_numpy(table.reshape(chan.shape)).to(ctx.device))
