"""Speed of the tile engine against plain torch, BERT-base shapes, ratios measured in one run.

    .venv/bin/python bench/bench_engine.py [--tokens 4096] [--repeat 3] [--skip-bert]

For each BERT-base Linear shape (in x out: 768x768, 768x3072, 3072x768) at batch 32 x sequence
128 = 4096 tokens it times, interleaved in the same process:

* ``plain``: ``torch.nn.functional.linear(x, W)`` (float32);
* ``table``: the engine with the tabulated IR drop, programming variation and 1 % stuck-at faults,
  multi-bit DAC (not bit-serial), ideal ADC: the folded one-matmul read (target <= 2x plain);
* ``table+tileADC``: the same with an 8-bit ADC on every tile partial sum;
* ``bit-serial``: 8 input bits one per cycle, 8-bit ADC on every slice column every cycle
  (target <= 1.2 x slices x input bits x plain); on the CPU each cycle's column currents are summed
  from tables of 8-row partial currents (``crossbar.engine._lut_bit_serial``);
* ``bit-serial bmm``: the same read (same ProgrammedMatrix) on the batched-matmul path it replaces
  (``crossbar.engine._BIT_SERIAL_LUT = False``), side by side.

Then it programs all 72 Linear weights of BERT-base's encoder once (``table`` mode with variation
and faults) and states the time, with the shipped IR-drop table ``data/irdrop_default.h5`` (a small
one is built only if it does not cover 128x128 tiles). Medians of ``--repeat`` runs per entry.

The bit-serial read is also compared with ``plain x (slices x bits)``: that many plain calls back to
back, timed as one entry, so that both sides of the ratio run for seconds under the same machine
load (a single plain call runs for tens of ms and catches quiet moments a long run cannot).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import crossbar.engine as engine
from crossbar.engine import CrossbarConfig, program_matrix
from device.faults import FaultConfig
from device.programming import LevelTable

SHAPES = [(768, 768), (768, 3072), (3072, 768)]  # (in_features, out_features)


def _levels(bits_per_cell: int, sigma_rel: float):
    return LevelTable.synthetic(bits_per_cell=bits_per_cell, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=sigma_rel,
                                rng=np.random.default_rng(0))


def _irdrop_table(tile: int) -> Path:
    """The shipped table (``data/irdrop_default.h5``) when it covers ``tile``; else a small one."""
    default = Path(__file__).resolve().parents[1] / "data" / "irdrop_default.h5"
    from crossbar.irdrop import IRDropTable

    if default.exists() and tile in IRDropTable.load(default).sizes:
        return default
    from crossbar import irdrop

    path = Path(tempfile.gettempdir()) / f"reram_bench_irdrop_{tile}.h5"
    if not path.exists():
        tc = irdrop.TabulateConfig(sizes=(tile,), r_wire_ohm=(1.0,), samples=4, holdout=1, inputs_per_tile=2, chunk=2)
        irdrop.tabulate(tc, path, workers=1)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32 * 128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-bert", action="store_true")
    args = ap.parse_args(argv)

    torch.set_grad_enabled(False)
    tile = 128
    ir = _irdrop_table(tile)
    lv = _levels(2, 0.05)
    faults = FaultConfig(rate=0.01)
    base = CrossbarConfig(tile_rows=tile, tile_cols=tile, weight_bits=8, bits_per_cell=2, input_bits=8,
                          ir_drop="table")
    modes = {
        "table": base,
        "table+tileADC": base.replace(adc_bits=8, adc_scope="tile"),
        "bit-serial": base.replace(dac="bit_serial", adc_bits=8, adc_scope="column"),
    }
    sb = base.n_slices * base.input_bits
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 shared cores: ratios are only meaningful near 0)")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU count {os.cpu_count()}, "
          f"tokens {args.tokens}, tile {tile}x{tile}, 8-bit weights, 2 bits/cell -> {base.n_slices} slices, "
          f"8 input bits (slices x input bits = {sb})")
    print(f"{'in x out':<12} {'plain s':>9} " + " ".join(f"{m + ' s':>15} {'ratio':>7}" for m in modes)
          + f" {'bit-serial/(SxB)':>17} {'plain x SxB s':>12} {'bs/(plain x SxB)':>15}"
          + f" {'bs-bmm s':>9} {'bmm/(SxB)':>10} {'bmm/(plain x SxB)':>17}")
    g = torch.Generator().manual_seed(0)
    for fin, fout in SHAPES:
        w = torch.randn(fout, fin, generator=g) / fin**0.5
        x = torch.randn(args.tokens, fin, generator=g)
        pms = {m: program_matrix(w, c, lv, faults, np.random.default_rng(1), irdrop=ir) for m, c in modes.items()}
        # interleave plain and engine calls so that both see the same machine load; best of each
        plain = lambda: torch.nn.functional.linear(x, w)  # noqa: E731

        def plain_sb():
            for _ in range(sb):
                plain()

        fns = {"plain": plain, "plainxSB": plain_sb}
        fns.update({m: (lambda pm=pm: pm.matvec(x)) for m, pm in pms.items()})

        def bit_serial_bmm(pm=pms["bit-serial"]):
            engine._BIT_SERIAL_LUT = False
            try:
                pm.matvec(x)
            finally:
                engine._BIT_SERIAL_LUT = True

        fns["bit-serial bmm"] = bit_serial_bmm
        times = {k: [] for k in fns}
        for f in fns.values():
            f()  # warm-up
        for _ in range(args.repeat):
            for k, f in fns.items():
                for _ in range(3 if k == "plain" else 1):
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        t_plain = med["plain"]
        row = f"{fin}x{fout:<8} {t_plain:>9.4f} "
        ratios = {}
        for m in pms:
            ratios[m] = med[m] / t_plain
            row += f"{med[m]:>15.4f} {ratios[m]:>7.2f} "
        t_bmm = med["bit-serial bmm"]
        print(row + f"{ratios['bit-serial'] / sb:>17.3f} {med['plainxSB']:>12.3f} {med['bit-serial'] / med['plainxSB']:>15.3f}"
              + f" {t_bmm:>9.3f} {t_bmm / t_plain / sb:>10.3f} {t_bmm / med['plainxSB']:>17.3f}", flush=True)
        del pms

    if not args.skip_bert:
        names = [("attention.self.query", 768, 768), ("attention.self.key", 768, 768),
                 ("attention.self.value", 768, 768), ("attention.output.dense", 768, 768),
                 ("intermediate.dense", 768, 3072), ("output.dense", 3072, 768)]
        rng = np.random.default_rng(2)
        t0 = time.perf_counter()
        n_tiles = n_cells = 0
        kept = []
        for layer in range(12):
            for _, fin, fout in names:
                w = torch.randn(fout, fin, generator=g) * 0.03
                pm = program_matrix(w, base, lv, faults, rng, irdrop=ir)
                kept.append(pm)  # what a model holds: the folded (out, in) matrices
                n_tiles += pm.n_tiles
                n_cells += pm.n_tiles * tile * tile
        t = time.perf_counter() - t0
        mb = sum(p.readout.numel() * p.readout.element_size() + p.qweight.q.numel() for p in kept) / 2**20
        print(f"load average: {os.getloadavg()[0]:.2f}")
        print(f"BERT-base encoder, 72 Linear layers, table IR drop + variation + 1 % faults: programmed "
              f"{n_tiles} tiles ({n_cells / 1e6:.0f} M cells) in {t:.1f} s; kept {mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
