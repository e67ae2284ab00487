"""DVA vs normal training under the weight variation DVA was trained with (seed paper 2).

    python examples/dva_robustness.py [--glue-dir ../shared/data/glue] [--sigmas 0.2,0.3,0.4] [--draws 4]

Evaluates the cached `minilm-sst2` (normal) and `minilm-sst2-dva` (trained with --dva-sigma 0.2,
multiplicative Gaussian weight noise W * (1 + sigma z) on the encoder Linear layers) on the full
SST-2 dev set, clean and under fresh draws of the same kind of noise, and prints mean +- std over
draws and the accuracy each model loses.
"""

from __future__ import annotations

import argparse

from nn.finetune import evaluate, noise_robustness
from nn.glue import default_glue_dir, load_split, tokenize
from nn.models import finetuned_model_dir, load_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigmas", default="0.2,0.3,0.4")
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--glue-dir", default=None, help="local GLUE directory (default: $GLUE_DIR, else the hub)")
    args = ap.parse_args()
    sigmas = [float(s) for s in args.sigmas.split(",")]
    dev = load_split("sst2", "dev", args.glue_dir or default_glue_dir())
    print("| model | clean | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " |")
    print("|---|---:|" + "---:|" * len(sigmas))
    for name in ("minilm-sst2", "minilm-sst2-dva"):
        model, tok = load_classifier(str(finetuned_model_dir(name)), 2, task="sst2", require_finetuned=True)
        model.eval()
        enc = tokenize(dev, tok, 64)
        clean = evaluate(model, enc, "sst2")["score"]
        cells = []
        for s in sigmas:
            r = noise_robustness(model, enc, "sst2", sigma=s, n_draws=args.draws, seed=args.seed)
            cells.append(f"{r['mean']:.4f} +- {r['std']:.4f} ({r['mean'] - clean:+.4f})")
        print(f"| {name} | {clean:.4f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
