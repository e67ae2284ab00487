"""Programming a chip for all of BERT-base's encoder: this engine against the engine before the
pipeline refactor, side by side in one run.

    .venv/bin/python bench/bench_programming.py [--repeat 3] [--before REV] [--modes ideal,table,exact]
                                                [--tile 128] [--r-wire-ohm 1.0] [--shapes 768x768,...]

BERT-base's encoder has 72 Linear weights: per layer 4 x (768 x 768), 768 -> 3072 and 3072 -> 768.
Each distinct shape is programmed ``--repeat`` times with each engine, interleaved (so both see the
same machine load), and the encoder total is the median time per shape times its multiplicity.
Chip: 8-bit weights on 2-bit cells, differential pairs, 128 x 128 tiles, the shipped 2-bit level
table (``data/levels_b2.h5``: measured-style spread), 1e-3 stuck-at faults, an 8-bit calibrated
column ADC's fold; ``ideal`` wires, the ``table`` IR-drop model (``data/irdrop_default.h5``) and
``exact`` (every tile's nodal solution, :func:`crossbar.effective.effective_matrices`), wires of
``--r-wire-ohm`` per segment on word and bit lines. Since issue 21 the table refuses 128 x 128 tiles
at 1 ohm (its error on signed inputs would pass 1 %): ``--tile 64`` is where it is accepted at 1 ohm.
The engine before is timed with ideal wires only: its IR-drop table was a different model (the
table of issue 13 replaced it), so a table-mode "before" would not be the same statistics.

The engine before is the single-module ``crossbar/engine.py`` of git revision ``--before``
(default ``6c17ae4``, the last commit before the refactor), loaded from git into its own module:
the same statistics (level-table resampling, fault maps), numpy draws, the old fold.
Threads: torch's default (2 on the 2-core machine) or ``--threads``; the CPU time column is
what a free core would take single-threaded (``--threads 1``); on a busy machine torch's intra-op
threads cost 3-5x more CPU time than one thread. On a GPU (``--device cuda``) only the new
engine runs (the old one draws in numpy on the CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crossbar.engine import CrossbarConfig, program_matrix  # noqa: E402
from device.faults import FaultConfig  # noqa: E402
from device.programming import LevelTable  # noqa: E402

#: (out_features, in_features, count in BERT-base's encoder)
SHAPES = [(768, 768, 48), (3072, 768, 12), (768, 3072, 12)]


def _module_before(rev: str, path_in_repo: str = "crossbar/engine.py", name: str = "engine_before"):
    """A module of this repository at git revision ``rev`` (None when git or the revision is not
    available)."""
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path_in_repo}"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"({name}: git show {rev} failed: {exc}; timing the new code only)")
        return None
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _engine_before(rev: str):
    """The old engine module from git (None when git or the revision is not available)."""
    return _module_before(rev)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", default="6c17ae4")
    ap.add_argument("--modes", default="ideal,table")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, 2 on the 2-core machine)")
    ap.add_argument("--tile", type=int, default=128, help="tile rows = cols")
    ap.add_argument("--r-wire-ohm", type=float, default=1.0, help="word- and bit-line resistance per segment")
    ap.add_argument("--shapes", default="", help="only these weight shapes, e.g. 768x768 (default: all three)")
    ap.add_argument("--table-before", default="", help="git revision whose crossbar/irdrop.py gives the 'before' "
                    "column of table mode (the same engine, that revision's table code; same table file)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from crossbar.nodal import CircuitConfig

    circ = CircuitConfig(r_wire_row_ohm=args.r_wire_ohm, r_wire_col_ohm=args.r_wire_ohm)
    shapes = [s for s in SHAPES if not args.shapes or f"{s[0]}x{s[1]}" in args.shapes.split(",")]
    dev = torch.device(args.device)
    old = _engine_before(args.before) if dev.type == "cpu" else None
    lv = LevelTable.load(ROOT / "data" / "levels_b2.h5")
    faults = FaultConfig(rate=1e-3)
    table_path = ROOT / "data" / "irdrop_default.h5"
    old_table = None
    if args.table_before:
        mod = _module_before(args.table_before, "crossbar/irdrop.py", "irdrop_before")
        old_table = None if mod is None else mod.IRDropTable.load(table_path)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {dev}; {args.tile}x{args.tile} tiles, "
          f"{args.r_wire_ohm:g} ohm per wire segment")
    warm = torch.randn(256, 256, generator=torch.Generator().manual_seed(0)) * 0.02  # first-call costs
    for mode in args.modes.split(","):
        kw = dict(tile_rows=args.tile, tile_cols=args.tile, ir_drop=mode)
        program_matrix(warm.to(dev), CrossbarConfig(**kw), lv, faults, np.random.default_rng(0), circuit=circ)
        if old is not None and mode == "ideal":
            old.program_matrix(warm, old.CrossbarConfig(**kw), lv, faults, np.random.default_rng(0))
    for mode in args.modes.split(","):
        kw = dict(tile_rows=args.tile, tile_cols=args.tile, weight_bits=8, bits_per_cell=2, adc_bits=8, adc_range="calibrated",
                  ir_drop=mode)
        new_cfg = CrossbarConfig(**kw)
        tot_new = tot_old = cpu_new = 0.0
        before = "old engine" if mode == "ideal" else ("table before" if mode == "table" and old_table else "-")
        print(f"\n{mode} wires: seconds per matrix (median of {args.repeat}); before = {before}")
        print(f"{'shape':>12} {'count':>5} {'new':>8} {'new CPU':>8} {'before':>8} {'ratio':>6}")
        for out_f, in_f, count in shapes:
            w = torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(out_f + in_f)) * 0.02
            t_new, t_old, c_new = [], [], []
            for r in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                program_matrix(w.to(dev), new_cfg, lv, faults, np.random.default_rng(r), circuit=circ)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t_new.append(time.perf_counter() - t0)
                c_new.append(time.process_time() - c0)
                if old is not None and mode == "ideal":
                    t0 = time.perf_counter()
                    old.program_matrix(w, old.CrossbarConfig(**kw), lv, faults, np.random.default_rng(r))
                    t_old.append(time.perf_counter() - t0)
                if old_table is not None and mode == "table":
                    t0 = time.perf_counter()
                    program_matrix(w.to(dev), new_cfg, lv, faults, np.random.default_rng(r), circuit=circ,
                                   irdrop=old_table)
                    t_old.append(time.perf_counter() - t0)
            a = statistics.median(t_new)
            b = statistics.median(t_old) if t_old else float("nan")
            tot_new += a * count
            tot_old += b * count
            cpu_new += statistics.median(c_new) * count
            print(f"{out_f:>5}x{in_f:<6} {count:>5} {a:8.3f} {statistics.median(c_new):8.3f} {b:8.3f} {b / a:6.2f}")
        print(f"BERT-base encoder, {mode} wires: {tot_new:.1f} s now ({cpu_new:.1f} CPU-s, all threads; load average "
              f"{os.getloadavg()[0]:.1f}), {tot_old:.1f} s before ({tot_old / tot_new:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
