"""Small networks of the kinds seed paper 2 was written for: a CNN on handwritten digits and an
LSTM sentence classifier, with their data, training (normal, DVA, chip-matched DVA) and the
evaluation session the study engine runs on chips.

Long, She, Mukhopadhyay (DATE 2019, doi:10.23919/DATE.2019.8715178) evaluate dynamic fixed point
and device-variation-aware (DVA) training on an AlexNet-class CNN (CIFAR-10) and on RNN / LSTM
networks. This module gives the toolkit real, offline stand-ins for both:

``digits_cnn`` on ``digits``
    scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``: 1,797 8x8
    images, 16 grey levels, 10 classes), pixels scaled to [0, 1], split 80 / 20 stratified with a
    fixed seed into ``train`` (1,437) and ``dev`` (360). :class:`DigitsCNN`: two 3x3
    convolutions (1 -> 16 -> 32 channels, ReLU), 2x2 max pooling, two fully connected layers
    (512 -> 128 -> 10): like AlexNet, convolutions with small fan-in first and fully connected
    layers with large fan-in last, so the first convolution's weights span a wider range than the
    last layer's (the paper's reason for a per-layer binary point).
``lstm_classifier`` on ``sst2``
    SST-2 (``<glue_dir>/SST-2``, the GLUE TSV files): a word-level vocabulary from the training
    split (lower-cased whitespace tokens seen at least ``min_count`` times; 0 = padding, 1 =
    unknown), trained from scratch. :class:`LSTMClassifier`: an embedding table (digital: a
    lookup, not a matrix-vector product), one LSTM layer, the last hidden state of each sentence
    (packed sequences: padding never enters the recurrence) and a linear head. The LSTM's input
    and recurrent matrices and the head go on crossbars.

Sources of the data and of the training recipe: docs/REFERENCES.md, "Data sets of the small
networks" (UCI digits, Alpaydin and Kaynak 1998; SST-2, Socher et al. 2013, GLUE release).

A trained model is a directory: ``model.safetensors`` (the ``state_dict``), ``smallnet.json``
(architecture, task, training config and record, dev accuracy, per-layer weight ranges) and, for
the LSTM, ``vocab.json``; :func:`load_model` reads it, and ``model_digest`` (:mod:`nn.provenance`)
hashes it like a Hugging Face checkpoint. :func:`open_session` returns a
:class:`nn.evaluate.EvalSession` on its ``dev`` split, so :mod:`nn.study` / :mod:`nn.executor`
run studies of these models (study task ``digits``, or ``sst2`` with a small-net model)
unchanged: the same content-keyed, resumable results rows, chips, protections and plots.

Training (:func:`train`, :class:`TrainConfig`): Adam, a seeded data order, and per batch the
same weight perturbations as BERT fine-tuning: DVA weight noise (:func:`nn.dva.weight_noise`,
``W * (1 + sigma z)`` or ``W * exp(sigma z)``) or the chip-matched view
(:class:`nn.hwtrain.HardwareView`: the chip's quantized read-back plus the per-weight noise of its
bit-sliced cells) on every crossbar matrix (:func:`nn.crossbar_linear.matrix_weights`: each
convolution group and LSTM matrix with its own dynamic-fixed-point binary point, as the chip
quantizes them).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from device.config import Config, ConfigError, check_choice, check_int_range, check_range, config
from device.errors import UserError
from nn.evaluate import EvalSession
from nn.sim import SimConfig

__all__ = [
    "SMALLNET_FILE",
    "TASKS",
    "ARCHS",
    "DigitsCNN",
    "LSTMClassifier",
    "ImageSplit",
    "Vocab",
    "load_digits_split",
    "digits_digest",
    "build_vocab",
    "encode_sst2",
    "TrainConfig",
    "train",
    "save_model",
    "load_model",
    "is_smallnet_dir",
    "weight_ranges",
    "open_session",
    "SmallNetSession",
    "SmallNetError",
    "all_layers",
    "smallnet_sim",
]

#: the file that marks a small-net model directory (architecture, task, training record)
SMALLNET_FILE = "smallnet.json"
#: tasks that are not GLUE tasks (a study may name them); sst2 is GLUE's
TASKS = ("digits",)
#: seed of the digits train / dev split
_DIGITS_SPLIT_SEED = 0
#: share of the digits kept for ``dev``
_DIGITS_DEV_SHARE = 0.2


class SmallNetError(UserError):
    """A small-net model directory, task or data that cannot be used."""


# --------------------------------------------------------------------------------------------
# models


class DigitsCNN(nn.Module):
    """An AlexNet-style CNN for 8x8 digits: ``conv1`` (1 -> c1, 3x3, padding 1), ReLU, ``conv2``
    (c1 -> c2, 3x3, padding 1), ReLU, 2x2 max pooling, ``fc1`` (c2 * 16 -> hidden), ReLU, ``fc2``
    (hidden -> 10). Input ``x`` ``(N, 1, 8, 8)``; returns logits ``(N, 10)``."""

    def __init__(self, c1: int = 16, c2: int = 32, hidden: int = 1024, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * 16, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


class LSTMClassifier(nn.Module):
    """``emb`` (vocab x embed, digital), ``lstm`` (one layer, embed -> hidden, batch first), the
    last hidden state of each sentence (packed by its length), dropout, ``fc`` (hidden ->
    classes). Inputs ``input_ids`` ``(N, T)`` and ``attention_mask`` ``(N, T)`` (ones on the
    tokens, left-aligned); returns logits ``(N, classes)``."""

    def __init__(self, vocab_size: int, embed: int = 64, hidden: int = 64, classes: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        from torch.nn.utils.rnn import pack_padded_sequence

        mask = attention_mask if attention_mask is not None else (input_ids != 0).long()
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.drop(self.emb(input_ids)), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.fc(self.drop(h[-1]))


#: architecture name -> (model class, task)
ARCHS: dict[str, tuple[type, str]] = {"digits_cnn": (DigitsCNN, "digits"), "lstm_classifier": (LSTMClassifier, "sst2")}


def all_layers() -> list[str]:
    """``--set`` overrides that put every supported layer of a small net on crossbars
    (``target_modules=[".*"]``, nothing excluded): as in the paper, the first and last layers too."""
    return ['target_modules=[".*"]', "exclude_modules=[]"]


def smallnet_sim(preset: str = "default", overrides: Sequence[str] = ()) -> SimConfig:
    """A sim config with :func:`all_layers` and then ``overrides`` applied to ``preset``."""
    from nn.sim import build_sim_config

    return build_sim_config(preset, all_layers() + list(overrides))


# --------------------------------------------------------------------------------------------
# data


@dataclasses.dataclass(frozen=True)
class ImageSplit:
    """Images ``x`` ``(n, 1, 8, 8)`` float32 in [0, 1] and labels ``(n,)`` int64, batched like
    :class:`nn.glue.Encoded` (``batch`` -> ``{"x", "labels"}``; all rows the same length)."""

    x: np.ndarray
    labels: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.ones(len(self.labels), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int] | np.ndarray, device: Any = "cpu") -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        return {"x": torch.from_numpy(self.x[idx]).to(device), "labels": torch.from_numpy(self.labels[idx]).to(device)}

    def select(self, indices: Sequence[int] | np.ndarray) -> "ImageSplit":
        idx = np.asarray(indices, dtype=np.int64)
        return ImageSplit(self.x[idx], self.labels[idx])


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.asarray(d.data, dtype=np.float64), np.asarray(d.target, dtype=np.int64)


def load_digits_split(split: str) -> ImageSplit:
    """``train`` (80 %) or ``dev`` (20 %) of scikit-learn's digits, stratified, fixed seed."""
    from sklearn.model_selection import train_test_split

    if split not in ("train", "dev"):
        raise SmallNetError(f"digits split {split!r} is invalid: 'train' or 'dev'")
    X, y = _digits_arrays()
    idx = np.arange(len(y))
    tr, dv = train_test_split(idx, test_size=_DIGITS_DEV_SHARE, stratify=y, random_state=_DIGITS_SPLIT_SEED)
    pick = np.sort(tr if split == "train" else dv)
    x = (X[pick] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return ImageSplit(x, y[pick])


def digits_digest() -> str:
    """``sha256:<hex>`` of the digits arrays (what a results row's ``data_sha256`` records)."""
    import hashlib

    X, y = _digits_arrays()
    d = hashlib.sha256(np.ascontiguousarray(X).tobytes())
    d.update(np.ascontiguousarray(y).tobytes())
    return "sha256:" + d.hexdigest()


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Word -> id (0 = padding, 1 = unknown); ``words[i]`` is id ``i + 2``."""

    words: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.words) + 2

    @property
    def index(self) -> dict[str, int]:
        return {w: i + 2 for i, w in enumerate(self.words)}


def _tokens(text: str) -> list[str]:
    return text.lower().split()


def build_vocab(texts: Sequence[str], min_count: int = 2) -> Vocab:
    """Words seen at least ``min_count`` times in ``texts``, most frequent first (ties by word)."""
    from collections import Counter

    c = Counter(t for s in texts for t in _tokens(s))
    return Vocab(tuple(w for w, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count))


def encode_sst2(split: Any, vocab: Vocab, max_length: int) -> Any:
    """A :class:`nn.glue.GlueSplit` as :class:`nn.glue.Encoded` word ids (at most ``max_length``
    tokens, at least one: an empty sentence reads as one unknown word)."""
    from nn.glue import Encoded

    ix = vocab.index
    ids = [[ix.get(t, 1) for t in _tokens(s)][:max_length] or [1] for s in split.text_a]
    return Encoded(input_ids=ids, token_type_ids=None, labels=np.asarray(split.labels), pad_id=0,
                   lengths=np.asarray([len(r) for r in ids], dtype=np.int64))


# --------------------------------------------------------------------------------------------
# model directories


def is_smallnet_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory holding :data:`SMALLNET_FILE`."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / SMALLNET_FILE).is_file()


def _build(meta: dict[str, Any], vocab: Vocab | None) -> nn.Module:
    arch = meta.get("arch")
    if arch not in ARCHS:
        raise SmallNetError(f"unknown small-net architecture {arch!r}; known: {', '.join(ARCHS)}")
    kw = dict(meta.get("arch_kwargs", {}))
    if arch == "lstm_classifier":
        if vocab is None:
            raise SmallNetError("an LSTM classifier needs its vocab.json")
        kw["vocab_size"] = len(vocab)
    return ARCHS[arch][0](**kw)


def save_model(out_dir: str | Path, model: nn.Module, meta: dict[str, Any], vocab: Vocab | None = None) -> Path:
    """Write ``model.safetensors``, ``vocab.json`` (when given) and :data:`SMALLNET_FILE` (last,
    so a directory holding it is complete), each atomically. ``out_dir`` itself is created (its
    parent must exist)."""
    from safetensors.torch import save_file

    from device.io import atomic_path, atomic_write_text, check_output_dir

    out = check_output_dir(out_dir)
    out.mkdir(exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    if vocab is not None:
        atomic_write_text(out / "vocab.json", json.dumps(list(vocab.words)))
    atomic_write_text(out / SMALLNET_FILE, json.dumps(meta, indent=2, sort_keys=True))
    return out


def load_model(model_dir: str | Path, device: Any = "cpu") -> tuple[nn.Module, dict[str, Any], Vocab | None]:
    """``(model in eval mode, its smallnet.json, its vocabulary or None)`` from a directory
    written by :func:`save_model`."""
    from safetensors.torch import load_file

    p = Path(model_dir).expanduser()
    if not is_smallnet_dir(p):
        raise SmallNetError(f"{p} is not a small-net model directory (no {SMALLNET_FILE})")
    meta = json.loads((p / SMALLNET_FILE).read_text())
    vocab = Vocab(tuple(json.loads((p / "vocab.json").read_text()))) if (p / "vocab.json").is_file() else None
    model = _build(meta, vocab)
    model.load_state_dict(load_file(str(p / "model.safetensors")))
    return model.to(device).eval(), meta, vocab


def weight_ranges(model: nn.Module, sim_cfg: SimConfig | None = None) -> dict[str, float]:
    """``max |w|`` of every crossbar matrix (:func:`nn.crossbar_linear.matrix_weights`, all
    layers by default): the spread is what static fixed point pays for."""
    from nn.crossbar_linear import matrix_weights

    sim = sim_cfg if sim_cfg is not None else smallnet_sim()
    return {n: float(w.detach().abs().max()) for n, w in matrix_weights(model, sim).items()}


# --------------------------------------------------------------------------------------------
# training


@config
class TrainConfig(Config):
    """Training of a small net (see the module docstring)."""

    #: architecture: "digits_cnn" (task digits) or "lstm_classifier" (task sst2)
    arch: str = "digits_cnn"
    #: passes over the training split
    epochs: int = 30
    #: examples per step
    batch_size: int = 64
    #: "adam", or "sgd" (momentum 0.9, as AlexNet was trained: updates follow the gradient's
    #: scale, so each layer keeps the weight range its initialization gave it)
    optimizer: str = "sgd"
    #: learning rate
    lr: float = 0.05
    #: L2 weight decay (coupled)
    weight_decay: float = 0.0
    #: clip the gradient's global norm to this before each step; null = no clipping
    max_grad_norm: float | None = None
    #: seed of initialization, data order, dropout and training noise
    seed: int = 0
    #: training examples used (a stratified subset, default_rng(seed)); null = all
    max_train_examples: int | None = None
    #: lstm_classifier: tokens kept per sentence
    max_length: int = 64
    #: lstm_classifier: a word enters the vocabulary when seen this often in the training split
    min_count: int = 2
    #: DVA weight-noise sigma (dva_mode "weight"); 0 = no training noise
    dva_sigma: float = 0.0
    #: DVA noise: "normal" W (1 + sigma z) or "lognormal" W exp(sigma z)
    dva_distribution: str = "lognormal"
    #: "weight": DVA noise on the weights; "crossbar": the chip-matched view of `sim` (nn.hwtrain)
    dva_mode: str = "weight"
    #: dva_mode "crossbar": multiplies the chip's per-weight noise std
    dva_noise_scale: float = 1.0
    #: the chip dva_mode "crossbar" matches, as --set overrides of preset "default" (all layers on
    #: crossbars is added first); ignored otherwise
    sim: tuple[str, ...] = ()
    #: architecture keyword arguments (e.g. {"hidden": 64}); vocab_size comes from the data
    arch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: a small-net model directory to start from (same architecture and vocabulary) instead of
    #: a fresh initialization, e.g. chip-matched DVA fine-tuning of a normally trained model
    init: str | None = None

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, tuple(ARCHS))
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        check_int_range("epochs", self.epochs, 1, 10_000)
        check_int_range("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        if self.max_grad_norm is not None:
            check_range("max_grad_norm", self.max_grad_norm, 0.0, 1e6, lo_open=True)
        check_int_range("seed", self.seed, 0)
        if self.max_train_examples is not None:
            check_int_range("max_train_examples", self.max_train_examples, 1)
        check_int_range("max_length", self.max_length, 1)
        check_int_range("min_count", self.min_count, 1)
        check_range("dva_sigma", self.dva_sigma, 0.0, 1.0)
        check_choice("dva_distribution", self.dva_distribution, ("normal", "lognormal"))
        check_choice("dva_mode", self.dva_mode, ("weight", "crossbar"))
        check_range("dva_noise_scale", self.dva_noise_scale, 0.0, 100.0)
        if self.dva_mode == "crossbar" and self.dva_sigma > 0:
            raise ConfigError("dva_sigma is the noise of dva_mode='weight'; dva_mode='crossbar' takes it from sim")
        if isinstance(self.sim, str):
            object.__setattr__(self, "sim", (self.sim,))
        if not all(isinstance(s, str) for s in self.sim):
            raise ConfigError(f"sim={self.sim!r} is invalid: a list of \"key=value\" overrides")
        if not isinstance(self.arch_kwargs, dict):
            raise ConfigError(f"arch_kwargs={self.arch_kwargs!r} is invalid: must be an object")
        if self.init is not None and not isinstance(self.init, str):
            raise ConfigError(f"init={self.init!r} is invalid: a model directory path or null")
        self.sim_config  # the chip must build (a bad override fails here)

    @property
    def task(self) -> str:
        return ARCHS[self.arch][1]

    @property
    def sim_config(self) -> SimConfig:
        """The chip of ``dva_mode="crossbar"`` (and the matrices noise is applied to)."""
        return smallnet_sim("default", self.sim)


def _subset(labels: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """A stratified subset of ``n`` row indices (all when None), in row order."""
    idx = np.arange(len(labels))
    if n is None or n >= len(labels):
        return idx
    keep = []
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n / len(labels)
    take = np.floor(share).astype(int)
    for k in np.argsort(-(share - take), kind="stable")[: n - take.sum()]:
        take[k] += 1
    for c, t in zip(classes, take):
        rows = idx[labels == c]
        keep.append(rng.choice(rows, size=t, replace=False))
    return np.sort(np.concatenate(keep))


def _training_data(cfg: TrainConfig, glue_dir: Any) -> tuple[Any, Any, Vocab | None]:
    if cfg.task == "digits":
        return load_digits_split("train"), load_digits_split("dev"), None
    from nn.glue import load_split

    tr = load_split("sst2", "train", glue_dir)
    vocab = build_vocab(tr.text_a, cfg.min_count)
    return encode_sst2(tr, vocab, cfg.max_length), encode_sst2(load_split("sst2", "dev", glue_dir), vocab, cfg.max_length), vocab


def _accuracy(model: nn.Module, data: Any, batch_size: int = 256) -> float:
    from nn.evaluate import predict

    was = model.training
    model.eval()
    try:
        return float((predict(model, data, batch_size).argmax(1) == np.asarray(data.labels)).mean())
    finally:
        model.train(was)


def train(cfg: TrainConfig, out_dir: str | Path, *, glue_dir: Any = None, progress: bool = True) -> dict[str, Any]:
    """Train a small net with ``cfg`` and save it to ``out_dir`` (:func:`save_model`). Returns
    its ``smallnet.json`` record. Deterministic on CPU for a given seed and thread count."""
    from tqdm.auto import tqdm

    from device.io import check_output_dir, software_version
    from nn.crossbar_linear import matrix_weights
    from nn.dva import weight_noise
    from nn.hwtrain import HardwareView, hardware_weights

    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    check_output_dir(out_dir)
    t0 = time.perf_counter()
    train_data, dev_data, vocab = _training_data(cfg, glue_dir)
    rows = _subset(np.asarray(train_data.labels), cfg.max_train_examples, np.random.default_rng(cfg.seed))
    if cfg.init is not None:
        model, init_meta, init_vocab = load_model(cfg.init)
        if init_meta["arch"] != cfg.arch or init_vocab != vocab:
            raise SmallNetError(f"init model {cfg.init} is a {init_meta['arch']} with another architecture or vocabulary")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = _build({"arch": cfg.arch, "arch_kwargs": cfg.arch_kwargs}, vocab)
    sim = cfg.sim_config
    targets = matrix_weights(model, sim)
    view = HardwareView(sim, noise_scale=cfg.dva_noise_scale) if cfg.dva_mode == "crossbar" else None
    sigma = cfg.dva_sigma if cfg.dva_mode == "weight" else 0.0
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order_rng = np.random.default_rng([cfg.seed, 2])
    history = []
    steps = cfg.epochs * math.ceil(len(rows) / cfg.batch_size)
    bar = tqdm(total=steps, desc=f"train {cfg.arch}", unit="step", disable=not progress, file=sys.stderr, leave=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 3)  # dropout
        model.train()
        for epoch in range(cfg.epochs):
            perm = order_rng.permutation(rows)
            total, n = 0.0, 0
            for i in range(0, len(perm), cfg.batch_size):
                b = train_data.batch(perm[i: i + cfg.batch_size])
                labels = b.pop("labels")
                with hardware_weights(targets, view, noise_gen), weight_noise(targets, sigma, noise_gen, cfg.dva_distribution):
                    loss = nn.functional.cross_entropy(model(**b), labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                if not math.isfinite(float(loss.detach())):
                    raise SmallNetError(
                        f"training diverged at epoch {epoch + 1} (loss {float(loss.detach())}); lower lr or set max_grad_norm"
                    )
                opt.step()
                total += float(loss.detach()) * len(labels)
                n += len(labels)
                bar.update(1)
            history.append({"epoch": epoch + 1, "train_loss": total / max(1, n)})
    bar.close()
    model.eval()
    dev_acc = _accuracy(model, dev_data)
    meta = {
        "format": "reram-cosim smallnet", "format_version": 1, "arch": cfg.arch, "task": cfg.task,
        "arch_kwargs": dict(cfg.arch_kwargs), "train": json.loads(cfg.to_json()), "history": history,
        "dev_accuracy": dev_acc, "train_examples": int(len(rows)),
        "init_sha256": None if cfg.init is None else _model_sha(cfg.init), "vocab_size": None if vocab is None else len(vocab),
        "weight_ranges": weight_ranges(model), "wall_s": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(), "software_version": software_version(),
    }
    if view is not None:
        meta["hardware_view"] = view.describe()
    save_model(out_dir, model, meta, vocab)
    return meta


def _model_sha(path: str) -> str:
    from nn.provenance import model_digest

    return model_digest(path)


# --------------------------------------------------------------------------------------------
# evaluation sessions (the study engine's rows)


def _logits(model: nn.Module, batch: Any) -> torch.Tensor:
    return model(**{k: v for k, v in batch.items() if k != "labels"})


def open_session(model_dir: str | Path, task: str, glue_dir: Any, *, split: str = "dev", max_examples: int | None = None,
                 max_length: int = 64, batch_size: int = 64, device: Any = "cpu") -> Any:
    """A :class:`nn.evaluate.EvalSession` of a small-net model on ``split`` of its task: the
    model, its data encoded once (``max_length`` tokens per sentence for the LSTM), the content
    hashes; a stratified ``max_examples`` subset with ``default_rng(0)`` as for GLUE."""
    from nn.provenance import model_digest

    model, meta, vocab = load_model(model_dir, device)
    if task != meta["task"]:
        raise SmallNetError(f"{model_dir} is a {meta['arch']} for task {meta['task']!r}, not {task!r}")
    if meta["task"] == "digits":
        data = load_digits_split(split)
        data_sha = digits_digest()
    else:
        from nn.glue import load_split
        from nn.provenance import data_digest

        sp = load_split("sst2", split, glue_dir)
        data_sha = data_digest(sp)
        data = encode_sst2(sp, vocab, max_length)
    if max_examples is not None and max_examples < len(data):
        keep = _subset(np.asarray(data.labels), max_examples, np.random.default_rng(0))
        data = data.select(keep) if isinstance(data, ImageSplit) else _select_encoded(data, keep)
    return SmallNetSession(
        model_dir=str(model_dir), task=task, split=split, model=model, encoded=data, max_examples=max_examples,
        max_length=max_length, batch_size=batch_size, n_examples=len(data), model_sha256=model_digest(model_dir),
        data_sha256=data_sha, glue_dir=None if glue_dir is None else str(glue_dir),
        majority=_majority(task, np.asarray(data.labels)),
    )


def _majority(task: str, labels: np.ndarray) -> float:
    """Accuracy of always answering the most frequent label (the chance line of a plot)."""
    if task != "digits":
        from nn.results import majority_score

        return majority_score("sst2", labels)
    return float(np.bincount(labels).max() / labels.size) if labels.size else 0.0


def _select_encoded(enc: Any, keep: np.ndarray) -> Any:
    return dataclasses.replace(enc, input_ids=[enc.input_ids[i] for i in keep], labels=enc.labels[keep],
                               lengths=enc.lengths[keep])


class SmallNetSession(EvalSession):
    """:class:`nn.evaluate.EvalSession` of a small net: accuracy for ``digits`` (GLUE's metric for
    ``sst2``), and the placement weights (:mod:`nn.sensitivity`) estimated on 256 training
    examples with the model's own forward."""

    def score(self, outputs: np.ndarray) -> dict[str, float]:
        if self.task == "digits":
            acc = float((np.asarray(outputs).argmax(1) == np.asarray(self.encoded.labels)).mean())
            return {"accuracy": acc, "score": acc}
        return super().score(outputs)

    def attach_placement_weights(self, sim_cfg: SimConfig) -> None:
        from nn.sensitivity import N_EXAMPLES, attach_placement_weights

        def batches() -> list[dict[str, Any]]:
            _, meta, vocab = load_model(self.model_dir)
            if self.task == "digits":
                data = load_digits_split("train")
            else:
                from nn.glue import load_split

                data = encode_sst2(load_split("sst2", "train", self.glue_dir), vocab, self.max_length)
            rows = _subset(np.asarray(data.labels), N_EXAMPLES, np.random.default_rng(0))
            dev = next(self.model.parameters()).device
            return [data.batch(rows[i: i + 32], dev) for i in range(0, len(rows), 32)]

        attach_placement_weights(self.model, sim_cfg, batches, forward=_logits, row_mask=lambda b: None)
