"""Reads that do not depend on the batch, number formats, per-slice ADC calibration.

Hardware applies one input vector at a time: a vector's simulated output must be the same bits
whatever other vectors share its batch (issue: the DAC step was once set from the whole batch).
Checked for every input format, granularity, DAC mode and ADC mode, in the default float32, with
programming variation and stuck-at faults on, and with the vector's batch mates 100x larger;
and with read noise, whose normals are keyed per vector (issue 20: they were drawn in batch
order, so a vector's noise moved with the batch size).
"""

import itertools

import numpy as np
import pytest
import torch

from crossbar.engine import CrossbarConfig, program_matrix
from crossbar.quant import QuantConfig, q_max, quantize, quantize_blocks, step_for
from crossbar.readkeys import NO_NOISE, ReadKeys
from device.config import ConfigError
from device.faults import FaultConfig
from device.programming import LevelTable


def _rand(shape, seed, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _levels(sigma_rel=0.05):
    return LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=sigma_rel,
                                rng=np.random.default_rng(3))


READS = {
    "ideal_adc": dict(adc_bits=None),
    "column_adc_calibrated": dict(adc_bits=8, adc_range="calibrated", adc_scope="column"),
    "tile_adc_full_scale": dict(adc_bits=12, adc_scope="tile"),
    "pipeline_adcs_with_flaws": dict(adc_bits=8, adc_range="calibrated", adc_kind="pipeline", adc_cap_sigma_rel=0.01,
                                     adc_comparator_sigma_rel=0.01, adc_columns_per_adc=4),
}


@pytest.mark.parametrize(
    "fmt,gran,dac,read",
    [c for c in itertools.product(["static", "dynamic", "scaled"], ["vector", "tile_vector", "layer", "tile"],
                                  ["multi_bit", "bit_serial"], sorted(READS))
     if not (c[0] == "static" and c[1] != "vector")],
)
def test_a_vector_reads_the_same_bits_in_any_batch(fmt, gran, dac, read):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, weight_bits=8, bits_per_cell=2, input_bits=8, dac=dac,
                         input_format=fmt, input_granularity=gran, input_frac_bits=3, **READS[read])
    w = _rand((40, 70), 1) / 8
    x = _rand((40, 70), 2)
    pm = program_matrix(w, cfg, _levels(), FaultConfig(rate=0.01), np.random.default_rng(5))
    if cfg.needs_calibration:
        pm = pm.calibrate(_rand((64, 70), 3))
    full = pm(x)
    for size, n in ((1, 8), (7, 40), (40, 40)):  # (batch size, vectors read in such batches)
        parts = torch.cat([pm(x[i : min(n, i + size)]) for i in range(0, n, size)])
        assert torch.equal(parts, full[:n]), f"batches of {size} differ"
    # the same vector among batch mates 100x larger (a batch-wide scale would squash it)
    loud = _rand((6, 70), 4) * 100
    mixed = pm(torch.cat([loud[:3], x[5:6], loud[3:]]))
    assert torch.equal(mixed[3], full[5])


NOISY_READS = {
    "ideal_adc": dict(adc_bits=None),
    "ideal_adc_bit_serial": dict(adc_bits=None, dac="bit_serial"),
    "column_adc_bit_serial": dict(adc_bits=8, dac="bit_serial"),
    "tile_adc": dict(adc_bits=12, adc_scope="tile"),
}


