"""Which cells does relaxation hurt? Relax only the digit-0 cells, or only the others, of real
MiniLM layers on their real SST-2 activations, and measure the layer's output error.

For each layer, bits per cell, read time and chip: the layer is programmed on the default chip
(8-bit dynamic fixed point, differential pairs, 128x128 tiles, 8-bit DAC per vector, ideal ADC,
the level table's read noise) with the shipped write-verify level table, then the tech-B
relaxation model is applied to

* ``none``: no cell (the t = 0 chip),
* ``all``: every cell (what the engine does),
* ``digit0``: only the cells holding digit 0 (level 0, the HRS target),
* ``others``: only the cells holding a digit > 0,
* ``digit0_msb``: only the digit-0 cells of the most significant weight slice's bit lines,
* ``digit0_lower``: only the digit-0 cells of the other slices (and of free columns),

and the layer's output on the captured activations is compared with the float layer
``x @ W.T``: relative RMS error ``rms(y - y_float) / rms(y_float)``. A cell's digit is known from
its programmed conductance (write-verify levels do not overlap: level k's cells lie below the
midpoint to level k+1).

    python examples/relaxation_cell_classes.py --out results/relax_classes/classes_wv.csv \
        --layers bert.encoder.layer.0.attention.self.query,bert.encoder.layer.0.output.dense,bert.encoder.layer.5.output.dense

Prints one table; ``--out`` writes the rows as CSV. First it prints the relaxation model's
spread at each level target and read time (std of ``g(t) - g0`` over 200,000 draws, seed 0, and
its share of the level step); ``--spread-only`` stops there.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
import torch

LAYERS = ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.5.output.dense")


class Masked:
    """A relaxation hook that relaxes only the cells whose programmed conductance falls in
    ``[lo, hi)`` (a digit class) and leaves the others at their programmed value."""

    def __init__(self, model, lo: float, hi: float, cells: torch.Tensor | None = None):
        self.model, self.lo, self.hi, self.cells = model, lo, hi, cells

    def sample_torch(self, g_s, time_s, generator):
        g = self.model.sample_torch(g_s, time_s, generator, out_of_range="clamp")
        keep = (g_s >= self.lo) & (g_s < self.hi)
        if self.cells is not None:
            keep = keep & self.cells
        return torch.where(keep, g, g_s.to(g.dtype))


def msb_cells(layout, n_slices: int) -> torch.Tensor:
    """``(tiles, rows, cols)`` bool: the cells on the bit lines of the most significant slice
    (tiles ``t = r * C + c``)."""
    C = layout.n_col_blocks
    col = torch.as_tensor(layout.col_slice == n_slices - 1)  # (C, tile_cols)
    per_tile = col[torch.arange(layout.n_tiles) % C]  # (tiles, tile_cols)
    return per_tile[:, None, :].expand(-1, layout.tile_rows, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="fine-tuned MiniLM SST-2 (default: the cached minilm-sst2)")
    ap.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")))
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--bits", default="1,2")
    ap.add_argument("--times", default="1,10000")
    ap.add_argument("--chips", type=int, default=4)
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--relaxation", default=None, help="relaxation table (default: the shipped tech-B one)")
    ap.add_argument("--out", default=None, help="CSV of the rows")
    ap.add_argument("--spread-only", action="store_true", help="print the model's spread at the level targets and stop")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("RERAM_COSIM_NUM_THREADS", "1")))

    from crossbar.engine import program_matrix
    from device.relaxation import RelaxationModel
    from nn.glue import get_task, load_split, tokenize
    from nn.models import finetuned_model_dir, load_classifier
    from nn.sensitivity import layer_inputs
    from nn.sim import build_levels, build_sim_config, effective_crossbar

    rpath = args.relaxation or str(Path(__file__).resolve().parents[1] / "data" / "relaxation_techB.h5")
    relax = RelaxationModel.load(rpath)
    for bits in [int(b) for b in args.bits.split(",")]:
        g = np.asarray(build_levels(build_sim_config("default", [f"crossbar.bits_per_cell={bits}"])).g_target_s)
        step = float(g[1] - g[0])
        for t in [float(x) for x in args.times.split(",")]:
            sd = [float(np.std(relax.sample(np.full(200_000, gk), t, np.random.default_rng(0), out_of_range="clamp") - gk))
                  for gk in g]
            print(f"{bits} b/cell t={t:>7g} s: relaxation std at the levels "
                  + ", ".join(f"{gk * 1e6:.1f} uS: {s_ * 1e6:.2f} uS ({s_ / step:.3f} step)" for gk, s_ in zip(g, sd)), flush=True)
    if args.spread_only:
        return
    model_dir = args.model or str(finetuned_model_dir("minilm-sst2"))
    model, tok = load_classifier(model_dir, None, task="sst2", require_finetuned=True)
    model.eval()
    enc = tokenize(load_split(get_task("sst2"), "dev", args.glue_dir), tok, 64)
    names = [n for n in args.layers.split(",") if n]
    acts = layer_inputs(model, enc, names, args.sentences)
    mods = dict(model.named_modules())
    rows = []
    for bits in [int(b) for b in args.bits.split(",")]:
        for t in [float(x) for x in args.times.split(",")]:
            sim = build_sim_config("default", [f"crossbar.bits_per_cell={bits}", f"crossbar.read_time_s={t}"])
            levels = build_levels(sim)
            cfg = effective_crossbar(sim, levels)
            g = np.asarray(levels.g_target_s)
            mid0 = 0.5 * (g[0] + g[1])
            classes = {"none": None, "all": (0.0, np.inf), "digit0": (0.0, mid0), "others": (mid0, np.inf),
                       "digit0_msb": (0.0, mid0, "msb"), "digit0_lower": (0.0, mid0, "lower")}
            for name in names:
                w = mods[name].weight.detach().float()
                x = acts[name]
                y_ref = x @ w.T
                ref = float(y_ref.pow(2).mean().sqrt())
                msb = None
                for cls, rng_ in classes.items():
                    if rng_ is not None and len(rng_) == 3 and msb is None:
                        pm0 = program_matrix(w, cfg.replace(read_time_s=0.0), levels, None, np.random.default_rng([bits, 0]))
                        msb = msb_cells(pm0.layout, cfg.n_slices)
                    errs = []
                    frac0 = []
                    for chip in range(args.chips):
                        c = cfg if rng_ is not None else cfg.replace(read_time_s=0.0)
                        if rng_ is None:
                            hook = None
                        elif len(rng_) == 3:
                            hook = Masked(relax, rng_[0], rng_[1], msb if rng_[2] == "msb" else ~msb)
                        else:
                            hook = Masked(relax, *rng_)
                        pm = program_matrix(w, c, levels, None, np.random.default_rng([bits, chip]), relaxation=hook)
                        gen = torch.Generator().manual_seed(chip)
                        y = pm.matvec(x, generator=gen)
                        errs.append(float((y - y_ref).pow(2).mean().sqrt()) / ref)
                        if cls == "none" and chip == 0:
                            st = pm.tile_state()
                            used = st.levels  # digits of every cell (free cells hold 0 too)
                            frac0.append(float((used == 0).mean()))
                            if msb is None:
                                msb = msb_cells(pm.layout, cfg.n_slices)
                            frac0.append(float((used[msb.numpy()] == 0).mean()))
                    row = {"layer": name, "bits_per_cell": bits, "time_s": t, "relaxed": cls,
                           "rel_error_mean": float(np.mean(errs)), "rel_error_std": float(np.std(errs, ddof=1)) if len(errs) > 1 else 0.0,
                           "chips": args.chips, "tokens": x.shape[0],
                           "digit0_fraction": frac0[0] if frac0 else "",
                           "msb_digit0_fraction": frac0[1] if frac0 else ""}
                    rows.append(row)
                    print(f"{bits} b/cell t={t:>7g} s {name:<45} {cls:<7} error {row['rel_error_mean']:.4f} +- {row['rel_error_std']:.4f}"
                          + (f"  (digit-0 cells {frac0[0]:.1%}, of the MSB slice's {frac0[1]:.1%})" if frac0 else ""), flush=True)
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
