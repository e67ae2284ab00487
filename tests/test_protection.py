"""Zero-space fault protection: pruning + packing, duplication with voting, embedded MSB copies."""

import numpy as np
import pytest
import torch

import device.faults as faults_mod
from crossbar.engine import NEG, POS, CrossbarConfig, default_levels, program_matrix
from device.faults import Fault, FaultConfig
from mapping.protection import (
    ProtectionConfig,
    ProtectionError,
    build_protection,
    embed_msb,
    protect_matrix,
    protected_plan,
    vote,
)
from nn.pruning import RowColMask


#: one BERT-base encoder block (out, in) and a MiniLM one
BERT_BASE = {
    "attention.self.query": (768, 768), "attention.self.key": (768, 768), "attention.self.value": (768, 768),
    "attention.output.dense": (768, 768), "intermediate.dense": (3072, 768), "output.dense": (768, 3072),
}
MINILM = {"query": (384, 384), "intermediate": (1536, 384), "output": (384, 1536)}

#: column-scope ADC whose step is exactly one level step (2**16 - 1 >= 128 rows x 3 x 127): every
#: value in the read is an integer times a power of two, so float64 sums are exact
EXACT_ADC = dict(adc_bits=17, adc_scope="column")


def random_masks(shapes, sparsity, rows_share=0.5, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for n, (o, i) in shapes.items():
        k = round(sparsity * (o + i))
        kr = round(k * rows_share)
        rows = np.ones(i, bool)
        cols = np.ones(o, bool)
        rows[rng.choice(i, kr, replace=False)] = False
        cols[rng.choice(o, k - kr, replace=False)] = False
        out[n] = RowColMask(torch.from_numpy(rows), torch.from_numpy(cols))
    return out


def laplace_weights(o, i, seed=0, masks=None):
    w = torch.from_numpy(np.random.default_rng(seed).laplace(0.0, 0.02, (o, i)))
    if masks is not None:
        w = w * masks.weight_mask()
    return w


def inputs(n, i, seed=1):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, i)))


# ---- zero space, proven ------------------------------------------------------------------------


@pytest.mark.parametrize("prot", [
    ProtectionConfig(prune=True),
    ProtectionConfig(prune=True, duplicate=True),
    ProtectionConfig(prune=True, duplicate=True, n_copies=1, duplicate_slices=2, vote="reject_outlier"),
    ProtectionConfig(prune=True, duplicate=True, msb_embed=True, regrid=True),
    ProtectionConfig(msb_embed=True, msb_copies=2),
], ids=["prune", "prune+dup", "prune+dup2", "prune+dup+msb+regrid", "msb2"])
@pytest.mark.parametrize("shapes", [BERT_BASE, MINILM], ids=["bert-base", "minilm"])
def test_protected_plan_uses_no_more_crossbars_per_layer(prot, shapes):
    cfg = CrossbarConfig()  # 128x128 tiles, 8-bit weights on 2-bit cells, differential: 8 cells/weight
    masks = random_masks(shapes, 0.3) if prot.prune else None
    pp = build_protection(shapes, cfg, masks, prot)
    for name, (base_tiles, prot_tiles) in pp.crossbar_counts().items():
        assert prot_tiles <= base_tiles, name
        r = pp.reports[name]
        assert (r.tiles_unprotected, r.tiles_protected) == (base_tiles, prot_tiles)
        assert r.copies_placed <= r.copies_requested
        lay = pp.plan[name].layout
        assert lay.n_tiles == prot_tiles
        lay.validate(*shapes[name], cfg)  # every kept digit once, copies marked
        # copies sit only in this layer's tiles, G+ and G- of a copy in one column block
        cp = lay.col_copy
        assert np.sum(cp & (lay.col_role == POS)) == np.sum(cp & (lay.col_role == NEG)) == r.copies_placed
    pp.check()
    assert pp.plan.crossbar_count() <= pp.baseline.crossbar_count()
    s = pp.summary()
    assert "no extra crossbars" in s and all(n in s for n in shapes)
    if prot.duplicate:
        assert sum(r.copies_placed for r in pp.reports.values()) > 0
    # the plan-only entry point gives the same plan
    assert protected_plan(shapes, cfg, masks, prot).crossbar_count() == pp.plan.crossbar_count()


