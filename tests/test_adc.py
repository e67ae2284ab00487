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


# ------------------------------------------------------------------------------------------
# the circuits: transfer functions drawn once per chip

import numpy as np  # noqa: E402
import torch  # noqa: E402

from crossbar import read  # noqa: E402
from crossbar.adc import KINDS_WITH_CIRCUITS, draw_transfer, pipeline_transfer, sar_transitions  # noqa: E402
from crossbar.engine import program_matrix  # noqa: E402


def _lookup(t, codes, v, lo):
    idx = np.stack([np.searchsorted(t[i], v[i], side="left") for i in range(v.shape[0])])
    return idx + lo if codes is None else np.take_along_axis(codes, idx, 1)


@pytest.mark.parametrize("kind", ["ideal", "sar", "ramp", "pipeline", "cyclic"])
def test_flawless_circuits_are_the_ideal_quantizer(kind):
    b, h = 6, 32
    v = np.random.default_rng(0).uniform(-h - 5, h + 5, (20, 4000))
    t, codes, table = draw_transfer(AdcConfig(kind=kind, bits=b), 20, np.arange(20), np.random.default_rng(1))
    got = _lookup(t[table], None if codes is None else codes[table], v, -h)
    assert np.array_equal(got, np.clip(np.round(v), -h, h - 1))


def test_sar_transitions_are_the_binary_search_of_mismatched_levels():
    """The transitions from the recursive clip equal a brute-force binary search (bit by bit
    against the CDAC level of each trial code), with 5 % unit-capacitor mismatch (missing and
    wide codes) and comparator offsets."""
    b, n = 7, 25
    rng = np.random.default_rng(2)
    lv = np.sort(rng.uniform(-70, 70, (n, 2**b)), axis=1) + rng.normal(0, 3, (n, 2**b))  # non-monotonic levels
    t = sar_transitions(lv)
    v = rng.uniform(-80, 80, (n, 3000))
    reg = np.zeros(v.shape, np.int64)
    for j in range(b - 1, -1, -1):
        trial = reg | (1 << j)
        reg = np.where(v > np.take_along_axis(lv, trial, 1), trial, reg)
    assert np.array_equal(_lookup(t, None, v, 0), reg)


def test_pipeline_transfer_is_the_stage_by_stage_conversion():
    b, n, h = 6, 25, 32
    rng = np.random.default_rng(3)
    g = 1 + 0.05 * rng.standard_normal((n, b - 1))
    e = 1 - 0.02 * rng.random((n, b - 1))
    oh, ol = 0.1 * h * rng.standard_normal((2, n, b - 1))
    of = 0.1 * h * rng.standard_normal(n)
    t, codes = pipeline_transfer(b, g, e, oh, ol, of)
    v = rng.uniform(-h - 6, h + 6, (n, 4000))
    V, code = v + 0.5, np.zeros(v.shape)
    for s in range(b - 1):
        d = np.where(V > h / 4 + oh[:, s : s + 1], 1.0, np.where(V < -h / 4 + ol[:, s : s + 1], -1.0, 0.0))
        code += d * 2 ** (b - 2 - s)
        V = ((1 + g[:, s : s + 1]) * V - d * g[:, s : s + 1] * h) * e[:, s : s + 1]
    code += (V > of[:, None]) - 1.0
    assert np.array_equal(_lookup(t, codes, v, 0), code)


def test_sar_mid_code_dnl_has_the_capacitor_mismatch_sigma():
    """Binary-weighted CDAC, unit mismatch sigma_u (capacitor of m units: sigma_u sqrt(m)): the
    width of code 0111..1 is ``(C_{b-1} - sum_{j<b-1} C_j) 2**b / C_tot`` LSB, so to first order
    its DNL is a linear form of the capacitors' errors with variance ``~ sigma_u**2 (2**b - 1)``
    (computed here from the linearized coefficients); 4000 ADCs, the sample mean and sigma
    within 4 standard errors."""
    b, su, n = 8, 0.01, 4000
    t, _, _ = draw_transfer(AdcConfig(kind="sar", bits=b, cap_sigma_rel=su), n, np.arange(n), np.random.default_rng(4))
    k = 2 ** (b - 1)  # t[:, i] is the transition to unsigned code i + 1
    dnl = (t[:, k - 1] - t[:, k - 2]) - 1.0  # width of code 0111..1 in LSB, minus one
    # linearization: that width is (C_{b-1} - sum_{j<b-1} C_j) * 2**b / C_tot; perturb
    # C_j by sqrt(2**j) z_j (j < b), C_term by z_t: d width = coefficient . z
    units = 2.0 ** np.arange(b)
    num0, tot0 = 1.0, 2.0**b  # nominal: 2**(b-1) - (2**(b-1) - 1) = 1, C_tot = 2**b
    a_num = np.where(np.arange(b) == b - 1, 1.0, -1.0) * np.sqrt(units)
    a_tot = np.append(np.sqrt(units), 1.0)
    coef = np.append(a_num, 0.0) * 2.0**b / tot0 - num0 * 2.0**b / tot0**2 * a_tot
    sd = su * np.sqrt(np.sum(coef**2))
    assert abs(float(np.mean(dnl))) < 4 * sd / np.sqrt(n)
    assert abs(float(np.std(dnl)) / sd - 1) < 4 / np.sqrt(2 * n)
    assert sd == pytest.approx(su * np.sqrt(2**b - 1), rel=0.01)  # the textbook figure


