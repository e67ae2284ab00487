"""Real activations of the fine-tuned MiniLM (SST-2): the inputs of every Linear layer kind.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/minilm_activations.py [--sentences 16] [--out PATH]

Runs ``--sentences`` SST-2 dev sentences through ``~/.cache/reram-cosim/models/minilm-sst2``
(the demo's fine-tune) and stores, per encoder layer, the input rows of each Linear kind (padding
tokens dropped): ``qkv`` (post-LayerNorm, into query/key/value), ``attn_out`` (the attention
context, into attention.output.dense), ``ffn_in`` (post-LayerNorm, into intermediate.dense),
``ffn_out`` (post-GELU, into output.dense). Output: an ``.npz`` (default
``~/.cache/reram-cosim/activations/minilm-sst2.npz``, outside the repository) with arrays
``L<layer>/<kind>`` (tokens, in_features) float32 and ``W<layer>/<linear>`` the weights.
:func:`load` reads it (making it first if missing). Used by the IR-drop benches.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np

MODEL = Path.home() / ".cache" / "reram-cosim" / "models" / "minilm-sst2"
OUT = Path.home() / ".cache" / "reram-cosim" / "activations" / "minilm-sst2.npz"
GLUE = Path(os.environ.get("RERAM_COSIM_GLUE", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
KINDS = {"attention.self.query": "qkv", "attention.output.dense": "attn_out", "intermediate.dense": "ffn_in",
         "output.dense": "ffn_out"}
LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")


def capture(n_sentences: int = 16, out: Path = OUT) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    glue = GLUE if GLUE.exists() else Path("/work/shared/data/glue")
    with open(glue / "SST-2" / "dev.tsv") as fh:
        sents = [row["sentence"] for row in csv.DictReader(fh, delimiter="\t")][:n_sentences]
    tok = AutoTokenizer.from_pretrained(str(MODEL))
    model = AutoModelForSequenceClassification.from_pretrained(str(MODEL)).eval()
    enc = tok(sents, padding=True, return_tensors="pt")
    keep = enc["attention_mask"].reshape(-1).bool()
    arrays: dict[str, np.ndarray] = {}
    hooks = []
    for name, mod in model.named_modules():
        for suffix, kind in KINDS.items():
            if name.endswith(suffix) and ".layer." in name:
                layer = int(name.split(".layer.")[1].split(".")[0])

                def hook(m, inp, layer=layer, kind=kind):
                    x = inp[0].reshape(-1, inp[0].shape[-1])[keep]
                    arrays[f"L{layer}/{kind}"] = x.detach().float().numpy()

                hooks.append(mod.register_forward_pre_hook(hook))
        for lin in LINEARS:
            if name.endswith(lin) and ".layer." in name:
                layer = int(name.split(".layer.")[1].split(".")[0])
                arrays[f"W{layer}/{lin}"] = mod.weight.detach().float().numpy()
    with torch.no_grad():
        model(**enc)
    for h in hooks:
        h.remove()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    return out


def load(path: Path = OUT) -> dict[str, np.ndarray]:
    if not path.exists():
        capture(out=path)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=16)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    p = capture(a.sentences, a.out)
    d = load(p)
    for k, v in d.items():
        if k.startswith("L0/") or k.startswith("L5/"):
            print(f"{k:>14} {v.shape} mean {v.mean():+.3f} std {v.std():.3f} frac<0 {(v < 0).mean():.2f}")
