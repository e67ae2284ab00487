"""Fault-map-aware mapping: re-encoding around stuck cells (exact, checked by brute force) and
placement (never raises the fault cost, never adds a crossbar)."""

import itertools

import numpy as np
import pytest
import torch

from crossbar.engine import CrossbarConfig, program_matrix
from device.faults import FaultConfig
from device.programming import LevelTable
from mapping.faultaware import (
    best_digits,
    code_digits,
    layout_digits,
    place_layer,
    placement_cost,
    readback,
    reencode_cells,
    weight_cells,
)
from mapping.plan import LayerPlan, MappingError, MappingPlan

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is fastest (shared CI cores)


def _pair_cells(bpc: int, S: int):
    """Cell description of a differential pair per slice (slice-major, G+ then G-)."""
    return dict(sign=np.tile([1.0, -1.0], S), weight=2.0 ** (bpc * np.repeat(np.arange(S), 2)),
                group=np.repeat(np.arange(S), 2), max_digit=np.full(2 * S, 2**bpc - 1))


def _plain_digits(q: np.ndarray, bpc: int, S: int) -> np.ndarray:
    d = np.zeros((q.size, 2 * S), np.int64)
    for s in range(S):
        d[:, 2 * s] = (np.maximum(q, 0) >> (bpc * s)) & (2**bpc - 1)
        d[:, 2 * s + 1] = (np.maximum(-q, 0) >> (bpc * s)) & (2**bpc - 1)
    return d


def _brute(d, f, free, cells, lv, sv):
    """(min |error|, fewest changes among those) over every digit assignment of the free healthy cells."""
    K = d.size
    opts = [[d[k]] if (f[k] or not free[k]) else range(cells["max_digit"][k] + 1) for k in range(K)]
    tgt = float((cells["sign"] * cells["weight"] * d).sum())
    best = (np.inf, 0)
    for combo in itertools.product(*opts):
        v = [sv[0] if f[k] == 1 else sv[1] if f[k] == 2 else lv[combo[k]] for k in range(K)]
        e = abs(float(np.dot(cells["sign"] * cells["weight"], v)) - tgt)
        c = sum(1 for k in range(K) if combo[k] != d[k])
        if e < best[0] - 1e-9 or (abs(e - best[0]) <= 1e-9 and c < best[1]):
            best = (e, c)
    return best


def _value(d, f, cells, lv, sv):
    v = np.where(f == 1, sv[0], np.where(f == 2, sv[1], np.asarray(lv)[d]))
    return (v * cells["sign"] * cells["weight"]).sum(-1)


def test_no_faults_keeps_every_digit():
    rng = np.random.default_rng(0)
    for bpc, S in ((1, 7), (2, 4), (3, 3), (4, 2)):
        q = rng.integers(-(2 ** (bpc * S - 1)), 2 ** (bpc * S - 1), 500)
        d = _plain_digits(q, bpc, S)
        new, err = best_digits(d, np.zeros_like(d), **_pair_cells(bpc, S))
        assert torch.equal(new, torch.from_numpy(d)) and float(err.abs().max()) == 0.0


@pytest.mark.parametrize("bpc,S", [(1, 2), (1, 3), (2, 2), (2, 3)])
@pytest.mark.parametrize("levels", ["even", "uneven"])
def test_reencoding_is_optimal_per_weight_by_brute_force(bpc, S, levels):
    rng = np.random.default_rng(bpc * 10 + S)
    L = 2**bpc
    cells = _pair_cells(bpc, S)
    if levels == "even":
        lv, sv = np.arange(L, dtype=float), (0.0, L - 1.0)
    else:  # measured-like: uneven levels, stuck values outside the programmed window
        lv, sv = np.sort(rng.random(L)) * L, (-0.13, 1.07 * L)
    n = 120
    q = rng.integers(-(2 ** (bpc * S)) + 1, 2 ** (bpc * S), n)
    d = _plain_digits(q, bpc, S)
    f = rng.choice(3, size=d.shape, p=[0.6, 0.2, 0.2])
    free = rng.random(d.shape) < 0.85  # some cells pinned (e.g. voted copies)
    new, err = best_digits(d, f, levels=lv, stuck_values=sv, free=free, **cells)
    new = new.numpy()
    tgt = (cells["sign"] * cells["weight"] * d).sum(1)
    y = _value(new, f, cells, lv, sv)
    np.testing.assert_allclose(err.numpy(), y - tgt, atol=1e-9)
    for j in range(n):
        e, c = _brute(d[j], f[j], free[j], cells, lv, sv)
        assert abs(abs(y[j] - tgt[j]) - e) <= 1e-9, (d[j], f[j], new[j])
        assert int(np.sum(new[j] != d[j])) == c
        pinned = (f[j] != 0) | ~free[j]
        assert np.array_equal(new[j][pinned], d[j][pinned])


