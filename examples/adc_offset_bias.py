"""Why a flawed 8-bit SAR costs more SST-2 accuracy than the same SAR at 6 bits (issue 26).

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python examples/adc_offset_bias.py [--chips 3] [--tokens 512]

Reads every Linear layer of the fine-tuned MiniLM (SST-2, real activations of
``bench/minilm_activations.py``) through crossbar tiles set as in ``examples/read_path_sst2.json``
(8-bit scaled weights and inputs, 2 bits/cell, differential pairs, per-vector input step,
calibrated column ADCs shared by 8 columns; no device errors, so the ADC is the only flaw) and
splits each layer's error ``E = Y - X W^T`` over the tokens into

- the *static* part: each output's mean error over the tokens (the same on every token, as a
  bias; a per-ADC offset lands here), and
- the *varying* part: the rest (rounding, which changes from token to token),

both relative to ``||X W^T||`` (their squares add up to the total's). ADCs: the ideal
quantizer, the SAR with the study's comparator offset alone (``adc_comparator_sigma_rel=0.005``
of V_ref: 0.16 LSB at 6 bits, 0.64 LSB at 8), with its capacitor mismatch alone
(``adc_cap_sigma_rel=0.01``), and the ideal quantizer with a generic input offset of the same
sigma (``adc_offset_sigma_rel=0.005``). Prints one line per ADC and width: the error parts summed
over all 36 layers (root of the sum of squares over layers, mean over chips +- sd), and the fraction
of ADCs whose zero input does not convert to code 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from crossbar.adc import draw_transfer  # noqa: E402
from crossbar.config import CrossbarConfig  # noqa: E402
from crossbar.engine import program_matrix  # noqa: E402

LINEARS = {"attention.self.query": "qkv", "attention.self.key": "qkv", "attention.self.value": "qkv",
           "attention.output.dense": "attn_out", "intermediate.dense": "ffn_in", "output.dense": "ffn_out"}
ADCS = {
    "ideal": {},
    "sar, comparator 0.005": dict(adc_kind="sar", adc_comparator_sigma_rel=0.005),
    "sar, capacitors 0.01": dict(adc_kind="sar", adc_cap_sigma_rel=0.01),
    "ideal, offset 0.005": dict(adc_offset_sigma_rel=0.005),
}


def config(bits: int, **adc) -> CrossbarConfig:
    return CrossbarConfig(tile_rows=128, tile_cols=128, weight_bits=8, bits_per_cell=2, mapping="differential",
                          input_bits=8, weight_format="scaled", input_format="scaled", input_granularity="vector",
                          adc_bits=bits, adc_range="calibrated", adc_columns_per_adc=8, **adc)


def parts(y: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float]:
    """Squared norms of the static and varying error parts and of the reference."""
    e = (y.to(torch.float64) - ref)
    static = e.mean(0, keepdim=True).expand_as(e)
    return float((static**2).sum()), float(((e - static) ** 2).sum()), float((ref**2).sum())


def zero_code_fraction(cfg: CrossbarConfig, n: int = 20000) -> float:
    """Fraction of ADCs of this design whose zero input converts to a non-zero code."""
    t, codes, _ = draw_transfer(cfg.adc, n, np.arange(n), np.random.default_rng(0))
    lo = -(2 ** (cfg.adc_bits - 1))
    k = (t < 0).sum(1) + lo if codes is None else codes[np.arange(n), (t < 0).sum(1)]
    return float((k != 0).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chips", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=512, help="tokens read per layer (the first 64 also calibrate)")
    ap.add_argument("--layers", default="0,1,2,3,4,5")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import minilm_activations

    act = minilm_activations.load()
    layers = [int(s) for s in args.layers.split(",")]
    print(f"{'ADC':<24} {'bits':>4} {'static':>16} {'varying':>16} {'total':>16} {'zero input != 0':>16}")
    for bits in (6, 8):
        for name, extra in ADCS.items():
            cfg = config(bits, **extra)
            per_chip = []
            for chip in range(args.chips):
                s = v = r = 0.0
                for layer in layers:
                    for j, (lin, kind) in enumerate(LINEARS.items()):
                        w = torch.from_numpy(act[f"W{layer}/{lin}"])
                        x = torch.from_numpy(act[f"L{layer}/{kind}"][: args.tokens])
                        ref = x.double() @ w.double().T
                        pm = program_matrix(w, cfg, None, None, np.random.default_rng([chip, layer, j]))
                        pm = pm.calibrate(x[:64])
                        a, b, c = parts(pm(x), ref)
                        s, v, r = s + a, v + b, r + c
                per_chip.append((np.sqrt(s / r), np.sqrt(v / r), np.sqrt((s + v) / r)))
            m, sd = np.mean(per_chip, 0), np.std(per_chip, 0)
            cells = " ".join(f"{m[i]:.4f} +- {sd[i]:.4f}" for i in range(3))
            print(f"{name:<24} {bits:>4} {cells} {zero_code_fraction(cfg):>16.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
