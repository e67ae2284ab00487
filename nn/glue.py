"""The nine GLUE tasks: one registry, TSV and Hugging Face hub loaders, subsetting, tokenization.

Data come from a local directory in the layout written by GLUE's ``download_glue_data.py``
(``<glue_dir>/<TASK>/{train,dev}.tsv``, MNLI with ``dev_matched.tsv`` / ``dev_mismatched.tsv``)
or, when no directory is given, from the hub copy ``nyu-mll/glue`` through ``datasets``.

Label ids are the hub's ids for every task (e.g. MNLI entailment=0, neutral=1, contradiction=2;
QNLI/RTE entailment=0, not_entailment=1), so a model fine-tuned on either source means the same
thing by its outputs. STS-B is regression: one output, the gold score in [0, 5].

Reading quirks of the GLUE TSVs (GLUE's ``download_glue_data.py`` layout): no field is quoted but
sentences contain ``"``, so rows are split with ``csv.QUOTE_NONE``; MRPC starts with a UTF-8 BOM (a
BOM is accepted in every task's files); CoLA train/dev have no header (source, label, original mark,
sentence); STS-B's score is the last of its 10 columns; QQP train holds a few rows with a wrong
number of fields, which are skipped and counted (:attr:`GlueSplit.skipped`). Dev and test files
must be complete: a malformed row or an unknown label there raises :class:`GlueDataError` naming
the line numbers, for every task (a score on a silently shortened dev set is not the task's score).
"""

from __future__ import annotations

from device.errors import UserError

import csv
import math
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "GlueDataError",
    "GlueTask",
    "GlueSplit",
    "Encoded",
    "TASKS",
    "get_task",
    "load_split",
    "load_local",
    "load_hub",
    "split_from_hub_dataset",
    "subsample",
    "tokenize",
    "default_glue_dir",
]

HUB_DATASET = "nyu-mll/glue"


class GlueDataError(UserError):
    """A GLUE file or data set is missing or malformed. The message names the file and the problem."""


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is stored and scored.

    Column fields name a header column (``str``) or give a 0-based field index (``int``, negative
    counts from the end) for files without a header or where GLUE's own readers use a position.
    """

    #: registry key, the hub config name: "cola", "sst2", ...
    name: str
    #: directory in the GLUE distribution: "CoLA", "SST-2", ...
    dir_name: str
    #: first sentence column
    text_a: str | int
    #: second sentence column, None for single-sentence tasks
    text_b: str | int | None
    #: label column
    label: str | int
    #: TSV label strings in hub id order; None = regression
    labels: tuple[str, ...] | None
    #: training file name in the task directory
    train_file: str
    #: (split name, file name) for each dev split
    dev_files: tuple[tuple[str, str], ...]
    #: metric names reported by nn.metrics.glue_score
    metrics: tuple[str, ...]
    #: train/dev files start with a header row
    header: bool = True
    #: field count for header-less files
    n_fields: int | None = None
    #: train split only: skip-and-count malformed rows instead of raising
    dirty: bool = False
    #: UTF-8, with or without a byte-order mark
    encoding: str = "utf-8-sig"
    #: first sentence column in nyu-mll/glue
    hub_text_a: str = "sentence"
    #: second sentence column in nyu-mll/glue (None for single-sentence tasks)
    hub_text_b: str | None = None
    #: (split name here, split name on the hub)
    hub_splits: tuple[tuple[str, str], ...] = (("train", "train"), ("dev", "validation"))
    #: regression: the closed range of valid gold scores (STS-B: 0..5, Cer et al. 2017,
    #: doi:10.18653/v1/S17-2001); None for classification
    score_range: tuple[float, float] | None = None

    @property
    def num_labels(self) -> int:
        """Outputs of the classifier head: 1 for regression (STS-B)."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def splits(self) -> tuple[str, ...]:
        """Loadable split names: ``train`` and the dev split(s)."""
        return ("train",) + tuple(s for s, _ in self.dev_files)

    @property
    def dev_splits(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.dev_files)

    def file_name(self, split: str) -> str:
        if split == "train":
            return self.train_file
        files = dict(self.dev_files)
        if split == "dev" and "dev" not in files:
            # MNLI: "dev" means the matched dev set, the one reported first on the leaderboard.
            split = self.dev_splits[0]
        if split not in files:
            raise GlueDataError(
                f"task {self.name} has no split {split!r}; known splits: {', '.join(self.splits)}"
            )
        return files[split]


_DEV = (("dev", "dev.tsv"),)

TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        name="cola", dir_name="CoLA", text_a=3, text_b=None, label=1, labels=("0", "1"),
        train_file="train.tsv", dev_files=_DEV, metrics=("mcc",), header=False, n_fields=4,
    ),
    "sst2": GlueTask(
        name="sst2", dir_name="SST-2", text_a="sentence", text_b=None, label="label",
        labels=("0", "1"), train_file="train.tsv", dev_files=_DEV, metrics=("accuracy",),
    ),
    "mrpc": GlueTask(
        name="mrpc", dir_name="MRPC", text_a="#1 String", text_b="#2 String", label="Quality",
        labels=("0", "1"), train_file="train.tsv", dev_files=_DEV, metrics=("f1", "accuracy"),
        hub_text_a="sentence1", hub_text_b="sentence2",
    ),
    "stsb": GlueTask(
        name="stsb", dir_name="STS-B", text_a="sentence1", text_b="sentence2", label=-1,
        labels=None, train_file="train.tsv", dev_files=_DEV, metrics=("pearson", "spearman"), score_range=(0.0, 5.0),
        hub_text_a="sentence1", hub_text_b="sentence2",
    ),
    "qqp": GlueTask(
        name="qqp", dir_name="QQP", text_a="question1", text_b="question2", label="is_duplicate",
        labels=("0", "1"), train_file="train.tsv", dev_files=_DEV, metrics=("f1", "accuracy"),
        dirty=True, hub_text_a="question1", hub_text_b="question2",
    ),
    "mnli": GlueTask(
        name="mnli", dir_name="MNLI", text_a="sentence1", text_b="sentence2", label=-1,
        labels=("entailment", "neutral", "contradiction"), train_file="train.tsv",
        dev_files=(("dev_matched", "dev_matched.tsv"), ("dev_mismatched", "dev_mismatched.tsv")),
        metrics=("accuracy",), hub_text_a="premise", hub_text_b="hypothesis",
        hub_splits=(
            ("train", "train"),
            ("dev_matched", "validation_matched"),
            ("dev_mismatched", "validation_mismatched"),
        ),
    ),
    "qnli": GlueTask(
        name="qnli", dir_name="QNLI", text_a="question", text_b="sentence", label="label",
        labels=("entailment", "not_entailment"), train_file="train.tsv", dev_files=_DEV,
        metrics=("accuracy",), hub_text_a="question", hub_text_b="sentence",
    ),
    "rte": GlueTask(
        name="rte", dir_name="RTE", text_a="sentence1", text_b="sentence2", label="label",
        labels=("entailment", "not_entailment"), train_file="train.tsv", dev_files=_DEV,
        metrics=("accuracy",), hub_text_a="sentence1", hub_text_b="sentence2",
    ),
    "wnli": GlueTask(
        name="wnli", dir_name="WNLI", text_a="sentence1", text_b="sentence2", label="label",
        labels=("0", "1"), train_file="train.tsv", dev_files=_DEV, metrics=("accuracy",),
        hub_text_a="sentence1", hub_text_b="sentence2",
    ),
}


def get_task(name: str | GlueTask) -> GlueTask:
    """Look a task up by registry key or GLUE directory name, case and ``-``/``_`` insensitive."""
    if isinstance(name, GlueTask):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key in TASKS:
        return TASKS[key]
    raise GlueDataError(f"unknown GLUE task {name!r}; known: {', '.join(TASKS)}")


