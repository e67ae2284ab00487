"""Exact IR drop for a whole model: every tile's effective matrix, batched, against the table.

    RERAM_COSIM_NUM_THREADS=2 .venv/bin/python bench/bench_irdrop_exact.py [--layers all|N] [--r-wire-ohm 2.5] [--device cpu]

Programs every nn.Linear of the offline all-MiniLM-L6-v2 (6 layers, hidden 384; about 5,260
tiles of 128x128 at 8-bit weights, 2 bits/cell, differential) through the engine's pipeline
(``crossbar.engine.program_matrix``) three times per layer: ``ir_drop="ideal"``, ``"table"``
(``crossbar.irdrop``) and ``"exact"`` (``crossbar.solver.effective_matrices``, every tile's
nodal solution), from the same seed, and prints the wall time of each and the tiles per second
of the exact step (exact minus ideal), wall and CPU time (the CPU time, divided by the threads,
is what a machine with that many free cores takes; the wall time depends on the other jobs). ``--layers N`` programs the first N Linear layers only
(the timing scales with the tile count). Threads: ``RERAM_COSIM_NUM_THREADS`` (torch threads;
the exact step runs one chunk of tiles per thread).

``--micro N``: instead, times ``effective_matrices`` alone on N random 128x128 tiles (levels'
conductance range, 1 ohm), interleaved with a plain batched solve of the same tiles
(``torch.linalg.solve``, one 128x128 system with 128 right-hand sides per tile, the machine's
unit), CPU time, one thread, min and median of 5: the ratio exact / solve is what carries over
between machines and loads. Methods (``effective_matrices(method=...)``): nested dissection (the
default at 128x128), the bit-line sweep with the recursive block inverse (issue 21's first try)
and with ``potrf`` + ``potri`` (issue 13).

Also prints, on the first layer, the table's error against the exact matrices in the held-out
metric (RMS column-current error / RMS actual column current, half-driven random inputs).
"""

