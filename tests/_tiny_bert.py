"""Test helpers (not tests): a tiny random BERT classifier with its tokenizer, and tiny GLUE TSVs,
written into a temporary directory. Used by test_crossbar_linear, test_evaluate, test_study."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GOOD = ["good", "great", "fine", "nice", "superb"]
BAD = ["bad", "awful", "poor", "dull", "boring"]
FILLER = ["the", "movie", "film", "was", "plot", "actors", "very", "quite", "a", "story"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + GOOD + BAD + FILLER


def bert_config(num_labels: int = 2, **kw):
    import transformers

    args = dict(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=num_labels, initializer_range=0.2,
    )
    args.update(kw)
    return transformers.BertConfig(**args)


def write_tiny_classifier(d: Path, num_labels: int = 2, seed: int = 0) -> Path:
    """A randomly initialised ``BertForSequenceClassification`` (2 layers, hidden 32) and a
    word-level tokenizer over :data:`VOCAB`, saved in ``d``."""
    import torch
    import transformers

    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = transformers.BertTokenizerFast.from_pretrained(str(d))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.BertForSequenceClassification(bert_config(num_labels))
    model.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def sentences(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        y = int(rng.integers(0, 2))
        words = list(rng.choice(FILLER, size=int(rng.integers(2, 7))))
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(GOOD if y else BAD)))
        texts.append(" ".join(words))
        labels.append(y)
    return texts, labels


def write_glue(root: Path, n_dev: int = 24) -> Path:
    """``root/SST-2/{train,dev}.tsv`` in the GLUE layout (header ``sentence<TAB>label``)."""
    d = root / "SST-2"
    d.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.tsv", 16, 1), ("dev.tsv", n_dev, 2)):
        t, y = sentences(n, seed)
        (d / name).write_text("sentence\tlabel\n" + "".join(f"{a} \t{b}\n" for a, b in zip(t, y)))
    return root