def test_regrid_trades_freed_row_blocks_for_column_blocks():
    cfg = CrossbarConfig()
    shapes = {"q": (768, 768)}
    masks = random_masks(shapes, 0.3, rows_share=0.7)  # 323 inputs pruned: 445 left -> 4 row blocks of 6
    same = build_protection(shapes, cfg, masks, ProtectionConfig(prune=True, duplicate=True)).reports["q"]
    re = build_protection(shapes, cfg, masks, ProtectionConfig(prune=True, duplicate=True, regrid=True)).reports["q"]
    assert same.grid_protected == (4, 48) and re.grid_protected == (4, 72)
    assert re.tiles_protected <= re.tiles_unprotected == 288
    assert re.copies_placed > same.copies_placed


# ---- no faults: protection changes nothing (duplication) or is the re-quantized matmul (MSB) ------


def _program(w, cfg, lay, faults=None, seed=0):
    return program_matrix(w, cfg, default_levels(cfg.bits_per_cell), faults, np.random.default_rng(seed), layout=lay,
                          dtype=torch.float64)


@pytest.mark.parametrize("adc", [EXACT_ADC, dict(adc_bits=None)], ids=["column-adc", "ideal-adc"])
@pytest.mark.parametrize("dac", ["multi_bit", "bit_serial"])
def test_duplication_without_faults_is_the_unprotected_read(adc, dac):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, dac=dac, **adc)
    shapes = {"fc": (40, 70)}
    masks = random_masks(shapes, 0.3, rows_share=0.3)
    w = laplace_weights(40, 70, masks=masks["fc"])
    x = inputs(9, 70)
    for prot in (ProtectionConfig(prune=True, duplicate=True),
                 ProtectionConfig(prune=True, duplicate=True, n_copies=1, vote="reject_outlier", duplicate_slices=2),
                 ProtectionConfig(prune=True, duplicate=True, vote="fault_aware")):
        pp = build_protection(shapes, cfg, masks, prot, weights={"fc": w})
        assert pp.reports["fc"].copies_placed > 0
        pm = _program(w, cfg, pp.plan["fc"].layout)
        P = protect_matrix(pm, prot)
        assert P.n_voted_columns > 0
        y, y0 = P.matvec(x), pm.matvec(x)
        if adc["adc_bits"] is None:
            torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
        else:
            assert torch.equal(y, y0)  # bit-exact


@pytest.mark.parametrize("copies", [1, 2])
def test_msb_embed_without_faults_is_the_integer_matmul_of_requantized_weights(copies):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, input_format="static", input_frac_bits=4, **EXACT_ADC)
    w = laplace_weights(24, 50, seed=3)
    x = inputs(7, 50)
    prot = ProtectionConfig(msb_embed=True, msb_copies=copies)
    pp = build_protection({"fc": (24, 50)}, cfg, None, prot)
    assert pp.reports["fc"].weight_bits == 8 - 2 * copies
    pm = _program(w, cfg, pp.plan["fc"].layout)
    P = protect_matrix(pm, prot)
    q = P.represented.q.to(torch.int64)
    b = 2 * copies
    assert torch.all(q % (1 << b) == 0)  # dropped low bits are zero
    assert torch.all((q - pm.qweight.q.to(torch.int64)).abs() <= (1 << (b - 1)))  # rounded to nearest
    xq = torch.clamp(torch.round(x * 16), -127, 127).to(torch.int64)  # static inputs, 4 fraction bits
    y_int = (xq @ q.T).double() * (1 / 16) * float(pm.qweight.scale())
    assert torch.equal(P.matvec(x), y_int)