@dataclass(frozen=True)
class GlueSplit:
    """One loaded split of a GLUE task.

    ``labels`` has shape ``(n,)``: int64 class ids (hub id order, see :data:`TASKS`) or, for
    STS-B, float32 scores in [0, 5]. ``text_b`` is None for single-sentence tasks.
    """

    #: task registry key
    task: str
    #: split name (``train``, ``dev``, ``dev_matched`` ...)
    split: str
    #: first sentences, ``(n,)``
    text_a: list[str]
    #: second sentences, ``(n,)``; None for single-sentence tasks
    text_b: list[str] | None
    #: class ids (int64) or STS-B scores (float32), ``(n,)``
    labels: np.ndarray
    #: malformed rows skipped while reading (training files of ``dirty`` tasks: QQP)
    skipped: int = 0
    #: file path or hub id the rows came from
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.text_a)
        if self.text_b is not None and len(self.text_b) != n:
            raise GlueDataError(f"{self.source or self.task}: text_b has {len(self.text_b)} rows, text_a {n}")
        if self.labels.shape != (n,):
            raise GlueDataError(f"{self.source or self.task}: labels have shape {self.labels.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.text_a)

    def select(self, indices: Sequence[int] | np.ndarray) -> GlueSplit:
        """The rows at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            text_a=[self.text_a[i] for i in idx],
            text_b=None if self.text_b is None else [self.text_b[i] for i in idx],
            labels=self.labels[idx],
        )


# ---------------------------------------------------------------------------------------------
# local TSV files


def default_glue_dir() -> Path | None:
    """``$GLUE_DIR`` when set, else None (the Hugging Face hub). The library knows no other
    location: where a checkout keeps its GLUE copy is the Makefile's and the caller's business."""
    env = os.environ.get("GLUE_DIR")
    return Path(env) if env else None


def _column_index(spec: str | int, header: list[str] | None, path: Path, what: str) -> int:
    if isinstance(spec, int):
        return spec
    if header is None:
        raise GlueDataError(f"{path}: column {spec!r} is named but the file has no header row")
    try:
        return header.index(spec)
    except ValueError:
        raise GlueDataError(
            f"{path} has no {what} column {spec!r} in its header (columns: {', '.join(header)})"
        ) from None


def _score_problem(t: GlueTask, raw: str, y: float) -> str | None:
    """Why gold score ``y`` (read from ``raw``) is not valid for ``t``, or None."""
    if not math.isfinite(y):
        return f"has score {raw!r}, which is not a finite number"
    if t.score_range is not None and not t.score_range[0] <= y <= t.score_range[1]:
        lo, hi = t.score_range
        return f"has score {raw!r}, outside [{lo:g}, {hi:g}]"
    return None


def load_local(task: str | GlueTask, split: str, glue_dir: str | os.PathLike) -> GlueSplit:
    """Read ``<glue_dir>/<TASK>/<file>.tsv`` for ``split`` (``train``, ``dev``, MNLI ``dev_matched``...).

    Raises :class:`GlueDataError` for a missing, unreadable or empty file, a header without the
    needed columns, and (naming every bad line) rows with the wrong number of fields, an unknown
    label or a score that is not a finite number in the task's range (STS-B: 0 to 5), and a line
    the TSV reader cannot read (a field longer than ``csv.field_size_limit()``). Only the training file of a ``dirty`` task (QQP) skips
    such rows instead, counting them in :attr:`GlueSplit.skipped`.
    """
    t = get_task(task)
    path = Path(glue_dir) / t.dir_name / t.file_name(split)
    if not path.is_file():
        raise GlueDataError(f"GLUE file {path} does not exist (task {t.name}, split {split}).")
    try:
        with open(path, encoding=t.encoding, newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            try:
                rows = list(reader)
            except csv.Error as exc:  # e.g. a field longer than csv.field_size_limit()
                raise GlueDataError(f"{path} line {reader.line_num} cannot be read as a TSV row: {exc}") from None
    except OSError as exc:
        raise GlueDataError(f"cannot read GLUE file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise GlueDataError(f"GLUE file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if not rows or all(not r for r in rows):
        raise GlueDataError(f"GLUE file {path} is empty.")
    header: list[str] | None = None
    first_line = 1
    if t.header:
        header, rows = rows[0], rows[1:]
        first_line = 2
        n_fields = len(header)
    else:
        if t.n_fields is None:
            raise GlueDataError(f"task {t.name} has header=False but no n_fields")
        n_fields = t.n_fields
    i_a = _column_index(t.text_a, header, path, "text")
    i_b = None if t.text_b is None else _column_index(t.text_b, header, path, "text")
    i_y = _column_index(t.label, header, path, "label")
    for i in (i_a, i_b, i_y):
        if i is not None and not -n_fields <= i < n_fields:
            raise GlueDataError(f"{path} has {n_fields} columns, too few for task {t.name}.")
    label_ids = None if t.labels is None else {s: k for k, s in enumerate(t.labels)}

    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[Any] = []
    bad: list[tuple[int, str]] = []
    skip_bad = t.dirty and split == "train"
    for lineno, row in enumerate(rows, start=first_line):
        if not row:  # a trailing blank line
            continue
        problem = None
        if len(row) != n_fields:
            problem = f"has {len(row)} fields, expected {n_fields}"
        else:
            raw = row[i_y].strip()
            if label_ids is None:
                try:
                    y: Any = float(raw)
                except ValueError:
                    problem = f"has score {raw!r}, which is not a number"
                else:
                    problem = _score_problem(t, raw, y)
            elif raw in label_ids:
                y = label_ids[raw]
            else:
                problem = f"has label {raw!r}, expected one of {', '.join(t.labels or ())}"
        if problem is not None:
            bad.append((lineno, problem))
            continue
        text_a.append(row[i_a])
        if i_b is not None:
            text_b.append(row[i_b])
        labels.append(y)
    if bad and not skip_bad:
        shown = "; ".join(f"line {n} {why}" for n, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        lines = ", ".join(str(n) for n, _ in bad[:20]) + (", ..." if len(bad) > 20 else "")
        raise GlueDataError(
            f"{path} has {len(bad)} malformed row(s) at line(s) {lines}: {shown}{more}. "
            f"{'Dev and test files must be complete; ' if split != 'train' else ''}fix or replace the file."
        )
    skipped = len(bad)
    if not labels:
        raise GlueDataError(f"GLUE file {path} has no usable rows.")
    dtype = np.float32 if t.is_regression else np.int64
    return GlueSplit(
        task=t.name,
        split=split,
        text_a=text_a,
        text_b=text_b if i_b is not None else None,
        labels=np.asarray(labels, dtype=dtype),
        skipped=skipped,
        source=str(path),
    )


# ---------------------------------------------------------------------------------------------
# Hugging Face hub


def split_from_hub_dataset(task: str | GlueTask, split: str, ds: Any, source: str = HUB_DATASET) -> GlueSplit:
    """Map one split of ``nyu-mll/glue`` (a ``datasets.Dataset``) onto a :class:`GlueSplit`.

    Hub label ids are used as they are; rows with label -1 (unlabelled) raise, since only
    labelled splits are loaded.
    """
    t = get_task(task)
    cols = set(ds.column_names)
    need = [t.hub_text_a, "label"] + ([t.hub_text_b] if t.hub_text_b else [])
    missing = [c for c in need if c not in cols]
    if missing:
        raise GlueDataError(f"{source} ({t.name}/{split}) lacks column(s) {', '.join(missing)}.")
    y = np.asarray(ds["label"], dtype=np.float32 if t.is_regression else np.int64)
    if not t.is_regression and (y.size and (y.min() < 0 or y.max() >= t.num_labels)):
        raise GlueDataError(
            f"{source} ({t.name}/{split}) has label ids outside [0, {t.num_labels - 1}] (unlabelled test split?)."
        )
    if t.is_regression:
        bad = [i for i, v in enumerate(y.tolist()) if _score_problem(t, repr(v), v)]
        if bad:
            raise GlueDataError(f"{source} ({t.name}/{split}) has {len(bad)} invalid gold score(s), e.g. row {bad[0]}: "
                                f"{_score_problem(t, repr(float(y[bad[0]])), float(y[bad[0]]))}")
    return GlueSplit(
        task=t.name,
        split=split,
        text_a=list(ds[t.hub_text_a]),
        text_b=list(ds[t.hub_text_b]) if t.hub_text_b else None,
        labels=y,
        source=source,
    )


def _truthy_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def load_hub(task: str | GlueTask, split: str) -> GlueSplit:
    """Load ``split`` of ``task`` from ``nyu-mll/glue`` with ``datasets.load_dataset``.

    With ``HF_DATASETS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` only a copy already in the ``datasets``
    cache can be used; anything else fails at once with :class:`GlueDataError`.
    """
    t = get_task(task)
    hub_split = dict(t.hub_splits).get(split if split != "dev" else t.dev_splits[0])
    if hub_split is None:
        raise GlueDataError(f"task {t.name} has no split {split!r}; known splits: {', '.join(t.splits)}")
    offline = _truthy_env("HF_DATASETS_OFFLINE") or _truthy_env("HF_HUB_OFFLINE")
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is in the nlp extra
        raise GlueDataError(
            "no GLUE directory was given and the 'datasets' package is not installed; "
            "pass --glue-dir or set GLUE_DIR."
        ) from exc
    try:
        ds = datasets.load_dataset(HUB_DATASET, t.name, split=hub_split)
    except Exception as exc:  # network, offline mode, missing cache: all user-facing here
        if offline:
            why = "the hub is offline (HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set) and no cached copy exists"
        else:
            why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise GlueDataError(
            f"could not load {HUB_DATASET} {t.name}/{hub_split} from the Hugging Face hub: {why}; "
            "pass --glue-dir or set GLUE_DIR to a local GLUE directory."
        ) from exc
    return split_from_hub_dataset(t, split, ds, source=f"{HUB_DATASET}:{t.name}/{hub_split}")


def load_split(task: str | GlueTask, split: str, glue_dir: str | os.PathLike | None = None) -> GlueSplit:
    """Load a split from ``glue_dir`` when given, else from the hub (:func:`load_hub`)."""
    if glue_dir is not None:
        if not Path(glue_dir).is_dir():
            raise GlueDataError(f"GLUE directory {glue_dir} does not exist.")
        return load_local(task, split, glue_dir)
    return load_hub(task, split)


# ---------------------------------------------------------------------------------------------
# subsetting


def subsample(split: GlueSplit, max_examples: int | None, rng: np.random.Generator) -> GlueSplit:
    """At most ``max_examples`` rows, drawn without replacement with ``rng``; row order is kept.

    Classification tasks are sampled **stratified**: each class keeps its share of the rows
    (largest-remainder rounding), so a small subset has the label balance of the full split.
    STS-B (regression) is sampled plainly at random. ``None`` or ``max_examples >= len(split)``
    returns ``split`` unchanged.
    """
    n = len(split)
    if max_examples is None or max_examples >= n:
        return split
    if max_examples < 1:
        raise UserError(f"max_examples={max_examples} is invalid: must be >= 1")
    if get_task(split.task).is_regression:
        idx = rng.choice(n, size=max_examples, replace=False)
    else:
        classes, counts = np.unique(split.labels, return_counts=True)
        quota = counts * (max_examples / n)
        take = np.floor(quota).astype(np.int64)
        short = max_examples - int(take.sum())
        if short:
            # Largest remainder first; ties broken by class id so the result is deterministic.
            order = np.lexsort((classes, -(quota - take)))
            take[order[:short]] += 1
        parts = [
            rng.choice(np.flatnonzero(split.labels == c), size=int(k), replace=False)
            for c, k in zip(classes, take)
        ]
        idx = np.concatenate(parts)
    return split.select(np.sort(idx))


# ---------------------------------------------------------------------------------------------
# tokenization


@dataclass(frozen=True)
class Encoded:
    """A tokenized split: unpadded id lists, padded per batch by :meth:`batch`.

    ``input_ids[i]`` has length ``lengths[i] <= max_length``. ``labels`` as in :class:`GlueSplit`.
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray
    pad_id: int
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, indices: Sequence[int] | np.ndarray, device: Any = "cpu", width: int | None = None) -> dict[str, torch.Tensor]:
        """Tensors for rows ``indices``, padded to the longest of them (or to ``width``, at least that).

        Returns ``input_ids``, ``attention_mask``, (``token_type_ids``) of shape
        ``(batch, width)`` and ``labels`` of shape ``(batch,)`` (int64, or float32 for STS-B).
        """
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        longest = int(self.lengths[idx].max()) if idx.size else 0
        if width is not None and width < longest:
            raise ValueError(f"width={width} is shorter than the longest row ({longest} tokens)")
        width = longest if width is None else int(width)
        ids = np.full((idx.size, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((idx.size, width), dtype=np.int64)
        tt = np.zeros((idx.size, width), dtype=np.int64) if self.token_type_ids is not None else None
        for r, i in enumerate(idx):
            k = self.lengths[i]
            ids[r, :k] = self.input_ids[i]
            mask[r, :k] = 1
            if tt is not None:
                tt[r, :k] = self.token_type_ids[i]  # type: ignore[index]
        out = {
            "input_ids": torch.from_numpy(ids).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
            "labels": torch.from_numpy(self.labels[idx].copy()).to(device),
        }
        if tt is not None:
            out["token_type_ids"] = torch.from_numpy(tt).to(device)
        return out

    def to_tensors(self, device: Any = "cpu") -> dict[str, torch.Tensor]:
        """All rows, padded to the longest row."""
        return self.batch(np.arange(len(self)), device)


def tokenize(split: GlueSplit, tokenizer: Any, max_length: int = 128) -> Encoded:
    """Tokenize a split (pairs as ``[CLS] a [SEP] b [SEP]``), truncated to ``max_length`` tokens."""
    if max_length < 8:
        raise UserError(f"max_length={max_length} is invalid: must be >= 8")
    enc = tokenizer(
        split.text_a,
        split.text_b,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    ids = [list(x) for x in enc["input_ids"]]
    tt = enc.get("token_type_ids")
    pad = tokenizer.pad_token_id
    if pad is None:
        raise UserError("the tokenizer has no padding token; set tokenizer.pad_token first")
    return Encoded(
        input_ids=ids,
        token_type_ids=[list(x) for x in tt] if tt is not None else None,
        labels=split.labels,
        pad_id=int(pad),
        lengths=np.asarray([len(x) for x in ids], dtype=np.int64),
    )
