"""The same loading and patching code on every BERT-family classifier: tiny random BERT, RoBERTa,
DistilBERT, ELECTRA and ALBERT models (2 layers, hidden 32, each with its own tokenizer kind) are
saved with ``save_pretrained`` and loaded back through :func:`nn.models.load_classifier`, then
patched (:mod:`nn.crossbar_linear`): the default patterns pick exactly the encoder attention
projections and feed-forward layers, checkpoints are unchanged, the digital switch is exact, an
ideal chip stays within the quantization bound, and one seed is one chip."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from nn import crossbar_linear as cl  # noqa: E402
from nn.models import load_classifier  # noqa: E402
from nn.sim import SimConfig, build_sim_config  # noqa: E402
from _tiny_bert import FAMILIES, write_tiny_family  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

#: small tiles keep the tiny layers on a few tiles (the physics does not depend on the size here)
SMALL = ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic"]

_BERT_LAYER = [
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "intermediate.dense", "output.dense",
]
_DISTIL_LAYER = ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2"]
_ALBERT_LAYER = ["attention.query", "attention.key", "attention.value", "attention.dense", "ffn", "ffn_output"]

#: per family: (prefix of encoder layer i, the layer's Linear names (4 attention, then 2
#: feed-forward), distinct layer modules, the Linear modules that must stay digital by default)
SPEC = {
    "bert": ("bert.encoder.layer.{i}.", _BERT_LAYER, 2, {"bert.pooler.dense", "classifier"}),
    "roberta": ("roberta.encoder.layer.{i}.", _BERT_LAYER, 2, {"classifier.dense", "classifier.out_proj"}),
    "distilbert": ("distilbert.transformer.layer.{i}.", _DISTIL_LAYER, 2, {"pre_classifier", "classifier"}),
    "electra": (
        "electra.encoder.layer.{i}.", _BERT_LAYER, 2,
        {"electra.embeddings_project", "classifier.dense", "classifier.out_proj"},
    ),
    # both layers run the one shared layer module of layer group 0
    "albert": (
        "albert.encoder.albert_layer_groups.0.albert_layers.{i}.", _ALBERT_LAYER, 1,
        {"albert.encoder.embedding_hidden_mapping_in", "albert.pooler", "classifier"},
    ),
}


def expected(family: str, part: slice = slice(None)) -> list[str]:
    prefix, layer, n, _ = SPEC[family]
    return [prefix.format(i=i) + s for i in range(n) for s in layer[part]]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One saved tiny classifier (seed 0) per family: ``{family: directory}``."""
    root = tmp_path_factory.mktemp("families")
    return {f: write_tiny_family(root / f, f, seed=0) for f in FAMILIES}


def load(checkpoints, family):
    model, tok = load_classifier(checkpoints[family], None)
    return model, tok


def batch(tok):
    """A sentence-pair batch with padding, the way the GLUE path tokenizes (token type ids asked
    for: DistilBERT has none and must ignore them)."""
    enc = tok(
        ["the movie was good", "bad film", "a very dull story"], ["a story", "awful", "the plot was fine"],
        padding=True, return_token_type_ids=True, return_tensors="pt",
    )
    return dict(enc)


def logits(model, b):
    with torch.no_grad():
        return model(**b).logits


def linear_names(model) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_default_patterns_select_encoder_projections_and_ffn(checkpoints, family):
    model, _ = load(checkpoints, family)
    assert type(model).__name__.lower().startswith(family)
    names = [n for n, _ in cl.select_modules(model, SimConfig())]
    assert names == expected(family)  # exactly these, in module order
    assert linear_names(model) - set(names) == SPEC[family][3]  # head, pooler, embedding projections
    # a broad target reaches everything but the head and pooler: the default excludes hold
    everything = [n for n, _ in cl.select_modules(model, SimConfig(target_modules=(".",)))]
    kept_digital = linear_names(model) - set(everything)
    assert kept_digital == {n for n in SPEC[family][3] if "embedding" not in n}


