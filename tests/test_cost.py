"""The cost model (mapping/cost.py, mapping/technology.py, nn/cost.py): analytic counts, the
published component models at known points, and the NeuRRAM anchor."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crossbar.config import CrossbarConfig
from crossbar.engine import default_layout, program_matrix
from mapping.cost import (
    DriveStats,
    LayerWork,
    adc_conversion,
    cost_layer,
    cost_layers,
    drive_stats,
    neurram_phases,
    read_columns,
    row_conductance,
)
from mapping.technology import TECH_PRESETS, TechConfig, get_tech, horowitz_scale

ROOT = Path(__file__).resolve().parents[1]


def _work(cfg, w, codes, tech, mvms=1.0, layout=None):
    pm = program_matrix(w, cfg, None, None, np.random.default_rng(0), layout=layout, dtype=torch.float64)
    lay = pm.layout
    g = pm.cells().g_s
    cols = read_columns(lay, copies_read=False)
    return LayerWork(name="l", cfg=cfg, layout=lay, in_features=w.shape[1], out_features=w.shape[0], mvms=mvms,
                     stats=drive_stats(codes, cfg, tech), g_row_s=row_conductance(g, lay, cols)), g, cols


def test_presets_build_and_round_trip():
    for name in TECH_PRESETS:
        t = get_tech(name)
        assert TechConfig.from_json(t.to_json()) == t
    with pytest.raises(ValueError):
        get_tech("nope")
    with pytest.raises(ValueError, match="sar_k"):
        TechConfig(sar_k=-1.0)


def test_drive_stats_each_encoding():
    cfg = CrossbarConfig(input_bits=4, dac="bit_serial")
    codes = np.array([[7, -1, 0], [3, 0, 0]])  # two's complement of -1 in 4 bits: 1111
    st = drive_stats(codes, cfg, TechConfig())
    np.testing.assert_allclose(st.drive_sq, [(3 + 2) / 2, 4 / 2, 0.0])
    mb = drive_stats(codes, cfg.replace(dac="multi_bit"), TechConfig())
    np.testing.assert_allclose(mb.drive_sq, [((7 / 7) ** 2 + (3 / 7) ** 2) / 2, (1 / 7) ** 2 / 2, 0.0])
    np.testing.assert_allclose(mb.active, [1.0, 0.5, 0.0])
    sl = drive_stats(codes, cfg.replace(dac="multi_bit", dac_slice_bits=2), TechConfig())
    # 2-bit slices, least significant first, the top one signed: 7 = 0b01|11 -> (3, 1); 3 -> (3, 0);
    # -1 = 0b11|11 -> (3, -1); of the full scale 3
    np.testing.assert_allclose(sl.drive_sq, [(1 + 1 / 9 + 1) / 2, (1 + 1 / 9) / 2, 0.0])
    np.testing.assert_allclose(sl.active, [3 / 2, 2 / 2, 0.0])
    pc = drive_stats(np.array([[127, -5]]), CrossbarConfig(input_bits=8), TechConfig(input_encoding="pulse_count"))
    # 7 magnitude bits in two phases (4, 3): 127 = 15 * 8 + 7 -> 22 pulses; 5 = 0 * 8 + 5 -> 5
    np.testing.assert_allclose(pc.drive_sq, [22, 5])
    assert neurram_phases(3, 3) == (3,) and neurram_phases(7, 3) == (4, 3)


def test_array_energy_is_sum_g_v2_t_over_the_reads():
    """The array energy of one MVM equals sum_ij G_ij V_i^2 t over every cycle, computed cell by
    cell from the engine's conductances (read columns only)."""
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, bits_per_cell=2, weight_bits=6, input_bits=4, dac="bit_serial",
                         adc_bits=5)
    w = torch.randn(5, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    codes = np.random.default_rng(2).integers(-7, 8, size=(1, 20))
    tech = TechConfig(v_read_v=0.3, t_read_s=2e-9)
    work, g, cols = _work(cfg, w, codes, tech)
    lay = work.layout
    bits = (np.remainder(codes[0], 16)[:, None] >> np.arange(4)) & 1  # (in, cycles)
    e = 0.0
    for t in range(lay.n_tiles):
        r, c = divmod(t, lay.n_col_blocks)
        for i in range(lay.tile_rows):
            inp = lay.row_in[r, i]
            if inp < 0:
                continue
            e += bits[inp].sum() * 0.3**2 * 2e-9 * float((g[t, i].numpy() * cols[c]).sum())
    got = cost_layer(work, tech).energy_j["array"]
    assert got == pytest.approx(e, rel=1e-12)


def test_neurosim_sar_fit_at_a_known_point():
    """NeuroSim's 22 nm HP SAR fit: 4-bit, a column of 10 kOhm read at 0.5 V: power
    (0.7213 * 4 + 3.3041) uW + 0.084273 exp(-2.311 * 4) W, for (4 + 1) ns."""
    tech = TechConfig()
    p = (0.7213 * 4 + 3.3041) * 1e-6 + 0.084273 * math.exp(-2.311 * 4)
    a = adc_conversion(4, tech, 1e4, 0.5)
    assert a.energy_j == pytest.approx(p * 5e-9, rel=1e-12)
    assert a.time_s == pytest.approx(5e-9)
    assert a.area_m2 == pytest.approx((269 + 109 * 3 + 209 + 73 * 3) * tech.transistor_area_m2)
    e = [adc_conversion(b, tech, 1e4, 0.5).energy_j for b in range(2, 9)]
    assert all(np.diff(e) > 0)
    w = TechConfig(adc_model="walden")
    assert adc_conversion(6, w, 1e4, 0.5).energy_j == pytest.approx(37e-15 * 64)


def test_horowitz_scaling():
    assert horowitz_scale(45e-9, 0.9) == 1.0
    assert TechConfig(node_m=45e-9, vdd_v=0.9).add_bit_j == pytest.approx(0.1e-12 / 32)


def test_counts_follow_the_configuration():
    """Conversions: per row block and column block, one per channel (a differential pair) per
    cycle; reading half the rows at a time doubles them; bit-serial multiplies by input_bits."""
    cfg = CrossbarConfig(tile_rows=64, tile_cols=64, bits_per_cell=2, weight_bits=8, adc_bits=6, input_bits=8,
                         dac="bit_serial")
    w = torch.randn(40, 150, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    codes = np.random.default_rng(0).integers(-127, 128, size=(8, 150))
    tech = TechConfig()
    work, _, _ = _work(cfg, w, codes, tech, mvms=10)
    lay = work.layout
    per_mvm = lay.n_row_blocks * 40 * cfg.n_slices * 8
    c = cost_layer(work, tech)
    assert c.conversions == pytest.approx(10 * per_mvm)
    half = cost_layer(work, tech.replace(rows_parallel=32))
    assert half.conversions == pytest.approx(10 * 8 * cfg.n_slices * 40 * (2 + 2 + 1))  # 150 rows: 64+64+22
    assert half.latency_s > c.latency_s
    assert c.ops == 2 * 40 * 150 * 10
    assert c.energy_j["array"] > 0 and c.area_m2["array"] == pytest.approx(lay.n_tiles * 64 * 64 * tech.cell_area_m2)


def test_voting_reads_cost_more_and_pruning_frees_nothing_of_the_area():
    from mapping.plan import LayerPlan
    from mapping.protection import ProtectionConfig, protected_plan

    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, bits_per_cell=2, weight_bits=8, adc_bits=6)
    w = torch.randn(22, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    codes = np.random.default_rng(0).integers(-127, 128, size=(4, 40))
    tech = TechConfig()
    base, _, _ = _work(cfg, w, codes, tech)
    from nn.sim import SimConfig

    plan = protected_plan({"l": (22, 40)}, SimConfig(crossbar=cfg), None, ProtectionConfig(duplicate=True),
                          weights={"l": w.float()})
    lp = plan.layers["l"]
    prot, g, _ = _work(cfg, w, codes, tech, layout=lp.layout)
    voted = LayerWork(**{**prot.__dict__, "voted": True, "vote_replicas": 3,
                         "g_row_s": row_conductance(g, lp.layout, read_columns(lp.layout, copies_read=True))})
    c0, c1 = cost_layer(base, tech), cost_layer(voted, tech)
    assert c1.tiles <= c0.tiles  # zero space
    assert c1.conversions > c0.conversions
    assert c1.energy_j["voting"] > 0 and c0.energy_j["voting"] == 0
    assert c1.energy_j["adc"] > c0.energy_j["adc"]
    del LayerPlan


def test_report_json_and_table():
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, adc_bits=5)
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    work, _, _ = _work(cfg, w, np.ones((2, 16), int), TechConfig(), mvms=3)
    rep = cost_layers([work], TechConfig())
    d = json.loads(json.dumps(rep.to_dict()))
    for k in ("energy_j", "latency_s", "area_m2", "tops_per_w", "layers", "components"):
        assert k in d
    assert d["energy_j"] == pytest.approx(sum(d["components"]["energy_j"].values()))
    assert "TOPS/W" in rep.table()


def test_neurram_anchor_within_25_percent():
    """CiMLoop's model of the NeuRRAM macro: TOPS/W at (output, input) bits (4,2), (6,4), (10,8)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_cost_anchors import NEURRAM, neurram_macro
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(0)
    for (bo, bi), ref in NEURRAM.items():
        assert neurram_macro(bo, bi, rng).tops_per_w == pytest.approx(ref, rel=0.25)


def test_cost_model_on_a_tiny_bert(tmp_path):
    from _tiny_bert import write_tiny_classifier
    from nn.cost import cost_model, spare_columns
    from nn.crossbar_linear import patch_model, program_model
    from nn.models import load_classifier
    from nn.sim import build_sim_config

    d = write_tiny_classifier(tmp_path / "m")
    net, tok = load_classifier(d, None)
    cfg = build_sim_config("ideal", ["crossbar.adc_bits=6", "crossbar.tile_rows=32", "crossbar.tile_cols=32"])
    patch_model(net, cfg)
    program_model(net, np.random.default_rng(0))
    enc = tok(["a good film", "a bad one"], padding="max_length", max_length=16, return_tensors="pt")
    rep = cost_model(net, [dict(enc)], TechConfig())
    assert all(l.mvms == 16 for l in rep.layers)  # one MVM per token of the padded sequence
    assert rep.energy_j > 0 and rep.area_m2 > 0 and rep.latency_s > 0
    assert rep.components_energy_j["attention_digital"] > 0
    assert spare_columns(128, 128, 0.0) == 0 and spare_columns(128, 128, 0.01) > 0


def test_weight_duplication_multiplies_area_divides_latency():
    """A layer held d times (NeuroSim's speed-up duplication) reads the same MVMs spread over its
    copies: the same energy, d times the area but the shared activation buffers, latency / d."""
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, bits_per_cell=1, weight_bits=4, adc_bits=4, dac="bit_serial")
    w = torch.randn(20, 50, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    codes = np.random.default_rng(1).integers(-127, 128, size=(6, 50))
    work, _, _ = _work(cfg, w, codes, TechConfig(), mvms=64)
    one = cost_layer(work, TechConfig())
    four = cost_layer(LayerWork(**{**work.__dict__, "duplicates": 4}), TechConfig())
    assert four.energy_j == one.energy_j and four.tiles == 4 * one.tiles
    assert four.latency_s == pytest.approx(one.latency_s / 4)
    for k, v in one.area_m2.items():
        assert four.area_m2[k] == pytest.approx(v if k == "buffers" else 4 * v)
