"""CrossbarLinear and model patching on a tiny random BERT (2 layers, hidden 32): the ideal chip
matches the digital layer within the quantization bound, the digital switch is bit-exact,
checkpoints are unchanged, and one seed is one chip."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from device.config import ConfigError, apply_overrides  # noqa: E402
from nn import crossbar_linear as cl  # noqa: E402
from nn.sim import PRESETS, SimConfig, build_sim_config, config_hash  # noqa: E402
from _tiny_bert import VOCAB, bert_config  # noqa: E402

#: small tiles keep the tiny layers on a few tiles (the physics does not depend on the size here)
SMALL = ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_model(seed: int = 0, cls=None):
    cls = cls or transformers.BertForSequenceClassification
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(bert_config()).eval()


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(VOCAB), (4, 9), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def logits(model, b):
    with torch.no_grad():
        return model(**b).logits


def test_presets_build_and_overrides_reach_every_section():
    for name, factory in PRESETS.items():
        cfg = factory()
        assert isinstance(cfg, SimConfig), name
        assert factory.__doc__ and len(factory.__doc__) > 40, f"preset {name} must cite its source"
        assert SimConfig.from_json(cfg.to_json()) == cfg
    cfg = build_sim_config("default", ["crossbar.adc_bits=6", "faults.rate=0.01", "levels.sigma_rel=0.05",
                                       "circuit.r_wire_row_ohm=2.5", "target_modules=[\"query\"]"])
    assert (cfg.crossbar.adc_bits, cfg.faults.rate, cfg.levels.sigma_rel, cfg.circuit.r_wire_row_ohm) == (6, 0.01, 0.05, 2.5)
    assert cfg.target_modules == ("query",)
    with pytest.raises(ConfigError, match="unknown key 'adc_bitz'"):
        build_sim_config("default", ["crossbar.adc_bitz=6"])
    with pytest.raises(ConfigError, match="unknown preset"):
        build_sim_config("nope")
    with pytest.raises(ConfigError, match="rate"):
        build_sim_config("default", ["faults.rate=2"])
    assert config_hash(cfg) != config_hash(build_sim_config("default"))
    from cli.evaluate import SIM_PRESETS

    assert tuple(SIM_PRESETS) == tuple(PRESETS)  # the CLI reads the registry itself


def test_selection_bert_roberta_distilbert():
    m = tiny_model()
    cfg = SimConfig()
    names = [n for n, _ in cl.select_modules(m, cfg)]
    assert len(names) == 12  # 2 layers x (q, k, v, attn out, intermediate, output)
    assert not any("classifier" in n or "pooler" in n for n in names)
    only_q = [n for n, _ in cl.select_modules(m, cfg.replace(target_modules=("query",)))]
    assert only_q == ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.query"]
    no_ffn = cl.select_modules(m, cfg.replace(exclude_modules=(r"intermediate\.dense$|layer\.\d+\.output\.dense$",)))
    assert len(no_ffn) == 8
    with pytest.raises(ValueError, match="no nn.Linear, Conv1d/Conv2d or LSTM/GRU module matches"):
        cl.select_modules(m, cfg.replace(target_modules=("nothing_like_this",)))
    rob = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    assert len(cl.select_modules(rob, cfg)) == 6
    dist = transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        vocab_size=40, dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    names = [n for n, _ in cl.select_modules(dist, cfg)]
    assert len(names) == 6 and not any("classifier" in n for n in names)


def test_layer_within_quantization_bound():
    """Ideal chip (noiseless levels, ideal ADC, no faults, float64 reads): each output is within
    the quantization bound |y - x W^T| <= sum_i (|x_i| dw/2 + |w_i| dx/2 + dx dw/4) of the float
    layer, dw / dx the weight / input steps of 8-bit dynamic fixed point."""
    from crossbar.quant import dfp_frac_bits

    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(70, 40).double()
    cfg = build_sim_config("ideal", SMALL + ["dtype=float64"])
    layer = cl.CrossbarLinear.from_linear(lin, cfg, "lin")
    assert layer.weight is lin.weight and layer.bias is lin.bias
    layer.program(np.random.default_rng(0))
    layer.simulated = True
    x = torch.randn(16, 70, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y, ref = layer(x), lin(x)
    dw = float(layer.programmed.qweight.scale())
    dx = float(2.0 ** -dfp_frac_bits(x.abs().max(), cfg.crossbar.input_bits))
    w = lin.weight.detach()
    bound = x.abs() @ torch.full_like(w.T, dw / 2) + (dx / 2) * w.abs().sum(1) + 70 * dx * dw / 4
    assert torch.all((y - ref).abs() <= bound * (1 + 1e-9))
    assert (y - ref).abs().max() > 0  # it is quantized


def test_patched_model_ideal_close_and_digital_switch_exact():
    """16-bit weights and inputs on an ideal chip: per layer the relative quantization error is
    ~2^-15; over 12 layers, LayerNorms and GELUs the logits stay within 1e-3 of float (measured
    ~1e-7). Switching simulation off (or unpatching) gives bit-identical digital logits."""
    m = tiny_model()
    b = batch()
    ref = logits(m, b)
    cfg = build_sim_config("ideal", SMALL + ["crossbar.weight_bits=16", "crossbar.input_bits=16"])
    mods = cl.patch_model(m, cfg)
    assert len(mods) == 12 and all(isinstance(v, cl.CrossbarLinear) for v in mods.values())
    assert torch.equal(logits(m, b), ref)  # patched but not yet simulated: digital
    with pytest.raises(ValueError, match="not programmed"):
        cl.set_simulated(m, True)
    cl.program_model(m, np.random.default_rng(0))
    cl.set_simulated(m, True)
    sim = logits(m, b)
    assert torch.allclose(sim, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))
    assert not torch.equal(sim, ref)
    cl.set_simulated(m, False)
    assert torch.equal(logits(m, b), ref)
    cl.unpatch_model(m)
    assert not cl.crossbar_modules(m)
    assert torch.equal(logits(m, b), ref)
    with pytest.raises(ValueError, match="already patched"):
        cl.patch_model(m, cfg) and cl.patch_model(m, cfg)


def test_state_dict_unchanged_and_saved_patched_model_reloads(tmp_path):
    m = tiny_model()
    keys = list(m.state_dict())
    ref = logits(m, batch())
    cfg = build_sim_config("default", SMALL + ["faults.rate=0.02"])
    cl.patch_model(m, cfg)
    assert list(m.state_dict()) == keys
    cl.program_model(m, np.random.default_rng(0))
    cl.set_simulated(m, True)
    m.save_pretrained(str(tmp_path / "patched"))
    back = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "patched")).eval()
    assert torch.equal(logits(back, batch()), ref)
    # and a plain checkpoint loads into a patched model (then it must be programmed again)
    m2 = tiny_model(seed=1)
    cl.patch_model(m2, cfg)
    cl.program_model(m2, np.random.default_rng(0))
    cl.set_simulated(m2, True)
    m2.load_state_dict(back.state_dict())
    with pytest.raises(ValueError, match="weight changed"):
        logits(m2, batch())
    cl.program_model(m2, np.random.default_rng(0))
    cl.set_simulated(m2, False)
    assert torch.equal(logits(m2, batch()), ref)


def test_reprogram_new_draw_and_same_seed_bit_identical():
    m = tiny_model()
    b = batch()
    cfg = build_sim_config("default", SMALL + ["faults.rate=0.05", "levels.sigma_rel=0.05"])
    mods = cl.patch_model(m, cfg)
    q = mods["bert.encoder.layer.0.attention.self.query"]
    cl.program_model(m, np.random.default_rng(1))
    cl.set_simulated(m, True)
    a = logits(m, b)
    codes = q.programmed.qweight.q.clone()
    faults_a = q.programmed.tile_state().faults.copy()
    cl.reprogram_model(m, np.random.default_rng(2))
    assert torch.equal(q.programmed.qweight.q, codes)  # quantization kept
    faults_b = q.programmed.tile_state().faults
    assert not np.array_equal(faults_a, faults_b)  # a new fault map
    cl.reprogram_model(m, np.random.default_rng(1))
    assert np.array_equal(q.programmed.tile_state().faults, faults_a)
    assert torch.equal(logits(m, b), a)  # same seed, same chip, bit for bit
    cl.program_model(m, np.random.default_rng(1))
    assert torch.equal(logits(m, b), a)
    # a fresh model from the same checkpoint and seed gives the same chip
    m2 = tiny_model()
    cl.patch_model(m2, cfg)
    cl.program_model(m2, np.random.default_rng(1))
    cl.set_simulated(m2, True)
    assert torch.equal(logits(m2, b), a)


def test_read_noise_is_seeded_per_chip():
    m = tiny_model()
    b = batch()
    cl.patch_model(m, build_sim_config("ideal", SMALL + ["read_noise=crossbar", "crossbar.read_noise_sigma_rel=0.05"]))
    runs = []
    for seed in (3, 3, 4):
        cl.program_model(m, np.random.default_rng(seed))
        cl.set_simulated(m, True)
        runs.append(logits(m, b))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])  # the ideal chip differs by its noise only


def test_keyed_reads_key_by_example_position_and_read():
    lin = torch.nn.Linear(32, 16)
    sim = build_sim_config("ideal", SMALL + ["read_noise=crossbar", "crossbar.read_noise_sigma_rel=0.05"])
    layer = cl.CrossbarLinear.from_linear(lin, sim)
    layer.program(np.random.default_rng(0))
    layer.simulated = True
    x = torch.randn(5, 3, 32, generator=torch.Generator().manual_seed(1))
    model = torch.nn.Sequential(layer)
    with torch.no_grad(), cl.keyed_reads(model, [10, 11, 12, 13, 14]):
        first, again = layer(x), layer(x)  # one layer read twice in a pass (ALBERT): two reads
    assert not torch.equal(first, again)
    with torch.no_grad():
        with cl.keyed_reads(model, [12, 10]):  # examples 12 and 10 alone, in another order: same bits
            assert torch.equal(layer(x[[2, 0]]), first[[2, 0]])
        with cl.keyed_reads(model, [12]):  # positions 0, 1 only (a shorter padding): same bits
            assert torch.equal(layer(x[2:3, :2]), first[2:3, :2])
        with cl.keyed_reads(model, [10, 11, 12, 13, 14], stream=cl.STREAM_CALIBRATION):
            assert not torch.equal(layer(x), first)  # calibration reads are other reads
        with cl.keyed_reads(model, [1, 2]), pytest.raises(ValueError, match="2 example ids"):
            layer(x)


def test_protection_hooks_layout_and_read_fn():
    from mapping.plan import MappingPlan

    m = tiny_model()
    cfg = build_sim_config("ideal", SMALL)
    mods = cl.patch_model(m, cfg)
    plan = MappingPlan.from_module(m, cfg.crossbar, include=["attention.self.query"])
    cl.apply_plan(m, plan)
    q = mods["bert.encoder.layer.0.attention.self.query"]
    assert q.layout is plan["bert.encoder.layer.0.attention.self.query"].layout
    calls = []

    def voting_read(pm, x, gen):
        calls.append(pm.out_features)
        return cl.default_read(pm, x, gen)

    cl.set_read_fn(m, voting_read, names=[q.name])
    cl.program_model(m, np.random.default_rng(0))
    assert q.programmed.layout is q.layout
    cl.set_simulated(m, True)
    logits(m, batch())
    assert calls == [32]
    with pytest.raises(ValueError, match="not on crossbars"):
        cl.apply_plan(m, MappingPlan.from_module(m, cfg.crossbar, include=["classifier"]))


def test_calibrated_adc():
    m = tiny_model()
    b = batch()
    ref = logits(m, b)
    cfg = build_sim_config("ideal", SMALL + ["crossbar.adc_bits=8", "crossbar.adc_range=calibrated",
                                             "crossbar.dac=bit_serial"])
    cl.patch_model(m, cfg)
    cl.program_model(m, np.random.default_rng(0))
    cl.set_simulated(m, True)
    with pytest.raises(ValueError, match="calibrate"):
        logits(m, b)
    cl.calibrate_model(m, b)
    out = logits(m, b)
    assert torch.isfinite(out).all() and out.shape == ref.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    m = tiny_model()
    b = batch()
    cfg = build_sim_config("default", SMALL + ["faults.rate=0.02"])
    cl.patch_model(m, cfg)
    cl.program_model(m, np.random.default_rng(0))
    cl.set_simulated(m, True)
    cpu = logits(m, b)
    m.cuda()
    gpu = logits(m, {k: v.cuda() for k, v in b.items()})
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    cl.program_model(m, np.random.default_rng(0))  # programmed on the GPU weights
    assert torch.allclose(logits(m, {k: v.cuda() for k, v in b.items()}).cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_overrides_type_checked():
    cfg = apply_overrides(SimConfig(), ["crossbar.weight_format=static"])
    assert cfg.crossbar.weight_format == "static"
    with pytest.raises(ConfigError):
        apply_overrides(SimConfig(), ["crossbar.weight_format=floaty"])
