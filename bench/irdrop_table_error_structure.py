"""Why the IR-drop table misses 1 % at 128 x 128 with sparse inputs: the structure of its error.

    RERAM_COSIM_NUM_THREADS=1 .venv/bin/python bench/irdrop_table_error_structure.py [--tiles 3]

For held-out tiles (``crossbar.irdrop.heldout_tiles``; by default the binary table ``levels_b1``
with uniform codes, the worst case of BENCHMARKS.md's table, ``levels_b2`` LRS-heavy and
``levels_b4`` uniform) at 128 x 128 and 1 / 2.5 / 5 ohm, it compares the
table's effective matrix with the exact one (``crossbar.solver.effective_matrices``) entry by
entry and prints

* ``entry``: the RMS of the per-entry error ``dM = M_table - M_exact`` over the RMS of
  ``M_exact``, and how ``dM`` splits into per-column means, per-row means and the rest;
* ``lag1 row/col``: the correlation of the rest between neighbouring cells of a column / a row
  (0: independent from cell to cell);
* the column-current error (RMS error / RMS actual current, the table's metric) for inputs
  driving 10 %, 50 % and 100 % of the rows (``heldout_inputs``), next to the ``1/sqrt(k)``
  scaling from the 10 % figure that independent per-entry errors would give;
* ``corr R2`` and ``corrected 10 %``: a candidate correction term, ``dM ~ M_table * (a dev + b la
  + c la dev + d)`` with ``dev`` the cell's relative conductance deviation from the tile mean and
  ``la`` the decoupled-lines attenuation (``crossbar.irdrop.lines_attenuation``), each term
  made zero-mean down every column (the table's column sums are right), least squares *on the
  same tiles* (an in-sample upper bound of what such a term recovers), and its coefficients.

Several level tables are run (``--levels``): the coefficients' signs differ between them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from crossbar.irdrop import IRDropTable, heldout_inputs, heldout_tiles, lines_attenuation
from crossbar.solver import CircuitConfig, effective_matrices
from device.programming import LevelTable


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - ref) ** 2) / np.mean(ref**2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--levels", nargs="+", default=["b1:uniform", "b2:lrs_heavy", "b4:uniform"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = Path(__file__).resolve().parents[1] / "data"
    table = IRDropTable.load(data / "irdrop_default.h5")
    rng = np.random.default_rng(7)
    n = args.size
    print(f"{n}x{n}, {args.tiles} held-out tiles per level table")
    print(f"{'levels':>13} {'r_ohm':>5} {'entry':>7} {'col':>4} {'row':>4} {'rest':>5} {'lag1 r/c':>11}"
          f" {'10 %':>6} {'50 %':>6} {'100 %':>6} {'1/sqrt(k) from 10 %':>16} {'corr R2':>7} {'corrected 10 %':>14}  coefficients a b c d")
    for spec in args.levels:
        lv, mix = spec.split(":")
        g = heldout_tiles(LevelTable.load(data / f"levels_{lv}.h5"), args.tiles, n, mix, rng)
        gt = torch.from_numpy(g)
        for r in (1.0, 2.5, 5.0):
            c = CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r)
            m_ex = effective_matrices(gt, c).numpy()
            m_tb = table.effective_matrix(gt, c).numpy()
            d = m_tb - m_ex
            col = d.mean(axis=1, keepdims=True)
            row = (d - col).mean(axis=2, keepdims=True)
            rest = d - col - row
            tot = np.sum(d**2)
            lag_r = np.corrcoef(rest[:, 1:, :].ravel(), rest[:, :-1, :].ravel())[0, 1]  # down a column
            lag_c = np.corrcoef(rest[:, :, 1:].ravel(), rest[:, :, :-1].ravel())[0, 1]  # along a row
            dev = g / g.mean(axis=(1, 2), keepdims=True) - 1
            la = lines_attenuation(gt.clone(), r, r).numpy()
            feats = [f * m_tb for f in (dev, la, la * dev, np.ones_like(dev))]
            X = np.stack([(f - f.mean(axis=1, keepdims=True)).ravel() for f in feats], 1)
            coef, *_ = np.linalg.lstsq(X, d.ravel(), rcond=None)
            r2 = 1 - np.sum((d.ravel() - X @ coef) ** 2) / tot
            m_c = m_tb - (X @ coef).reshape(d.shape)
            errs = []
            for dens in (0.1, 0.5, 1.0):
                v = heldout_inputs(args.tiles, 16, n, dens, rng)  # (T, k, rows)
                ref = np.einsum("tki,tij->tkj", v, m_ex)
                errs.append(rel(np.einsum("tki,tij->tkj", v, m_tb), ref))
                if dens == 0.1:
                    e_corr = rel(np.einsum("tki,tij->tkj", v, m_c), ref)
            pred = [errs[0] * np.sqrt(0.1 / f) for f in (0.5, 1.0)]
            print(f"{spec:>13} {r:5.1f} {rel(m_tb, m_ex):7.2%} {np.sum(col**2) / tot:4.0%} {np.sum(row**2) / tot:4.0%} "
                  f"{np.sum(rest**2) / tot:5.0%} {lag_r:5.2f}/{lag_c:5.2f} "
                  f"{errs[0]:6.2%} {errs[1]:6.2%} {errs[2]:6.2%} {pred[0]:7.2%} {pred[1]:7.2%} {r2:7.2f} {e_corr:14.2%}  "
                  + " ".join(f"{x:+.2f}" for x in coef))


if __name__ == "__main__":
    main()