@pytest.mark.parametrize("read", sorted(NOISY_READS))
def test_read_noise_does_not_depend_on_the_batch(read):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, read_noise_sigma_rel=0.05, **NOISY_READS[read])
    pm = program_matrix(_rand((40, 70), 1) / 8, cfg, _levels(), FaultConfig(rate=0.01), np.random.default_rng(5))
    x = _rand((40, 70), 2)
    keys = ReadKeys(seed=11, rows=torch.arange(40, dtype=torch.int64) * 3, block=8)
    full = pm(x, keys)
    for size, n in ((1, 8), (7, 40)):  # (batch size, vectors read in such batches)
        parts = torch.cat([pm(x[i : min(n, i + size)], ReadKeys(seed=11, rows=keys.rows[i : min(n, i + size)], block=8))
                           for i in range(0, n, size)])
        assert torch.equal(parts, full[:n]), f"batches of {size} differ"
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pm(x[perm], ReadKeys(seed=11, rows=keys.rows[perm], block=8)), full[perm])
    # another read (seed) is another draw
    assert not torch.equal(pm(x, ReadKeys(seed=12, rows=keys.rows, block=8)), full)
    # a caller without keys: one read seed per call from the generator, vectors keyed by content
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    y = pm(x, g())
    assert torch.equal(pm(x[perm], g()), y[perm]) and torch.equal(pm(x[:5], g()), y[:5])
    gen = g()
    assert not torch.equal(pm(x, gen), pm(x, gen))  # every call is a new read
    # copies of one vector in one call are independent reads
    copies = pm(x[:1].expand(8, 70), g())
    assert len({tuple(r.tolist()) for r in copies}) == 8


def test_keyed_normals_are_standard_and_independent():
    """Seeded statistical check of ReadKeys.normal: 4000 rows of 64, mean 0 and variance 1 within
    K standard errors, no correlation between rows of one block or neighbouring blocks, and a
    row's numbers are those of its key alone (any subset of rows, any order)."""
    keys = ReadKeys(seed=5, rows=torch.arange(4000, dtype=torch.int64), block=8)
    z = keys.normal((), (64,), torch.float64, "cpu").numpy()
    n = z.size
    assert abs(z.mean()) <= 5 / np.sqrt(n) and abs(z.var() - 1) <= 5 * np.sqrt(2 / n)
    for lag in (1, 7, 8, 9):  # within a block and across block borders
        c = (z[:-lag] * z[lag:]).mean()
        assert abs(c) <= 5 / np.sqrt(z[:-lag].size), lag
    some = ReadKeys(seed=5, rows=torch.tensor([3999, 17, NO_NOISE, 8]), block=8)
    sub = some.normal((), (64,), torch.float64, "cpu")
    assert torch.equal(sub[0], torch.from_numpy(z[3999])) and torch.equal(sub[1], torch.from_numpy(z[17]))
    assert torch.equal(sub[2], torch.zeros(64))
    lead = some.normal((2, 3), (64,), torch.float64, "cpu", 1, 4)  # rows 1:4 with (cycles, blocks) before them
    assert lead.shape == (2, 3, 3, 64) and torch.equal(lead[:, :, 1], torch.zeros(2, 3, 64))


def test_uncalibrated_per_layer_inputs_are_refused():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, input_granularity="layer")
    pm = program_matrix(_rand((8, 40), 1), cfg, None, None, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="calibrate"):
        pm(_rand((2, 40), 2))
    assert cfg.needs_calibration and not CrossbarConfig().needs_calibration


def test_per_vector_step_is_each_vectors_own_range():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, input_format="dynamic", input_bits=8)
    pm = program_matrix(_rand((8, 40), 1), cfg, None, None, np.random.default_rng(0))
    x = _rand((3, 40), 2) * torch.tensor([[0.01], [1.0], [300.0]])
    codes, step = pm.dac(x)
    assert step.shape == (3, 1)
    # dynamic fixed point per vector: the largest code of each vector uses the top magnitude bit
    top = codes.abs().amax(1)
    assert torch.all(top <= q_max(8)) and torch.all(top >= 2 ** 6)
    scaled = program_matrix(_rand((8, 40), 1), cfg.replace(input_format="scaled"), None, None, np.random.default_rng(0))
    codes_s, step_s = scaled.dac(x)
    assert torch.equal(codes_s.abs().amax(1), torch.full((3,), float(q_max(8))))  # every vector's max -> q_max
    torch.testing.assert_close(step_s.view(-1).double(), x.abs().amax(1).double() / q_max(8))