def test_embed_msb_bit_layout():
    cfg = CrossbarConfig()  # 7 magnitude bits in slices (2, 2, 2, 1), LSB first
    from crossbar.quant import QTensor

    qt = QTensor(q=torch.tensor([[127, -70, 5, 64, -2, 0]], dtype=torch.int8), frac_bits=torch.tensor(6), bits=8)
    stored, kept = embed_msb(qt, cfg, 1)
    # magnitude rounded to a multiple of 4 (127 -> 124 clamped), MSB bit m6 copied into slice 0 (bits 0-1)
    assert kept.q.tolist() == [[124, -72, 4, 64, -4, 0]]
    assert stored.q.tolist() == [[125, -73, 4, 65, -4, 0]]
    stored2, kept2 = embed_msb(qt, cfg, 2)
    assert kept2.q.tolist() == [[112, -64, 0, 64, 0, 0]]
    assert stored2.q.tolist() == [[117, -69, 0, 69, 0, 0]]  # m6 also in slice 1 (bit 2)


# ---- a single hand-placed SA1 in an MSB cell is corrected exactly ---------------------------------


def _inject(monkeypatch, cells):
    """Make the engine's fault draw return a hand-built map with SA1 at ``cells`` [(tile, row, col)]."""

    def fake(shape, cfg, rng):
        fm = np.zeros(shape, np.int8)
        for t, r, c in cells:
            fm[t, r, c] = Fault.SA1
        return fm

    monkeypatch.setattr(faults_mod, "sample_fault_map", fake)


def _msb_cell(lay, cfg, q, out_zero_msb=True, copy=False):
    """(tile, row, col) of a G+ MSB cell of an output whose MSB digits are all 0 in row block 0
    (so the fault-free MSB partial sum is 0 there and an SA1 adds 3 x_i)."""
    top = cfg.n_slices - 1
    msb = (q.abs() >> (top * cfg.bits_per_cell)).numpy()
    rows0 = lay.row_in[0]
    for o in range(q.shape[0]):
        hit = np.argwhere((lay.col_out == o) & (lay.col_slice == top) & (lay.col_role == POS) & (lay.col_copy == copy))
        if hit.size == 0:
            continue
        if out_zero_msb and np.any(msb[o, rows0[rows0 >= 0]] != 0):
            continue
        c, j = hit[0]
        i = int(np.flatnonzero(rows0 >= 0)[3])
        return o, (lay.tile_index(0, int(c)), i, int(j))
    raise AssertionError("no suitable output")


@pytest.mark.parametrize("where", ["original", "copy"])
@pytest.mark.parametrize("vote_rule", ["median", "fault_aware"])
def test_single_sa1_in_msb_is_corrected_by_median_of_three(monkeypatch, where, vote_rule):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, **EXACT_ADC)
    shapes = {"fc": (40, 64)}
    masks = random_masks(shapes, 0.155, rows_share=0.0)  # 16 of 40 outputs pruned: 4 free column blocks
    w = laplace_weights(40, 64, masks=masks["fc"])
    prot = ProtectionConfig(prune=True, duplicate=True, vote=vote_rule)
    pp = build_protection(shapes, cfg, masks, prot, weights={"fc": w})
    lay = pp.plan["fc"].layout
    x = inputs(5, 64)
    clean = _program(w, cfg, lay)
    q = clean.qweight.q.to(torch.int64)
    o, cell = _msb_cell(lay, cfg, q, copy=(where == "copy"))
    if where == "original":  # the output must be duplicated for the vote
        assert any(c.source[0] == o for c in pp.plan["fc"].copies)
    _inject(monkeypatch, [cell])
    faulty = _program(w, cfg, lay, FaultConfig(rate=1e-3))
    assert faulty.fault_counts[:, 2].sum() == 1
    y_ref = clean.matvec(x)
    if where == "original":
        err = (faulty.matvec(x) - y_ref)[:, o]  # unprotected read: 3 * 2^6 LSB x the input on that row
        assert float(err.abs().max()) > 0
    y = protect_matrix(faulty, prot).matvec(x)
    assert torch.equal(y, y_ref)