def test_pipeline_redundancy_corrects_stage_comparator_offsets():
    """1.5-bit stages: comparator offsets below V_ref/4 do not move any transition except
    through the final comparator, whose offset enters divided by 2**(bits-1)."""
    b, n, h = 8, 200, 128
    adc = AdcConfig(kind="pipeline", bits=b, comparator_sigma_rel=0.01)  # 0.01 V_ref << V_ref/4
    t, codes, _ = draw_transfer(adc, n, np.arange(n), np.random.default_rng(5))
    ideal = np.arange(1, 2**b) - h - 0.5
    assert np.array_equal(codes, np.broadcast_to(np.arange(-h, h), codes.shape))  # no missing codes
    dev = np.abs(t - ideal).max()
    assert 0 < dev <= 5 * 0.01 * h / 2 ** (b - 1)
    # the same offsets on a SAR shift every transition by the full offset
    ts, _, _ = draw_transfer(AdcConfig(kind="sar", bits=b, comparator_sigma_rel=0.01), n, np.arange(n),
                             np.random.default_rng(5))
    assert np.abs(ts - ideal).max() > 100 * dev


@pytest.mark.parametrize("bits", [6, 8])
def test_sar_comparator_offset_is_one_input_offset_of_the_stated_sigma(bits):
    """A SAR's comparator offset shifts every transition of its ADC by the same amount, sigma
    ``comparator_sigma_rel * V_ref = comparator_sigma_rel * 2**(bits-1)`` LSB, the same
    transfer as the generic input offset: the same relative offset is 4x more LSBs at 8 bits
    than at 6, and a zero input leaves code 0 on ``2 Phi(-1/2 / sigma_LSB)`` of the ADCs
    (0.002 at 6 bits, 0.435 at 8 with 0.005 V_ref: what costs the 8-bit SAR of
    ``examples/read_path_sst2.json`` its accuracy, RESULTS.md). 4000 ADCs; sigma within 4
    standard errors of the sample sd, the fraction within 4 binomial standard errors."""
    from scipy.stats import norm

    n, rel, h = 4000, 0.005, 2 ** (bits - 1)
    ideal = np.arange(1, 2**bits) - h - 0.5
    sigma = rel * h
    for adc in (AdcConfig(kind="sar", bits=bits, comparator_sigma_rel=rel),
                AdcConfig(kind="ideal", bits=bits, offset_sigma_rel=rel)):
        t, codes, _ = draw_transfer(adc, n, np.arange(n), np.random.default_rng(6))
        assert codes is None
        shift = t - ideal
        assert np.ptp(shift, axis=1).max() < 1e-9  # one shift per ADC
        s = shift[:, 0]
        assert abs(float(np.std(s)) / sigma - 1) < 4 / np.sqrt(2 * n)
        p = 2 * norm.cdf(-0.5 / sigma)
        nonzero = float(np.mean(np.abs(s) > 0.5))  # zero input: code 0 iff both neighbours' transitions straddle it
        assert abs(nonzero - p) < 4 * np.sqrt(p * (1 - p) / n) + 1 / n