def test_per_tile_vector_steps_are_each_row_blocks_own_range():
    """``tile_vector``: every row block of a vector gets the step of its own inputs; partial sums
    are rescaled digitally, so with lossless ADCs the read is the integer matmul of each block's
    codes times its step (float64, exact up to summation order), and the error is below the
    per-vector step's when one block holds the vector's outliers."""
    kw = dict(tile_rows=16, tile_cols=32, weight_bits=8, bits_per_cell=2, input_bits=6, input_format="scaled",
              weight_format="scaled")
    w, x = _rand((10, 40), 1, torch.float64), _rand((5, 40), 2, torch.float64)
    x[:, :16] *= 30  # block 0 holds the large inputs
    ref = x @ w.T
    errs = {}
    for gran in ("vector", "tile_vector"):
        for read in (dict(adc_bits=None), dict(adc_bits=24, dac="bit_serial"), dict(adc_bits=24)):
            cfg = CrossbarConfig(input_granularity=gran, **kw, **read)
            pm = program_matrix(w, cfg, _levels(0.0), None, np.random.default_rng(0), dtype=torch.float64)
            codes, sx = pm.dac(x)
            if gran == "tile_vector":
                assert sx.shape == (5, 40)
                blk = pm.in_block()
                for r in range(3):  # 40 inputs: blocks of 16, 16, 8; each block's max -> q_max
                    torch.testing.assert_close(sx[:, blk == r][:, 0], x[:, blk == r].abs().amax(1) / q_max(6), rtol=1e-15, atol=0)
                    assert torch.equal(codes[:, blk == r].abs().amax(1), torch.full((5,), float(q_max(6)), dtype=torch.float64))
            want = (codes * sx) @ (pm.qweight.q.double() * pm.qweight.scale()).T
            y = pm(x)
            torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
            errs[gran] = float(torch.linalg.vector_norm(y - ref) / torch.linalg.vector_norm(ref))
    assert errs["tile_vector"] < 0.9 * errs["vector"]
    assert not CrossbarConfig(input_granularity="tile_vector").needs_calibration


# ------------------------------------------------------------------------------------------
# the scaled format


@pytest.mark.parametrize("bits", [4, 8])
def test_scaled_format_uses_the_full_code_range_and_beats_power_of_two_steps(bits):
    x = _rand((300, 200), 7, torch.float64) * 0.02
    s = quantize(x, QuantConfig(bits=bits, mode="scaled"))
    d = quantize(x, QuantConfig(bits=bits, mode="dynamic"))
    assert int(s.q.abs().max()) == q_max(bits)
    assert float(s.scale()) == pytest.approx(float(x.abs().max()) / q_max(bits), rel=1e-15)
    # round to nearest: every error within half a step
    assert float((s.dequantize(torch.float64) - x).abs().max()) <= 0.5 * float(s.scale()) * (1 + 1e-12)
    # the DFP step is a power of two >= max/q_max: never finer than the scaled step
    assert float(d.scale()) >= float(s.scale())
    err = lambda q: float((q.dequantize(torch.float64) - x).pow(2).mean())  # noqa: E731
    assert err(s) <= err(d)


def test_scaled_per_tile_steps_and_zero_blocks():
    x = _rand((10, 12), 8, torch.float64)
    x[:5, :6] *= 50
    x[5:, 6:] = 0
    qt = quantize_blocks(x, QuantConfig(bits=6, mode="scaled", granularity="tile"), (5, 6))
    assert qt.step.shape == (2, 2) and float(qt.step[1, 1]) == 1.0  # an all-zero block: any step
    torch.testing.assert_close(qt.step[0, 0], x[:5, :6].abs().max() / q_max(6))
    torch.testing.assert_close(step_for(torch.tensor(0.0), QuantConfig(mode="scaled")), torch.tensor(1.0, dtype=torch.float64))


