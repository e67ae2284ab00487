"""Fine-tuning BERT-family classifiers on GLUE, with optional device-variation-aware (DVA) training.

A plain torch loop: AdamW, linear warm-up then linear decay, gradient clipping, data order from a
seeded ``torch.Generator``, dynamic padding per batch. Every ``checkpoint_every`` steps the full
training state (model, optimizer, scheduler, step, RNG states) is written to ``out_dir/checkpoint``
(temporary directory, then rename); a rerun with the same ``out_dir`` resumes from it and, on CPU,
ends with bit-identical weights. The final model is saved in Hugging Face format (safetensors)
with its tokenizer and ``reram_cosim_finetune.json`` (config, dev metrics, history).

DVA training (Long, She, Mukhopadhyay, "Design of reliable DNN accelerator with un-reliable ReRAM",
DATE 2019, doi:10.23919/DATE.2019.8715178): for every training batch the weights ``W`` of the
targeted ``nn.Linear`` modules are replaced by ``W * eps`` with fresh noise ``eps`` (``1 + sigma*z``
for ``normal``, ``exp(sigma*z)`` for ``lognormal``, ``z ~ N(0, 1)`` per weight, drawn from a
seeded generator); forward and backward run at that perturbed point, the clean weights are put
back bit for bit, and the optimizer steps with the gradient taken at the perturbed point
(dL/dW' evaluated at W' = W*eps is applied to W, as in the paper's noise-injection training);
the noise itself is :func:`nn.dva.weight_noise`, which :func:`nn.evaluate.noise_robustness` also
applies (one draw per call: one programmed chip), so the robustness of DVA-trained and normally
trained models can be compared. Pruning runs (:class:`nn.pruning.PruningPhase`) distil towards
the starting model (:mod:`nn.distill`).

Hardware-aware training (:mod:`nn.hwtrain`), from the :class:`nn.sim.SimConfig` ``sim`` the model
will be evaluated with: ``dva_mode="crossbar"`` replaces the multiplicative noise by the
per-weight noise of that chip (its quantization, bit slicing, differential pairs and level
table: small weights get the additive noise of their HRS cells), on the chip's fake-quantized
weight (``dva_quantize``, default on); ``qat_msb_copies`` fake-quantizes to the values that the
MSB-embedding protection (:func:`mapping.protection.embed_msb`) keeps. Both swap the weights of
the ``dva_target`` layers per batch and restore them exactly (straight-through gradient), and
draw from the same seeded generator as DVA noise, so checkpoints resume bit-identically.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from device.config import Config, ConfigError, check_choice, check_int_range, check_range, config
from device.errors import UserError
from device.io import atomic_path, atomic_write_text, software_version
from nn import glue as glue_mod
from nn.distill import distillation_loss, frozen_teacher
from nn.dva import DEFAULT_DVA_TARGET, resolve_targets, select_linear, weight_noise
from nn.evaluate import evaluate_split as evaluate, noise_robustness, predict  # noqa: F401  (re-exported)
from nn.hwtrain import hardware_weights
from nn.sim import SimConfig

__all__ = [
    "DEFAULT_DVA_TARGET",
    "FinetuneConfig",
    "FINETUNE_JSON",
    "select_linear",
    "weight_noise",
    "evaluate",
    "noise_robustness",
    "finetune",
    "read_finetune_info",
    "distillation_loss",
]

FINETUNE_JSON = "reram_cosim_finetune.json"
_CKPT = "checkpoint"
_STATE = "state.pt"


@config
class FinetuneConfig(Config):
    """Settings of one fine-tuning run. Defaults follow BERT's GLUE recipe (Devlin et al. 2019)."""

    #: GLUE task, a key of nn.glue.TASKS ("SST-2" etc. are normalised)
    task: str = "sst2"
    #: passes over the (subsetted) training split
    epochs: int = 3
    #: cap on optimizer steps; 0 = no cap (epochs decide)
    max_steps: int = 0
    #: examples per optimizer step
    batch_size: int = 32
    #: peak AdamW learning rate
    lr: float = 5e-5
    #: fraction of the steps with linear warm-up, then linear decay to 0
    warmup_ratio: float = 0.1
    #: AdamW decoupled weight decay; not applied to biases and LayerNorm
    weight_decay: float = 0.01
    #: gradient-norm clipping; 0 = off
    max_grad_norm: float = 1.0
    #: tokens per example after truncation (64 is enough for SST-2)
    max_length: int = 128
    #: stratified subset of the training split; 0 = all of it
    max_train_examples: int = 0
    #: dev evaluation every this many steps during training; 0 = only at the end
    eval_every: int = 0
    #: write out_dir/checkpoint every this many steps; 0 = never
    checkpoint_every: int = 200
    #: batches of rows with similar token counts (less padding)
    group_by_length: bool = True
    #: seeds data order, subset, head init, dropout and DVA noise
    seed: int = 0
    #: DVA training weight-noise sigma; 0 = normal training
    dva_sigma: float = 0.0
    #: "normal": W*(1+sigma*z); "lognormal": W*exp(sigma*z)
    dva_distribution: str = "normal"
    #: regexes (re.search) on nn.Linear module names
    dva_target: tuple[str, ...] = (DEFAULT_DVA_TARGET,)
    #: Row/column pruning (seed paper 1, nn.pruning): target fraction of the rows and columns of
    #: every crossbar-mapped Linear (the dva_target layers) to remove; 0 = no pruning.
    prune_rows_cols: float = 0.0
    #: fraction of the steps that train the hard-concrete gates; the rest is recovery with hard masks
    prune_phase: float = 0.6
    #: "per_layer": every layer reaches the target; "global": the size-weighted mean does
    prune_scope: str = "per_layer"
    #: Distillation from the starting model (frozen; the dense fine-tuned model when pruning), as
    #: structured-pruning work on BERT does (CoFi, Xia et al. ACL 2022): weight of the distillation
    #: loss in [0, 1], the task loss gets 1 - distill_alpha; 0 = off (see distillation_loss)
    distill_alpha: float = 0.0
    #: softmax temperature of the logit term (classification; regression tasks match the outputs)
    distill_temperature: float = 2.0
    #: weight of the hidden-state term (mean squared error of every layer's hidden states); 0 = logits only
    distill_hidden: float = 0.0
    #: Hardware-aware training (nn.hwtrain), matched to the simulated chip `sim`:
    #: "weight": W*(1+sigma*z) with dva_sigma (Long et al.); "crossbar": per-weight noise of `sim`'s
    #: chip (quantization, slicing, differential pairs, level-table sigma of every cell, HRS included)
    dva_mode: str = "weight"
    #: forward uses the chip's quantized weight (straight-through); None = on for "crossbar", else off
    dva_quantize: bool | None = None
    #: "crossbar" mode: multiplies the chip's per-weight noise std (1 = the chip, 0 = quantization only)
    dva_noise_scale: float = 1.0
    #: MSB-embedding-aware fake quantization (mapping.protection.embed_msb): 1 or 2 copies; 0 = off
    qat_msb_copies: int = 0
    #: the simulated chip the hardware-aware modes match (CLI: --preset / --set, as for `eval`)
    sim: SimConfig | None = None

    def __post_init__(self) -> None:
        try:
            task = glue_mod.get_task(self.task).name
        except ValueError:
            check_choice("task", self.task, glue_mod.TASKS)
            raise
        object.__setattr__(self, "task", task)
        check_int_range("epochs", self.epochs, 1, 1000)
        check_int_range("max_steps", self.max_steps, 0)
        check_int_range("batch_size", self.batch_size, 1, 65536)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("warmup_ratio", self.warmup_ratio, 0.0, 1.0, hi_open=True)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, 1e6)
        check_int_range("max_length", self.max_length, 8, 512)
        check_int_range("max_train_examples", self.max_train_examples, 0)
        check_int_range("eval_every", self.eval_every, 0)
        check_int_range("checkpoint_every", self.checkpoint_every, 0)
        check_int_range("seed", self.seed, 0, 2**63 - 1)
        if not isinstance(self.group_by_length, bool):
            raise ConfigError(f"group_by_length={self.group_by_length!r} is invalid: must be true or false")
        check_range("dva_sigma", self.dva_sigma, 0.0, 1.0)
        check_choice("dva_distribution", self.dva_distribution, ("normal", "lognormal"))
        if isinstance(self.dva_target, str):
            object.__setattr__(self, "dva_target", (self.dva_target,))
        if not self.dva_target:
            raise ConfigError("dva_target=() is invalid: must hold at least one pattern")
        for pat in self.dva_target:
            if not isinstance(pat, str):
                raise ConfigError(f"dva_target entry {pat!r} is invalid: must be a regex string")
            try:
                re.compile(pat)
            except re.error as exc:
                raise ConfigError(f"dva_target entry {pat!r} is invalid: not a regex ({exc})") from None
        check_range("prune_rows_cols", self.prune_rows_cols, 0.0, 1.0, hi_open=True)
        check_range("prune_phase", self.prune_phase, 0.0, 1.0, lo_open=True, hi_open=True)
        check_choice("prune_scope", self.prune_scope, ("per_layer", "global"))
        check_range("distill_alpha", self.distill_alpha, 0.0, 1.0)
        check_range("distill_temperature", self.distill_temperature, 0.0, 100.0, lo_open=True)
        check_range("distill_hidden", self.distill_hidden, 0.0, 1e3)
        check_choice("dva_mode", self.dva_mode, ("weight", "crossbar"))
        if self.dva_quantize is None:
            object.__setattr__(self, "dva_quantize", self.dva_mode == "crossbar")
        if not isinstance(self.dva_quantize, bool):
            raise ConfigError(f"dva_quantize={self.dva_quantize!r} is invalid: must be true, false or null (auto)")
        check_range("dva_noise_scale", self.dva_noise_scale, 0.0, 100.0)
        check_int_range("qat_msb_copies", self.qat_msb_copies, 0, 2)
        if isinstance(self.sim, dict):
            object.__setattr__(self, "sim", SimConfig.from_dict(self.sim, _path="sim."))
        if self.sim is not None and not isinstance(self.sim, SimConfig):
            raise ConfigError(f"sim={self.sim!r} is invalid: must be a SimConfig (or its dict) or null")
        if self.dva_mode == "crossbar" and self.dva_sigma > 0:
            raise ConfigError(
                f"dva_sigma={self.dva_sigma} is invalid with dva_mode='crossbar': dva_sigma is the multiplicative noise "
                "of dva_mode='weight'; crossbar mode takes the variation from sim.levels (scale it with dva_noise_scale)"
            )
        if self.qat_msb_copies and self.dva_mode == "crossbar":
            raise ConfigError(
                f"qat_msb_copies={self.qat_msb_copies} is invalid with dva_mode='crossbar': noise on MSB-embedded "
                "weights is not modelled (the MSB read is a vote over noisy copies); use dva_mode='weight'"
            )
        if self.dva_mode == "crossbar" and self.dva_noise_scale == 0 and not self.dva_quantize:
            raise ConfigError("dva_mode='crossbar' with dva_noise_scale=0 and dva_quantize=false does nothing")
        if self.uses_sim and self.sim is None:
            raise ConfigError(
                "dva_mode='crossbar', dva_quantize and qat_msb_copies need sim, the simulated chip to match "
                "(CLI: --preset NAME and --set KEY=VALUE, the same as for `reram-cosim eval`)"
            )
        if not self.uses_sim and self.sim is not None:
            raise ConfigError(
                "sim (--preset / --set) is only used by dva_mode='crossbar', dva_quantize or qat_msb_copies; "
                "switch one on or leave sim out"
            )
        if self.qat_msb_copies:
            from mapping.protection import ProtectionConfig

            ProtectionConfig(msb_embed=True, msb_copies=self.qat_msb_copies).check_against(self.sim.crossbar)

    @property
    def uses_sim(self) -> bool:
        """True when a hardware-aware view (nn.hwtrain) is applied to the dva_target weights."""
        return self.dva_mode == "crossbar" or bool(self.dva_quantize) or self.qat_msb_copies > 0

    def hardware_view(self, levels=None):
        """The :class:`nn.hwtrain.HardwareView` of this run (None without one)."""
        if not self.uses_sim:
            return None
        from nn.hwtrain import HardwareView

        return HardwareView(
            self.sim, noise_scale=self.dva_noise_scale if self.dva_mode == "crossbar" else 0.0,
            quantize=bool(self.dva_quantize), msb_copies=self.qat_msb_copies, levels=levels,
        )

    def pruning_config(self):
        """The :class:`nn.pruning.PruningConfig` of this run (None without pruning)."""
        if self.prune_rows_cols == 0.0:
            return None
        from nn.pruning import PruningConfig

        return PruningConfig(
            target_sparsity=self.prune_rows_cols, scope=self.prune_scope,
            target_modules="|".join(f"(?:{p})" for p in resolve_targets(self.dva_target)),
        )