def test_columns_sharing_an_adc_share_its_flaws():
    cfg = CrossbarConfig(tile_rows=16, tile_cols=32, adc_bits=6, adc_kind="sar", adc_cap_sigma_rel=0.02,
                         adc_columns_per_adc=4)
    w = torch.randn(20, 40, generator=torch.Generator().manual_seed(0))
    pm = program_matrix(w, cfg, None, None, np.random.default_rng(0))
    tab = pm.adc_transfer.table  # (R, L): 3 row blocks, 4 slices x 20 outputs
    assert tab.shape == (3, 80)
    # each tile holds 16 ADC inputs (4 outputs x 4 slices): 4 ADCs of 4 inputs, 2 tiles per block
    for r in range(3):
        assert torch.bincount(tab[r]).max() == 4 and tab[r].unique().numel() == 20
    assert len(set(tab[0].tolist()) & set(tab[1].tolist())) == 0  # each tile its own ADCs
    br = pm.adc_transfer.breaks
    assert not torch.equal(br[0], br[1])  # drawn per ADC
    again = program_matrix(w, cfg, None, None, np.random.default_rng(0))
    assert torch.equal(again.adc_transfer.breaks, br)  # once per chip, from the chip's seed
    other = pm.reprogram(np.random.default_rng(1))
    assert not torch.equal(other.adc_transfer.breaks, br)
    # a ramp: one generator per 4 columns, a comparator (offset) per column
    ramp = program_matrix(w, cfg.replace(adc_kind="ramp", adc_comparator_sigma_rel=0.01), None, None,
                          np.random.default_rng(0)).adc_transfer
    assert ramp.breaks.shape[0] == 3 * 80


@pytest.mark.parametrize("kind", KINDS_WITH_CIRCUITS)
@pytest.mark.parametrize("dac", ["multi_bit", "bit_serial"])
def test_flawless_circuits_read_like_the_ideal_adc(kind, dac, monkeypatch):
    """Without flaws every circuit converts like the rounding ADC. The cells have 2 % variation
    so that no current is an exact half-integer number of ADC steps: there the rounding ADC goes
    to the even code and a comparator one way (a tie rule, not physics)."""
    monkeypatch.setattr(read, "BIT_SERIAL_LUT", False)  # the same summation path for both
    from device.programming import LevelTable

    lv = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=0.02, rng=np.random.default_rng(3))
    kw = dict(tile_rows=32, tile_cols=32, adc_bits=6, adc_range="calibrated", dac=dac, weight_format="scaled",
              input_format="scaled")
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(24, 70, generator=g, dtype=torch.float64), torch.randn(30, 70, generator=g, dtype=torch.float64)
    ref = program_matrix(w, CrossbarConfig(**kw), lv, None, np.random.default_rng(0), dtype=torch.float64).calibrate(x)
    pm = program_matrix(w, CrossbarConfig(adc_kind=kind, **kw), lv, None, np.random.default_rng(0),
                        dtype=torch.float64).calibrate(x)
    assert pm.adc_transfer is not None and torch.equal(pm(x), ref(x))
    flawed = program_matrix(w, CrossbarConfig(adc_kind=kind, adc_offset_sigma_rel=0.05, **kw), lv, None,
                            np.random.default_rng(0), dtype=torch.float64).calibrate(x)
    assert not torch.equal(flawed(x), ref(x))


def _convert_by_binary_search(cur, cfg, transfer, rows=None, cols=None):
    """The conversion as first written (a binary search per current, ``torch.searchsorted``):
    the reference that :func:`crossbar.read.adc_convert` must match bit for bit."""
    tab = transfer.table if rows is None else transfer.table[rows, cols]
    br = transfer.breaks[tab]
    v = cur.transpose(-1, -2).contiguous()
    idx = torch.searchsorted(br, v)
    if transfer.codes is None:
        code = idx.to(cur.dtype).add_(read.adc_code_range(cfg)[0])
    else:
        code = torch.gather(transfer.codes[tab], -1, idx)
    return code.transpose(-1, -2).contiguous()


_FLAWS = {  # large: transitions far from the ideal ones (the search grid)
    "ideal": dict(adc_offset_sigma_rel=0.02, adc_gain_sigma_rel=0.1),
    "sar": dict(adc_cap_sigma_rel=0.05, adc_comparator_sigma_rel=0.01, adc_gain_sigma_rel=0.2),
    "ramp": dict(adc_cap_sigma_rel=0.02, adc_comparator_sigma_rel=0.005, adc_offset_sigma_rel=0.05),
    "pipeline": dict(adc_cap_sigma_rel=0.03, adc_comparator_sigma_rel=0.05, adc_opamp_gain_db=40),
    "cyclic": dict(adc_cap_sigma_rel=0.03, adc_comparator_sigma_rel=0.05, adc_opamp_gain_db=40),
}
_SMALL_FLAWS = {  # the study's flaws (examples/read_path_sst2.json), within a few LSB of the ideal
    "ideal": dict(adc_offset_sigma_rel=0.01),
    "sar": dict(adc_cap_sigma_rel=0.01, adc_comparator_sigma_rel=0.005),
    "ramp": dict(adc_cap_sigma_rel=0.01, adc_comparator_sigma_rel=0.005),
    "pipeline": dict(adc_cap_sigma_rel=0.01, adc_comparator_sigma_rel=0.02, adc_opamp_gain_db=60),
    "cyclic": dict(adc_cap_sigma_rel=0.01, adc_comparator_sigma_rel=0.02, adc_opamp_gain_db=60),
}