def test_scaled_weights_on_ideal_devices_are_the_integer_matmul():
    cfg = CrossbarConfig(tile_rows=24, tile_cols=32, weight_bits=8, bits_per_cell=2, weight_format="scaled",
                         input_format="scaled", adc_bits=24, dac="bit_serial")
    w, x = _rand((19, 53), 1, torch.float64), _rand((7, 53), 2, torch.float64)
    pm = program_matrix(w, cfg, _levels(0.0), None, np.random.default_rng(0), dtype=torch.float64)
    codes, sx = pm.dac(x)
    ref = (codes * sx) @ (pm.qweight.q.double() * pm.qweight.scale()).T
    torch.testing.assert_close(pm(x), ref, rtol=1e-13, atol=1e-13 * float(ref.abs().max()))
    assert "scaled" in pm.summary()


# ------------------------------------------------------------------------------------------
# per-slice ADC calibration


def test_each_slice_gets_its_own_calibrated_adc_range():
    cfg = CrossbarConfig(tile_rows=64, tile_cols=64, weight_bits=8, bits_per_cell=2, adc_bits=6,
                         adc_range="calibrated", adc_scope="column", dac="bit_serial")
    w = _rand((30, 128), 1) * 0.02
    x = _rand((200, 128), 2)
    pm = program_matrix(w, cfg, _levels(0.0), None, np.random.default_rng(0)).calibrate(x)
    assert pm.adc_step.shape == (2, cfg.n_slices)
    # the partial 1-bit MSB slice of small weights carries far smaller currents than the full
    # 2-bit slices: its own reference gives it a finer step (at least the one-level-step floor)
    assert torch.all(pm.adc_step[:, -1] < pm.adc_step[:, 0])
    # the calibrated peak of each slice maps to the ADC's full scale (or the floor of 1 level step)
    quiet = program_matrix(w, cfg.replace(adc_bits=24, adc_range="full_scale"), _levels(0.0), None,
                           np.random.default_rng(0), dtype=torch.float64)
    codes, _ = quiet.dac(x)
    planes = torch.stack([((torch.remainder(codes.long(), 256) >> k) & 1).double() for k in range(8)])
    xw = quiet.word_lines(planes)  # (K, R, n, rows)
    d = quiet.readout * quiet.adc_step[:, :1].view(-1, 1, 1)  # level steps
    cur = torch.einsum("krni,ril->rl", xw.abs(), d.abs())  # crude upper bound, same order as peak
    assert cur.shape[1] == 30 * cfg.n_slices
    peak = torch.stack([torch.einsum("kni,il->knl", xw[:, r], d[r]).abs().amax(dim=(0, 1)).view(cfg.n_slices, 30).amax(1)
                        for r in range(2)])
    want = torch.clamp(peak / (2**5 - 1), min=1.0)
    torch.testing.assert_close(pm.adc_step.double(), want, rtol=1e-5, atol=0)


def test_per_slice_adc_beats_one_shared_adc_on_the_same_layer():
    # the comparison in small: 8-bit weights on 2-bit cells, 8-bit multi-bit DAC, 8-bit
    # column ADC calibrated on data; relative error against the float64 product
    w = _rand((96, 256), 11, torch.float64) * 0.02
    x = _rand((256, 256), 12, torch.float64)
    ref = x @ w.T
    err = {}
    for fmt in ("dynamic", "scaled"):
        cfg = CrossbarConfig(tile_rows=128, tile_cols=128, weight_bits=8, bits_per_cell=2, input_bits=8, adc_bits=8,
                             adc_range="calibrated", weight_format=fmt, input_format=fmt)
        pm = program_matrix(w.float(), cfg, _levels(0.0), None, np.random.default_rng(0)).calibrate(x[:64].float())
        err[fmt] = float((pm(x.float()).double() - ref).norm() / ref.norm())
    assert err["scaled"] < err["dynamic"] < 0.03