import argparse
import os
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="all", help="'all' or the number of Linear layers to program")
    ap.add_argument("--r-wire-ohm", type=float, default=2.5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-table", action="store_true")
    ap.add_argument("--micro", type=int, default=0, help="time effective_matrices alone on this many tiles")
    args = ap.parse_args()
    if args.micro:
        return micro(args.micro)
    torch.set_num_threads(int(os.environ.get("RERAM_COSIM_NUM_THREADS", torch.get_num_threads())))
    from transformers import AutoModel

    from crossbar.config import CrossbarConfig
    from crossbar.engine import program_matrix
    from crossbar.irdrop import IRDropTable
    from crossbar.layout import default_layout
    from crossbar.solver import CircuitConfig
    from device.programming import LevelTable
    from nn.models import default_base_model

    model = AutoModel.from_pretrained(str(default_base_model()))
    lin = [(n, m.weight.detach().to(args.device)) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if args.layers != "all":
        lin = lin[: int(args.layers)]
    cfg = CrossbarConfig(bits_per_cell=2)
    levels = LevelTable.load("data/levels_b2.h5")
    circ = CircuitConfig(r_wire_row_ohm=args.r_wire_ohm, r_wire_col_ohm=args.r_wire_ohm)
    table = IRDropTable.load("data/irdrop_default.h5")
    n_tiles = sum(default_layout(w.shape[0], w.shape[1], cfg).n_tiles for _, w in lin)
    print(f"{len(lin)} Linear layers, {n_tiles} tiles of {cfg.tile_rows}x{cfg.tile_cols}, {cfg.weight_bits}-bit weights, "
          f"{cfg.bits_per_cell} bits/cell, {cfg.mapping}; {args.r_wire_ohm:g} ohm/segment; torch threads "
          f"{torch.get_num_threads()}; device {args.device}; load average {os.getloadavg()[0]:.1f}", flush=True)
    times, cpu = {}, {}
    modes = ("ideal",) + (() if args.skip_table else ("table",)) + ("exact",)
    for mode in modes:
        c = cfg.replace(ir_drop=mode)
        t0, c0 = time.perf_counter(), time.process_time()
        for i, (_, w) in enumerate(lin):
            pm = program_matrix(w, c, levels, None, np.random.default_rng(i), circuit=circ, irdrop=table,
                                keep_conductances=(i == 0))
            if i == 0:
                first = pm.tile_state()
                if mode == "table":
                    m_table = first.m_s
                if mode == "exact":
                    m_exact = first.m_s
        if args.device != "cpu":
            torch.cuda.synchronize()
        times[mode] = time.perf_counter() - t0
        cpu[mode] = time.process_time() - c0
        print(f"  ir_drop={mode:<6} {times[mode]:8.1f} s wall, {cpu[mode]:8.1f} s CPU (all threads), "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    dt = times["exact"] - times["ideal"]
    dc = cpu["exact"] - cpu["ideal"]
    print(f"exact IR drop: {dt:.1f} s wall for {n_tiles} tiles = {n_tiles / dt:.1f} tiles/s "
          f"({1e3 * dt / n_tiles:.1f} ms/tile); {dc:.1f} CPU-s ({1e3 * dc / n_tiles:.1f} CPU-ms/tile, "
          f"{dc / torch.get_num_threads():.1f} s on {torch.get_num_threads()} free cores); whole-model programming "
          f"{times['exact']:.1f} s (ideal {times['ideal']:.1f} s)")
    if "table" in times:
        dtt = times["table"] - times["ideal"]
        print(f"table IR drop: {dtt:.2f} s ({1e3 * dtt / n_tiles:.2f} ms/tile), exact/table = {dt / max(dtt, 1e-9):.0f}x")
        me = np.asarray(m_exact.cpu(), dtype=np.float64)
        mt = np.asarray(m_table.cpu(), dtype=np.float64)
        rng = np.random.default_rng(0)
        v = rng.uniform(0, 1, (32, me.shape[1])) * (rng.random((32, me.shape[1])) < 0.5)
        i_e = np.einsum("kr,trc->tkc", v, me)
        i_t = np.einsum("kr,trc->tkc", v, mt)
        print(f"table vs exact on layer 0 ({me.shape[0]} tiles): RMS column-current error "
              f"{100 * np.sqrt(np.mean((i_t - i_e) ** 2) / np.mean(i_e**2)):.2f} % of the RMS actual current")


def micro(n: int) -> None:
    from crossbar.effective import effective_matrices
    from crossbar.nodal import CircuitConfig

    torch.set_num_threads(1)
    g = torch.from_numpy(np.random.default_rng(0).uniform(9e-6, 1.06e-4, (n, 128, 128)))
    c = CircuitConfig(r_wire_row_ohm=1.0, r_wire_col_ohm=1.0)
    a = g + torch.eye(128, dtype=torch.float64)  # well-conditioned dense systems
    b = torch.ones(n, 128, 128, dtype=torch.float64)
    runs = {"solve": lambda: torch.linalg.solve(a, b),
            "exact (nested dissection, default)": lambda: effective_matrices(g, c),
            "exact (sweep, block inverse)": lambda: effective_matrices(g, c, method="block"),
            "exact (sweep, Cholesky inverse)": lambda: effective_matrices(g, c, method="cholesky")}
    effective_matrices(g[:1], c)  # the nested-dissection plan of the shape (cached once per process)
    t = {k: [] for k in runs}
    for _ in range(5):
        for k, f in runs.items():
            c0 = time.process_time()
            f()
            t[k].append(1e3 * (time.process_time() - c0) / n)
    base = float(np.median(t["solve"]))
    print(f"{n} tiles 128x128, 1 thread, load average {os.getloadavg()[0]:.1f}; CPU-ms per tile (min / median), "
          "median ratio to the plain batched solve:")
    for k, v in t.items():
        print(f"  {k:<34} {min(v):7.2f} / {float(np.median(v)):7.2f}  {float(np.median(v)) / base:6.1f}x")


if __name__ == "__main__":
    main()