@pytest.mark.parametrize("copies,where", [(1, "msb"), (1, "copy"), (2, "msb"), (2, "copy")])
def test_single_sa1_in_msb_is_corrected_by_msb_embed_decoding(monkeypatch, copies, where):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, **EXACT_ADC)
    w = laplace_weights(24, 50, seed=5)
    prot = ProtectionConfig(msb_embed=True, msb_copies=copies)  # decode: min_abs (1 copy) / median (2)
    lay = build_protection({"fc": (24, 50)}, cfg, None, prot).plan["fc"].layout
    x = inputs(6, 50)
    clean = protect_matrix(_program(w, cfg, lay), prot)
    q = clean.represented.q.to(torch.int64)
    o, (t, i, j) = _msb_cell(lay, cfg, q)
    if where == "copy":  # the embedded copy in slice 0 of the same output (G+ column)
        c = int(np.argwhere((lay.col_out == o) & (lay.col_slice == 0) & (lay.col_role == POS))[0, 0])
        j = int(np.argwhere((lay.col_out[c] == o) & (lay.col_slice[c] == 0) & (lay.col_role[c] == POS))[0, 0])
        t = lay.tile_index(0, c)
    _inject(monkeypatch, [(t, i, j)])
    pm = _program(w, cfg, lay, FaultConfig(rate=1e-3))
    y_ref = clean.matvec(x)
    assert not torch.equal(pm.matvec(x), _program(w, cfg, lay).matvec(x))  # the fault is visible unprotected
    assert torch.equal(protect_matrix(pm, prot).matvec(x), y_ref)


def test_vote_rules():
    v = torch.tensor([1.0, 9.0, 1.5]).view(1, 1, 3, 1)
    assert vote(v, "median", 0.5).item() == 1.5
    assert vote(v, "mean", 0.5).item() == pytest.approx(23 / 6)
    assert vote(v, "reject_outlier", 0.5).item() == 1.25
    two = torch.tensor([[4.0, -1.0], [2.0, 2.2]]).T.reshape(1, 1, 2, 2)  # groups: (4, -1), (2, 2.2)
    assert vote(two, "min_abs", 0.5).flatten().tolist() == pytest.approx([-1.0, 2.1])
    assert vote(two, "fault_aware", 0.5, torch.tensor([[1, 0]])).flatten().tolist() == [-1.0, 2.0]


# ---- statistics: protection lowers the fault-induced output error -------------------------------


def test_protection_reduces_output_error_at_1e3_faults():
    """384x384 layer (Laplace weights, 36 % of the outputs pruned (sparsity 0.18) so every kept
    output gets two MSB copies), 1e-3 random faults SA0:SA1 = 1:1, 4 chips: the fault-induced
    error ||y_faulty - y_clean|| / ||y_clean|| drops at least 2x with duplication (median of 3)
    and with MSB embedding (min_abs), each against the same chip read unprotected (measured: 2.85x
    and 2.95x; the residual is two faults among one column's replicas in one row block, and faults
    in the unprotected lower slices)."""
    cfg = CrossbarConfig(**EXACT_ADC)
    shapes = {"fc": (384, 384)}
    masks = random_masks(shapes, 0.18, rows_share=0.0)  # 138 outputs pruned: room for 2 copies of 246
    w = laplace_weights(384, 384, masks=masks["fc"])
    x = inputs(32, 384)
    fc = FaultConfig(rate=1e-3, sa0_fraction=0.5)
    ratios = {}
    for name, prot in (("dup", ProtectionConfig(prune=True, duplicate=True)), ("msb", ProtectionConfig(msb_embed=True))):
        pp = build_protection(shapes, cfg, masks if prot.prune else None, prot, weights={"fc": w})
        if prot.duplicate:
            r = pp.reports["fc"]
            assert r.copies_placed == r.copies_requested  # every kept output has its two copies
        lay = pp.plan["fc"].layout
        e_p, e_u = [], []
        for seed in range(4):
            clean = _program(w, cfg, lay, None, seed)
            bad = _program(w, cfg, lay, fc, seed)
            y0u, yu = clean.matvec(x), bad.matvec(x)  # unprotected read of the same chip
            P0, P = protect_matrix(clean, prot), protect_matrix(bad, prot)
            y0p, yp = P0.matvec(x), P.matvec(x)
            e_u.append(float((yu - y0u).norm() / y0u.norm()))
            e_p.append(float((yp - y0p).norm() / y0p.norm()))
        ratios[name] = np.mean(e_u) / np.mean(e_p)
    assert ratios["dup"] > 2.0, ratios
    assert ratios["msb"] > 2.0, ratios