# ---------------------------------------------------------------------------------------------
# training


def _derive_seed(*keys: int) -> int:
    """Independent 63-bit seeds for separate random streams of one run (numpy SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[np.ndarray]:
    """The batches of one epoch, as index arrays, from the epoch's own seeded generator, so a
    resumed run can rebuild them from (seed, epoch) alone.

    A random permutation cut into batches; with ``group_by_length`` the permutation is first cut
    into chunks of 50 batches, each chunk sorted by token count, cut into batches, and the batch
    order shuffled again. Batches then hold rows of similar length and need little padding (SST-2
    train: mean 13 tokens, but ~40 for the longest of 32 random rows), while each batch is still
    a random draw from the data.
    """
    n = lengths.size
    g = torch.Generator().manual_seed(_derive_seed(seed, 1, epoch))
    order = torch.randperm(n, generator=g).numpy()
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    mega = 50 * batch_size
    batches: list[np.ndarray] = []
    for i in range(0, n, mega):
        chunk = order[i : i + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[k : k + batch_size] for k in range(0, chunk.size, batch_size))
    perm = torch.randperm(len(batches), generator=g).numpy()
    return [batches[k] for k in perm]


def _lr_lambda(total: int, warmup: int):
    # The schedule of transformers.get_linear_schedule_with_warmup, as a plain function so that
    # LambdaLR's state_dict holds no callable.
    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def _optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _same_config(saved: Any, cfg: FinetuneConfig) -> bool:
    """Whether a stored config dict is ``cfg``; keys added to FinetuneConfig since it was written
    take their defaults (so finished runs of older versions are still recognised)."""
    if not isinstance(saved, dict):
        return False
    try:
        return FinetuneConfig.from_dict(saved) == cfg
    except (ConfigError, TypeError):
        return False


def _save_checkpoint(out_dir: Path, state: dict[str, Any]) -> None:
    """Write ``out_dir/checkpoint/state.pt`` atomically (:func:`device.io.atomic_path`): a kill
    during the write leaves the previous checkpoint."""
    (out_dir / _CKPT).mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / _CKPT / _STATE) as tmp:
        torch.save(state, tmp)


_CKPT_KEYS = ("config", "base_model", "model", "optimizer", "scheduler", "step", "history", "rng_cpu", "rng_dva")


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """The training state :func:`_save_checkpoint` wrote, read with ``weights_only`` (tensors and
    plain containers only: nothing in the file runs); anything else there (a pickle of other
    objects, a truncated or foreign file) is a :class:`UserError` naming it."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in first or "Weights only" in first:
            first = "it holds objects other than tensors, and a checkpoint that could run code is refused"
        raise UserError(f"{path} cannot be read as a fine-tuning checkpoint ({first}); delete {path.parent} to start "
                        "over") from None
    if not isinstance(state, dict) or any(k not in state for k in _CKPT_KEYS):
        raise UserError(f"{path} is not a fine-tuning checkpoint of this toolkit; delete {path.parent} to start over")
    return state