@pytest.mark.parametrize("family", FAMILIES)
def test_include_exclude_patterns(checkpoints, family):
    model, _ = load(checkpoints, family)
    attn, ffn = expected(family, slice(0, 4)), expected(family, slice(4, 6))
    # anchored on the layer index: BERT's feed-forward "output.dense" also ends "attention.output.dense"
    ffn_re = r"|".join(r"\.\d+\." + s.replace(".", r"\.") + "$" for s in SPEC[family][1][4:])
    attn_re = r"|".join(r"\.\d+\." + s.replace(".", r"\.") + "$" for s in SPEC[family][1][:4])
    cfg = SimConfig()
    assert [n for n, _ in cl.select_modules(model, cfg.replace(exclude_modules=(ffn_re,)))] == attn
    assert [n for n, _ in cl.select_modules(model, cfg.replace(target_modules=(ffn_re,)))] == ffn
    assert [n for n, _ in cl.select_modules(model, cfg.replace(target_modules=(attn_re, ffn_re)))] == expected(family)
    # the head: excluded by default even when targeted; reachable when the excludes are dropped
    with pytest.raises(ValueError, match="no nn.Linear, Conv1d/Conv2d or LSTM/GRU module matches"):
        cl.select_modules(model, cfg.replace(target_modules=(r"classifier",)))
    head = {n for n, _ in cl.select_modules(model, cfg.replace(target_modules=(r"classifier",), exclude_modules=()))}
    assert head == {n for n in SPEC[family][3] if "classifier" in n}
    mods = cl.patch_model(model, cfg.replace(exclude_modules=(ffn_re,)))
    assert list(mods) == attn and set(cl.crossbar_modules(model)) == set(attn)


@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_unchanged_and_checkpoints_interchange(checkpoints, family, tmp_path):
    model, tok = load(checkpoints, family)
    b = batch(tok)
    ref = logits(model, b)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = build_sim_config("default", SMALL + ["faults.rate=0.02"])
    cl.patch_model(model, cfg)
    cl.program_model(model, np.random.default_rng(0))
    cl.set_simulated(model, True)
    state = model.state_dict()
    assert list(state) == list(before)
    assert all(torch.equal(state[k], before[k]) for k in before)  # programming leaves weights alone
    # patched -> fresh unpatched model (other random weights until loaded), strict keys
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        fresh = transformers.AutoModelForSequenceClassification.from_config(model.config).eval()
    fresh.load_state_dict(state, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], before[k]) for k in before)
    assert torch.equal(logits(fresh, b), ref)
    # unpatched -> patched model: the chip of the old weights is refused until programmed again
    other = write_tiny_family(tmp_path / "other", family, seed=1)
    patched, _ = load_classifier(other, None)
    cl.patch_model(patched, cfg)
    cl.program_model(patched, np.random.default_rng(0))
    cl.set_simulated(patched, True)
    patched.load_state_dict(fresh.state_dict(), strict=True)
    assert all(torch.equal(patched.state_dict()[k], before[k]) for k in before)
    with pytest.raises(ValueError, match="weight changed"):
        logits(patched, b)
    cl.set_simulated(patched, False)
    assert torch.equal(logits(patched, b), ref)
    # save_pretrained of the patched model reloads through the loader, unpatched, unchanged
    model.save_pretrained(str(tmp_path / "saved"))
    tok.save_pretrained(str(tmp_path / "saved"))
    back, _ = load_classifier(tmp_path / "saved", None)
    assert not cl.crossbar_modules(back)
    assert torch.equal(logits(back, b), ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_digital_exact_and_ideal_chip_within_quantization_bound(checkpoints, family):
    """An ideal chip (noiseless levels, ideal ADC, no faults) with b-bit dynamic fixed-point weights
    and inputs: each layer adds an error of at most ~2^-(b-1) of its output scale from the weights
    and as much from the inputs; 2 layers put 8 quantized layers in series (q/k/v, attention
    output, two feed-forward), and LayerNorm / softmax / cancellation may double it, so at b = 16
    the logits are held to 32 * 2^-15 = 2^-10 of their scale (measured 0.9e-4 .. 4.1e-4). The error
    is quantization: 8 bits give >= 2^6 times more (ideally 2^8; measured 2^8.2 .. 2^8.7). Digital
    mode is bit-identical to the original model."""
    model, tok = load(checkpoints, family)
    b = batch(tok)
    ref = logits(model, b)
    scale = float(ref.abs().max())
    err = {}
    for bits in (16, 8):
        cfg = build_sim_config("ideal", SMALL + [f"crossbar.weight_bits={bits}", f"crossbar.input_bits={bits}"])
        mods = cl.patch_model(model, cfg)
        assert list(mods) == expected(family)
        assert torch.equal(logits(model, b), ref)  # patched, not programmed: digital
        cl.program_model(model, np.random.default_rng(0))
        cl.set_simulated(model, True)
        err[bits] = float((logits(model, b) - ref).abs().max()) / scale
        cl.set_simulated(model, False)
        assert torch.equal(logits(model, b), ref)
        cl.unpatch_model(model)
        assert torch.equal(logits(model, b), ref)
    assert 0 < err[16] <= 2.0**-10
    assert err[8] >= 2.0**6 * err[16]


@pytest.mark.parametrize("family", FAMILIES)
def test_reprogram_new_chip_and_same_seed_bit_identical(checkpoints, family):
    """Stuck-at faults (5 % of cells) and 5 % programming variation: another seed is another chip
    (another fault map, other logits); the same seed, by reprogramming or from a fresh load, is the
    same chip bit for bit; the quantized codes survive reprogramming."""
    model, tok = load(checkpoints, family)
    b = batch(tok)
    cfg = build_sim_config("default", SMALL + ["faults.rate=0.05", "levels.sigma_rel=0.05"])
    mods = cl.patch_model(model, cfg)
    first = mods[expected(family)[0]]
    cl.program_model(model, np.random.default_rng(1))
    cl.set_simulated(model, True)
    a = logits(model, b)
    codes = first.programmed.qweight.q.clone()
    faults_a = first.programmed.tile_state().faults.copy()
    cl.reprogram_model(model, np.random.default_rng(2))
    assert torch.equal(first.programmed.qweight.q, codes)
    assert not np.array_equal(first.programmed.tile_state().faults, faults_a)
    assert not torch.equal(logits(model, b), a)
    cl.reprogram_model(model, np.random.default_rng(1))
    assert np.array_equal(first.programmed.tile_state().faults, faults_a)
    assert torch.equal(logits(model, b), a)
    again, _ = load(checkpoints, family)
    cl.patch_model(again, cfg)
    cl.program_model(again, np.random.default_rng(1))
    cl.set_simulated(again, True)
    assert torch.equal(logits(again, b), a)


@pytest.mark.parametrize("family", FAMILIES)
def test_base_encoder_gets_fresh_head_and_same_patterns(family, tmp_path):
    """A base encoder (``AutoModel``, no head) loads as a classifier with a fresh head; the default
    patterns pick the same encoder layers."""
    from _tiny_bert import family_config

    d = write_tiny_family(tmp_path / "clf", family)
    vocab_size = transformers.AutoConfig.from_pretrained(d).vocab_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = transformers.AutoModel.from_config(family_config(family, vocab_size))
    base.save_pretrained(str(tmp_path / "clf"))  # overwrites the classifier's config and weights
    model, _ = load_classifier(tmp_path / "clf", 3)
    assert model.config.num_labels == 3
    assert [n for n, _ in cl.select_modules(model, SimConfig())] == expected(family)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "bert"])  # bert: test_evaluate.py