# ---- bad input: clear errors saying what fits ---------------------------------------------------


def test_bad_sparsity_is_refused():
    from device.config import ConfigError
    from nn.protect import magnitude_masks

    w = {"fc": torch.ones(8, 8)}
    for s in (-0.1, 1.0, 1.5):
        with pytest.raises(ConfigError, match=r"sparsity=.* must be in \[0, 1\)"):
            magnitude_masks(w, s)
    from nn.pruning import PruningConfig

    with pytest.raises(ConfigError, match="target_sparsity"):
        PruningConfig(target_sparsity=1.0)


def test_duplication_that_does_not_fit_says_what_fits():
    cfg = CrossbarConfig()
    shapes = {"q": (384, 384)}
    masks = random_masks(shapes, 0.1)
    with pytest.raises(ProtectionError, match=r"does not fit .* what fits: dup_fraction <= 0\.\d+"):
        build_protection(shapes, cfg, masks, ProtectionConfig(prune=True, duplicate=True, dup_fraction=1.0))
    # without pruning a full layer has no free column at all
    with pytest.raises(ProtectionError, match="no layer has a free column pair .* switch prune on"):
        build_protection(shapes, cfg, None, ProtectionConfig(duplicate=True))


@pytest.mark.parametrize("kw,cfg_kw,match", [
    (dict(duplicate=True, vote="median", n_copies=1), {}, "median' needs three values"),
    (dict(msb_embed=True, msb_copies=1, msb_decode="median"), {}, "msb_copies=2"),
    (dict(msb_embed=True, msb_copies=2), dict(bits_per_cell=4), r"no lower slice to sacrifice; what fits: msb_copies <= 1"),
    (dict(msb_embed=True, msb_copies=1), dict(bits_per_cell=4, weight_bits=4), r"no lower slice"),
    (dict(duplicate=True, msb_embed=True, msb_copies=2, duplicate_slices=2), {}, r"what fits: duplicate_slices <= 1"),
    (dict(duplicate=True, msb_embed=True, msb_copies=1), dict(bits_per_cell=4), r"nothing is left to duplicate"),
    (dict(duplicate=True), dict(adc_bits=6, adc_scope="tile"), "adc_scope='column'"),
    (dict(msb_embed=True), dict(mapping="offset"), "differential"),
    (dict(n_copies=3), {}, "n_copies"),
    (dict(vote="majority"), {}, "vote"),
])
def test_conflicting_protections_are_refused(kw, cfg_kw, match):
    with pytest.raises(ValueError, match=match):
        prot = ProtectionConfig(**kw)
        build_protection({"fc": (64, 64)}, CrossbarConfig(**cfg_kw), None, prot)


def test_bad_masks_are_refused():
    cfg = CrossbarConfig()
    with pytest.raises(ProtectionError, match="needs row/column masks"):
        build_protection({"fc": (64, 64)}, cfg, None, ProtectionConfig(prune=True))
    m = RowColMask(torch.ones(10, dtype=torch.bool), torch.ones(64, dtype=torch.bool))
    with pytest.raises(ProtectionError, match="rows over in_features=64"):
        build_protection({"fc": (64, 64)}, cfg, {"fc": m}, ProtectionConfig(prune=True))
    with pytest.raises(ProtectionError, match="not mapped"):
        build_protection({"fc": (64, 64)}, cfg, {"other": m}, ProtectionConfig(prune=True))
    with pytest.raises(ProtectionError, match="sensitivity"):
        build_protection({"fc": (64, 64)}, cfg, random_masks({"fc": (64, 64)}, 0.3), ProtectionConfig(
            prune=True, duplicate=True, criterion="magnitude_x_sensitivity"), weights={"fc": torch.ones(64, 64)})


