"""The bit-serial read from tables of partial currents (``crossbar.bitserial.lut_bit_serial``) against
the batched-matmul read it replaces on the CPU: the same ADC codes, hence the same outputs, exactly
for integer-valued currents (ideal devices) and in float64."""

import itertools

import numpy as np
import pytest
import torch

import crossbar.bitserial as bitserial
import crossbar.read as read
from crossbar.engine import CrossbarConfig, program_matrix
from device.faults import FaultConfig
from device.programming import LevelTable


def _levels(bits_per_cell: int, sigma_rel: float = 0.0) -> LevelTable:
    return LevelTable.synthetic(bits_per_cell=bits_per_cell, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=sigma_rel,
                                rng=np.random.default_rng(0))


def _rand(shape, seed, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _both(pm, x, monkeypatch):
    """``(table read, matmul read)`` of ``x``; fails unless the table read was actually taken."""
    calls = []
    lut = read.lut_bit_serial
    monkeypatch.setattr(read, "lut_bit_serial", lambda *a: calls.append(1) or lut(*a))
    y_lut = pm.matvec(x)
    assert calls, "the table read was not used"
    monkeypatch.setattr(read, "BIT_SERIAL_LUT", False)
    y_mm = pm.matvec(x)
    assert len(calls) == 1
    monkeypatch.setattr(read, "BIT_SERIAL_LUT", True)
    return y_lut, y_mm


@pytest.mark.parametrize(
    "tile_rows,input_bits,bits_per_cell,mapping,scope",
    [(24, 8, 2, "differential", "column"), (13, 6, 3, "offset", "column"), (16, 12, 2, "differential", "column"),
     (21, 8, 2, "offset", "tile"), (8, 3, 1, "differential", "column")],
)
def test_table_read_is_the_integer_matmul_read_exactly(tile_rows, input_bits, bits_per_cell, mapping, scope,
                                                       monkeypatch):
    # odd tile heights pad the tables to whole bytes; 12 input bits take two bytes of planes
    cfg = CrossbarConfig(tile_rows=tile_rows, tile_cols=32, weight_bits=8, bits_per_cell=bits_per_cell,
                         mapping=mapping, dac="bit_serial", input_bits=input_bits, adc_bits=24, adc_scope=scope)
    w, x = _rand((19, 53), 1), _rand((37, 53), 2)
    pm = program_matrix(w, cfg, _levels(bits_per_cell), None, np.random.default_rng(0), dtype=torch.float64)
    y_lut, y_mm = _both(pm, x, monkeypatch)
    assert torch.equal(y_lut, y_mm)


def test_blocks_that_straddle_slices_and_a_ragged_last_token_block(monkeypatch):
    monkeypatch.setattr(bitserial, "LUT_COLS", 7)  # blocks of 7 channels straddle the slices of 19 outputs
    monkeypatch.setattr(bitserial, "LUT_TOKENS", 5)  # 37 tokens: 7 blocks of 5 and one of 2
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, weight_bits=8, bits_per_cell=2, dac="bit_serial",
                         input_bits=8, adc_bits=24, adc_scope="column")
    w, x = _rand((19, 40), 3), _rand((37, 40), 4)
    pm = program_matrix(w, cfg, _levels(2), None, np.random.default_rng(0), dtype=torch.float64)
    y_lut, y_mm = _both(pm, x, monkeypatch)
    assert torch.equal(y_lut, y_mm)


def test_clipping_adc_and_device_effects_in_float64(monkeypatch, tmp_path):
    # 5-bit ADC calibrated on few inputs: later reads clip; programming variation and faults make
    # the currents non-integer (float64: the two summation orders agree to ~1e-16, no code flips)
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, weight_bits=8, bits_per_cell=2, dac="bit_serial",
                         input_bits=8, adc_bits=5, adc_scope="column", adc_range="calibrated")
    w, x = _rand((40, 70), 5), _rand((64, 70), 6)
    pm = program_matrix(w, cfg, _levels(2, 0.05), FaultConfig(rate=0.02), np.random.default_rng(1),
                        dtype=torch.float64).calibrate(x[:2])
    assert read.adc_can_clip(pm.readout, pm.noise_var, pm.cfg)
    y_lut, y_mm = _both(pm, x, monkeypatch)
    assert torch.equal(y_lut, y_mm)


def test_float32_read_agrees_with_the_matmul_read(monkeypatch):
    # float32 sums in another order: an ADC code can flip where a current lies within round-off of
    # a rounding threshold; both paths are equally far from the float64 read
    cfg = CrossbarConfig(tile_rows=64, tile_cols=64, weight_bits=8, bits_per_cell=2, dac="bit_serial",
                         input_bits=8, adc_bits=8, adc_scope="column")
    w, x = _rand((96, 200), 7, torch.float32) / 14, _rand((300, 200), 8, torch.float32)
    pm = program_matrix(w, cfg, _levels(2, 0.05), FaultConfig(rate=0.01), np.random.default_rng(2))
    y_lut, y_mm = _both(pm, x, monkeypatch)
    assert y_lut.dtype == torch.float32
    pm64 = program_matrix(w, cfg, _levels(2, 0.05), FaultConfig(rate=0.01), np.random.default_rng(2),
                          dtype=torch.float64)
    y64 = pm64.matvec(x.double())
    tol = 1e-4 * float(y64.abs().max())
    off_lut = int(((y_lut.double() - y64).abs() > tol).sum())
    off_mm = int(((y_mm.double() - y64).abs() > tol).sum())
    assert off_lut <= max(5, 2 * off_mm) and off_lut <= 1e-3 * y64.numel()


@pytest.mark.parametrize("bits,n,rows", itertools.product([3, 8, 12], [1, 9], [8, 24]))
def test_plane_bytes_are_the_bit_planes(bits, n, rows):
    u = torch.randint(0, 1 << bits, (2, n, rows), generator=torch.Generator().manual_seed(bits))
    got = bitserial.plane_bytes(u, bits, 4)  # (R, blocks, bits, 4, rows // 8)
    nb = -(-n // 4)
    assert got.shape == (2, nb, bits, 4, rows // 8)
    up = torch.nn.functional.pad(u, (0, 0, 0, nb * 4 - n)).view(2, nb, 1, 4, rows // 8, 8)
    k = torch.arange(bits).view(1, 1, bits, 1, 1, 1)
    want = (((up >> k) & 1) << torch.arange(8)).sum(-1)
    assert torch.equal(got.to(torch.int64), want)


def test_per_tile_formats_use_per_output_factors(monkeypatch):
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, weight_bits=8, bits_per_cell=2, weight_granularity="tile",
                         input_granularity="tile", adc_bits=20, dac="bit_serial")
    w = _rand((21, 40), 3)
    w[:4] *= 10.0  # tiles with a 10x range get their own binary point
    x = _rand((2, 3, 40), 4)
    pm = program_matrix(w, cfg, _levels(2), None, np.random.default_rng(0), dtype=torch.float64).calibrate(x)
    assert pm.qweight.frac_bits.numel() > 1
    y_lut, y_mm = _both(pm, x, monkeypatch)
    assert torch.equal(y_lut, y_mm)


def test_empty_batch(monkeypatch):
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, weight_bits=8, bits_per_cell=2, dac="bit_serial",
                         input_bits=8, adc_bits=8, adc_scope="column")
    pm = program_matrix(_rand((5, 20), 0), cfg, _levels(2), None, np.random.default_rng(0), dtype=torch.float64)
    y_lut, y_mm = _both(pm, torch.zeros(0, 20, dtype=torch.float64), monkeypatch)
    assert y_lut.shape == y_mm.shape == (0, 5)