def read_finetune_info(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``reram_cosim_finetune.json`` of a finished run (config, metrics, steps, wall time...)."""
    path = Path(out_dir) / FINETUNE_JSON
    if not path.is_file():
        raise UserError(f"{out_dir} holds no finished fine-tuning run ({FINETUNE_JSON} is missing).")
    return _read_json(path)


def _read_json(path: Path) -> dict[str, Any]:
    """A run's JSON record; an unreadable or corrupt one is a :class:`UserError` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read as a fine-tuning record ({exc}); delete it to start over") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a fine-tuning record (a JSON object); delete it to start over")
    return data


def _num_threads(requested: int | None) -> int:
    from nn.models import num_threads

    return num_threads(requested, leave_busy_cores=True)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _save_final(out_dir: Path, model: nn.Module, tokenizer: Any, info: dict[str, Any]) -> None:
    """Save model + tokenizer + JSON into ``out_dir``: written to a temporary folder, then each
    file put in place atomically (:func:`device.io.atomic_path`), the JSON last (its presence
    marks a finished run)."""
    import inspect

    tmp = out_dir / f".final.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        kwargs = {}
        if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
            kwargs["safe_serialization"] = True  # transformers 4.x; 5.x always writes safetensors
        model.save_pretrained(tmp, **kwargs)
        tokenizer.save_pretrained(tmp)
        for f in sorted(tmp.iterdir()):
            with atomic_path(out_dir / f.name) as dst:
                shutil.copyfile(f, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(out_dir / FINETUNE_JSON, json.dumps(info, indent=2, sort_keys=True))


def finetune(
    cfg: FinetuneConfig,
    model_path: str | os.PathLike | None,
    glue_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    train: glue_mod.GlueSplit | None = None,
    dev: dict[str, glue_mod.GlueSplit] | None = None,
    num_threads: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    stop_after_steps: int | None = None,
) -> dict[str, dict[str, float]] | None:
    """Fine-tune ``model_path`` on ``cfg.task``; return the final dev metrics ``{split: metrics}``.

    ``model_path``: base encoder or checkpoint directory / hub id (None = the offline MiniLM,
    :func:`nn.models.default_base_model`). ``glue_dir``: local GLUE directory, None = hub.
    ``train`` / ``dev`` replace the loaded splits (tests, custom data). ``device``: default CUDA
    when available. ``num_threads``: CPU threads during the run (default: the CPUs this process
    may use); the previous setting is restored afterwards.

    A finished run in ``out_dir`` with the same config is not repeated: its stored metrics are
    returned (``overwrite=True`` retrains). An unfinished one (``out_dir/checkpoint``) is resumed.
    ``stop_after_steps``: write a checkpoint after that many steps and return None (time-sliced
    runs, resume tests). On CPU, same config and seed give bit-identical weights, resumed or not.
    """
    from nn.models import default_base_model, load_classifier

    task = glue_mod.get_task(cfg.task)
    out = Path(out_dir)
    base = str(model_path) if model_path is not None else str(default_base_model())
    done = out / FINETUNE_JSON
    ckpt_file = out / _CKPT / _STATE
    if done.is_file() and not ckpt_file.is_file() and not overwrite:
        info = _read_json(done)
        if _same_config(info.get("config"), cfg) and info.get("base_model") == base:
            return info["metrics"]
        raise UserError(
            f"{out} already holds a model fine-tuned with other settings; choose another output "
            "directory or delete it."
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the fine-tuned model")
    from device.io import check_output_dir

    check_output_dir(out)  # one rule for every command: nothing is created above --out
    from nn.models import resolve_device

    dev_name = resolve_device(device if device is not None else _default_device())

    old_threads = torch.get_num_threads()
    if dev_name.type == "cpu":
        torch.set_num_threads(_num_threads(num_threads))
    cuda_devices = [dev_name] if dev_name.type == "cuda" else []
    t0 = time.perf_counter()
    try:
        # Head init and dropout draw from the global torch RNG; fork_rng keeps this run's seeding
        # from leaking into the caller's RNG state.
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(_derive_seed(cfg.seed, 0))
            return _run(cfg, task, base, glue_dir, out, dev_name, train, dev, progress, stop_after_steps, t0, load_classifier)
    finally:
        torch.set_num_threads(old_threads)


def _run(cfg, task, base, glue_dir, out, device, train, dev, progress, stop_after_steps, t0, load_classifier):
    from device.progress import progress_bar

    if train is None:
        train = glue_mod.load_split(task, "train", glue_dir)
        if train.skipped:
            print(f"skipped {train.skipped} malformed row(s) of {train.source}", file=sys.stderr)
    if dev is None:
        dev = {s: glue_mod.load_split(task, s, glue_dir) for s in task.dev_splits}
    n_full = len(train)
    if cfg.max_train_examples:
        train = glue_mod.subsample(train, cfg.max_train_examples, np.random.default_rng(_derive_seed(cfg.seed, 3)))

    from nn.models import check_token_lengths

    model, tokenizer = load_classifier(base, task.num_labels, task=task.name, device=device)
    enc_train = glue_mod.tokenize(train, tokenizer, cfg.max_length)
    enc_dev = {s: glue_mod.tokenize(d, tokenizer, cfg.max_length) for s, d in dev.items()}
    for e in (enc_train, *enc_dev.values()):
        check_token_lengths(model, e.lengths, cfg.max_length, base)
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {out}: {exc.strerror or exc}") from None

    n = len(enc_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = int(round(cfg.warmup_ratio * total))
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, warmup))
    dva_targets = select_linear(model, cfg.dva_target) if cfg.dva_sigma > 0 else []
    hw_view = cfg.hardware_view()
    hw_targets = select_linear(model, cfg.dva_target) if hw_view is not None else []
    dva_gen = torch.Generator(device=device).manual_seed(_derive_seed(cfg.seed, 2))
    teacher = frozen_teacher(model) if cfg.distill_alpha > 0 else None  # before any pruning hook
    prune = None
    if cfg.prune_rows_cols > 0:
        from nn.pruning import PruningPhase

        prune = PruningPhase(
            model, cfg.pruning_config(), round(cfg.prune_phase * total),
            torch.Generator().manual_seed(_derive_seed(cfg.seed, 4)),
        )

    step = 0
    history: list[dict[str, Any]] = []
    resumed_from = 0
    ckpt_file = out / _CKPT / _STATE
    if ckpt_file.is_file():
        state = _load_checkpoint(ckpt_file)
        saved_cfg = json.loads(state["config"])
        if not _same_config(saved_cfg, cfg) or state["base_model"] != base:
            raise UserError(
                f"{out / _CKPT} was written by a run with other settings or another base model; "
                "use the same settings to resume, or delete the checkpoint."
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = resumed_from = int(state["step"])
        history = json.loads(state["history"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        dva_gen.set_state(state["rng_dva"])
        if prune is not None:
            prune.load_state_dict(state["pruning"])

    def checkpoint() -> None:
        st = {
            "config": cfg.to_json(),
            "base_model": base,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "history": json.dumps(history),
            "rng_cpu": torch.get_rng_state(),
            "rng_dva": dva_gen.get_state(),
        }
        if prune is not None:
            st["pruning"] = prune.state_dict()
        if device.type == "cuda":
            st["rng_cuda"] = torch.cuda.get_rng_state(device)
        _save_checkpoint(out, st)

    log_every = max(1, total // 20)
    model.train()
    bar = progress_bar(total=total, initial=step, desc=f"finetune {task.name}", enabled=progress)
    run_loss, run_n = 0.0, 0
    while step < total:
        epoch, b0 = divmod(step, steps_per_epoch)
        batches = _epoch_batches(enc_train.lengths, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)
        for b in range(b0, steps_per_epoch):
            if step >= total:
                break
            batch = enc_train.batch(batches[b], device)
            # hardware view first (fake quantization / chip noise), then DVA's multiplicative noise
            # on top; both restore the clean weights exactly, the gradient is taken at the view
            with hardware_weights(hw_targets, hw_view, dva_gen), weight_noise(dva_targets, cfg.dva_sigma, dva_gen, cfg.dva_distribution):
                hidden = teacher is not None and cfg.distill_hidden > 0
                out_s = model(**batch, output_hidden_states=hidden) if hidden else model(**batch)
                loss = out_s.loss
                if teacher is not None:
                    with torch.no_grad():
                        out_t = teacher(**batch, output_hidden_states=hidden) if hidden else teacher(**batch)
                    kd = distillation_loss(
                        out_s.logits, out_t.logits, out_s.hidden_states if hidden else None,
                        out_t.hidden_states if hidden else None, temperature=cfg.distill_temperature,
                        hidden_weight=cfg.distill_hidden, attention_mask=batch.get("attention_mask"),
                    )
                    train_loss = (1.0 - cfg.distill_alpha) * loss + cfg.distill_alpha * kd
                else:
                    train_loss = loss
                total_loss = train_loss if prune is None else train_loss + prune.penalty(step)
                total_loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if prune is not None:
                prune.after_step(step)
            run_loss += float(loss.detach())
            run_n += 1
            bar.update(1)
            if step % log_every == 0 or step == total:
                history.append({"step": step, "loss": run_loss / run_n, "lr": sched.get_last_lr()[0]})
                bar.set_postfix(loss=f"{run_loss / run_n:.4f}")
                run_loss, run_n = 0.0, 0
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                res = {s: evaluate(model, e, task.name) for s, e in enc_dev.items()}
                history.append({"step": step, "dev": res})
                bar.write(f"step {step}: " + ", ".join(f"{s} score {r['score']:.4f}" for s, r in res.items()), file=sys.stderr)
            if stop_after_steps is not None and step >= stop_after_steps and step < total:
                checkpoint()
                bar.close()
                return None
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                checkpoint()
    bar.close()

    if prune is not None:
        prune.after_step(step, final=True)
    metrics = {s: evaluate(model, e, task.name) for s, e in enc_dev.items()}
    import transformers

    info = {
        "config": cfg.to_dict(),
        "base_model": base,
        "task": task.name,
        "metrics": metrics,
        "steps": step,
        "resumed_from_step": resumed_from,
        "train_examples": n,
        "train_examples_available": n_full,
        "train_source": train.source,
        "dev_sources": {s: d.source for s, d in dev.items()},
        "device": str(device),
        "num_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "wall_s_this_session": time.perf_counter() - t0,
        "history": history,
        "software": {
            "reram_cosim": software_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    if prune is not None:
        info["pruning"] = prune.report()
    if hw_view is not None:
        # the dev score through the view's deterministic part (chip fake quantization, no noise):
        # for MSB-embedding training, the protected chip's fault-free accuracy
        with hardware_weights(hw_targets, hw_view.noiseless(), None):
            hw_metrics = {s: evaluate(model, e, task.name) for s, e in enc_dev.items()}
        info["hardware_view"] = {
            **hw_view.describe(),
            "metrics_noiseless": hw_metrics,
            "layers_final": {n: hw_view.layer_report(m.weight) for n, m in hw_targets},
        }
    model.eval()
    _save_final(out, model, tokenizer, info)
    if prune is not None:
        from nn.pruning import MASKS_FILE, save_masks

        save_masks(out / MASKS_FILE, prune.masks)
    shutil.rmtree(out / _CKPT, ignore_errors=True)
    return metrics