def test_single_faults_on_8bit_pairs_leave_only_the_msb_overflow():
    # one stuck cell of a 2-bit differential pair: in the three lower slices the partner and the
    # other slices always compensate it exactly; a stuck MSB cell (SA0 on the weight's own
    # polarity, or SA1 on the other: 192 to cancel with the partner at its top level) leaves what
    # the lower slices cannot hold, max(0, |q| - 63) (3 + 12 + 48 = 63)
    q = np.arange(-127, 128)
    cfg = CrossbarConfig(weight_bits=8, bits_per_cell=2)
    d = code_digits(q, cfg)
    wc = weight_cells(LayerPlan.build("x", 4, 4, cfg).layout, cfg, 4, 4)
    kw = dict(sign=wc.sign, weight=wc.weight, group=wc.group, max_digit=wc.max_digit)
    over = np.maximum(0, np.abs(q) - 63)
    for k in range(d.shape[1]):
        for kind in (1, 2):
            f = np.zeros_like(d)
            f[:, k] = kind
            _, err = best_digits(d, f, **kw)
            if k < 6:
                expect = np.zeros(q.size)
            else:  # k = 6: G+ MSB, k = 7: G- MSB; SA0 hurts its own sign, SA1 the other
                hurt = (q > 0) if (k == 6) == (kind == 1) else (q < 0)
                expect = np.where(hurt, over, 0)
            np.testing.assert_array_equal(np.abs(err.numpy()), expect, err_msg=f"cell {k} fault {kind}")
    # keeping the partial MSB slice to its one bit: an SA1 in the G- MSB cell of q = 127 leaves
    # 127 - 192 = -65 (G+ at most 127) instead of 255 - 192 = 63 with the cell's top level
    wc2 = weight_cells(LayerPlan.build("x", 4, 4, cfg).layout, cfg, 4, 4, full_levels=False)
    f = np.zeros((1, 8), np.int64)
    f[0, 7] = 2
    _, err = best_digits(code_digits([127], cfg), f, sign=wc2.sign, weight=wc2.weight, group=wc2.group,
                         max_digit=wc2.max_digit)
    assert float(err[0]) == -65 - 127
    _, err = best_digits(code_digits([127], cfg), f, **kw)
    assert float(err[0]) == 63 - 127


@pytest.mark.parametrize("mapping", ["differential", "offset"])
def test_layer_reencoding_matches_engine_cells_and_never_hurts(mapping):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, mapping=mapping)
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(0)) * 0.1
    pm = program_matrix(w, cfg, None, FaultConfig(rate=0.03), np.random.default_rng(1), keep_conductances=True)
    q = pm.qweight.q.numpy().astype(np.int64)
    dig = layout_digits(q, pm.layout, cfg)
    assert np.array_equal(dig, pm.kept.levels)  # the same cell encoding as the engine
    fm = pm.kept.faults
    assert np.array_equal(readback(dig, np.zeros_like(fm), pm.layout, cfg, 40, 70), q)
    unchanged, _ = reencode_cells(dig, np.zeros_like(fm), pm.layout, cfg, 40, 70)
    assert np.array_equal(unchanged, dig)
    new, st = reencode_cells(dig, fm, pm.layout, cfg, 40, 70)
    e0 = np.abs(readback(dig, fm, pm.layout, cfg, 40, 70) - q)
    e1 = np.abs(readback(new, fm, pm.layout, cfg, 40, 70) - q)
    assert np.all(e1 <= e0) and e1.sum() < 0.5 * e0.sum()
    assert st["sse_after"] == pytest.approx(float((e1**2).sum())) and st["sse_before"] == pytest.approx(float((e0**2).sum()))
    assert np.array_equal(new[fm != 0], dig[fm != 0])  # stuck cells keep their written digit


