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
    comparator's offset (``comparator_sigma_rel``), which shifts every transition.
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

from typing import Literal

from device.config import Config, ConfigError, check_choice, check_int_range, check_range, config

__all__ = [
    "ADC_KINDS",
    "AdcConfig",
    "conversion_cycles",
    "conversion_latency_cycles",
    "adc_units",
    "conversions_per_read",
    "adc_cycles_per_read",
]

#: the ADC kinds the engine models (see the module docstring)
ADC_KINDS = ("ideal", "sar", "ramp", "pipeline", "cyclic")

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
