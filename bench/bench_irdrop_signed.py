"""The IR-drop table on real signed MiniLM activations: layer outputs against the exact solution.

    RERAM_COSIM_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_irdrop_signed.py [--layers 0 3] [--sizes 128 64] [--r 0.25 0.5 1 2.5]

Programs MiniLM's (the demo's SST-2 fine-tune) Linear layers of one kind each -- ``query``
(post-LayerNorm inputs), ``attention.output.dense`` (attention context), ``intermediate.dense``
(post-LayerNorm) and ``output.dense`` (post-GELU) -- through the engine (``program_matrix``; the
default chip: 8-bit weights, 2-bit cells from ``data/levels_b2.h5``, differential, ideal ADC, no
read noise) twice from one seed, ``ir_drop="table"`` (with its accuracy guard switched off, to
measure what it would give) and ``"exact"``, and reads the layer's real inputs
(``bench/minilm_activations.py``: SST-2 dev sentences, every token). Prints per layer, tile size
and wire resistance the RMS error of the table's layer output over the RMS exact output, the
table's wire coupling (``IRDropTable.coupling`` at the largest programmed conductance) and
whether the table now accepts the condition (``MAX_COUPLING``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm_activations  # noqa: E402

KIND = {"attention.self.query": "qkv", "attention.output.dense": "attn_out", "intermediate.dense": "ffn_in",
        "output.dense": "ffn_out"}


class Unguarded:
    """The shipped table with its accuracy guard off (measurement only)."""

    def __init__(self, table):
        self.table, self.rows = table, table.rows

    def effective_matrix(self, g, c):
        return self.table.effective_matrix(g, c, accuracy_guard=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 3])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--r", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.5])
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("RERAM_COSIM_NUM_THREADS", "1")))
    from crossbar.config import CrossbarConfig
    from crossbar.engine import program_matrix
    from crossbar.irdrop import MAX_COUPLING, IRDropTable
    from crossbar.solver import CircuitConfig
    from device.programming import LevelTable

    acts = minilm_activations.load()
    table = IRDropTable.load(Path(__file__).resolve().parents[1] / "data" / "irdrop_default.h5")
    levels = LevelTable.load(Path(__file__).resolve().parents[1] / "data" / "levels_b2.h5")
    print(f"{'layer':>28} {'size':>4} {'r_ohm':>5} {'coupling':>8} {'accepted':>8} {'table vs exact':>14} {'ideal vs exact':>14}",
          flush=True)
    for layer in args.layers:
        for lin, kind in KIND.items():
            w = torch.from_numpy(acts[f"W{layer}/{lin}"]).double()
            x = torch.from_numpy(acts[f"L{layer}/{kind}"][: args.tokens]).double()
            for size in args.sizes:
                cfg = CrossbarConfig(tile_rows=size, tile_cols=size, bits_per_cell=2, read_noise_sigma_rel=0.0)
                for r in args.r:
                    circ = CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r)
                    out = {}
                    gmax = 0.0
                    for mode in ("ideal", "table", "exact"):
                        pm = program_matrix(w, cfg.replace(ir_drop=mode), levels, None, np.random.default_rng(layer),
                                            circuit=circ, irdrop=Unguarded(table), dtype=torch.float64,
                                            keep_conductances=(mode == "exact"))
                        out[mode] = pm(x)
                        if mode == "exact":
                            gmax = float(pm.tile_state().g_s.max())
                    ref = out["exact"]
                    rel = lambda y: float(torch.sqrt(torch.mean((y - ref) ** 2) / torch.mean(ref**2)))  # noqa: E731
                    k = table.coupling(size, r, gmax)
                    print(f"{'L' + str(layer) + ' ' + lin:>28} {size:>4} {r:>5g} {100 * k:7.2f}% {str(k <= MAX_COUPLING):>8} "
                          f"{100 * rel(out['table']):13.2f}% {100 * rel(out['ideal']):13.2f}%", flush=True)


if __name__ == "__main__":
    main()
