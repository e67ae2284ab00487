"""Distillation from the starting model during fine-tuning / pruning recovery (nn.finetune
``distill_*``): the loss's analytic values, and a tiny run that stays near its teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from nn import glue  # noqa: E402
from nn.finetune import FinetuneConfig, distillation_loss, finetune  # noqa: E402

from _tiny_bert import VOCAB, sentences  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_logit_term_is_the_tempered_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    assert float(distillation_loss(t, t)) == pytest.approx(0.0, abs=1e-7)
    T = 3.0
    p, q = torch.softmax(t / T, -1), torch.softmax(s / T, -1)
    expect = float((p * (p.log() - q.log())).sum(-1).mean()) * T * T
    assert float(distillation_loss(s, t, temperature=T)) == pytest.approx(expect, rel=1e-6)
    # regression (one output): the mean squared difference
    assert float(distillation_loss(s[:, :1], t[:, :1])) == pytest.approx(float(((s - t)[:, 0] ** 2).mean()), rel=1e-6)


def test_hidden_term_ignores_padding():
    g = torch.Generator().manual_seed(1)
    logits = torch.zeros(2, 2)
    hs = [torch.randn(2, 4, 8, generator=g) for _ in range(3)]
    ht = [h.clone() for h in hs]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    for h in ht:
        h[mask == 0] += 100.0  # padded tokens differ wildly: they must not count
    assert float(distillation_loss(logits, logits, hs, ht, hidden_weight=1.0, attention_mask=mask)) == 0.0
    ht[1][0, 0, :] += 2.0  # one real token of one layer off by 2 in every feature
    expect = (4.0 * 8 / (5 * 8)) / 3  # mean over 5 real tokens x 8 features, then over 3 layers
    got = float(distillation_loss(logits, logits, hs, ht, hidden_weight=0.5, attention_mask=mask))
    assert got == pytest.approx(0.5 * expect, rel=1e-6)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_bert_distill")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = transformers.BertTokenizerFast.from_pretrained(str(d))
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64, num_labels=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.BertForSequenceClassification(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def _split(n: int, seed: int, split: str) -> glue.GlueSplit:
    texts, labels = sentences(n, seed)
    return glue.GlueSplit(task="sst2", split=split, text_a=texts, text_b=None, labels=np.array(labels, dtype=np.int64))


def test_distilled_pruning_run_stays_near_its_teacher(tiny_model, tmp_path):
    """Same run (30 % row/column pruning, global scope) with and without distillation from the
    starting model: the distilled student's dev logits stay closer to the teacher's."""
    from nn.models import load_classifier

    train, dev = _split(128, 1, "train"), {"dev": _split(48, 2, "dev")}
    base = dict(task="sst2", epochs=2, batch_size=16, lr=3e-3, max_length=16, checkpoint_every=0, seed=3,
                prune_rows_cols=0.3, prune_scope="global")
    kw = dict(device="cpu", train=train, dev=dev, progress=False, num_threads=1)
    finetune(FinetuneConfig(**base), tiny_model, None, tmp_path / "plain", **kw)
    finetune(FinetuneConfig(**base, distill_alpha=0.9, distill_hidden=1.0), tiny_model, None, tmp_path / "kd", **kw)
    teacher, tok = load_classifier(tiny_model, None, task="sst2")
    enc = glue.tokenize(dev["dev"], tok, 16)
    batch = enc.batch(np.arange(len(enc)), torch.device("cpu"))

    def logits(path):
        m, _ = load_classifier(path, None, task="sst2")
        m.eval()
        with torch.no_grad():
            return m(**batch).logits

    teacher.eval()
    with torch.no_grad():
        t = teacher(**batch).logits
    gap = {k: float(distillation_loss(logits(tmp_path / k), t, temperature=1.0)) for k in ("plain", "kd")}
    assert (tmp_path / "kd" / "pruning_masks.safetensors").is_file()
    assert gap["kd"] < 0.5 * gap["plain"], gap
