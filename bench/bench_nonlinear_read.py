"""Nonlinear (sinh) cell read: the engine's approximation against the Newton solver, and its cost.

    .venv/bin/python bench/bench_nonlinear_read.py [--sizes 16 32 64] [--vectors 8] [--levels 1 2 4] [--wires 0 1 2.5 5]

Part 1 (accuracy). For tiles of the shipped level tables (``data/levels_b{1,2,4}.h5``, uniform
digits; cells defined as the tables verified them: chords at the table's 0.1 V, read by the engine
as chords at the chip's ``v_read_v``, ``crossbar.pipeline.chord_ratio``), wires of 0 (ideal), 1, 2.5 and 5 ohm per segment, sinh cells with ``v0 = 0.25 V``
(Stanford-PKU) read at ``v_read_v`` 0.2 and 0.3 V through an 8-bit multi-bit DAC, three input
mixes (uniform codes; activation-like Gaussian codes scaled per vector to full scale; 10 % of the
rows driven; real MiniLM post-LayerNorm token vectors), it prints the RMS error relative to the RMS actual column current (the issue's
metric) of

* ``linear``: the linear-cell read the engine made before (codes times the linear effective
  matrix), i.e. the size of the nonlinearity,
* ``engine``: the engine's nonlinear read (codes through :func:`crossbar.read.cell_code_map`,
  times the linear effective matrix of the cells' read conductances at ``v_read_v``),

both against the exact nodal solution with sinh cells (:func:`crossbar.solver.solve`, Newton;
small-signal conductances from :func:`device.compact.read_to_small_signal_s`).

Part 2 (cost). One 768 x 768 layer on 128 x 128 tiles (8-bit weights, 2-bit cells), 256 input
vectors, ideal ADC and a 6-bit column ADC: the read time with sinh cells against linear cells,
median of repeats, single thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from crossbar.config import CrossbarConfig
from crossbar.engine import program_matrix
from crossbar.pipeline import chord_ratio
from crossbar.read import cell_code_map
from crossbar.solver import CircuitConfig, effective_matrix, solve
from device.compact import read_to_small_signal_s
from device.programming import LevelTable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
V0 = 0.25


def codes(kind: str, rows: int, n: int, rng: np.random.Generator, qm: int = 127) -> np.ndarray:
    """``(rows, n)`` integer DAC codes (``layernorm``: real MiniLM post-LayerNorm token vectors,
    ``bench/minilm_activations.py``, the first ``rows`` features, scaled per vector like the DAC)."""
    if kind == "uniform":
        return rng.integers(-qm, qm + 1, (rows, n)).astype(float)
    if kind == "layernorm":
        import minilm_activations

        a = minilm_activations.load()["L0/qkv"]
        x = a[rng.choice(a.shape[0], n, replace=False), :rows].T.astype(float)
        m = np.abs(x).max(0, keepdims=True)
        return np.round(x / np.where(m > 0, m, 1) * qm)
    x = rng.standard_normal((rows, n))
    if kind == "sparse":
        x *= rng.random((rows, n)) < 0.1
    m = np.abs(x).max(0, keepdims=True)
    return np.round(x / np.where(m > 0, m, 1) * qm)


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - ref) ** 2) / np.mean(ref**2)))


def accuracy(sizes, n_vec: int, rng: np.random.Generator, level_bits=(1, 2, 4), wires=(0.0, 1.0, 2.5, 5.0)) -> None:
    print("part 1: RMS error / RMS actual column current, against Newton with sinh cells (v0 = 0.25 V)")
    print(f"{'size':>5} {'r_ohm':>5} {'v_read':>6} {'levels':>7} {'inputs':>8} {'linear':>8} {'engine':>9}")
    worst: dict[float, float] = {}
    for n in sizes:
        for bits in level_bits:
            tab = LevelTable.load(ROOT / "data" / f"levels_b{bits}.h5")
            g = tab.sample(rng.integers(0, 2**bits, (n, n)), rng)
            for r in wires:
                lin_c = CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r)
                for v_read in (0.2, 0.3):
                    cfg = CrossbarConfig(tile_rows=n, tile_cols=n, v_read_v=v_read)
                    emap = cell_code_map(cfg, V0).numpy()
                    # the cells as the table verified them (chords at its read voltage, 0.1 V); the
                    # engine reads their chords at the chip's v_read (pipeline.read_voltage_step)
                    g_ss = read_to_small_signal_s(g, tab.v_read_v, V0)
                    g_chip = g * chord_ratio(tab.v_read_v, v_read, V0)
                    m_lin = g_chip if r == 0 else effective_matrix(g_chip, lin_c)[0]
                    nl_c = CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r, cell_v0_v=V0)
                    for kind in ("uniform", "gauss", "sparse", "layernorm"):
                        if kind == "layernorm" and n > 384:
                            continue
                        c = codes(kind, n, n_vec, rng)
                        v = v_read * c / 127
                        ref = solve(g_ss, v, nl_c, method="direct").i_out_a  # (cols, k)
                        lin = m_lin.T @ v
                        eng = m_lin.T @ (v_read * emap[c.astype(int) + 127] / 127)
                        e_lin, e_eng = rel(lin, ref), rel(eng, ref)
                        worst[r] = max(worst.get(r, 0.0), e_eng)
                        print(f"{n:5d} {r:5.1f} {v_read:6.2f} {'b' + str(bits):>7} {kind:>8} {e_lin:8.2%} {e_eng:9.3%}")
    print("worst engine error per wire resistance: " + ", ".join(f"{r:g} ohm {e:.3%}" for r, e in sorted(worst.items())))


def cost(repeats: int) -> None:
    print("\npart 2: read time, sinh cells / linear cells (768 x 768, 128 x 128 tiles, 256 vectors, 1 thread)")
    torch.set_num_threads(1)
    w = torch.randn(768, 768, generator=torch.Generator().manual_seed(0)) * 0.05
    x = torch.randn(256, 768, generator=torch.Generator().manual_seed(1))
    for adc in (None, 6):
        cfg = CrossbarConfig(adc_bits=adc)
        t = {}
        for name, v0 in (("linear", 0.0), ("sinh", V0)):
            pm = program_matrix(w, cfg, rng=np.random.default_rng(0), circuit=CircuitConfig(cell_v0_v=v0))
            pm(x)  # warm up (and build the code map once)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                pm(x)
                ts.append(time.perf_counter() - t0)
            t[name] = float(np.median(ts))
        print(f"  ADC {'ideal' if adc is None else f'{adc}-bit column'}: linear {t['linear'] * 1e3:.2f} ms, "
              f"sinh {t['sinh'] * 1e3:.2f} ms, ratio {t['sinh'] / t['linear']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--vectors", type=int, default=8, help="input vectors per case")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4], help="bits per cell of the level tables")
    ap.add_argument("--wires", type=float, nargs="+", default=[0.0, 1.0, 2.5, 5.0], help="ohm per segment")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    if not args.skip_accuracy:
        accuracy(args.sizes, args.vectors, np.random.default_rng(0), args.levels, args.wires)
    cost(args.repeats)


if __name__ == "__main__":
    main()
