"""Output error of one crossbar layer under stuck-at faults, per protection method, side by side.

Usage: ``.venv/bin/python bench/bench_protection.py [--model DIR] [--trials 3] [--batch 64]``

Layers: ``(out, in) = (384, 384)`` and ``(384, 1536)``: layer 0's attention query and FFN output
dense of the fine-tuned MiniLM checkpoint (``cache:minilm-sst2``) when it is there, else
Laplace-distributed stand-ins of the same scale. Masks: magnitude pruning of 15 % of the rows
and 15 % of the columns (row/column sparsity 0.30, the paper's operating point) by L2 norm (the
learned masks of nn.pruning would go here). Chip: the default 8-bit DFP weights on 2-bit cells,
differential pairs, 128x128 tiles, ideal ADC, noiseless levels, random faults SA0:SA1 = 1:1.

Printed per layer, method and fault rate: the fault-induced output error
``||y_faulty - y_fault_free|| / ||x W^T||`` of that method's own mapping (y_fault_free: the same
method's read without faults; W: the original dense float weights, the common yardstick; mean
over trials, chip t drawn from seed t), its reduction vs unprotected ("x less"), the total
error vs the digital float layer ``||y_faulty - x W^T|| / ||x W^T||`` at the highest rate (it
includes the pruning and precision costs, no fine-tuning), and the wall time of one read of the
batch (1 thread; the protected read includes the vote).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossbar.engine import CrossbarConfig, program_matrix  # noqa: E402
from device.faults import FaultConfig  # noqa: E402
from mapping.protection import ProtectionConfig, build_protection, protect_matrix  # noqa: E402

METHODS = {
    "unprotected": ProtectionConfig(),
    "prune": ProtectionConfig(prune=True),
    "prune+dup (MSB x2, median)": ProtectionConfig(prune=True, duplicate=True),
    "prune+dup (MSB x2, fault_aware)": ProtectionConfig(prune=True, duplicate=True, vote="fault_aware"),
    "prune+dup (MSB x1, reject_outlier)": ProtectionConfig(
        prune=True, duplicate=True, n_copies=1, vote="reject_outlier"),
    "prune+dup (MSB x1, reject_outlier, regrid)": ProtectionConfig(
        prune=True, duplicate=True, n_copies=1, vote="reject_outlier", regrid=True),
    "prune+dup (2 slices x1, reject_outlier)": ProtectionConfig(
        prune=True, duplicate=True, n_copies=1, duplicate_slices=2, vote="reject_outlier"),
    "msb (1 copy, min_abs)": ProtectionConfig(msb_embed=True),
    "msb (2 copies, median)": ProtectionConfig(msb_embed=True, msb_copies=2),
    "prune+dup+msb (MSB embedded, slice 2 x2)": ProtectionConfig(prune=True, duplicate=True, msb_embed=True),
}


def load_weights(model: str | None) -> dict[str, torch.Tensor]:
    path = None
    if model:
        path = Path(model) / "model.safetensors"
    else:
        try:
            from nn.models import finetuned_model_dir

            path = finetuned_model_dir("minilm-sst2") / "model.safetensors"
        except Exception:  # noqa: BLE001 - the stand-in is fine for a benchmark
            path = None
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        t = load_file(str(path))
        q = next(k for k in t if k.endswith("layer.0.attention.self.query.weight"))
        od = next(k for k in t if k.endswith("layer.0.output.dense.weight"))
        print(f"weights: {path.parent} ({q}, {od})")
        return {"384x384": t[q].double(), "384x1536": t[od].double()}
    print("weights: Laplace stand-ins (no MiniLM checkpoint found)")
    g = np.random.default_rng(0)
    return {k: torch.from_numpy(g.laplace(0, 0.03, s)) for k, s in (("384x384", (384, 384)), ("384x1536", (384, 1536)))}


class _Mask:
    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols


def magnitude_mask(w: torch.Tensor, frac: float) -> _Mask:
    o, i = w.shape
    rows = torch.ones(i, dtype=torch.bool)
    cols = torch.ones(o, dtype=torch.bool)
    rows[w.norm(dim=0).argsort()[: round(frac * i)]] = False
    cols[w.norm(dim=1).argsort()[: round(frac * o)]] = False
    return _Mask(rows, cols)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rates", default="1e-4,1e-3")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = CrossbarConfig(adc_bits=None)
    from device.programming import LevelTable

    levels = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=0.0,
                                  rng=np.random.default_rng(0))
    rates = [float(r) for r in args.rates.split(",")]
    for lname, w in load_weights(args.model).items():
        o, i = w.shape
        mask = magnitude_mask(w, 0.15)
        wp = w * (mask.cols[:, None] & mask.rows[None, :])
        x = torch.from_numpy(np.random.default_rng(1).standard_normal((args.batch, i)))
        y_dig = x @ w.T
        print(f"\n== layer {lname} (out x in), {args.trials} chips per point, batch {args.batch}")
        print(f"{'method':<46} {'tiles':>9} {'copies':>9} " + " ".join(f"{'err@' + format(r, 'g'):>10} {'x less':>7}" for r in rates)
              + f" {'total@' + format(rates[-1], 'g'):>12} {'read ms':>8}")
        ref = {}
        for mname, prot in METHODS.items():
            ww = wp if prot.prune else w
            pp = build_protection({"fc": (o, i)}, cfg, {"fc": mask} if prot.prune else None, prot, weights={"fc": ww})
            rep = pp.reports["fc"]
            lay = pp.plan["fc"].layout
            errs, tot, ms = [], 0.0, 0.0
            for rate in rates:
                e = []
                for t in range(args.trials):
                    pm0 = program_matrix(ww, cfg, levels, None, np.random.default_rng(t), layout=lay, dtype=torch.float64)
                    # same seed: the same variation draw and fault map as pm0 (the same chip)
                    pm = program_matrix(ww, cfg, levels, FaultConfig(rate=rate, sa0_fraction=0.5), np.random.default_rng(t),
                                        layout=lay, dtype=torch.float64)
                    if prot.voting:
                        pm0, pm = protect_matrix(pm0, prot), protect_matrix(pm, prot)
                    y0 = pm0.matvec(x)
                    t0 = time.perf_counter()
                    y = pm.matvec(x)
                    ms = (time.perf_counter() - t0) * 1e3
                    e.append(float((y - y0).norm() / y_dig.norm()))
                    if rate == rates[-1]:
                        tot += float((y - y_dig).norm() / y_dig.norm()) / args.trials
                errs.append(float(np.mean(e)))
            if mname == "unprotected":
                ref = dict(zip(rates, errs))
            cells = " ".join(f"{err:>10.4f} {ref[r] / max(err, 1e-12):>7.2f}" for r, err in zip(rates, errs))
            print(f"{mname:<46} {rep.tiles_unprotected:>4}->{rep.tiles_protected:<4} "
                  f"{rep.copies_placed:>4}/{rep.copies_requested:<4} {cells} {tot:>12.4f} {ms:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