def test_stuck_values_from_a_level_table():
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16)
    lv = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=0.0, rng=np.random.default_rng(0))
    import dataclasses

    high = dataclasses.replace(lv, g_sa1_s=float(lv.g_target_s[-1]) + 0.5 * (lv.g_target_s[1] - lv.g_target_s[0]))
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(3)) * 0.1
    pm = program_matrix(w, cfg, lv, FaultConfig(rate=0.05, sa0_fraction=0.0), np.random.default_rng(2), keep_conductances=True)
    dig, fm = pm.kept.levels, pm.kept.faults
    y = readback(dig, fm, pm.layout, cfg, 8, 16, levels=high)
    # an SA1 cell reads 3.5 level steps: read-backs are off the integer grid where faults hit
    assert np.any(np.abs(y - np.round(y)) == 0.5)


@pytest.mark.parametrize("reencode", [False, True])
@pytest.mark.parametrize("mapping", ["differential", "offset"])
def test_placement_never_raises_the_fault_cost_and_adds_no_crossbar(reencode, mapping):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, mapping=mapping)
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(0)) * 0.1
    for seed, rate in ((1, 0.03), (2, 0.0), (3, 0.002)):
        pm = program_matrix(w, cfg, None, FaultConfig(rate=rate), np.random.default_rng(seed), keep_conductances=True)
        fm = pm.kept.faults
        lay, rep = place_layer(pm.qweight, pm.layout, cfg, fm, reencode=reencode)
        lay.validate(40, 70, cfg)
        assert lay.n_tiles == pm.layout.n_tiles
        c0 = placement_cost(pm.qweight, pm.layout, cfg, fm, reencode=reencode)
        c1 = placement_cost(pm.qweight, lay, cfg, fm, reencode=reencode)
        assert rep.cost_before == pytest.approx(c0) and rep.cost_after == pytest.approx(c1)
        assert c1 <= c0
        if rate >= 0.03:
            assert c1 < c0
        # the same weights are programmed: a plan with this layout uses no extra crossbar
        base = MappingPlan.from_shapes({"x": (40, 70)}, cfg)
        placed = MappingPlan(cfg, {"x": LayerPlan(name="x", out_features=40, in_features=70, cfg=cfg, layout=lay)})
        placed.check_no_extra_crossbars(base)
        pm2 = program_matrix(w, cfg, None, None, np.random.default_rng(0), layout=lay)
        x = torch.randn(5, 70, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(pm2.matvec(x), program_matrix(w, cfg, None, None, np.random.default_rng(0)).matvec(x))


def test_placement_uses_pruned_lines_for_the_worst_faults():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32)
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(0)) * 0.1
    w[:, :10] = 0  # 60 inputs on 64 word lines: 4 free rows
    w[:4] = 0
    lp = LayerPlan.build("x", 40, 70, cfg, keep_in=np.arange(10, 70), keep_out=np.arange(4, 40))
    pm = program_matrix(w, cfg, None, FaultConfig(rate=0.05), np.random.default_rng(5), layout=lp.layout,
                        keep_conductances=True)
    lay, rep = place_layer(pm.qweight, pm.layout, cfg, pm.kept.faults)
    assert rep.cost_after < rep.cost_before
    assert set(lay.row_in[lay.row_in >= 0].tolist()) == set(range(10, 70))
    lay.validate(40, 70, cfg)
    # the rows left free hold more faults than the average row
    fm = pm.kept.faults.reshape(lay.n_row_blocks, lay.n_col_blocks, 32, 32)
    per_row = (fm != 0).sum(axis=(1, 3))  # (R, rows)
    assert per_row[lay.row_in < 0].mean() > per_row[lay.row_in >= 0].mean()