def test_criterion_ranks_outputs():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32)
    shapes = {"fc": (16, 32)}
    masks = {"fc": RowColMask(torch.ones(32, dtype=torch.bool), torch.arange(16) < 12)}  # 4 outputs pruned
    w = torch.zeros(16, 32)
    w[:12] = torch.arange(1, 13, dtype=torch.float32).view(12, 1) / 12  # output 11 largest
    sens = torch.ones(16)
    sens[0] = 100.0  # ... but output 0 matters most
    p = ProtectionConfig(prune=True, duplicate=True, n_copies=1, vote="mean")
    lp = build_protection(shapes, cfg, masks, p, weights={"fc": w}).plan["fc"]
    first = [c.source[0] for c in lp.copies]
    assert first[0] == 11
    lp = build_protection(shapes, cfg, masks, p.replace(criterion="magnitude_x_sensitivity"), weights={"fc": w},
                          sensitivity={"fc": sens}).plan["fc"]
    assert lp.copies[0].source[0] == 0


# ---- model and study integration -----------------------------------------------------------------


def test_protect_model_on_tiny_bert(tmp_path):
    from _tiny_bert import write_tiny_classifier

    from nn.crossbar_linear import crossbar_modules, patch_model, program_model, set_simulated, unpatch_model
    from nn.models import load_classifier
    from nn.protect import magnitude_masks, make_prepare, masks_for, protect_model
    from nn.pruning import apply_masks, save_masks
    from nn.sim import SimConfig

    d = write_tiny_classifier(tmp_path / "m")
    model, _ = load_classifier(d, None, task="sst2", require_finetuned=False)
    model.eval()
    sim = SimConfig.from_dict({"crossbar": {"tile_rows": 16, "tile_cols": 32}, "levels": {"source": "synthetic"}})
    with pytest.raises(ProtectionError, match="pruning_masks.safetensors"):
        make_prepare(ProtectionConfig(prune=True), d)
    patch_model(model, sim)
    masks = magnitude_masks(model, 0.3)
    unpatch_model(model)
    for h in apply_masks(model, masks):
        h.remove()
    save_masks(d / "pruning_masks.safetensors", masks)
    assert set(masks_for(d)) == set(masks)
    ids = torch.tensor([[2, 5, 6, 16, 3, 0]])
    outs = {}
    for name, prot in (("prune", ProtectionConfig(prune=True)),
                       ("prune+dup+msb", ProtectionConfig(prune=True, duplicate=True, msb_embed=True)),
                       ("prune+dup", ProtectionConfig(prune=True, duplicate=True, n_copies=1, vote="mean"))):
        patch_model(model, sim)
        make_prepare(prot, d)(model, sim)
        program_model(model, np.random.default_rng(0))
        set_simulated(model, True)
        with torch.no_grad():
            outs[name] = model(input_ids=ids).logits
        unpatch_model(model)
    # no faults: duplication reads exactly what the pruned mapping reads (float32 sums: close)
    torch.testing.assert_close(outs["prune+dup"], outs["prune"], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(outs["prune+dup+msb"]).all()
    patch_model(model, sim)
    from nn.protect import gradient_sensitivity

    sens = gradient_sensitivity(model, [dict(input_ids=ids, labels=torch.tensor([1]))])
    prot = ProtectionConfig(prune=True, duplicate=True, n_copies=1, vote="mean", criterion="magnitude_x_sensitivity")
    pp = protect_model(model, prot, masks, sensitivity=sens)
    assert "no extra crossbars" in pp.summary() and sum(r.copies_placed for r in pp.reports.values()) > 0
    unpatch_model(model)
    # unzeroed pruned weights are refused with the fix named
    patch_model(model, sim)
    with torch.no_grad():
        next(iter(crossbar_modules(model).values())).weight.add_(1.0)
    with pytest.raises(ProtectionError, match="apply_masks"):
        protect_model(model, ProtectionConfig(prune=True), masks)
    unpatch_model(model)


def test_calibrated_adc_and_read_noise():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, adc_bits=8, adc_range="calibrated")
    shapes = {"fc": (40, 70)}
    masks = random_masks(shapes, 0.3, rows_share=0.3)
    w = laplace_weights(40, 70, masks=masks["fc"])
    x = inputs(9, 70)
    prot = ProtectionConfig(prune=True, duplicate=True, msb_embed=True)
    lay = build_protection(shapes, cfg, masks, prot, weights={"fc": w}).plan["fc"].layout
    pm = _program(w, cfg, lay).calibrate(x)
    P = protect_matrix(pm, prot)
    assert torch.equal(P.base.adc_step, pm.adc_step) and P.base.calibrated
    y = P.matvec(x)
    ref = (x @ P.represented.dequantize(torch.float64).T)
    assert float((y - ref).norm() / ref.norm()) < 0.05  # 8-bit ADC, 6-bit weights
    noisy = _program(w, cfg.replace(read_noise_sigma_rel=0.02), lay).calibrate(x)
    Pn = protect_matrix(noisy, prot)
    assert Pn.voted_var is not None
    y1 = Pn.matvec(x, torch.Generator().manual_seed(3))
    y2 = Pn.matvec(x, torch.Generator().manual_seed(3))
    assert torch.equal(y1, y2) and float((y1 - ref).norm() / ref.norm()) < 0.1


