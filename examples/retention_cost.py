"""What the remedies against relaxation cost at programming: pulses per cell and programming
time, for MiniLM SST-2's cells on the default chip (issue 25).

Configurations are ``--set`` lists over the default chip, named on the command line as
``NAME=KEY=VALUE;KEY=VALUE`` (as ``examples/retention_layers.py``). For each:

* **Programming**: every cell written once by write-verify from the table's initial state;
  the pulses per level are the level table's own (``LevelTable.pulses``), weighted by MiniLM's
  cells per digit under that configuration (``crossbar.pipeline.cell_digits`` of every crossbar
  matrix: the weight format and slicing decide how many cells hold each digit; free cells hold
  digit 0 and are written too).
* **Relaxation-aware programming** (``crossbar.retention.reprogram_rounds`` N, wait ``tw``):
  the engine's ``reverify_step`` on MiniLM's cells (one chip) counts the re-programs per digit
  (``ProgrammedMatrix.retention``); a re-program is write-verify **from where relaxation took
  the cell** (``program_levels(initial_g_s=...)``: the level's write-verify samples relaxed
  ``tw`` by the relaxation model, the ones whose verify read leaves the re-verify window
  re-programmed, their mean pulses); plus the ``N`` verify passes of ``reverify_reads`` reads over
  every cell, and ``N * tw`` of waiting (the whole chip at once).
* **Refresh** every ``P`` s: every cell re-verified, and re-written from its state ``P`` after its
  last write (a cell still inside its acceptance window takes one verify pass and no pulse).
  Given per refresh and as a duty: the share of time a tile spends refreshing when its cells are
  written one at a time (``tile_rows * tile_cols`` cells per tile, tiles in parallel);
  row-parallel programming divides it by ``tile_cols``.
* **Placement** costs nothing but its own table's pulses; **compensation** no pulse (its
  ``compensation_reads`` reference reads per layer are reads of the programmed chip).

Time of a write of ``p`` pulses: ``p (t_pulse_s + 2 t_edge_s) + (p + 1) verify_reads t_read_s``
(a verify pass before every pulse and one that accepts the cell), with the table's write-verify
settings; with 1 us reads averaged 4 times the verify reads, not the 100 ns pulses, take most of
it. A chip's programming time depends on how many cells are written in parallel, so it is
given per cell.

    python examples/retention_cost.py --bits 1 --refresh 10,100,1000 \\
        --config "naive=" --config "placed=levels.table_path=data/levels_b1_techB.h5" \\
        --config "rap=crossbar.retention.reprogram_rounds=3;crossbar.retention.reprogram_wait_s=1"
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np


def write_time_s(pulses: np.ndarray | float, prog) -> np.ndarray | float:
    """Time of write-verify writes of ``pulses`` pulses (each: a verify pass before every pulse
    and the accepting one after the last), s."""
    return pulses * (prog.t_pulse_s + 2 * prog.t_edge_s) + (pulses + 1) * prog.verify_reads * prog.t_read_s


def reprogram_pulses(table, model, age_s: float, prog, params, rng, n: int, window_s: np.ndarray | None,
                     read_noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per level: mean pulses and mean write time of a re-program from the state ``age_s`` after
    a write, over the cells a verify sends back (outside ``window_s``; None: every cell, as a
    refresh re-verifies all, the ones inside the write-verify window taking no pulse), and the
    fraction of cells sent back."""
    from device.programming import program_levels

    L = table.levels
    g0 = np.stack([rng.choice(table.g_samples_s[k], n) for k in range(L)])
    g = np.stack([model.sample(g0[k], age_s, rng, out_of_range="clamp") for k in range(L)])
    res = program_levels(prog, params, n_devices=n, rng=rng, initial_g_s=g, allow_unconverged=True)
    if not np.allclose(res.table.g_target_s, table.g_target_s, rtol=1e-9):
        raise SystemExit(f"the table's programming settings give targets {res.table.g_target_s} != {table.g_target_s}")
    if window_s is None:
        sent = np.ones_like(g, bool)
    else:
        read = g * (1 + read_noise * rng.standard_normal(g.shape))
        sent = np.abs(read - table.g_target_s[:, None]) > window_s[:, None]
    p = np.array([res.pulses[k][sent[k]].mean() if sent[k].any() else 0.0 for k in range(L)])
    t = np.array([write_time_s(res.pulses[k][sent[k]], prog).mean() if sent[k].any() else 0.0 for k in range(L)])
    return p, t, sent.mean(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--config", action="append", default=[], help="NAME=KEY=VALUE;KEY=VALUE (repeatable)")
    ap.add_argument("--model", default=None, help="fine-tuned MiniLM (default: the cached minilm-sst2): its cells per digit")
    ap.add_argument("--refresh", default="10,100,1000", help="refresh periods, s (empty: none)")
    ap.add_argument("--devices", type=int, default=256, help="cells per level for the re-program runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="CSV of the rows")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("RERAM_COSIM_NUM_THREADS", "1")))
    from crossbar.pipeline import cell_digits, reverify_window_s
    from device.data import resolve_table
    from device.presets import get_preset
    from device.programming import ProgrammingConfig
    from device.tables import read_table
    from nn.crossbar_linear import patch_model, program_model
    from nn.models import finetuned_model_dir, load_classifier
    from nn.sim import build_levels, build_sim_config, level_table_path, load_relaxation

    model_dir = args.model or str(finetuned_model_dir("minilm-sst2"))
    periods = [float(x) for x in args.refresh.split(",") if x]
    rows = []
    for c in args.config or ["naive="]:
        cname, _, sets = c.partition("=")
        sets = [s for s in sets.split(";") if s]
        sim = build_sim_config("default", [f"crossbar.bits_per_cell={args.bits}"] + sets)
        r = sim.crossbar.retention
        table = build_levels(sim)
        path = resolve_table(sim.levels.table_path) if sim.levels.table_path else level_table_path(args.bits)
        conf = read_table(path).config
        prog = ProgrammingConfig.from_dict(conf["programming"])
        params = type(get_preset(conf["model_name"])).from_dict(conf["model"])
        relax_model = load_relaxation(build_sim_config("default", [f"crossbar.bits_per_cell={args.bits}", "crossbar.read_time_s=1"]
                                                       + sets)).model
        # cells per digit: the codes and layout of every crossbar matrix (no chip draw needed)
        net, _ = load_classifier(model_dir, None, task="sst2", require_finetuned=True)
        plain = [s for s in sets if not s.startswith("crossbar.retention.")]
        patch_model(net, build_sim_config("default", [f"crossbar.bits_per_cell={args.bits}"] + plain))
        chips = program_model(net, np.random.default_rng(args.seed))
        cells = sum(torch.bincount(cell_digits(pm.qweight, pm.layout, pm.cfg).reshape(-1).to(torch.int64),
                                   minlength=table.levels).numpy() for pm in chips.values())
        share = cells / cells.sum()
        fresh_p = float(share @ table.pulses.mean(axis=1))
        fresh_t = float(share @ np.array([write_time_s(table.pulses[k], prog).mean() for k in range(table.levels)]))
        row = {"config": cname, "settings": ";".join(sets), "bits_per_cell": args.bits, "level_table": Path(path).name,
               "targets_us": " ".join(f"{g * 1e6:.1f}" for g in table.g_target_s),
               "cells": int(cells.sum()), "cells_per_digit_pct": " ".join(f"{100 * s:.1f}" for s in share),
               "write_pulses_per_cell": fresh_p, "write_time_per_cell_us": fresh_t * 1e6,
               "reprogram_rounds": r.reprogram_rounds, "reprograms_per_cell": 0.0, "rap_pulses_per_cell": 0.0,
               "rap_verify_reads_per_cell": 0, "rap_time_per_cell_us": 0.0, "rap_wait_s": 0.0}
        rng = np.random.default_rng(args.seed)
        if r.reprogram_rounds > 0:
            net, _ = load_classifier(model_dir, None, task="sst2", require_finetuned=True)
            patch_model(net, build_sim_config("default", [f"crossbar.bits_per_cell={args.bits}",
                                                           f"crossbar.read_time_s={r.reprogram_wait_s}"] + sets))
            chips = program_model(net, np.random.default_rng(args.seed))
            rew = sum(pm.retention["rewrites_per_level"] for pm in chips.values())
            n_cells = sum(pm.retention["cells"] for pm in chips.values())
            window = reverify_window_s(table, sim.crossbar)
            sig = sim.crossbar.read_noise_sigma_rel or table.read_noise_rel
            rp, rt, _ = reprogram_pulses(table, relax_model, r.reprogram_wait_s, prog, params, rng, args.devices, window,
                                         sig / np.sqrt(r.reverify_reads))
            reads = r.reprogram_rounds * r.reverify_reads
            row.update(reprograms_per_cell=float(rew.sum() / n_cells), rap_pulses_per_cell=float((rew / n_cells) @ rp),
                       rap_verify_reads_per_cell=reads,
                       rap_time_per_cell_us=float((rew / n_cells) @ rt + reads * prog.t_read_s) * 1e6,
                       rap_wait_s=r.reprogram_rounds * r.reprogram_wait_s)
        tile_cells = sim.crossbar.tile_rows * sim.crossbar.tile_cols
        for p in periods:
            fp, ft, _ = reprogram_pulses(table, relax_model, p, prog, params, rng, args.devices, None, 0.0)
            per_p, per_t = float(share @ fp), float(share @ ft)
            row[f"refresh_{p:g}s_pulses_per_cell"] = per_p
            row[f"refresh_{p:g}s_time_per_cell_us"] = per_t * 1e6
            row[f"refresh_{p:g}s_tile_duty"] = tile_cells * per_t / p
        rows.append(row)
        print(f"{cname}: {row['level_table']} ({row['targets_us']} uS), cells per digit {row['cells_per_digit_pct']} %; "
              f"write {fresh_p:.1f} pulses, {fresh_t * 1e6:.1f} us per cell"
              + (f"; relaxation-aware {r.reprogram_rounds} x {r.reprogram_wait_s:g} s: {row['reprograms_per_cell']:.3f} "
                 f"re-programs per cell, +{row['rap_pulses_per_cell']:.2f} pulses, +{row['rap_time_per_cell_us']:.1f} us per cell, "
                 f"+{row['rap_wait_s']:g} s wait" if r.reprogram_rounds else "")
              + "".join(f"; refresh every {p:g} s: {row[f'refresh_{p:g}s_pulses_per_cell']:.1f} pulses, "
                        f"{row[f'refresh_{p:g}s_time_per_cell_us']:.1f} us per cell, tile duty {row[f'refresh_{p:g}s_tile_duty']:.3g}"
                        for p in periods), flush=True)
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