def test_placement_refuses_per_tile_formats():
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16, weight_granularity="tile")
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    pm = program_matrix(w, cfg, None, FaultConfig(rate=0.05), np.random.default_rng(0), keep_conductances=True)
    with pytest.raises(MappingError, match="layer-wide"):
        place_layer(pm.qweight, pm.layout, cfg, pm.kept.faults)


def _ideal_levels(bpc: int = 2) -> LevelTable:
    return LevelTable.synthetic(bits_per_cell=bpc, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=0.0,
                                rng=np.random.default_rng(0))


@pytest.mark.parametrize("mapping", ["differential", "offset"])
def test_engine_hook_programs_the_reencoded_digits(mapping):
    """Through the engine's encode step (noiseless levels, ideal ADC, no IR drop), the effective
    weights of the chip are exactly the re-encoded read-back times the weight step; the same seed
    gives the same stuck cells with and without the hook."""
    from mapping.faultaware import FaultAwareEncoder

    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, mapping=mapping)
    lv = _ideal_levels()
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(0)) * 0.1
    fc = FaultConfig(rate=0.03)
    plain = program_matrix(w, cfg, lv, fc, np.random.default_rng(4), keep_conductances=True, dtype=torch.float64)
    enc = FaultAwareEncoder()
    pm = program_matrix(w, cfg, lv, fc, np.random.default_rng(4), keep_conductances=True, dtype=torch.float64,
                        encoder=enc)
    assert np.array_equal(pm.kept.faults, plain.kept.faults)
    q = pm.qweight.q.numpy().astype(np.int64)
    step = float(pm.qweight.scale())
    expect, st = reencode_cells(plain.kept.levels, plain.kept.faults, pm.layout, cfg, 40, 70, levels=lv)
    assert np.array_equal(pm.kept.levels, expect) and enc.stats == st
    y = readback(pm.kept.levels, pm.kept.faults, pm.layout, cfg, 40, 70, levels=lv)
    np.testing.assert_allclose(pm.readout.numpy(), y * step, rtol=0, atol=1e-9 * step)
    y0 = readback(plain.kept.levels, plain.kept.faults, pm.layout, cfg, 40, 70, levels=lv)
    np.testing.assert_allclose(plain.readout.numpy(), y0 * step, rtol=0, atol=1e-9 * step)
    assert np.abs(y - q).sum() < 0.5 * np.abs(y0 - q).sum()


