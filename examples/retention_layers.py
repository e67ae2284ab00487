"""The remedies against relaxation on real MiniLM layers and their real SST-2 activations: the
layer's relative output error for each configuration, read time and chip, and (for the level
placement) the closed-form prediction beside the engine's figure.

Configurations are ``--set`` lists over the default chip (the sim config's relaxation model, the
level table's read noise), named on the command line as ``NAME=KEY=VALUE;KEY=VALUE`` (``;``
between settings), e.g.

    python examples/retention_layers.py --bits 1 --times 1,10000 --chips 2 \\
        --config "naive=" --config "placed=levels.table_path=data/levels_b1_techB.h5" \\
        --config "rap=levels.table_path=data/levels_b1_techB.h5;crossbar.retention.reprogram_rounds=3"

The error is ``rms(y - y_float) / rms(y_float)`` against the float layer ``x @ W.T`` on the
captured inputs (real tokens only). ``--predict`` adds the placement's prediction
(:func:`crossbar.placement.window_error` with the layer's own codes; inputs taken as
uncorrelated, quantization left out) and the engine's error against the quantized weights, the
quantity the prediction is for.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
import torch

LAYERS = ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.5.output.dense")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="fine-tuned MiniLM SST-2 (default: the cached minilm-sst2)")
    ap.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")))
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--bits", type=int, default=1)
    ap.add_argument("--times", default="1,10000")
    ap.add_argument("--chips", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--config", action="append", default=[], help="NAME=KEY=VALUE;KEY=VALUE (repeatable)")
    ap.add_argument("--predict", action="store_true", help="also the placement's closed-form prediction")
    ap.add_argument("--out", default=None, help="CSV of the rows")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("RERAM_COSIM_NUM_THREADS", "1")))

    from crossbar.engine import program_matrix
    from crossbar.placement import code_probs_of, digit_matrices, window_error
    from nn.glue import get_task, load_split, tokenize
    from nn.models import finetuned_model_dir, load_classifier
    from nn.sensitivity import layer_inputs
    from nn.sim import build_levels, build_sim_config, check_relaxation_range, effective_crossbar, load_relaxation

    model_dir = args.model or str(finetuned_model_dir("minilm-sst2"))
    model, tok = load_classifier(model_dir, None, task="sst2", require_finetuned=True)
    model.eval()
    enc = tokenize(load_split(get_task("sst2"), "dev", args.glue_dir), tok, 64)
    names = [n for n in args.layers.split(",") if n]
    acts = layer_inputs(model, enc, names, args.sentences)
    mods = dict(model.named_modules())
    configs = {}
    for c in args.config or ["naive="]:
        name, _, sets = c.partition("=")
        configs[name] = [s for s in sets.split(";") if s]
    rows = []
    for cname, sets in configs.items():
        for t in [float(x) for x in args.times.split(",")]:
            sim = build_sim_config("default", [f"crossbar.bits_per_cell={args.bits}", f"crossbar.read_time_s={t}"] + sets)
            levels = build_levels(sim)
            cfg = effective_crossbar(sim, levels)
            check_relaxation_range(sim, levels)
            rel = load_relaxation(sim)
            for name in names:
                w = mods[name].weight.detach().float()
                x = acts[name]
                y_ref = x @ w.T
                ref = float(y_ref.pow(2).mean().sqrt())
                errs, qerrs, rewrites = [], [], []
                for chip in range(args.chips):
                    pm = program_matrix(w, cfg, levels, None, np.random.default_rng([args.bits, chip]), relaxation=rel,
                                        read_noise="crossbar")
                    y = pm.matvec(x, generator=torch.Generator().manual_seed(chip))
                    errs.append(float((y - y_ref).pow(2).mean().sqrt()) / ref)
                    y_q = x.double() @ pm.qweight.dequantize(torch.float64).T
                    qerrs.append(float((y.double() - y_q).pow(2).mean().sqrt() / y_q.pow(2).mean().sqrt()))
                    if pm.retention and "writes" in pm.retention:
                        rewrites.append(float(pm.retention["rewrites_per_level"].sum()) / pm.retention["cells"])
                row = {"config": cname, "layer": name, "bits_per_cell": args.bits, "time_s": t,
                       "rel_error": float(np.mean(errs)), "rel_error_sd": float(np.std(errs, ddof=1)) if len(errs) > 1 else 0.0,
                       "error_vs_quantized": float(np.mean(qerrs)), "reprograms_per_cell": float(np.mean(rewrites)) if rewrites else 0.0,
                       "chips": args.chips, "tokens": int(x.shape[0])}
                if args.predict:
                    g = levels.g_target_s
                    row["predicted_vs_quantized"] = float(window_error(
                        rel.model if rel is not None else None, float(g[0]), float(g[-1]), [t], digit_matrices(cfg),
                        code_probs_of([w], cfg), residual_rel=np.zeros(1), read_noise_rel=cfg.read_noise_sigma_rel,
                        level_samples_s=list(np.asarray(levels.g_samples_s)),
                        compensation=cfg.retention.compensation, out_of_range=sim.relaxation.out_of_range)[0])
                rows.append(row)
                print(f"{cname:<14} {args.bits} b/cell t={t:>7g} s {name:<44} error {row['rel_error']:.4f} +- {row['rel_error_sd']:.4f}"
                      f" (vs quantized {row['error_vs_quantized']:.4f}"
                      + (f", predicted {row['predicted_vs_quantized']:.4f}" if args.predict else "")
                      + (f", {row['reprograms_per_cell']:.3f} re-programs per cell" if rewrites else "") + ")", flush=True)
    if args.out:
        from device.io import atomic_path

        with atomic_path(args.out) as tmp:
            with open(tmp, "w", newline="") as fh:
                wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
                wr.writeheader()
                wr.writerows(rows)
        print("wrote", args.out)


if __name__ == "__main__":
    main()
