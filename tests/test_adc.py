"""The ADC description (crossbar.adc): validation, and conversions / clock cycles per read."""

import pytest

from crossbar.adc import (
    AdcConfig,
    adc_cycles_per_read,
    adc_units,
    conversion_cycles,
    conversion_latency_cycles,
    conversions_per_read,
)
from crossbar.config import CrossbarConfig
from device.config import ConfigError, apply_overrides


def test_the_crossbar_fields_build_the_adc_description():
    cfg = CrossbarConfig(adc_bits=6, adc_kind="sar", adc_columns_per_adc=8, adc_cap_sigma_rel=0.01,
                         adc_comparator_sigma_rel=0.002, adc_offset_sigma_rel=0.001, adc_gain_sigma_rel=0.003)
    adc = cfg.adc
    assert (adc.kind, adc.bits, adc.columns_per_adc) == ("sar", 6, 8)
    assert (adc.cap_sigma_rel, adc.comparator_sigma_rel, adc.offset_sigma_rel, adc.gain_sigma_rel) == (0.01, 0.002, 0.001, 0.003)
    assert adc.is_circuit and adc.has_flaws
    assert not CrossbarConfig(adc_bits=8).adc.is_circuit  # the ideal quantizer without flaws
    assert not CrossbarConfig().adc.is_circuit  # no quantization
    # reachable from --set, round trip through JSON
    c2 = apply_overrides(CrossbarConfig(), ["adc_bits=8", "adc_kind=pipeline", "adc_opamp_gain_db=60"])
    assert c2.adc.opamp_gain_db == 60.0 and CrossbarConfig.from_json(c2.to_json()) == c2
    # 2 bits/cell, 8-bit weights, 128 x 128 tiles: 16 outputs x 4 slices per tile
    assert CrossbarConfig().adc_inputs_per_tile == 64
    assert CrossbarConfig(adc_scope="tile").adc_inputs_per_tile == 16


@pytest.mark.parametrize("kw,match", [
    (dict(adc_kind="flash", adc_bits=6), "adc_kind"),
    (dict(adc_kind="sar"), "needs adc_bits"),
    (dict(adc_bits=6, adc_cap_sigma_rel=0.01), "adc_cap_sigma_rel=0.01 is invalid for adc_kind='ideal'"),
    (dict(adc_bits=6, adc_kind="sar", adc_opamp_gain_db=60), "pipeline, cyclic"),
    (dict(adc_bits=6, adc_columns_per_adc=0), "adc_columns_per_adc"),
    (dict(adc_bits=6, adc_offset_sigma_rel=-0.1), "adc_offset_sigma_rel"),
    (dict(adc_bits=6, adc_kind="pipeline", adc_opamp_gain_db=0.0), "adc_opamp_gain_db"),
])
def test_bad_adc_fields_are_refused_by_name(kw, match):
    with pytest.raises(ConfigError, match=match):
        CrossbarConfig(**kw)


def test_conversion_cycles_per_kind():
    assert [conversion_cycles(k, 8) for k in ("ideal", "sar", "ramp", "pipeline", "cyclic")] == [1, 8, 256, 1, 8]
    assert conversion_latency_cycles("pipeline", 8) == 8 and conversion_latency_cycles("sar", 6) == 6


def test_cycles_per_read_with_sharing():
    # 64 inputs per tile, 8 per ADC, bit-serial 8-bit inputs
    sar = AdcConfig(kind="sar", bits=6, columns_per_adc=8)
    assert adc_units(sar, 64) == 8 and adc_units(sar, 65) == 9
    assert conversions_per_read(64, 8) == 512
    assert adc_cycles_per_read(sar, 64, 8) == 8 * 8 * 6  # each cycle: 8 inputs x 6 comparisons
    assert adc_cycles_per_read(sar.replace(columns_per_adc=1), 64, 8) == 8 * 6  # one ADC per input
    pipe = AdcConfig(kind="pipeline", bits=8, columns_per_adc=8)
    assert adc_cycles_per_read(pipe, 64, 1) == 8 + 7  # 8 samples, then the pipeline's latency
    ramp = AdcConfig(kind="ramp", bits=6, columns_per_adc=64)
    assert adc_cycles_per_read(ramp, 64, 2) == 2 * 64  # one sweep per DAC cycle for all columns
    assert adc_cycles_per_read(sar, 3, 1) == 3 * 6  # fewer inputs than the sharing
    with pytest.raises(ConfigError, match="no conversion time"):
        adc_cycles_per_read(AdcConfig(), 64, 1)
