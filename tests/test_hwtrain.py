"""Hardware-aware training (nn.hwtrain): the chip-matched weight noise against the engine, MSB
fake quantization as a fixed point of the protected mapping, config checks, and tiny-BERT
fine-tuning smoke tests of each mode (with bit-identical resume)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from crossbar.engine import CrossbarConfig, default_layout, program_matrix, quantize_weight  # noqa: E402
from device.config import ConfigError  # noqa: E402
from mapping.protection import ProtectionConfig, build_protection, embed_msb, protect_matrix  # noqa: E402
from nn.finetune import FinetuneConfig, finetune, read_finetune_info, select_linear  # noqa: E402
from nn.hwtrain import HardwareView, code_statistics, hardware_weights, quantize_like_engine  # noqa: E402
from nn.sim import build_levels, build_sim_config  # noqa: E402

from _tiny_bert import sentences, write_tiny_classifier  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SYNTH = ["levels.source=synthetic", "levels.distribution=lognormal"]

#: chips whose per-weight error the analytic statistics must reproduce
CHIPS = {
    # the paper-2 study chip at its harshest point: sigma 0.1, 2 bits/cell, on/off 10
    "b2-onoff10": SYNTH + ["levels.sigma_rel=0.1", "levels.on_off_ratio=10"],
    "b1-onoff100": SYNTH + ["levels.sigma_rel=0.1", "levels.on_off_ratio=100", "crossbar.bits_per_cell=1"],
    "b3-partial": SYNTH + ["levels.sigma_rel=0.05", "levels.on_off_ratio=20", "crossbar.bits_per_cell=3"],
    "shipped-table": [],  # data/levels_b2.h5: measured-style per-level spreads
    "offset-normal": ["levels.source=synthetic", "levels.distribution=normal", "levels.sigma_rel=0.05",
                      "levels.on_off_ratio=10", "crossbar.mapping=offset"],
    "read-noise": SYNTH + ["levels.sigma_rel=0.03", "levels.on_off_ratio=10", "crossbar.read_noise_sigma_rel=0.05"],
}


def laplace(o, i, seed=0, scale=0.03):
    return torch.from_numpy(np.random.default_rng(seed).laplace(0.0, scale, (o, i)))


# ---- crossbar-matched noise: the analytic per-weight statistics are the engine's ----------------


@pytest.mark.parametrize("chip", list(CHIPS))
def test_code_statistics_match_the_engine(chip):
    """Every code -127..127 on 512 weights (one output row per code), programmed once by the engine
    with variation on, ideal ADC, no IR drop: the read-back effective weights' per-code sample mean
    and variance, and the pooled standardized error, match :func:`code_statistics`."""
    sim = build_sim_config("default", CHIPS[chip])
    cfg, levels = sim.crossbar, build_levels(sim)
    st = code_statistics(cfg, levels)
    n = 512
    codes = torch.arange(-st.q_max, st.q_max + 1, dtype=torch.float64).view(-1, 1).expand(-1, n)
    w = codes * 2.0**-6  # largest code 127 present: DFP picks F = 6 and the codes are exactly these
    pm = program_matrix(w, cfg, levels, None, np.random.default_rng(11), dtype=torch.float64)
    assert int(pm.qweight.frac_bits) == 6 and torch.equal(pm.qweight.q.double(), codes)
    err = pm.readout.numpy() * 64.0  # read-back weight in LSB, (codes, n)
    var_read = 0.0
    if cfg.read_noise_sigma_rel > 0:  # drawn per read by the engine: its exact variance per weight
        var_read = pm.noise_var.numpy() * 64.0**2
    mean_a = st.mean[:, None]
    assert np.all(st.std > 0)
    m = err.mean(axis=1)
    # per code: sample mean within 5 standard errors (255 codes, P(any beyond) ~ 1e-4)
    assert np.all(np.abs(m - st.mean) < 5 * st.std / math.sqrt(n))
    # per code: programming variance + read-noise variance within 5 standard errors of the sample
    # variance, the error from the sample fourth moment: se^2 = (m4 - s^4) / n
    d = err - m[:, None]
    s2 = (d**2).mean(axis=1)
    m4 = (d**4).mean(axis=1)
    se = np.sqrt((m4 - s2**2) / n)
    tot = s2 + (var_read.mean(axis=1) if cfg.read_noise_sigma_rel > 0 else 0.0)
    assert np.all(np.abs(tot - st.std**2) < 5 * se + 1e-12)
    if cfg.mapping == "offset":
        # the outputs of one tile share its reference cells, so their errors are correlated and a
        # pooled test over all weights does not hold (the per-weight statistics above do)
        return
    # pooled: the standardized programming error z has variance 1 within 5 standard errors
    prog_sd = code_statistics(cfg.replace(read_noise_sigma_rel=0.0), levels).std[:, None]
    z = ((err - mean_a) / prog_sd).ravel()
    k = z.size
    assert abs(z.mean()) < 5 / math.sqrt(k)
    assert abs(z.var() - 1.0) < 5 * math.sqrt((np.mean(z**4) - 1.0) / k)


def test_code_statistics_small_weights_get_hrs_noise():
    """The point of crossbar mode: at on/off 10 a zero weight carries the noise of its 8 HRS cells,
    sum_s 2 * 4**(2s) * (sigma_rel g_off / dg)**2 (in LSB), which multiplicative DVA gives 0."""
    sim = build_sim_config("default", CHIPS["b2-onoff10"])
    lv = build_levels(sim)
    st = code_statistics(sim.crossbar, lv)
    g0 = lv.g_samples_s[0]
    dg = (lv.g_target_s[-1] - lv.g_target_s[0]) / 3
    expect = math.sqrt(sum(2 * 4 ** (2 * s) for s in range(4)) * g0.var() / dg**2)
    assert st.std[st.q_max] == pytest.approx(expect, rel=1e-12)
    assert 2.5 < st.std[st.q_max] < 3.5  # ~3 LSB on a zero weight, for sigma_rel 0.1
    assert st.std[st.q_max] > 0.25 * st.std[-1]  # same order as at full scale: additive, not multiplicative


@pytest.mark.parametrize("sets", [[], ["crossbar.weight_granularity=tile", "crossbar.tile_rows=16", "crossbar.tile_cols=32"],
                                  ["crossbar.weight_format=static", "crossbar.weight_frac_bits=4"]],
                         ids=["dfp-layer", "dfp-tile", "static"])
def test_quantize_like_engine_is_the_engine_quantization(sets):
    cfg = build_sim_config("default", sets).crossbar
    w = laplace(40, 70, seed=2).float()
    a = quantize_like_engine(w, cfg)
    b = quantize_weight(w.detach(), cfg, default_layout(40, 70, cfg))
    assert torch.equal(a.q, b.q) and torch.equal(a.frac_bits, b.frac_bits)


def test_view_noise_statistics_and_determinism():
    sim = build_sim_config("default", CHIPS["b2-onoff10"])
    view = HardwareView(sim, noise_scale=1.0, quantize=True)
    w = laplace(300, 400, seed=4).float()
    qt = quantize_like_engine(w, sim.crossbar)
    step = float(qt.scale())
    idx = qt.q.long() + 127
    mean = torch.from_numpy(view.stats.mean)[idx] * step
    sd = torch.from_numpy(view.stats.std)[idx] * step
    a = view(w, torch.Generator().manual_seed(5))
    b = view(w, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.dtype == w.dtype and a.shape == w.shape  # same seed, same draw
    z = ((a.double() - mean) / sd).ravel()
    k = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(k)
    assert abs(float(z.var()) - 1.0) < 5 * math.sqrt(2 / k) + 1e-4  # Gaussian draws; float32 rounding
    # without noise: the chip's mean read-back weight (the code to a fraction of an LSB)
    q0 = HardwareView(sim, noise_scale=0.0, quantize=True)(w)
    torch.testing.assert_close(q0.double(), mean, rtol=1e-6, atol=1e-7)
    assert float((q0.double() - qt.dequantize(torch.float64)).abs().max()) < 0.5 * step
    assert torch.equal(view.noiseless()(w), q0) and view.noise_scale == 1.0  # the view itself is unchanged
    # noise only: w itself plus the noise
    c = HardwareView(sim, noise_scale=2.0, quantize=False)(w, torch.Generator().manual_seed(5))
    torch.testing.assert_close(c.double() - w.double(), 2.0 * (a.double() - mean), rtol=1e-4, atol=1e-6)


def test_hardware_weights_restore_and_straight_through_gradient():
    sim = build_sim_config("default", CHIPS["b2-onoff10"])
    view = HardwareView(sim)
    lin = torch.nn.Linear(30, 20)
    x = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    clean = lin.weight.detach().clone()
    with hardware_weights([lin], view, torch.Generator().manual_seed(3)):
        w_hw = lin.weight.detach().clone()
        lin(x).pow(2).sum().backward()
    assert torch.equal(lin.weight, clean) and not torch.equal(w_hw, clean)
    assert torch.equal(w_hw, view(clean, torch.Generator().manual_seed(3)))
    g = lin.weight.grad.clone()
    # straight through: the gradient of the loss at w_hw, applied to w
    ref = torch.nn.Linear(30, 20)
    with torch.no_grad():
        ref.weight.copy_(w_hw)
        ref.bias.copy_(lin.bias)
    ref(x).pow(2).sum().backward()
    assert torch.equal(g, ref.weight.grad)
    with pytest.raises(RuntimeError, match="boom"):
        with hardware_weights([lin], view, torch.Generator().manual_seed(3)):
            raise RuntimeError("boom")
    assert torch.equal(lin.weight, clean)


# ---- MSB-embedding-aware fake quantization: fixed points of the protected mapping --------------


@pytest.mark.parametrize("copies", [1, 2])
@pytest.mark.parametrize("sets", [[], ["crossbar.bits_per_cell=1"], ["crossbar.weight_granularity=tile", "crossbar.tile_rows=16", "crossbar.tile_cols=32"]],
                         ids=["b2", "b1", "dfp-tile"])
def test_msb_fake_quant_is_a_fixed_point_of_embed_msb(copies, sets):
    cfg = build_sim_config("default", sets).crossbar
    view = HardwareView(build_sim_config("default", sets), noise_scale=0.0, msb_copies=copies)
    w = laplace(64, 96, seed=7).float()
    w_fq = view(w)
    assert w_fq.dtype == w.dtype and not torch.equal(w_fq, w)
    qt = quantize_like_engine(w_fq, cfg)
    _, kept = embed_msb(qt, cfg, copies)
    assert torch.equal(kept.q, qt.q)  # nothing left to drop
    assert torch.equal(kept.dequantize(torch.float32), w_fq)  # the same weight, exactly
    assert torch.equal(qt.frac_bits, quantize_like_engine(w, cfg).frac_bits)  # the binary point is kept
    # it is the value embed_msb makes of the original weight (same step, same rounding)
    _, kept0 = embed_msb(quantize_like_engine(w, cfg), cfg, copies)
    assert torch.equal(kept0.dequantize(torch.float32), w_fq)
    assert torch.equal(view(w_fq), w_fq)  # idempotent


@pytest.mark.parametrize("copies", [1, 2])
def test_msb_fake_quant_reads_back_exactly_from_the_protected_chip(copies):
    """Programmed with MSB embedding (no faults, no variation) and read with one-hot inputs, the
    fake-quantized weights come back exactly: the protection loses nothing more."""
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, input_format="static", input_frac_bits=4, adc_bits=17, adc_scope="column")
    sim = build_sim_config("ideal").replace(crossbar=cfg)
    w_fq = HardwareView(sim, noise_scale=0.0, msb_copies=copies)(laplace(24, 50, seed=3)).double()
    prot = ProtectionConfig(msb_embed=True, msb_copies=copies)
    lay = build_protection({"fc": (24, 50)}, cfg, None, prot).plan["fc"].layout
    pm = program_matrix(w_fq, cfg, build_levels(sim), None, np.random.default_rng(0), layout=lay, dtype=torch.float64)
    P = protect_matrix(pm, prot)
    assert torch.equal(P.represented.q, pm.qweight.q)
    assert torch.equal(P.matvec(torch.eye(50, dtype=torch.float64)), w_fq.T)


# ---- configuration -----------------------------------------------------------------------------


def test_finetune_config_hardware_fields():
    sim = build_sim_config("default", CHIPS["b2-onoff10"])
    c = FinetuneConfig(dva_mode="crossbar", sim=sim)
    assert c.dva_quantize is True and c.uses_sim
    assert FinetuneConfig.from_json(c.to_json()) == c  # the chip round-trips with the run
    assert FinetuneConfig(dva_mode="crossbar", sim=sim.to_dict()).sim == sim
    assert FinetuneConfig().dva_quantize is False and not FinetuneConfig().uses_sim
    q = FinetuneConfig(qat_msb_copies=1, sim=sim)
    assert q.hardware_view().msb_copies == 1 and q.hardware_view().noise_scale == 0.0
    offset = build_sim_config("default", ["crossbar.mapping=offset"])
    b4 = build_sim_config("default", ["crossbar.bits_per_cell=4", "crossbar.partial_slice=msb"])
    bad = [
        (dict(dva_mode="chip"), "dva_mode"),
        (dict(dva_mode="crossbar"), "need sim"),
        (dict(dva_quantize=True), "need sim"),
        (dict(qat_msb_copies=1), "need sim"),
        (dict(sim=sim), "only used by"),
        (dict(dva_mode="crossbar", sim=sim, dva_sigma=0.1), "dva_sigma"),
        (dict(dva_mode="crossbar", sim=sim, qat_msb_copies=1), "qat_msb_copies"),
        (dict(dva_mode="crossbar", sim=sim, dva_noise_scale=-1.0), "dva_noise_scale"),
        (dict(dva_mode="crossbar", sim=sim, dva_noise_scale=0.0, dva_quantize=False), "does nothing"),
        (dict(qat_msb_copies=3, sim=sim), "qat_msb_copies"),
        (dict(qat_msb_copies=1, sim=offset), "differential"),
        (dict(qat_msb_copies=2, sim=b4), "msb_copies"),
        (dict(dva_mode="crossbar", sim={"crossbar": {"bits_per_cell": 9}}), "bits_per_cell"),
        (dict(dva_mode="crossbar", sim={"levels": {"sigma": 0.1}}), "unknown key"),
        (dict(dva_mode="crossbar", sim=sim, dva_quantize="yes"), "dva_quantize"),
    ]
    for kw, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            FinetuneConfig(**kw)


def test_hardware_view_errors():
    sim = build_sim_config("default")
    with pytest.raises(ConfigError, match="noise_scale"):
        HardwareView(sim, noise_scale=math.inf)
    with pytest.raises(ConfigError, match="not modelled"):
        HardwareView(sim, noise_scale=1.0, msb_copies=1)
    with pytest.raises(ValueError, match="generator"):
        HardwareView(sim)(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="SimConfig"):
        HardwareView(sim.crossbar)


# ---- fine-tuning smoke tests -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from nn import glue

    d = write_tiny_classifier(tmp_path_factory.mktemp("tiny_cls"))

    def split(n, seed, name):
        t, y = sentences(n, seed)
        return glue.GlueSplit(task="sst2", split=name, text_a=t, text_b=None, labels=np.array(y, dtype=np.int64))

    return d, split(96, 1, "train"), {"dev": split(32, 2, "dev")}


def _cfg(**kw):
    base = dict(task="sst2", epochs=1, max_steps=6, batch_size=16, lr=1e-3, max_length=16, checkpoint_every=0, seed=1)
    base.update(kw)
    return FinetuneConfig(**base)


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("mode", ["crossbar", "msb"])
def test_finetune_hardware_aware_smoke_and_resume(tiny, tmp_path, mode):
    model, train, dev = tiny
    sim = build_sim_config("default", CHIPS["b2-onoff10"])
    cfg = _cfg(dva_mode="crossbar", sim=sim) if mode == "crossbar" else _cfg(qat_msb_copies=1, sim=sim)
    kw = dict(device="cpu", train=train, dev=dev, progress=False, num_threads=1)
    res = finetune(cfg, model, None, tmp_path / "a", **kw)
    info = read_finetune_info(tmp_path / "a")
    assert info["steps"] == 6 and info["config"] == cfg.to_dict()
    hv = info["hardware_view"]
    assert len(hv["layers_final"]) == 12 and hv["quantize"] is True
    assert 0.0 <= hv["metrics_noiseless"]["dev"]["score"] <= 1.0
    if mode == "crossbar":
        assert hv["noise_scale"] == 1.0 and 2.5 < hv["noise_std_lsb_code0"] < 3.5
        assert all(r["noise_rms_lsb"] > 0 for r in hv["layers_final"].values())
    else:
        assert hv["msb_copies"] == 1
    assert 0.0 <= res["dev"]["accuracy"] <= 1.0
    # interrupted and resumed: bit-identical weights (the view's noise comes from the saved generator)
    assert finetune(cfg, model, None, tmp_path / "b", stop_after_steps=4, **kw) is None
    assert finetune(cfg, model, None, tmp_path / "b", **kw) == res
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # and the view changed the training trajectory
    finetune(_cfg(), model, None, tmp_path / "n", **kw)
    k = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(_weights(tmp_path / "n")[k], wa[k])
    # the finished run is recognised, also from a config written before the hardware-aware keys
    assert finetune(cfg, model, None, tmp_path / "a", **kw) == res
    import json

    p = tmp_path / "n" / "reram_cosim_finetune.json"
    old = json.loads(p.read_text())
    for key in ("dva_mode", "dva_quantize", "dva_noise_scale", "qat_msb_copies", "sim"):
        del old["config"][key]
    p.write_text(json.dumps(old))
    assert finetune(_cfg(), model, None, tmp_path / "n", **kw) == old["metrics"]


def test_cli_finetune_crossbar_mode(tiny, tmp_path, capsys, monkeypatch):
    from cli import finetune as cli_nn

    monkeypatch.setenv("RERAM_COSIM_NUM_THREADS", "1")
    model, train, dev = tiny
    gd = tmp_path / "glue" / "SST-2"
    gd.mkdir(parents=True)
    for name, s in (("train", train), ("dev", dev["dev"])):
        rows = ["sentence\tlabel"] + [f"{t} \t{y}" for t, y in zip(s.text_a, s.labels)]
        (gd / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    parser = argparse.ArgumentParser(prog="reram-cosim")
    cli_nn.register(parser.add_subparsers(dest="cmd"))
    common = ["finetune", "--model", str(model), "--task", "sst2", "--glue-dir", str(tmp_path / "glue"),
              "--max-steps", "2", "--batch-size", "8", "--max-length", "16", "--epochs", "1"]
    out = tmp_path / "out"
    args = parser.parse_args(common + ["--out", str(out), "--dva-mode", "crossbar", "--preset", "default"]
                             + [a for s in CHIPS["b2-onoff10"] for a in ("--set", s)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "hardware-aware training: chip fake quantization" in text and "crossbar noise" in text
    info = read_finetune_info(out)
    assert info["config"]["dva_mode"] == "crossbar" and info["config"]["sim"]["levels"]["on_off_ratio"] == 10
    assert info["config"]["sim"] == build_sim_config("default", CHIPS["b2-onoff10"]).to_dict()
    args = parser.parse_args(common + ["--out", str(tmp_path / "o2"), "--qat-msb-copies", "2"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "MSB-embedding fake quantization (2 copies)" in text and "no noise" in text
    bad = parser.parse_args(common + ["--out", str(tmp_path / "o3"), "--set", "levels.sigma_rel=0.1"])
    with pytest.raises(ConfigError, match="only used by"):
        bad.func(bad)
    bad = parser.parse_args(common + ["--out", str(tmp_path / "o4"), "--dva-mode", "crossbar", "--set", "levels.sigma=0.1"])
    with pytest.raises(ConfigError, match="unknown key"):
        bad.func(bad)


def test_select_linear_targets_match_the_crossbar_layers(tiny):
    """The view acts on the same layers the simulated chip maps (dva_target vs sim.target_modules)."""
    from nn import models
    from nn.crossbar_linear import select_modules

    net, _ = models.load_classifier(tiny[0], 2, task="sst2")
    sim = build_sim_config("default")
    assert [n for n, _ in select_linear(net)] == [n for n, _ in select_modules(net, sim)]
