"""Number formats: static and dynamic fixed point (Long, She, Mukhopadhyay, DATE 2019)."""

import numpy as np
import pytest
import torch

from crossbar.quant import (
    QuantConfig,
    block_max_abs,
    dfp_frac_bits,
    q_max,
    quantize,
    quantize_blocks,
    relative_error,
    static_frac_bits_for,
)
from device.config import ConfigError


@pytest.mark.parametrize("bits", [2, 4, 6, 8, 12])
def test_dfp_never_clips_and_uses_the_msb(bits):
    g = torch.Generator().manual_seed(bits)
    qm = q_max(bits)
    for scale in [1e-6, 3.7e-3, 0.049, 0.5, 1.0, 7.3, 1e4]:
        w = torch.randn(37, 53, generator=g, dtype=torch.float64) * scale
        qt = quantize(w, QuantConfig(bits=bits, mode="dynamic"))
        top = int(qt.q.abs().max())
        assert qt.clipped == 0
        assert top <= qm
        # the largest magnitude sets the most significant magnitude bit: no MSB wasted
        assert top >= 2 ** (bits - 2), (scale, top)
        # and it is represented to within half a step, i.e. not clipped
        step = float(qt.scale())
        assert abs(w.abs().max().item() - top * step) <= step / 2 + 1e-15


def test_dfp_frac_bits_at_the_rounding_boundary():
    # 8-bit: q_max = 127. m * 2^F rounds to <= 127 for the chosen F and would not at F + 1
    for m in [0.9921875, 0.99609375, 1.0, 126.5 / 128, 127.49 / 128, 127.5 / 128, 63.5 / 64]:
        f = int(dfp_frac_bits(torch.tensor(m, dtype=torch.float64), 8))
        assert np.floor(m * 2.0**f + 0.5) <= 127
        assert np.floor(m * 2.0 ** (f + 1) + 0.5) > 127


def test_static_fixed_point_clips_and_counts():
    x = torch.tensor([0.0, 0.5, 1.0, 2.5, -3.0], dtype=torch.float64)
    qt = quantize(x, QuantConfig(bits=4, mode="static", frac_bits=1))  # step 0.5, max 7*0.5 = 3.5
    assert qt.clipped == 0
    assert qt.dequantize(torch.float64).tolist() == [0.0, 0.5, 1.0, 2.5, -3.0]
    qt = quantize(x * 2, QuantConfig(bits=4, mode="static", frac_bits=1))
    assert qt.clipped == 2  # 5.0 and -6.0 saturate at +-3.5
    assert qt.dequantize(torch.float64)[-1].item() == -3.5


def test_dfp_beats_static_on_layers_with_10x_range_difference():
    """The DATE 2019 observation: AlexNet's first conv layer has ~10x the weight range of the last
    FC layers. A static format sized for the wide layer wastes ~3.3 bits on the narrow one; sized
    for the narrow one it clips the wide one. DFP picks each layer's binary point."""
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(256, 256, generator=g, dtype=torch.float64) * 0.25
    narrow = torch.randn(256, 256, generator=g, dtype=torch.float64) * 0.025
    assert 8 < float(wide.abs().max() / narrow.abs().max()) < 12
    bits = 8
    dfp = QuantConfig(bits=bits, mode="dynamic")
    f_wide = static_frac_bits_for(float(wide.abs().max()), bits)
    f_narrow = static_frac_bits_for(float(narrow.abs().max()), bits)
    st_wide = QuantConfig(bits=bits, mode="static", frac_bits=f_wide)  # sized for the wide layer
    st_narrow = QuantConfig(bits=bits, mode="static", frac_bits=f_narrow)  # sized for the narrow layer
    err = {}
    for name, w in (("wide", wide), ("narrow", narrow)):
        for fmt_name, fmt in (("dfp", dfp), ("static_wide", st_wide), ("static_narrow", st_narrow)):
            qt = quantize(w, fmt)
            err[name, fmt_name] = (relative_error(w, qt.dequantize(torch.float64)), qt.clipped)
    # DFP: no clipping anywhere, and on each layer at least as good as either static format
    assert err["wide", "dfp"][1] == 0 and err["narrow", "dfp"][1] == 0
    for layer in ("wide", "narrow"):
        assert err[layer, "dfp"][0] <= min(err[layer, "static_wide"][0], err[layer, "static_narrow"][0]) + 1e-12
    # static sized for the wide layer: the narrow layer loses ~3 bits -> ~8x the error
    assert err["narrow", "static_wide"][0] > 6 * err["narrow", "dfp"][0]
    # static sized for the narrow layer: the wide layer clips heavily
    assert err["wide", "static_narrow"][1] > 0.5 * wide.numel()
    assert err["wide", "static_narrow"][0] > 10 * err["wide", "dfp"][0]


def test_dfp_per_tile_binary_points():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(40, 70, generator=g, dtype=torch.float64)
    w[:16, :32] *= 10.0  # one tile with a 10x range
    qt = quantize_blocks(w, QuantConfig(bits=6, mode="dynamic", granularity="tile"), (16, 32))
    assert qt.frac_bits.shape == (3, 3)
    assert qt.clipped == 0
    bm = block_max_abs(qt.q.to(torch.float64).abs(), (16, 32))
    assert bool((bm >= 2**4).all()) and bool((bm <= 31).all())  # every tile uses its MSB
    assert int(qt.frac_bits[0, 0]) < int(qt.frac_bits[1, 1])
    per_layer = quantize(w, QuantConfig(bits=6, mode="dynamic"))
    e_tile = relative_error(w, qt.dequantize(torch.float64))
    e_layer = relative_error(w, per_layer.dequantize(torch.float64))
    assert e_tile < e_layer


def test_zero_tensor_and_bad_inputs():
    qt = quantize(torch.zeros(3, 4), QuantConfig(bits=8))
    assert int(qt.frac_bits) == 0 and int(qt.q.abs().max()) == 0
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize(torch.tensor([1.0, float("nan")]), QuantConfig())
    with pytest.raises(ValueError, match="floating-point"):
        quantize(torch.tensor([1, 2]), QuantConfig())
    with pytest.raises(ConfigError, match="bits=1"):
        QuantConfig(bits=1)
    with pytest.raises(ConfigError, match="mode='float'"):
        QuantConfig(mode="float")
    with pytest.raises(ConfigError, match="granularity"):
        QuantConfig(granularity="row")