@pytest.mark.parametrize("slice_bits", [1, 2, 3, 8])
@pytest.mark.parametrize("adc", [None, 24])
def test_multi_bit_input_slices_are_the_integer_matmul(slice_bits, adc):
    """Input slices of ``dac_slice_bits`` bits (two's complement, the top slice signed) summed
    with weights ``2**(j b)`` give the code back: with lossless ADCs and ideal cells every slice
    width reads the integer matmul (float64), in ``ceil(8 / b)`` cycles."""
    cfg = CrossbarConfig(tile_rows=24, tile_cols=32, weight_bits=8, bits_per_cell=2, input_bits=8, weight_format="scaled",
                         input_format="scaled", dac_slice_bits=slice_bits, adc_bits=adc)
    assert cfg.cycles == -(-8 // slice_bits)
    w, x = _rand((19, 53), 1, torch.float64), _rand((7, 53), 2, torch.float64)
    pm = program_matrix(w, cfg, _levels(0.0), None, np.random.default_rng(0), dtype=torch.float64)
    codes, sx = pm.dac(x)
    from crossbar.read import dac_cycles

    planes, a = dac_cycles(codes, cfg)
    assert torch.equal(torch.einsum("k,kni->ni", a, planes), codes)  # the slices add up to the code
    if slice_bits not in (1, 8):
        assert float(planes[:-1].min()) >= 0 and float(planes[:-1].max()) <= 2**slice_bits - 1
    ref = (codes * sx) @ (pm.qweight.q.double() * pm.qweight.scale()).T
    torch.testing.assert_close(pm(x), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match="dac_slice_bits"):
        CrossbarConfig(dac="bit_serial", dac_slice_bits=2)


def test_one_bit_and_full_width_slices_are_the_bit_serial_and_multi_bit_reads():
    """``dac_slice_bits=1`` is the bit-serial read and ``dac_slice_bits=input_bits`` the
    multi-bit read, bit for bit, through calibrated 6-bit column ADCs; 2- and 4-bit slices read
    in 4 and 2 cycles, batch-independently, with errors of the same order."""
    w, x = _rand((64, 256), 1) / 8, _rand((128, 256), 2)
    ref = x.double() @ w.double().T
    kw = dict(tile_rows=128, tile_cols=128, adc_bits=6, adc_range="calibrated", weight_format="scaled",
              input_format="scaled")
    out = {}
    for name, extra in {"bs": dict(dac="bit_serial"), "mb": {}, "1": dict(dac_slice_bits=1),
                        "8": dict(dac_slice_bits=8), "2": dict(dac_slice_bits=2), "4": dict(dac_slice_bits=4)}.items():
        pm = program_matrix(w, CrossbarConfig(**kw, **extra), _levels(0.0), None, np.random.default_rng(0)).calibrate(x)
        out[name] = pm(x)
        assert torch.equal(pm(x[5:9]), out[name][5:9])
    assert torch.equal(out["1"], out["bs"]) and torch.equal(out["8"], out["mb"])
    err = {k: float(torch.linalg.vector_norm(v.double() - ref) / torch.linalg.vector_norm(ref)) for k, v in out.items()}
    assert max(err.values()) < 3 * min(err.values())


@pytest.mark.parametrize("dac", ["bit_serial", "multi_bit"])
def test_column_current_limit_clips_each_physical_column(dac):
    """``i_col_max_a``: the read equals the shift-and-add of the engine's own physical column
    currents in amperes (``column_currents``, from the cells' conductances, HRS cells included),
    each clipped at the limit before G+ - G-, converted back with the level step and the DAC's
    volts per code (ideal ADC, float64). A limit above every current changes nothing."""
    from crossbar.layout import NEG, POS
    from crossbar.pipeline import level_step_s

    lv = _levels(0.05)
    kw = dict(tile_rows=16, tile_cols=32, weight_bits=8, bits_per_cell=2, input_bits=6, weight_format="scaled",
              input_format="scaled", dac=dac)
    w, x = _rand((10, 40), 1, torch.float64), _rand((9, 40), 2, torch.float64)
    free = program_matrix(w, CrossbarConfig(**kw), lv, None, np.random.default_rng(0), dtype=torch.float64)
    i_col = free.column_currents(x)  # (K, n, tiles, cols) A
    limit = 0.3 * float(np.abs(i_col).max())
    cfg = CrossbarConfig(i_col_max_a=limit, **kw)
    pm = program_matrix(w, cfg, lv, None, np.random.default_rng(0), dtype=torch.float64)
    codes, sx = pm.dac(x)
    _, a = __import__("crossbar.read", fromlist=["dac_cycles"]).dac_cycles(codes, cfg)
    lay = pm.layout
    C = lay.n_col_blocks
    v_unit = cfg.v_read_v / cfg.dac_full_scale
    clipped = np.clip(i_col, -limit, limit) / (level_step_s(lv) * v_unit)  # level steps x codes
    y = np.zeros((9, 10))
    for t in range(lay.n_tiles):
        c = t % C
        for j in range(lay.tile_cols):
            role, o, s = lay.col_role[c, j], lay.col_out[c, j], lay.col_slice[c, j]
            if role not in (POS, NEG):
                continue
            sign = 1.0 if role == POS else -1.0
            beta = 2.0 ** (s * cfg.bits_per_cell)
            y[:, o] += sign * beta * np.einsum("k,kn->n", a.numpy(), clipped[:, :, t, j])
    y *= float(pm.qweight.scale()) * sx.numpy()
    assert np.abs(i_col).max() > limit  # the limit is hit
    torch.testing.assert_close(pm(x), torch.from_numpy(y), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(pm(x), free(x), rtol=1e-3)
    loose = program_matrix(w, cfg.replace(i_col_max_a=10 * float(np.abs(i_col).max())), lv, None,
                           np.random.default_rng(0), dtype=torch.float64)
    torch.testing.assert_close(loose(x), free(x), rtol=1e-10, atol=1e-12)
    # with a calibrated column ADC the range follows the clipped currents; reads stay batch-independent
    adc = program_matrix(w, cfg.replace(adc_bits=8, adc_range="calibrated"), lv, None, np.random.default_rng(0)).calibrate(x.float())
    assert torch.equal(adc(x.float()[2:5]), adc(x.float())[2:5])


def _normal_as_first_written(keys, lead, tail, dtype, i0=0, i1=None):
    """ReadKeys.normal as first written (one zero-filled buffer, index-put, moved axes): the
    key scheme's reference, which the gather-in-place version must match bit for bit."""
    from crossbar.readkeys import mix64

    rows = keys.rows[i0:i1]
    out = torch.zeros((int(rows.numel()), *lead, *tail), dtype=dtype)
    valid = rows >= 0
    k = rows[valid]
    if k.numel():
        blocks, where = torch.unique(k // keys.block, return_inverse=True)
        z = torch.empty((int(blocks.numel()), keys.block, *lead, *tail), dtype=dtype)
        g = torch.Generator()
        for j, b in enumerate(blocks.tolist()):
            g.manual_seed(mix64(keys.seed, b))
            torch.randn(z.shape[1:], generator=g, dtype=dtype, out=z[j])
        out[valid] = z[where, k % keys.block]
    return out.movedim(0, len(lead))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keyed_normals_are_the_key_scheme_bit_for_bit(dtype):
    """Sentences of uneven lengths (partial blocks), padding rows, rows out of order, chunks of
    the rows, with and without leading (row block, cycle) axes: the same numbers as the scheme's
    reference, laid out contiguously."""
    lens = [13, 8, 1, 29, 16]
    rows = torch.cat([torch.arange(n, dtype=torch.int64) + (e << 20) for e, n in enumerate(lens)])
    rows = torch.cat([rows[:20], torch.full((3,), NO_NOISE), rows[20:].flip(0)])
    keys = ReadKeys(seed=123, rows=rows, block=8)
    for lead, tail in [((), (37,)), ((3, 2), (24,)), ((4,), (1,))]:
        for i0, i1 in [(0, None), (5, 31), (20, 23)]:
            got = keys.normal(lead, tail, dtype, "cpu", i0, i1)
            assert got.is_contiguous()
            assert torch.equal(got, _normal_as_first_written(keys, lead, tail, dtype, i0, i1))
    empty = ReadKeys(seed=1, rows=torch.full((4,), NO_NOISE), block=8).normal((2,), (5,), dtype, "cpu")
    assert empty.shape == (2, 4, 5) and not empty.any()
