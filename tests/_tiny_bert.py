"""Test helpers (not tests): a tiny random BERT classifier with its tokenizer, tiny RoBERTa /
DistilBERT / ELECTRA / ALBERT classifiers with tokenizers of their own kinds, and tiny GLUE TSVs,
written into a temporary directory. Used by test_crossbar_linear, test_evaluate, test_study,
test_model_families."""

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


#: model families :func:`write_tiny_family` writes (``bert`` is :func:`write_tiny_classifier`)
FAMILIES = ("bert", "roberta", "distilbert", "electra", "albert")

#: RoBERTa's byte-level BPE: special tokens, then single characters (``Ġ`` is the space); with no
#: merges every word is spelled out letter by letter
_ROBERTA_VOCAB = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + sorted(set("".join(VOCAB[5:])) | {"\u0120"})


def family_config(family: str, vocab_size: int, num_labels: int = 2):
    """A 2-layer, hidden-32 config of ``family`` (see :data:`FAMILIES`)."""
    import transformers

    common = dict(vocab_size=vocab_size, num_labels=num_labels, initializer_range=0.2)
    bert_like = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if family == "bert":
        return bert_config(num_labels, vocab_size=vocab_size)
    if family == "roberta":  # positions start after padding_idx = pad_token_id = 1
        return transformers.RobertaConfig(
            **common, **bert_like, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
            eos_token_id=2,
        )
    if family == "distilbert":
        return transformers.DistilBertConfig(
            **common, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64, pad_token_id=0,
        )
    if family == "electra":  # embedding_size != hidden_size: an embeddings_project Linear too
        return transformers.ElectraConfig(**common, **bert_like, embedding_size=16, max_position_embeddings=64)
    if family == "albert":  # one layer group shared by both layers, embeddings mapped 16 -> 32
        return transformers.AlbertConfig(
            **common, **bert_like, embedding_size=16, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
            eos_token_id=3,
        )
    raise ValueError(f"family={family!r} is invalid: must be one of {', '.join(FAMILIES)}")


def _family_tokenizer(family: str, d: Path):
    import transformers

    if family in ("bert", "electra"):
        (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        return transformers.BertTokenizerFast.from_pretrained(str(d))
    if family == "distilbert":
        (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        return transformers.DistilBertTokenizerFast.from_pretrained(str(d))
    if family == "roberta":
        return transformers.RobertaTokenizer(vocab={t: i for i, t in enumerate(_ROBERTA_VOCAB)}, merges=[])
    if family == "albert":  # a unigram model over the word list, pad=0, unk=1, [CLS]=2, [SEP]=3
        words = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"] + ["\u2581" + w for w in VOCAB[5:]]
        return transformers.AlbertTokenizer(vocab=[(w, 0.0 if i < 5 else -1.0) for i, w in enumerate(words)])
    raise ValueError(f"family={family!r} is invalid: must be one of {', '.join(FAMILIES)}")


def write_tiny_family(d: Path, family: str, num_labels: int = 2, seed: int = 0) -> Path:
    """A randomly initialised ``*ForSequenceClassification`` of ``family`` (2 layers, hidden 32,
    see :func:`family_config`) with a tokenizer of the family's own kind over :data:`VOCAB`'s
    words, saved in ``d``. ``seed`` seeds the weights without touching the global torch RNG."""
    import torch
    import transformers

    d.mkdir(parents=True, exist_ok=True)
    tok = _family_tokenizer(family, d)
    cfg = family_config(family, len(tok), num_labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForSequenceClassification.from_config(cfg)
    model.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d