@pytest.mark.parametrize("kind,flaws", [  # the flawless ideal quantizer draws no transfer: it rounds
    (k, f) for k in ("ideal", "sar", "ramp", "pipeline", "cyclic") for f in ("none", "small", "large")
    if (k, f) != ("ideal", "none")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adc_convert_is_the_binary_search_bit_for_bit(kind, flaws, dtype):
    """The fast searches (floor and one comparison for flawless circuits, the search grid for
    the rest) give the binary search's code
    for every current: random ones over and beyond the range, integers, exact half-integers
    (ties) and every transition level itself and the next float above it, on seeded chips of
    every kind, contiguous or not."""
    from crossbar.read import adc_convert

    b = 6
    kw = {"none": {}, "small": _SMALL_FLAWS[kind], "large": _FLAWS[kind]}[flaws]
    cfg = CrossbarConfig(tile_rows=16, tile_cols=32, adc_bits=b, adc_kind=kind, adc_columns_per_adc=4, **kw)
    w = torch.randn(20, 40, generator=torch.Generator().manual_seed(0))
    paths = set()
    for chip in range(3):
        tr = program_matrix(w, cfg, None, None, np.random.default_rng(chip), dtype=dtype).adc_transfer
        ix = tr.index
        paths.add("identity" if ix.identity else "grid")
        R, L = tr.table.shape
        g = torch.Generator().manual_seed(chip)
        h = 2 ** (b - 1)
        parts = [(torch.rand(R, 300, L, generator=g, dtype=torch.float64) * (4 * h) - 2 * h).to(dtype),
                 torch.randint(-h - 3, h + 3, (R, 40, L), generator=g).to(dtype),
                 torch.randint(-h - 3, h + 3, (R, 40, L), generator=g).to(dtype) + 0.5,
                 torch.tensor([float("inf"), -float("inf"), 1e30, -1e30], dtype=dtype).view(1, 4, 1).expand(R, 4, L)]
        br = tr.breaks[tr.table]  # (R, L, M): every channel's own transition levels, ties exactly
        fin = torch.where(torch.isfinite(br), br, torch.zeros((), dtype=dtype))
        parts.append(fin.transpose(1, 2))
        parts.append(torch.nextafter(fin, torch.full_like(fin, float("inf"))).transpose(1, 2))
        cur = torch.cat(parts, dim=1).contiguous()
        want = _convert_by_binary_search(cur, cfg, tr)
        got = adc_convert(cur.clone(), cfg, True, tr)
        assert torch.equal(got, want), f"{kind} chip {chip}: {int((got != want).sum())} codes differ"
        if flaws != "none":
            assert not torch.equal(want, adc_convert(cur.clone(), cfg, True, None))  # the flaws do show
        # one row block and a slice of its channels (the (X, l) form)
        sub = cur[1, :, 3:17].contiguous()
        assert torch.equal(adc_convert(sub.clone(), cfg, True, tr, rows=1, cols=slice(3, 17)),
                           _convert_by_binary_search(sub, cfg, tr, rows=1, cols=slice(3, 17)))
        assert torch.equal(adc_convert(cur.transpose(1, 2).contiguous().transpose(1, 2), cfg, True, tr), want)
    assert paths == ({"identity"} if flaws == "none" else {"grid"})  # each search where it is meant to be


def test_transfer_search_grid_refines_where_transitions_crowd():
    """A gain of 1/3 puts three transitions in some LSB: the grid halves its step until each
    cell holds at most one (or it would grow past its size limit), and stays exact."""
    from crossbar.adc import AdcTransfer, TransferIndex

    lo, M = -8, 15
    t = ((torch.arange(1, M + 1, dtype=torch.float64) + lo - 0.5) / 3.0).view(1, M)
    ix = TransferIndex.build(t, None)
    assert not ix.identity and ix.shift >= 2 and ix.climbs == 1
    tr = AdcTransfer(breaks=t, codes=None, table=torch.zeros(1, 5, dtype=torch.int64))
    cfg = CrossbarConfig(adc_bits=4, adc_kind="sar")
    v = torch.linspace(-4, 4, 5 * 997, dtype=torch.float64).view(1, 997, 5)
    assert torch.equal(read.adc_convert(v.clone(), cfg, True, tr), _convert_by_binary_search(v, cfg, tr))
