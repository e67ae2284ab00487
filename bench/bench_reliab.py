"""Costs of issue 20's fixes, ratios measured side by side in one run.

    .venv/bin/python bench/bench_reliab.py [--rows 1000000] [--repeat 3]

1. Keyed read noise (``crossbar.readkeys.ReadKeys.normal``, what every noisy read now draws)
   beside ``torch.randn`` of the same shape (what the reads drew before, in batch order), for
   the shapes of a MiniLM evaluation batch: 64 sentences x 26 tokens (key blocks of 16 positions),
   outputs 384 and 1536, the ideal-ADC read ``()`` and a column-ADC read over 3 row blocks
   ``(3, 1)``. One thread.
2. Tidy-CSV calibration input (``device.calibrate.read_tidy_csv``) of ``--rows`` rows
   (``level,g_s``, 4 levels) beside the row-by-row reader it replaced (kept here verbatim), and
   the level table's Hazen quantile grid (sort + interpolation, ``calibrate_levels``) beside
   ``numpy.quantile(method="hazen")`` with one position per sample, which it replaced.

Medians of ``--repeat`` runs of CPU time (``time.process_time``), one thread.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median_s(fn, repeat: int) -> float:
    """Median CPU seconds of ``repeat`` calls (process time: the machine may be shared)."""
    import gc

    out = []
    for _ in range(repeat):
        gc.collect()
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return statistics.median(out)


def _old_read(p: Path, text_columns=("level",), float_columns=("g_s",)):
    """The reader before issue 20 (row by row), for the comparison."""
    with open(p, newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        cols = {h: i for i, h in enumerate(header)}
        want_f = [c for c in float_columns if c in cols]
        text = {c: [] for c in text_columns}
        num = {c: [] for c in want_f}
        for _line, row in enumerate(reader, start=2):
            if not row or all(not x.strip() for x in row):
                continue
            for c in text_columns:
                text[c].append(row[cols[c]].strip())
            for c in want_f:
                num[c].append(float(row[cols[c]].strip()))
    out = {c: np.array(v, dtype=str) for c, v in text.items()}
    out.update({c: np.array(v, dtype=float) for c, v in num.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from crossbar.readkeys import ReadKeys

    print("1. read noise: keyed normals vs torch.randn (64 sentences x 26 tokens)")
    ids = torch.arange(64, dtype=torch.int64).repeat_interleave(26) * (1 << 20) + torch.arange(26).repeat(64)
    keys = ReadKeys(seed=7, rows=ids, block=16)
    g = torch.Generator().manual_seed(0)
    for out in (384, 1536):
        for lead in ((), (3, 1)):
            shape = (*lead, ids.numel(), out)
            t_key = _median_s(lambda: keys.normal(lead, (out,), torch.float32, "cpu"), args.repeat)
            t_rnd = _median_s(lambda: torch.randn(shape, generator=g), args.repeat)
            print(f"   out {out:>5} lead {str(lead):<7} keyed {t_key * 1e3:7.1f} ms  randn {t_rnd * 1e3:7.1f} ms  "
                  f"ratio {t_key / t_rnd:5.2f}")

    print(f"2. calibration CSV of {args.rows} rows (4 levels)")
    from device.calibrate import read_tidy_csv

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, args.rows)
    g_s = 1e-6 * (1 + 10 * lab) * (1 + 0.05 * rng.standard_normal(args.rows))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "levels.csv"
        p.write_text("level,g_s\n" + "".join(f"{a},{b:.6g}\n" for a, b in zip(lab, g_s)))
        t_new = _median_s(lambda: read_tidy_csv(p, text_columns=("level",), float_columns=("g_s",)), args.repeat)
        t_old = _median_s(lambda: _old_read(p), args.repeat)
        print(f"   read: vectorized {t_new:6.2f} s  row by row {t_old:6.2f} s  ratio {t_old / t_new:5.1f}x")
    x = np.sort(g_s[lab == 0])
    nq = int(np.bincount(lab).max())
    t_interp = _median_s(lambda: np.interp((np.arange(nq) + 0.5) * x.size / nq - 0.5, np.arange(x.size), x), args.repeat)
    t_quant = _median_s(lambda: np.quantile(x, (np.arange(nq) + 0.5) / nq, method="hazen"), 1)
    print(f"   one level's quantile grid ({x.size} samples): sort+interp {t_interp:6.3f} s  "
          f"numpy.quantile {t_quant:6.2f} s  ratio {t_quant / t_interp:6.0f}x")


if __name__ == "__main__":
    main()
