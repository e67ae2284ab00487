"""The ADC as a circuit: its kind, resolution, sharing and static flaws, and what a read costs in
conversions and clock cycles.

One frozen :class:`AdcConfig` describes the converter that digitizes a crossbar's column
currents. The tile engine builds it from the flat ``crossbar.adc_*`` fields
(:attr:`crossbar.config.CrossbarConfig.adc`); the cost model reads the same object. The engine
draws each ADC's flaws once per chip and the read applies the drawn transfer functions in one
place (:func:`crossbar.read.adc_convert`).

Kinds (``kind``)
----------------
All kinds output the engine's signed mid-tread codes ``k in [-2**(bits-1), 2**(bits-1) - 1]``:
the ideal transfer is ``k = clamp(round(v), lo, hi)`` for an input ``v`` in LSB units, with
transition levels at ``k - 1/2``. The reference ``V_ref`` is half the full-scale range,
``2**(bits-1)`` LSB (CrossSim's convention), and every relative flaw below is relative to it.

``ideal``
    A uniform quantizer (the engine's ADC before the circuit kinds existed); only the generic
    offset and gain errors apply.
``sar``
    Successive approximation with a binary-weighted charge-redistribution capacitor DAC
    (McCreary and Gray, "All-MOS charge redistribution analog-to-digital conversion techniques
    I", IEEE JSSC 10(6), 1975, doi:10.1109/JSSC.1975.1050629): ``bits`` comparisons per
    conversion, a binary search against the CDAC levels ``V(D) = V_ref (2 sum_j d_j C_j / C_tot - 1)``,
    ``C_j = 2**j C_u``, ``C_tot = sum_j C_j + C_u`` (termination). Flaws: unit-capacitor
    mismatch (``cap_sigma_rel``; a capacitor of ``m`` units has relative sigma
    ``cap_sigma_rel / sqrt(m)``: Pelgrom, Duinmaijer, Welbers, IEEE JSSC 24(5), 1989,
    doi:10.1109/JSSC.1989.572629), which gives differential and integral non-linearity (largest
    at the mid-code transition, ``sigma_DNL ~ cap_sigma_rel sqrt(2**bits)``), and the
    comparator's offset (``comparator_sigma_rel``), which shifts every transition by the same
    amount: an input offset of ``comparator_sigma_rel 2**(bits-1)`` LSB sigma. Offsets are
    modelled as left after any trim: no calibration removes them, so give a trimmed comparator's
    residual offset. The same fraction of V_ref is 4x more LSBs two bits finer, and where it
    passes half an LSB a zero input no longer converts to code 0 (0.005 V_ref: 0.2 % of the
    ADCs at 6 bits, 44 % at 8), which shift-and-add then weighs by each slice's significance.
``ramp``
    Single slope with a shared staircase ramp and a comparator and counter per column (the
    column-parallel converter of image sensors; e.g. Snoeij et al., IEEE JSSC 42(12), 2007,
    doi:10.1109/JSSC.2007.908720): the counter stops at the first ramp step above the input,
    ``2**bits`` clock cycles per conversion for all columns at once. The ramp comes from a
    binary-weighted capacitor DAC with the SAR's mismatch model, shared by ``columns_per_adc``
    columns; each column's comparator has its own offset. A non-monotonic ramp makes the
    counter stop at the first step above the input: transitions follow the running maximum of
    the ramp (monotonic, with missing codes).
``pipeline``
    1.5-bit-per-stage pipeline with digital correction (Lewis et al., "A 10-b 20-Msample/s
    analog-to-digital converter", IEEE JSSC 27(3), 1992, doi:10.1109/4.121557): ``bits - 1``
    stages, each with comparators at ``+-V_ref / 4`` deciding ``d in {-1, 0, +1}`` and a
    flip-around multiplying DAC with residue ``V' = ((1 + C_s/C_f) V - d (C_s/C_f) V_ref) /
    (1 + 1/(A beta))``, ``beta = C_f / (C_s + C_f)``, then a final comparator; the code is
    ``sum_n d_n 2**(bits-1-n) + d_final - 1`` (inputs offset by half an LSB for mid-tread codes).
    Flaws: ``C_s``, ``C_f`` mismatch (``cap_sigma_rel`` each; gain errors of the stage, hence
    missing or non-monotonic codes), finite op-amp gain ``A`` (``opamp_gain_db``; a gain error
    of each stage, Cho and Gray, IEEE JSSC 30(3), 1995, doi:10.1109/4.364429), and the comparators'
    offsets, which the 1.5-bit redundancy corrects up to ``V_ref / 4``.
``cyclic``
    The algorithmic converter: one 1.5-bit stage used ``bits - 1`` times (Li, Chin, Gray, IEEE
    JSSC 19(6), 1984, doi:10.1109/JSSC.1984.1052252), so its capacitors, op-amp and comparators,
    hence its errors, are the same in every cycle; ``bits`` cycles per conversion.

Sharing and flaws
-----------------
One ADC (``sar``, ``pipeline``, ``cyclic``, ``ideal``) converts ``columns_per_adc`` ADC inputs in
turn; ``ramp`` shares one ramp generator among them (comparators stay per column). An ADC input
is one differential pair (G+ minus G-) or one column minus its reference (the subtraction is
analog) with ``adc_scope="column"``, or one output's shift-added partial sum with
``adc_scope="tile"``. The inputs sharing one ADC share its flaws. Each flaw is drawn once per
chip (per ADC), from the chip's generator; the generic ``offset_sigma_rel`` (input-referred
offset, e.g. of the sample-and-hold or the integrator) and ``gain_sigma_rel`` (reference or
integrator gain) apply to every kind: ``v -> v (1 + g) + o``.

Cost (pure functions, used by the engine's docs and the cost model)
-------------------------------------------------------------------
:func:`conversion_cycles`, :func:`conversion_latency_cycles`, :func:`adc_units`,
:func:`conversions_per_read`, :func:`adc_cycles_per_read`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import numpy as np
import torch

from device.config import Config, ConfigError, check_choice, check_int_range, check_range, config

__all__ = [
    "ADC_KINDS",
    "AdcConfig",
    "conversion_cycles",
    "conversion_latency_cycles",
    "adc_units",
    "conversions_per_read",
    "adc_cycles_per_read",
    "KINDS_WITH_CIRCUITS",
    "AdcTransfer",
    "TransferIndex",
    "draw_transfer",
    "sar_transitions",
    "pipeline_transfer",
]

#: the ADC kinds the engine models (see the module docstring)
ADC_KINDS = ("ideal", "sar", "ramp", "pipeline", "cyclic")
#: the kinds modelled as circuits (transfer functions drawn per chip even without flaws)
KINDS_WITH_CIRCUITS = ADC_KINDS[1:]

#: which flaws each kind has beyond the generic offset and gain errors
_KIND_FLAWS = {
    "ideal": (),
    "sar": ("cap_sigma_rel", "comparator_sigma_rel"),
    "ramp": ("cap_sigma_rel", "comparator_sigma_rel"),
    "pipeline": ("cap_sigma_rel", "comparator_sigma_rel", "opamp_gain_db"),
    "cyclic": ("cap_sigma_rel", "comparator_sigma_rel", "opamp_gain_db"),
}


@config
class AdcConfig(Config):
    """One ADC design: kind, resolution, sharing, static flaws (see :mod:`crossbar.adc`)."""

    #: converter architecture: "ideal" (uniform quantizer), "sar", "ramp", "pipeline", "cyclic"
    kind: Literal["ideal", "sar", "ramp", "pipeline", "cyclic"] = "ideal"
    #: resolution in bits of the signed output code; None = no quantization (an ideal readout)
    bits: int | None = None
    #: ADC inputs converted in turn by one ADC (ramp: sharing one ramp generator; comparators
    #: stay per column); an input is a differential pair / column minus reference, or a tile output
    columns_per_adc: int = 1
    #: input-referred offset of each ADC, standard deviation relative to V_ref (half the full
    #: scale), drawn once per chip; every kind
    offset_sigma_rel: float = 0.0
    #: gain error of each ADC (reference / integrator), relative standard deviation, drawn once
    #: per chip; every kind
    gain_sigma_rel: float = 0.0
    #: capacitor mismatch: relative standard deviation of a unit capacitor of the CDAC (sar,
    #: ramp; a capacitor of m units has cap_sigma_rel / sqrt(m), Pelgrom 1989) or of each of
    #: C_s and C_f of a 1.5-bit stage (pipeline, cyclic); drawn once per chip
    cap_sigma_rel: float = 0.0
    #: comparator offset, standard deviation relative to V_ref, drawn once per chip: sar one
    #: comparator per ADC, ramp one per column, pipeline two per stage plus the final one,
    #: cyclic its three
    comparator_sigma_rel: float = 0.0
    #: open-loop gain of the residue amplifier of a 1.5-bit stage, dB (pipeline, cyclic); None =
    #: infinite (CrossSim's default is 100 dB)
    opamp_gain_db: float | None = None

    def __post_init__(self) -> None:
        check_choice("adc_kind", self.kind, ADC_KINDS)
        if self.bits is not None:
            if isinstance(self.bits, bool) or not isinstance(self.bits, int):
                raise ConfigError(f"adc_bits={self.bits!r} is invalid: must be an integer or None")
            check_int_range("adc_bits", self.bits, 2, 32)
        check_int_range("adc_columns_per_adc", self.columns_per_adc, 1, 4096)
        check_range("adc_offset_sigma_rel", self.offset_sigma_rel, 0.0, 1.0)
        check_range("adc_gain_sigma_rel", self.gain_sigma_rel, 0.0, 0.5)
        check_range("adc_cap_sigma_rel", self.cap_sigma_rel, 0.0, 0.5)
        check_range("adc_comparator_sigma_rel", self.comparator_sigma_rel, 0.0, 1.0)
        if self.opamp_gain_db is not None:
            check_range("adc_opamp_gain_db", self.opamp_gain_db, 0.0, 200.0, lo_open=True)
        uses = _KIND_FLAWS[self.kind]
        for name, default in (("cap_sigma_rel", 0.0), ("comparator_sigma_rel", 0.0), ("opamp_gain_db", None)):
            value = getattr(self, name)
            if value != default and name not in uses:
                raise ConfigError(
                    f"adc_{name}={value!r} is invalid for adc_kind={self.kind!r}: that flaw belongs to the "
                    f"{', '.join(k for k, f in _KIND_FLAWS.items() if name in f)} kinds"
                )
        if self.kind != "ideal" and self.bits is None:
            raise ConfigError(f"adc_kind={self.kind!r} needs adc_bits (a circuit converts to a number of bits)")
        if self.kind in ("pipeline", "cyclic") and self.bits is not None and self.bits < 3:
            raise ConfigError(f"adc_bits={self.bits} is invalid for a {self.kind} ADC: needs >= 3 (two 1.5-bit stages)")

    @property
    def has_flaws(self) -> bool:
        """Whether any flaw is drawn (otherwise every kind converts like the ideal quantizer)."""
        return bool(self.offset_sigma_rel or self.gain_sigma_rel or self.cap_sigma_rel or self.comparator_sigma_rel
                    or self.opamp_gain_db is not None)

    @property
    def is_circuit(self) -> bool:
        """Whether reads need per-ADC transfer functions (a circuit kind or any flaw); False for the
        ideal quantizer without flaws and for ``bits=None``."""
        return self.bits is not None and (self.kind != "ideal" or self.has_flaws)


# --------------------------------------------------------------------------------------------
# conversions and clock cycles (pure functions: the engine's docs and the cost model)


def conversion_cycles(kind: str, bits: int) -> int:
    """Clock cycles one ADC is busy per conversion (the inverse of its throughput per clock).

    ``ideal``: 1 (a flash-like converter); ``sar``: ``bits`` (one comparison per bit);
    ``ramp``: ``2**bits`` (counter steps; all columns of the ramp convert in the same cycles);
    ``pipeline``: 1 (a new sample every clock; :func:`conversion_latency_cycles` gives its
    latency); ``cyclic``: ``bits`` (``bits - 1`` stage cycles and the final comparison).
    """
    check_choice("adc_kind", kind, ADC_KINDS)
    check_int_range("adc_bits", bits, 1, 32)
    return {"ideal": 1, "sar": bits, "ramp": 2**bits, "pipeline": 1, "cyclic": bits}[kind]


def conversion_latency_cycles(kind: str, bits: int) -> int:
    """Clock cycles from sampling an input to its code: ``bits`` for a pipeline (``bits - 1``
    stages and the final comparator), :func:`conversion_cycles` for the others."""
    return bits if kind == "pipeline" else conversion_cycles(kind, bits)


def adc_units(adc: AdcConfig, inputs: int) -> int:
    """Converters serving ``inputs`` ADC inputs (one tile's): ``ceil(inputs / columns_per_adc)``;
    for ``ramp`` the ramp generators (each column also has its own comparator and counter)."""
    check_int_range("inputs", inputs, 0)
    return -(-inputs // adc.columns_per_adc)


def conversions_per_read(inputs: int, dac_cycles: int) -> int:
    """Conversions for one input vector through one tile: every ADC input in every DAC cycle
    (``inputs x dac_cycles``), whatever the sharing."""
    check_int_range("inputs", inputs, 0)
    check_int_range("dac_cycles", dac_cycles, 1)
    return inputs * dac_cycles


def adc_cycles_per_read(adc: AdcConfig, inputs: int, dac_cycles: int) -> int:
    """ADC clock cycles to convert every input of one tile for one input vector.

    Per DAC cycle each ADC converts its ``n = min(columns_per_adc, inputs)`` inputs in turn:
    ``n x conversion_cycles`` (``sar``, ``cyclic``, ``ideal``); a pipeline takes a new input every
    clock, so ``dac_cycles x n`` samples leave it after ``dac_cycles x n + bits - 1`` clocks;
    a ramp converts all its columns in one sweep of ``2**bits`` clocks per DAC cycle. ``bits``
    must be set (an unquantized readout has no conversion time).
    """
    if adc.bits is None:
        raise ConfigError("adc_bits=None (no quantization) has no conversion time: set adc_bits")
    check_int_range("inputs", inputs, 0)
    check_int_range("dac_cycles", dac_cycles, 1)
    if inputs == 0:
        return 0
    n = min(adc.columns_per_adc, inputs)
    c = conversion_cycles(adc.kind, adc.bits)
    if adc.kind == "ramp":
        return dac_cycles * c
    if adc.kind == "pipeline":
        return dac_cycles * n + conversion_latency_cycles(adc.kind, adc.bits) - 1
    return dac_cycles * n * c


# --------------------------------------------------------------------------------------------
# the flaws of a chip's ADCs: drawn once per chip, as transfer functions


@dataclasses.dataclass(frozen=True, eq=False)
class AdcTransfer:
    """The transfer functions of one layer's ADC inputs on one chip, in LSB units.

    ``breaks``: ``(T, M)`` float, each row ascending (``+inf`` padding): the input levels
    where the code changes. ``codes``: ``(T, M + 1)`` float codes of the intervals between
    them (``codes[:, i]`` for ``breaks[i-1] < v <= breaks[i]``), or None for monotonic
    converters with their codes in order (code ``lo + i``, missing codes as repeated breaks).
    ``table``: ``(R, L)`` int64, the row of ``breaks`` that channel (ADC input) ``l`` of row
    block ``r`` reads. Applied by :func:`crossbar.read.adc_convert`.
    """

    breaks: torch.Tensor
    codes: torch.Tensor | None
    table: torch.Tensor

    def to(self, device=None, dtype=None) -> "AdcTransfer":
        mv = lambda t: None if t is None else t.to(device=device, dtype=dtype if t.is_floating_point() else None)  # noqa: E731
        return AdcTransfer(breaks=mv(self.breaks), codes=mv(self.codes), table=self.table.to(device))

    @functools.cached_property
    def index(self) -> "TransferIndex":
        """The search tables of these transfer functions (:class:`TransferIndex`), built on first
        use in the breaks' dtype and device (a frozen object: they never change)."""
        return TransferIndex.build(self.breaks, self.codes)


#: finer search grids tried (grid step ``2**-s`` LSB for ``s`` up to this), each at most
#: :data:`_GRID_SIZE_FACTOR` times the size of the breaks table
_GRID_MAX_SHIFT = 3
_GRID_SIZE_FACTOR = 4


@dataclasses.dataclass(frozen=True, eq=False)
class TransferIndex:
    """Search tables that give :meth:`torch.searchsorted`'s answer for a transfer function
    without a binary search (:func:`crossbar.read.adc_convert`).

    Row ``t`` of ``breaks`` ``(T, M)`` (ascending) turns an input ``v`` into the interval index
    ``i = #{j : breaks[t, j] < v}``. A grid of step ``2**-shift`` LSB, points ``p_g = (g0 + g)
    2**-shift`` for ``g = 0 .. G - 1`` (``p_0 <= `` every finite break ``< p_{G-1}``), stores
    ``#{j : breaks[t, j] < p_g}``: an input with ``p_g <= v < p_{g+1}`` starts there, below the
    answer by the breaks in ``[p_g, v)``, and climbs one interval per comparison with the next
    break, at most ``climbs`` times (the most breaks any grid cell holds). Exact: the same
    comparisons in the same dtype as the binary search, only fewer of them.

    ``start`` ``((G + 1) * T,)`` int64: entry ``t`` is 0 (inputs below ``p_0``), entry ``(1 + g)
    * T + t`` the count at ``p_g``, stored as the flat index ``count * T + t`` into
    ``breaks_flat`` (the breaks with one ``+inf`` column appended, so a climb never leaves its
    row) and ``codes_flat`` (the code of each interval: ``codes`` or, for monotonic converters,
    ``lo + i`` with ``lo = -(M + 1) / 2``), all three stored column-major (``(·, T)``), so that
    neighbouring channels of one row block, which read neighbouring rows (a ramp's own
    comparators) or the same row (an ADC shared by columns), gather from nearby memory.
    ``identity``: every row holds the ideal mid-tread transitions ``lo + k - 1/2`` with codes in
    order, so the code is ``clamp(floor(v) + [v > floor(v) + 1/2], lo, lo + M)`` without any
    table (ties go to the lower code, as the search does). (Starting monotonic transfers from
    the ideal code and stepping to their own transitions was tried: with SAR comparator offsets
    of a fraction of an LSB most inputs step, and it ran slower than the grid.)
    """

    identity: bool
    lo: int
    n_rows: int
    shift: int = 0
    g0: int = 0
    n_grid: int = 0
    climbs: int = 0
    start: torch.Tensor | None = None
    breaks_flat: torch.Tensor | None = None
    codes_flat: torch.Tensor | None = None

    @classmethod
    def build(cls, breaks: torch.Tensor, codes: torch.Tensor | None) -> "TransferIndex":
        T, M = breaks.shape
        dt, dev = breaks.dtype, breaks.device
        lo = -((M + 1) // 2)
        ramp = torch.arange(M + 1, dtype=dt, device=dev) + lo  # lo + i: the monotonic codes
        ideal = torch.arange(1, M + 1, dtype=dt, device=dev) + (lo - 0.5)
        if (codes is None or bool((codes == ramp).all())) and bool((breaks == ideal).all()):
            return cls(identity=True, lo=lo, n_rows=T)
        finite = torch.isfinite(breaks)
        if not bool(finite.any()):  # one code everywhere
            b_lo = b_hi = 0.0
        else:
            b_lo, b_hi = float(breaks[finite].min()), float(breaks[finite].max())
        best = None
        for s in range(_GRID_MAX_SHIFT + 1):
            g0 = int(np.floor(b_lo * 2.0**s))
            G = int(np.floor(b_hi * 2.0**s)) + 1 - g0 + 1
            if s and T * (G + 1) > _GRID_SIZE_FACTOR * T * (M + 1):
                break
            pts = (torch.arange(G, dtype=torch.float64, device=dev) + g0).mul_(2.0**-s).to(dt)
            cnt = torch.searchsorted(breaks.contiguous(), pts.expand(T, G).contiguous())  # (T, G)
            climbs = int((cnt[:, 1:] - cnt[:, :-1]).max()) if G > 1 else 0
            if best is None or climbs < best[0]:
                best = (climbs, s, g0, G, cnt)
            if climbs <= 1:
                break
        climbs, s, g0, G, cnt = best
        rows = torch.arange(T, dtype=torch.int64, device=dev).view(1, T)
        start = torch.cat([rows, cnt.t() * T + rows], dim=0).reshape(-1)  # ((G + 1) * T,)
        inf = torch.full((1, T), float("inf"), dtype=dt, device=dev)
        breaks_flat = torch.cat([breaks.t(), inf], dim=0).reshape(-1)  # ((M + 1) * T,)
        codes_flat = (ramp.view(M + 1, 1).expand(M + 1, T) if codes is None else codes.t()).contiguous().reshape(-1)
        return cls(identity=False, lo=lo, n_rows=T, shift=s, g0=g0, n_grid=G, climbs=climbs, start=start, breaks_flat=breaks_flat,
                   codes_flat=codes_flat)


def _cdac(bits: int, n: int, cap_sigma_rel: float, rng: np.random.Generator) -> np.ndarray:
    """Levels ``(n, 2**bits)`` of ``n`` binary-weighted capacitor DACs in LSB units,
    ``V(D) = V_ref (2 sum_j d_j C_j / C_tot - 1)``, ``V_ref = 2**(bits-1)``: capacitor ``j`` of
    ``2**j`` units has absolute sigma ``cap_sigma_rel sqrt(2**j)`` units (Pelgrom), the
    termination capacitor one unit. Ideal: ``V(D) = D - 2**(bits-1)``."""
    units = 2.0 ** np.arange(bits)
    c = units + cap_sigma_rel * np.sqrt(units) * rng.standard_normal((n, bits))
    c_tot = c.sum(1) + 1.0 + cap_sigma_rel * rng.standard_normal(n)
    d = (np.arange(2**bits)[:, None] >> np.arange(bits)) & 1  # (2**bits, bits) digits of D
    h = 2.0 ** (bits - 1)
    return h * (2.0 * (c @ d.T.astype(np.float64)) / c_tot[:, None] - 1.0)


def sar_transitions(levels: np.ndarray) -> np.ndarray:
    """Transition levels ``(n, 2**bits - 1)`` of SAR converters whose binary search compares the
    input with ``levels[:, D]`` when trying code ``D`` (``levels`` ``(n, 2**bits)``, column 0
    unused): the output is ``#{k : T_k < v}`` (unsigned).

    A binary search is monotonic whatever its reference levels (two inputs part at the first
    comparison they disagree on, the larger one taking the branch with the larger codes), so it
    is described by its transitions: the transition to code ``k`` lies at the node that tries
    ``k``, whose inputs lie between the transitions to ``k - 2**j`` and ``k + 2**j`` (``2**j``
    the lowest set bit of ``k``); hence ``T_k = clip(levels[k], T_{k - 2**j}, T_{k + 2**j})``,
    computed from the most significant bit down.
    """
    n, size = levels.shape
    bits = size.bit_length() - 1
    t = np.empty((n, size + 1))
    t[:, 0], t[:, size] = -np.inf, np.inf
    for j in range(bits - 1, -1, -1):
        k = np.arange(1 << j, size, 2 << j)
        t[:, k] = np.clip(levels[:, k], t[:, k - (1 << j)], t[:, k + (1 << j)])
    return t[:, 1:size]


def _stage_split(lo, hi, a, c, code, t, d_vals, weights):
    """Split each piece ``[lo, hi)`` (input ``w``; the stage sees ``a w + c``) at the ascending
    thresholds ``t`` (list of ``(n, P)``) into ``len(t) + 1`` sub-pieces with decisions
    ``d_vals``, returning stacked ``(n, P * (len(t) + 1))`` arrays, piece-major (ascending)."""
    edges = [lo] + [np.clip(x, lo, hi) for x in t] + [hi]
    los = np.stack(edges[:-1], -1)
    his = np.stack(edges[1:], -1)
    sh = los.shape[:-2] + (-1,)
    codes = code[..., None] + np.asarray(weights)
    return los.reshape(sh), his.reshape(sh), np.repeat(a, len(d_vals), -1).reshape(sh), \
        np.broadcast_to(c[..., None], los.shape).reshape(sh), codes.reshape(sh), \
        np.broadcast_to(np.asarray(d_vals, np.float64), los.shape).reshape(sh)


def _compact(*arrays, valid):
    """Keep the valid pieces of each row, in order, padded to the largest count (invalid last)."""
    order = np.argsort(~valid, axis=1, kind="stable")
    p = max(1, int(valid.sum(1).max()))
    out = [np.take_along_axis(x, order, 1)[:, :p] for x in arrays]
    return out + [np.take_along_axis(valid, order, 1)[:, :p]]


def pipeline_transfer(bits: int, gamma: np.ndarray, eta: np.ndarray, off_hi: np.ndarray, off_lo: np.ndarray,
                      off_final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transfer functions of ``n`` 1.5-bit-per-stage converters, in LSB units, exactly.

    ``gamma``, ``eta``, ``off_hi``, ``off_lo``: ``(n, bits - 1)`` per stage: the MDAC's
    ``C_s / C_f``, its finite-gain factor ``1 / (1 + 1/(A beta))``, and the offsets of the
    comparators at ``+V_ref/4`` and ``-V_ref/4`` (LSB); ``off_final`` ``(n,)``. A stage sees
    ``V`` and decides ``d = +1`` if ``V > V_ref/4 + off_hi``, else ``-1`` if ``V < -V_ref/4 +
    off_lo``, else 0, and passes ``((1 + gamma) V - d gamma V_ref) eta``; the final comparator
    gives ``d_f = [V > off_final]``; the code is ``sum_n d_n 2**(bits-1-n) + d_f - 1`` of the
    input plus half an LSB (mid-tread). Every stage is affine in the input on each decision
    region, so the pieces are split stage by stage at the thresholds mapped back to the input.
    Returns ``breaks`` ``(n, M)`` (ascending, ``+inf`` padded) and ``codes`` ``(n, M + 1)``.
    """
    n = gamma.shape[0]
    h = 2.0 ** (bits - 1)
    span = 8.0 * h  # beyond this every decision saturates (stage gains are near 2)
    lo = np.full((n, 1), -span)
    hi = np.full((n, 1), span)
    a = np.ones((n, 1))
    c = np.full((n, 1), 0.5)  # w = v + 1/2: the stages convert the input plus half an LSB
    code = np.zeros((n, 1))
    for s in range(bits - 1):
        g, e = gamma[:, s : s + 1], eta[:, s : s + 1]
        t_hi = (h / 4 + off_hi[:, s : s + 1] - c) / a
        t_lo = np.minimum((-h / 4 + off_lo[:, s : s + 1] - c) / a, t_hi)
        w = 2.0 ** (bits - 2 - s)
        lo, hi, a, c, code, d = _stage_split(lo, hi, a, c, code, [t_lo, t_hi], (-1.0, 0.0, 1.0), (-w, 0.0, w))
        c = ((1 + g) * c - d * g * h) * e
        a = a * (1 + g) * e
        lo, hi, a, c, code, valid = _compact(lo, hi, a, c, code, valid=hi > lo)
        lo = np.where(valid, lo, np.inf)
        hi = np.where(valid, hi, np.inf)
    t_f = (off_final[:, None] - c) / a
    lo, hi, a, c, code, _ = _stage_split(lo, hi, a, c, code, [t_f], (0.0, 1.0), (-1.0, 0.0))
    lo, code, valid = _compact(lo, code, valid=hi > lo)
    # a break between pieces of the same code is no break: keep the first piece of each run
    keep = valid.copy()
    keep[:, 1:] &= code[:, 1:] != code[:, :-1]
    lo, code, keep = _compact(lo, code, valid=keep)
    lo = np.where(keep, lo, np.inf)
    code = np.where(keep, code, np.take_along_axis(code, np.maximum(keep.sum(1, keepdims=True) - 1, 0), 1))
    return lo[:, 1:], code


def draw_transfer(adc: AdcConfig, n_adcs: int, adc_of_input: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Draw the flaws of ``n_adcs`` ADCs once (one chip) and return the transfer functions of
    their inputs: ``(breaks (T, M), codes (T, M + 1) or None, table (inputs,))`` in LSB units
    (see :class:`AdcTransfer`); ``adc_of_input`` ``(inputs,)`` the ADC each input is converted
    by. Every ADC of a kind shares the kind's transfer with its flaws; a ramp's columns differ
    by their comparators, so its tables are per input."""
    b = adc.bits
    h = 2.0 ** (b - 1)
    gain = 1.0 + adc.gain_sigma_rel * rng.standard_normal(n_adcs)
    offset = adc.offset_sigma_rel * h * rng.standard_normal(n_adcs)
    codes = None
    table = np.asarray(adc_of_input, np.int64)
    if adc.kind == "ideal":
        t = np.broadcast_to(np.arange(1, 2**b) - h - 0.5, (n_adcs, 2**b - 1))
    elif adc.kind == "sar":
        lv = _cdac(b, n_adcs, adc.cap_sigma_rel, rng) - 0.5  # compare with V(D) - LSB/2: mid-tread
        lv += adc.comparator_sigma_rel * h * rng.standard_normal((n_adcs, 1))
        t = sar_transitions(lv)  # signed LSB: V(D) = D - 2**(bits-1) ideally
    elif adc.kind == "ramp":
        lv = _cdac(b, n_adcs, adc.cap_sigma_rel, rng)[:, 1:] - 0.5
        t = np.maximum.accumulate(lv, axis=1)[table]  # the counter stops at the first step above v
        t = t + adc.comparator_sigma_rel * h * rng.standard_normal((table.size, 1))
        gain, offset = gain[table], offset[table]
        table = np.arange(table.size)
    else:  # pipeline, cyclic
        k = b - 1 if adc.kind == "pipeline" else 1
        cs = 1.0 + adc.cap_sigma_rel * rng.standard_normal((n_adcs, k))
        cf = 1.0 + adc.cap_sigma_rel * rng.standard_normal((n_adcs, k))
        a_ol = np.inf if adc.opamp_gain_db is None else 10.0 ** (adc.opamp_gain_db / 20.0)
        eta = 1.0 / (1.0 + (cs + cf) / (cf * a_ol))
        o = adc.comparator_sigma_rel * h * rng.standard_normal((n_adcs, 2 * k + 1))
        rep = lambda x: np.repeat(x, b - 1, 1) if k == 1 else x  # noqa: E731  (cyclic: one stage, reused)
        t, codes = pipeline_transfer(b, rep(cs / cf), rep(eta), rep(o[:, :k]), rep(o[:, k : 2 * k]), o[:, 2 * k])
    t = (np.asarray(t, np.float64) - offset[:, None]) / gain[:, None]  # v (1 + g) + o crosses t
    return t, codes, table