def test_study_methods_name_protections():
    from nn.protect import method_protection
    from nn.study import StudySpec

    spec = StudySpec.from_dict({
        "axes": {"faults.rate": [0.0]}, "tasks": ["sst2"],
        "methods": {"unprotected": [], "prune+dup+msb": [], "msb": ["faults.sa0_fraction=0"],
                    "mine": ["protection.prune=true", "protection.duplicate=true", "protection.vote=fault_aware"],
                    "plain": []},
    })
    assert spec.protection("plain") is None
    assert spec.protection("unprotected") == ProtectionConfig()
    p = spec.protection("prune+dup+msb")
    assert p.prune and p.duplicate and p.msb_embed
    assert spec.protection("mine").vote == "fault_aware"
    assert spec.base("msb").faults.sa0_fraction == 0.0
    with pytest.raises(ValueError, match="n_copies"):
        StudySpec.from_dict({"axes": {"faults.rate": [0.0]}, "tasks": ["sst2"], "methods": {"x": ["protection.n_copies=5"]}})
    assert method_protection("prune", ["protection.regrid=true"]).regrid


def test_study_runs_protection_methods(tmp_path):
    from _tiny_bert import write_glue, write_tiny_classifier

    from nn.evaluate import read_results
    from nn.models import load_classifier
    from nn.protect import magnitude_masks
    from nn.pruning import apply_masks, save_masks
    from nn.study import StudySpec, run_study

    d = write_tiny_classifier(tmp_path / "m")
    glue = write_glue(tmp_path / "glue", n_dev=8)
    spec = {
        "model": str(d), "glue_dir": str(glue), "set": ["crossbar.tile_rows=32", "crossbar.tile_cols=32",
                                                        "levels.source=synthetic"],
        "axes": {"faults.rate": [0.01]}, "tasks": ["sst2"], "trials": 1, "max_length": 16, "batch_size": 8,
        "methods": {"unprotected": [], "prune+dup": [], "msb": []},
    }
    with pytest.raises(ProtectionError, match="pruning_masks.safetensors"):
        run_study(StudySpec.from_dict(spec), tmp_path / "out0", progress=False, plot=False)
    # a pruned checkpoint: pruned weights zero, masks beside it
    model, tok = load_classifier(d, None, task="sst2", require_finetuned=False)
    weights = {n: m.weight for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and "encoder" in n}
    masks = magnitude_masks(weights, 0.3)
    for h in apply_masks(model, masks):
        h.remove()
    model.save_pretrained(str(d))
    save_masks(d / "pruning_masks.safetensors", masks)
    res = run_study(StudySpec.from_dict(spec), tmp_path / "out", progress=False, plot=False)
    assert res["complete"]
    rows = read_results(res["csv"])
    sim = {r["method"]: r for r in rows if r["mode"] == "simulated"}
    assert set(sim) == {"unprotected", "prune+dup", "msb"}
    assert len({r["config_hash"] for r in sim.values()}) == 3
