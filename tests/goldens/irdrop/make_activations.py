"""Store the tiny set of real MiniLM activations the IR-drop tests drive tiles with (run from the
repository root; needs the demo's fine-tune ~/.cache/reram-cosim/models/minilm-sst2):

    HF_HUB_OFFLINE=1 .venv/bin/python tests/goldens/irdrop/make_activations.py

``minilm_activations.npz``: 24 token vectors (SST-2 dev sentences, padding dropped; every 15th
token) of the first 64 features of the inputs of MiniLM's layer-0 query (``qkv``: post-LayerNorm,
signed) and layer-3 FFN output (``ffn_out``: post-GELU), float32 (``bench/minilm_activations.py``
captures them).
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "bench"))
import minilm_activations  # noqa: E402


def main() -> None:
    a = minilm_activations.load()
    out = {k: a[f"L{layer}/{k}"][::15][:24, :64].astype(np.float32) for layer, k in ((0, "qkv"), (3, "ffn_out"))}
    np.savez_compressed(HERE / "minilm_activations.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
