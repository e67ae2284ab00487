"""``reram-cosim finetune``: the NLP subcommands, registered by ``cli/main.py``.

Importing this module is cheap: torch, transformers and datasets are imported by the handler.
"""

from __future__ import annotations

import argparse
import time

from cli.evaluate import GLUE_HELP, glue_dir_arg, show_config, sim_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``finetune`` subcommand to the ``reram-cosim`` parser."""
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a BERT-family model on a GLUE task (optionally with DVA weight noise)",
        description=(
            "Fine-tune a BERT-family model on one GLUE task and save it (safetensors, tokenizer, "
            "reram_cosim_finetune.json) in --out. An interrupted run resumes from --out/checkpoint."
        ),
    )
    p.add_argument("--model", default=None, help="base model directory or hub id (default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--task", required=True, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    p.add_argument("--glue-dir", default=None, help=GLUE_HELP)
    p.add_argument("--out", required=True, help="output directory for the fine-tuned model")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training data (default 3)")
    p.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps (default: none)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--dva-sigma", type=float, default=None, help="DVA training weight-noise sigma (default 0 = off)")
    p.add_argument("--batch-size", type=int, default=None, help="examples per step (default 32)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-5)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per example (default 128)")
    p.add_argument("--max-train-examples", type=int, default=None, help="stratified training subset size (default: all)")
    p.add_argument(
        "--prune-rows-cols",
        type=float,
        default=None,
        help="learn row/column pruning masks to this target sparsity in [0, 1) (seed paper 1; default 0 = off); "
        "the masks are saved as pruning_masks.safetensors beside the model",
    )
    p.add_argument("--prune-scope", choices=("per_layer", "global"), default=None, help="pruning target per layer (default) or global")
    h = p.add_argument_group(
        "hardware-aware training",
        "Match the training-time weights to a simulated chip, given by --preset/--set exactly as for "
        "`reram-cosim eval` (see nn/hwtrain.py). The weights of the crossbar-mapped layers are replaced "
        "per batch; gradients pass straight through to the clean weights.",
    )
    h.add_argument(
        "--dva-mode", choices=("weight", "crossbar"), default=None,
        help="weight: W*(1+sigma*z) with --dva-sigma (default); crossbar: per-weight noise of the simulated chip "
        "(its quantization, bit slices, differential pairs and level-table variation of every cell, HRS cells included)",
    )
    h.add_argument(
        "--dva-quantize", action=argparse.BooleanOptionalAction, default=None,
        help="forward through the chip's quantized weights (default: on for --dva-mode crossbar, off otherwise)",
    )
    h.add_argument(
        "--dva-noise-scale", type=float, default=None,
        help="crossbar mode: multiply the chip's per-weight noise std by this (default 1 = the chip; 0 = quantization only)",
    )
    h.add_argument(
        "--qat-msb-copies", type=int, choices=(0, 1, 2), default=None,
        help="fake-quantize to the weights MSB embedding with this many copies keeps (seed paper 1; 1: 6-bit code, "
        "2: 4-bit code on 8-bit/2-bit cells), for re-training before protection (default 0 = off)",
    )
    sim_args(h, preset_default=None,
             preset_help="simulation preset of the chip to match (default: default, when a hardware-aware mode is on)")
    p.add_argument(
        "--show-config", action="store_true",
        help="print the resolved fine-tuning config (FinetuneConfig, its chip under 'sim') as JSON and exit",
    )
    p.epilog = (
        "Every FinetuneConfig field is reachable with --set train.FIELD=VALUE (typed like eval's --set, "
        "e.g. --set train.warmup_ratio=0.06 --set train.dva_target='[\"query\"]'); other --set keys are the "
        "chip's (crossbar.*, faults.*, levels.*, circuit.*). The named flags above are shortcuts for train.FIELD."
    )
    p.set_defaults(func=_cmd_finetune)


#: FinetuneConfig fields set from the arguments of the same name (when given)
_FIELDS = (
    "epochs", "max_steps", "seed", "dva_sigma", "batch_size", "lr", "max_length", "max_train_examples",
    "prune_rows_cols", "prune_scope", "dva_mode", "dva_quantize", "dva_noise_scale", "qat_msb_copies",
)


#: prefix of the ``--set`` keys that address FinetuneConfig fields (the rest address the chip)
TRAIN_PREFIX = "train."


def finetune_config(args: argparse.Namespace):
    """The :class:`nn.finetune.FinetuneConfig` of parsed ``finetune`` arguments: defaults, then the
    named flags, then ``--set train.FIELD=VALUE`` (typed and validated like ``eval``'s ``--set``);
    the chip (``sim``) from ``--preset`` and the other ``--set`` keys, when a hardware-aware mode
    is on."""
    import dataclasses

    from device.config import override_dict
    from nn.finetune import FinetuneConfig

    train_sets = [o for o in args.overrides if o.startswith(TRAIN_PREFIX)]
    sim_sets = [o for o in args.overrides if not o.startswith(TRAIN_PREFIX)]
    # the declared defaults, not a resolved instance: dva_quantize=None means "auto" (on for crossbar)
    data = {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
            for f in dataclasses.fields(FinetuneConfig)}
    data["task"] = args.task
    for field in _FIELDS:
        v = getattr(args, field, None)
        if v is not None:
            data[field] = v
    if any(o.startswith((TRAIN_PREFIX + "sim=", TRAIN_PREFIX + "sim.")) for o in train_sets):
        from device.config import ConfigError

        raise ConfigError("--set train.sim: the chip is set with --preset and the --set crossbar./faults./levels./circuit. keys")
    data = override_dict({"train": data}, train_sets, flag="--set")["train"]
    hw = (data.get("dva_mode") == "crossbar" or data.get("dva_quantize") is True or bool(data.get("qat_msb_copies"))
          or args.preset is not None or bool(getattr(args, "preset_file", None)) or bool(sim_sets))
    if hw:
        from cli.presets import config_from_args
        from nn.sim import get_preset

        data["sim"] = config_from_args(argparse.Namespace(preset=args.preset, preset_file=getattr(args, "preset_file", None)),
                                       get_preset, "default", sim_sets).to_dict()
    return FinetuneConfig.from_dict(data)


def _cmd_finetune(args: argparse.Namespace) -> int:
    """Run :func:`nn.finetune.finetune` from parsed arguments; print a short summary."""
    from nn.finetune import finetune, read_finetune_info

    cfg = finetune_config(args)
    if args.show_config:
        return show_config(cfg)
    glue_dir = glue_dir_arg(args.glue_dir)
    t0 = time.perf_counter()
    metrics = finetune(cfg, args.model, glue_dir, args.out)
    wall = time.perf_counter() - t0
    info = read_finetune_info(args.out)
    if metrics is None:  # a time-sliced run stopped early (not reachable from the CLI)
        print(f"checkpoint written to {args.out}; rerun to continue")
        return 0
    parts = []
    for split, res in metrics.items():
        vals = ", ".join(f"{k} {v:.4f}" for k, v in res.items() if k != "score")
        parts.append(f"{split}: {vals}")
    src = glue_dir if glue_dir is not None else "the Hugging Face hub"
    print(f"fine-tuned {info['base_model']} on {cfg.task} ({info['train_examples']} training examples from {src})")
    print(f"{info['steps']} steps, {wall:.0f} s wall in this call; " + "; ".join(parts))
    if "pruning" in info:
        pr = info["pruning"]
        print(
            f"pruned {len(pr['layers'])} layers: {pr['rows_cols_removed']:.4f} of their rows + columns removed "
            f"({pr['lines_removed']} of {pr['lines']}), {pr['weights_removed']:.4f} of their weights; "
            f"masks in {args.out}/pruning_masks.safetensors"
        )
    if "hardware_view" in info:
        hv = info["hardware_view"]
        what = []
        if hv["msb_copies"]:
            n = hv["msb_copies"]
            what.append(f"MSB-embedding fake quantization ({n} cop{'y' if n == 1 else 'ies'})")
        elif hv["quantize"]:
            what.append(f"chip fake quantization ({hv['weight_format']})")
        if hv["noise_scale"] > 0:
            what.append(
                f"crossbar noise x{hv['noise_scale']:g} (std {hv['noise_std_lsb_code0']:.2f} LSB at code 0, "
                f"{hv['noise_std_lsb_max_code']:.2f} at the largest code)"
            )
        print("hardware-aware training: " + ", ".join(what))
        hm = "; ".join(f"{split}: score {res['score']:.4f}" for split, res in hv["metrics_noiseless"].items())
        print(f"dev through the chip's quantized weights (no noise): {hm}")
    print(f"saved to {args.out}")
    return 0