def test_glue_evaluation_path(checkpoints, family, tmp_path):
    """``evaluate_glue`` (tokenize, batch with token type ids, patch, program, calibrate the ADC,
    reprogram per trial) runs unchanged on each family; the same seed gives the same rows."""
    from nn.evaluate import evaluate_glue
    from _tiny_bert import write_glue

    glue = write_glue(tmp_path / "glue", n_dev=8)
    cfg = build_sim_config(
        "default", SMALL + ["faults.rate=0.05", "crossbar.adc_bits=6", "crossbar.adc_range=calibrated"]
    )
    runs = [
        evaluate_glue(checkpoints[family], "sst2", glue, cfg, 2, 3, tmp_path / f"r{k}.csv", batch_size=4,
                      max_length=32, progress=False, verbose=False)
        for k in range(2)
    ]
    for s in runs:
        assert [(r["mode"], r["trial"]) for r in s["rows"]] == [("digital", -1), ("simulated", 0), ("simulated", 1)]
        assert all(r["n_examples"] == 8 for r in s["rows"])
    assert [r["accuracy"] for r in runs[0]["rows"]] == [r["accuracy"] for r in runs[1]["rows"]]


@pytest.mark.parametrize("family", FAMILIES)
def test_training_targets_default_to_the_chip_layers(checkpoints, family):
    """DVA noise, hardware views and row/column pruning (nn.finetune's default ``dva_target``)
    reach exactly the layers the chip simulates, in every family."""
    from nn.finetune import DEFAULT_DVA_TARGET, FinetuneConfig, select_linear

    model, _ = load(checkpoints, family)
    chip = [name for name, _ in cl.select_modules(model, SimConfig())]
    assert chip == expected(family)
    trained = [name for name, _ in select_linear(model, (DEFAULT_DVA_TARGET,))]
    assert trained == chip
    prune_re = re.compile(FinetuneConfig(prune_rows_cols=0.3).pruning_config().target_modules)
    pruned = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and prune_re.search(n)]
    assert pruned == chip