def test_mapper_places_the_same_chip_and_is_a_function_of_the_seed():
    from mapping.faultaware import FaultAwareConfig, FaultAwareMapper

    cfg = CrossbarConfig(tile_rows=32, tile_cols=32)
    lv = _ideal_levels()
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(0)) * 0.1
    fc = FaultConfig(rate=0.03)
    mapper = FaultAwareMapper(FaultAwareConfig(reencode=True, placement=True))
    plain = program_matrix(w, cfg, lv, fc, np.random.default_rng(7), dtype=torch.float64, keep_conductances=True)
    pm = mapper(plain)
    assert mapper.report.cost_after <= mapper.report.cost_before
    st = pm.tile_state()
    assert np.array_equal(st.faults, plain.kept.faults)  # the same stuck cells, another layout
    q = pm.qweight.q.numpy().astype(np.int64)
    y = readback(st.levels, st.faults, pm.layout, cfg, 40, 70, levels=lv)
    step = float(pm.qweight.scale())
    np.testing.assert_allclose(pm.readout.numpy(), y * step, rtol=0, atol=1e-9 * step)
    assert ((y - q) ** 2).sum() == pytest.approx(mapper.report.cost_after)
    # from a chip programmed with another layout before: the same result (starts from the plan)
    again = mapper(dataclasses_replace(pm, seed=plain.seed))
    assert np.array_equal(again.layout.row_in, pm.layout.row_in) and torch.equal(again.readout, pm.readout)


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_sim_config_reaches_fault_aware_mapping_on_tiny_bert(tmp_path, one_thread):
    """``--set faultaware.reencode=true`` reaches every layer: the simulated logits move towards
    the digital ones (3 chips, 3 % stuck cells), and a chip is the same after other chips."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_bert import write_tiny_classifier

    from device.config import apply_overrides
    from nn.crossbar_linear import patch_model, program_model, reprogram_model, set_simulated, unpatch_model
    from nn.models import load_classifier
    from nn.sim import SimConfig

    d = write_tiny_classifier(tmp_path / "m")
    model, _ = load_classifier(d, None, task="sst2", require_finetuned=False)
    model.eval()
    ids = torch.tensor([[2, 5, 6, 16, 3, 0], [2, 7, 8, 9, 3, 0]])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    base = SimConfig.from_dict({"crossbar": {"tile_rows": 16, "tile_cols": 32}, "levels": {"source": "synthetic"},
                                "faults": {"rate": 0.03}})
    err = {}
    for name, ov in (("plain", []), ("reencode", ["faultaware.reencode=true"]),
                     ("both", ["faultaware.reencode=true", "faultaware.placement=true"])):
        patch_model(model, apply_overrides(base, ov))
        e = []
        for t in range(3):
            program_model(model, np.random.default_rng([0, t]))
            set_simulated(model, True)
            with torch.no_grad():
                e.append(float((model(input_ids=ids).logits - ref).norm() / ref.norm()))
            set_simulated(model, False)
        reprogram_model(model, np.random.default_rng([0, 1]))
        set_simulated(model, True)
        with torch.no_grad():
            y_re = model(input_ids=ids).logits
        unpatch_model(model)
        patch_model(model, apply_overrides(base, ov))
        program_model(model, np.random.default_rng([0, 1]))
        set_simulated(model, True)
        with torch.no_grad():
            assert torch.equal(model(input_ids=ids).logits, y_re)
        unpatch_model(model)
        err[name] = float(np.mean(e))
    assert err["reencode"] < 0.6 * err["plain"] and err["both"] < 0.6 * err["plain"], err


def test_cli_mvm_fault_aware_json(capsys):
    """`crossbar mvm --fault-aware --json`: one JSON object; at 1 % stuck cells (SA0:SA1 = 1:1)
    the fault-aware mapping brings the error back near the fault-free rows' (measured: 122 % ->
    3.4 % at 128x256; quantization alone 2.0 %)."""
    import json

    from cli.main import main

    argv = ["crossbar", "mvm", "--rows", "96", "--cols", "48", "--tile", "32", "32", "--fault-rate", "0.01",
            "--set", "levels.source=synthetic", "--json"]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(argv + ["--fault-aware"]) == 0
    fa = json.loads(capsys.readouterr().out)
    assert [s["effects"][:12] for s in fa["steps"]] == ["quantization", "+ stuck-at f", "+ fault-awar"]
    assert plain["rel_error"] == plain["steps"][-1]["rel_error"] and fa["sa1_cells"] == plain["sa1_cells"] > 0
    q = fa["steps"][0]["rel_error"]
    assert plain["rel_error"] > 10 * q and fa["rel_error"] < 3 * q


# --------------------------------------------------------------------------------------------
# weighted placement (faultaware.placement_weighting; weights from nn.sensitivity)


def _residual2(pm, lay, fm, cfg):
    """``(out, in)`` squared residual of every weight, re-encoded on ``lay`` (cell by cell)."""
    out_f, in_f = pm.qweight.q.shape
    qq = pm.qweight.q.numpy().astype(np.int64)
    d, _ = reencode_cells(layout_digits(qq, lay, cfg), fm, lay, cfg, out_f, in_f)
    return (readback(d, fm, lay, cfg, out_f, in_f) - qq) ** 2


def test_weighted_placement_moves_faults_off_the_line_that_matters():
    """At 15 % stuck cells the residual cannot go to zero everywhere. With the cost's weight
    concentrated on one output (one input), placement clears that output (input) of every residual
    error, which the unweighted placement does not; the weighted cost never rises, and the report
    matches the cell-by-cell cost with the same weights."""
    from mapping.faultaware import ResidualTable

    cfg = CrossbarConfig(tile_rows=32, tile_cols=32)
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(0)) * 0.1
    pm = program_matrix(w, cfg, None, FaultConfig(rate=0.15), np.random.default_rng(4), keep_conductances=True)
    fm = pm.kept.faults
    table = ResidualTable(cfg, weight_cells(pm.layout, cfg, 40, 70), np.arange(4.0), (0.0, 3.0), True)
    r0 = _residual2(pm, pm.layout, fm, cfg)
    k, j = int(np.argmax(r0.sum(1))), int(np.argmax(r0.sum(0)))
    s = np.ones(40)
    s[k] = 1e4
    a = np.ones(70)
    a[j] = 1e4
    lay_u, _ = place_layer(pm.qweight, pm.layout, cfg, fm, residuals=table)
    ru = _residual2(pm, lay_u, fm, cfg)
    # the unweighted optimum leaves residual errors on output k and input j
    assert ru[k].sum() > 0 and ru[:, j].sum() > 0
    lay_s, rep_s = place_layer(pm.qweight, pm.layout, cfg, fm, out_weight=s, residuals=table)
    assert _residual2(pm, lay_s, fm, cfg)[k].sum() == 0
    lay_a, rep_a = place_layer(pm.qweight, pm.layout, cfg, fm, in_weight=a, residuals=table)
    assert _residual2(pm, lay_a, fm, cfg)[:, j].sum() == 0
    for lay, rep, kw in ((lay_s, rep_s, {"out_weight": s}), (lay_a, rep_a, {"in_weight": a})):
        assert rep.cost_after < rep.cost_before
        assert rep.cost_before == pytest.approx(placement_cost(pm.qweight, pm.layout, cfg, fm, **kw))
        assert rep.cost_after == pytest.approx(placement_cost(pm.qweight, lay, cfg, fm, **kw))
        assert lay.n_tiles == pm.layout.n_tiles
        lay.validate(40, 70, cfg)


@pytest.mark.parametrize("rate", [0.0, 0.002, 0.05])
def test_weighted_placement_never_raises_its_cost_and_is_deterministic(rate):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32)
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(2)) * 0.1
    g = np.random.default_rng(9)
    a, s = g.lognormal(0, 2, 70), g.lognormal(0, 2, 40)  # heavy-tailed, as activations and gradients are
    pm = program_matrix(w, cfg, None, FaultConfig(rate=rate), np.random.default_rng(3), keep_conductances=True)
    fm = pm.kept.faults
    lay, rep = place_layer(pm.qweight, pm.layout, cfg, fm, in_weight=a, out_weight=s, rounds=4)
    c0 = placement_cost(pm.qweight, pm.layout, cfg, fm, in_weight=a, out_weight=s)
    c1 = placement_cost(pm.qweight, lay, cfg, fm, in_weight=a, out_weight=s)
    assert c1 <= c0 and rep.cost_after == pytest.approx(c1) and rep.cost_before == pytest.approx(c0)
    base = MappingPlan.from_shapes({"x": (40, 70)}, cfg)
    placed = MappingPlan(cfg, {"x": LayerPlan(name="x", out_features=40, in_features=70, cfg=cfg, layout=lay)})
    placed.check_no_extra_crossbars(base)
    again, _ = place_layer(pm.qweight, pm.layout, cfg, fm, in_weight=a, out_weight=s, rounds=4)
    assert np.array_equal(again.row_in, lay.row_in) and np.array_equal(again.col_out, lay.col_out)


def test_placement_weights_are_checked():
    from mapping.faultaware import FaultAwareConfig, FaultAwareMapper

    cfg = CrossbarConfig(tile_rows=16, tile_cols=16)
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    pm = program_matrix(w, cfg, None, FaultConfig(rate=0.05), np.random.default_rng(0), keep_conductances=True)
    with pytest.raises(MappingError, match="in_weight"):
        place_layer(pm.qweight, pm.layout, cfg, pm.kept.faults, in_weight=np.ones(15))
    with pytest.raises(MappingError, match="out_weight"):
        place_layer(pm.qweight, pm.layout, cfg, pm.kept.faults, out_weight=-np.ones(8))
    from device.config import ConfigError

    with pytest.raises(ConfigError, match="placement_weighting"):
        FaultAwareConfig(placement=True, placement_weighting="gradient")
    # a weighting that was asked for is never silently dropped
    fa = FaultAwareConfig(reencode=True, placement=True, placement_weighting="fisher")
    with pytest.raises(MappingError, match="out_weight"):
        FaultAwareMapper(fa, in_weight=np.ones(16))(pm)


def test_weighted_mapper_is_a_function_of_the_seed():
    from mapping.faultaware import FaultAwareConfig, FaultAwareMapper

    cfg = CrossbarConfig(tile_rows=32, tile_cols=32)
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(0)) * 0.1
    g = np.random.default_rng(1)
    fa = FaultAwareConfig(reencode=True, placement=True, placement_weighting="fisher")
    kw = dict(in_weight=g.lognormal(0, 1, 70), out_weight=g.lognormal(0, 1, 40))
    pms = [FaultAwareMapper(fa, **kw)(program_matrix(w, cfg, _ideal_levels(), FaultConfig(rate=0.15),
                                                     np.random.default_rng(7), dtype=torch.float64))
           for _ in range(2)]
    assert np.array_equal(pms[0].layout.row_in, pms[1].layout.row_in) and torch.equal(pms[0].readout, pms[1].readout)
    unweighted = FaultAwareMapper(FaultAwareConfig(reencode=True, placement=True))(
        program_matrix(w, cfg, _ideal_levels(), FaultConfig(rate=0.15), np.random.default_rng(7), dtype=torch.float64))
    # the weights change the placement
    assert not (np.array_equal(unweighted.layout.row_in, pms[0].layout.row_in)
                and np.array_equal(unweighted.layout.col_out, pms[0].layout.col_out))


def test_layer_sensitivity_is_the_expected_fisher_and_the_input_second_moment(tmp_path, one_thread):
    """nn.sensitivity against brute force on a tiny BERT: ``in_sq`` is the mean square input over
    the non-padded tokens, ``out_fisher`` the mean over those tokens of ``sum_c p_c (d(-log p_c) /
    dy_o)**2``, computed here one example and one class at a time with autograd."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_bert import write_tiny_classifier

    from nn.crossbar_linear import crossbar_modules, patch_model
    from nn.models import load_classifier
    from nn.sensitivity import layer_sensitivity
    from nn.sim import SimConfig

    model, _ = load_classifier(write_tiny_classifier(tmp_path / "m"), None, task="sst2", require_finetuned=False)
    patch_model(model, SimConfig())
    ids = torch.tensor([[2, 5, 6, 16, 3, 0, 0], [2, 7, 8, 9, 17, 18, 3], [2, 10, 3, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    sens = layer_sensitivity(model, [{"input_ids": ids[:2], "attention_mask": mask[:2], "labels": torch.tensor([0, 1])},
                                     {"input_ids": ids[2:], "attention_mask": mask[2:]}])
    name = "bert.encoder.layer.1.intermediate.dense"
    mod = crossbar_modules(model)[name]
    got = {}
    h = mod.register_forward_hook(lambda m, i, o: got.update(x=i[0], y=o))
    x2, f2, n = 0.0, 0.0, 0
    for b in range(3):
        L = int(mask[b].sum())
        logits = model(input_ids=ids[b:b + 1, :L]).logits[0]
        x = got["x"][0].detach().double()
        x2 = x2 + (x**2).sum(0)
        p = logits.softmax(-1).detach().double()
        for c in range(2):
            logits = model(input_ids=ids[b:b + 1, :L]).logits[0]
            (g,) = torch.autograd.grad(-logits.log_softmax(-1)[c], got["y"])
            f2 = f2 + p[c] * (g[0].double() ** 2).sum(0)
        n += L
    h.remove()
    assert sens[name].tokens == n == 15
    np.testing.assert_allclose(sens[name].in_sq, (x2 / n).numpy(), rtol=1e-5)
    np.testing.assert_allclose(sens[name].out_fisher, (f2 / n).numpy(), rtol=1e-4, atol=1e-12)
    assert model.training is False and all(p.grad is None for p in model.parameters())


def test_attach_placement_weights_gives_each_layer_its_mapper(tmp_path, one_thread):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_bert import write_tiny_classifier

    from device.config import apply_overrides
    from mapping.faultaware import FaultAwareMapper
    from nn.crossbar_linear import crossbar_modules, patch_model, program_model, unpatch_model
    from nn.models import load_classifier
    from nn.sensitivity import attach_placement_weights
    from nn.sim import SimConfig

    model, _ = load_classifier(write_tiny_classifier(tmp_path / "m"), None, task="sst2", require_finetuned=False)
    ids = torch.tensor([[2, 5, 6, 16, 3, 0], [2, 7, 8, 9, 3, 0]])
    calls = []

    def batches():
        calls.append(1)
        return [{"input_ids": ids, "attention_mask": (ids != 0).long()}]

    base = SimConfig.from_dict({"crossbar": {"tile_rows": 16, "tile_cols": 32}, "levels": {"source": "synthetic"},
                                "faults": {"rate": 0.05}})
    cfg = apply_overrides(base, ["faultaware.reencode=true", "faultaware.placement=true",
                                 "faultaware.placement_weighting=fisher"])
    mods = patch_model(model, cfg)
    with pytest.raises(MappingError, match="placement_weighting"):  # asked for, not supplied
        program_model(model, np.random.default_rng(0))
    for m in mods.values():
        m.remap = None
    sens = attach_placement_weights(model, cfg, batches)
    assert set(sens) == set(mods) and calls == [1]
    for n, m in mods.items():
        assert isinstance(m.remap, FaultAwareMapper)
        assert m.remap.in_weight.mean() == pytest.approx(1) and m.remap.out_weight.mean() == pytest.approx(1)
        assert np.all(m.remap.out_weight >= 0) and m.remap.out_weight.std() > 0
    program_model(model, np.random.default_rng(0))
    reports = [m.remap.report for m in crossbar_modules(model).values()]
    assert all(r.cost_after <= r.cost_before for r in reports) and any(r.cost_after < r.cost_before for r in reports)
    unpatch_model(model)
    patch_model(model, cfg)
    attach_placement_weights(model, cfg, batches)
    assert calls == [1]  # the same weights: estimated once per model
    unpatch_model(model)
    plain = apply_overrides(base, ["faultaware.reencode=true", "faultaware.placement=true"])
    patch_model(model, plain)
    assert attach_placement_weights(model, plain, batches) == {}
    unpatch_model(model)


def test_layer_inputs_are_each_sentences_own_real_tokens(tmp_path, one_thread):
    """nn.sensitivity.layer_inputs (the examples' activation capture) against each sentence run
    alone, unpadded: the same rows in row order, padding dropped, across batch boundaries."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_bert import write_glue, write_tiny_classifier

    from nn.glue import load_split, tokenize
    from nn.models import load_classifier
    from nn.sensitivity import layer_inputs

    model, tok = load_classifier(write_tiny_classifier(tmp_path / "m"), None, task="sst2", require_finetuned=False)
    enc = tokenize(load_split("sst2", "dev", write_glue(tmp_path / "glue")), tok, 32)
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.output.dense"]
    got = layer_inputs(model, enc, names, 5, batch_size=2)
    assert any(not enc.batch(np.arange(s, min(s + 2, 5)))["attention_mask"].all() for s in (0, 2))  # padding to drop
    mods = dict(model.named_modules())
    want: dict[str, list] = {n: [] for n in names}
    hs = [mods[n].register_forward_hook(lambda m, i, o, n=n: want[n].append(i[0][0].detach())) for n in names]
    with torch.no_grad():
        for r in range(5):
            b = enc.batch(np.arange(r, r + 1))
            L = int(b["attention_mask"].sum())
            model(input_ids=b["input_ids"][:, :L], attention_mask=b["attention_mask"][:, :L])
    for h in hs:
        h.remove()
    for n in names:
        ref = torch.cat(want[n])
        assert got[n].shape == ref.shape and ref.shape[0] == int(sum(enc.batch(np.arange(5))["attention_mask"].sum(1)))
        torch.testing.assert_close(got[n], ref, rtol=1e-5, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())
