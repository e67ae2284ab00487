"""A study run serially and on a local Dask cluster, side by side; executor overheads; a BERT-base point.

    .venv/bin/python bench/bench_study.py [--model cache:minilm-sst2] [--glue-dir ../shared/data/glue]
                                          [--points 8] [--trials 1] [--max-examples 128] [--workers 2]
                                          [--serial-threads 1,2]
    .venv/bin/python bench/bench_study.py --overhead dask      # and, from a venv with Ray: --overhead ray
    .venv/bin/python bench/bench_study.py --bert-base [--max-examples N]

Default: one study (SST-2, ``--points`` fault rates x one method, ``--trials`` chips per point,
plus the digital row) run from scratch three ways in one process, each into its own empty
directory: ``serial`` with ``--serial-threads`` torch threads (each value a run), then
``--executor dask`` with ``--workers`` local worker processes of one thread each (cluster start-up,
worker imports and model loads inside the timed region). Prints wall times, the speed-up of the
cluster over each serial run, and checks that every run wrote identical rows (``wall_s`` and
``created`` aside).

``--overhead dask|ray``: start-up of a 2-worker local cluster until a first task has returned,
the round trip of 200 no-op tasks, shutdown, and the memory of the cluster's processes. Imports
only the standard library and the executor library, so it runs from any venv that has it.

``--bert-base``: one study point of a BERT-base-shaped classifier (``transformers.BertConfig()``
defaults: 12 layers, hidden 768; randomly initialised, since no BERT-base weights are available
offline, with MiniLM's BERT-uncased tokenizer): load, digital SST-2 dev pass, program a chip
(default preset), simulated dev pass. Timings only; accuracy of random weights means nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _noop(i: int) -> int:
    return i


def overhead(kind: str, workers: int = 2, n: int = 200) -> None:
    """Start-up, per-task round trip and memory of a local cluster of ``workers`` processes."""
    t0 = time.perf_counter()
    if kind == "dask":
        import logging

        import distributed

        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
        client.wait_for_workers(workers)
        client.submit(_noop, -1, pure=False).result()
        t1 = time.perf_counter()
        futs = [client.submit(_noop, i, pure=False) for i in range(n)]
        client.gather(futs)
        t2 = time.perf_counter()
        mem = _rss_mib(_tree(os.getpid()))
        client.close()
        cluster.close()
        version = distributed.__version__
    elif kind == "ray":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        f = ray.remote(num_cpus=1)(_noop)
        ray.get(f.remote(-1))
        t1 = time.perf_counter()
        ray.get([f.remote(i) for i in range(n)])
        t2 = time.perf_counter()
        # Ray's daemons (GCS, raylet, workers) are not all children of this process: count by name
        pids = set(_tree(os.getpid()))
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    cmd = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace")
                except OSError:
                    continue
                if "ray" in cmd and ("gcs_server" in cmd or "raylet" in cmd or "default_worker" in cmd
                                     or "dashboard" in cmd or "log_monitor" in cmd or "runtime_env" in cmd):
                    pids.add(int(d))
        mem = _rss_mib(sorted(pids))
        ray.shutdown()
        version = ray.__version__
    else:
        raise SystemExit(f"--overhead {kind}: must be dask or ray")
    t3 = time.perf_counter()
    print(f"{kind} {version}: start-up to first task {t1 - t0:.2f} s | {n} no-op tasks {1e3 * (t2 - t1) / n:.2f} ms "
          f"per task | shutdown {t3 - t2:.2f} s | memory of the cluster's processes {mem:.0f} MiB")


def _study(args: argparse.Namespace, out: Path, executor: str, threads: int | None) -> tuple[float, Path]:
    from nn.study import StudySpec, run_study

    rates = [0.0] + [0.002 * 2 ** i for i in range(args.points - 1)]
    spec = StudySpec.from_dict({
        "name": "bench", "model": args.model, "glue_dir": args.glue_dir, "preset": "default",
        "set": ["levels.source=synthetic", "levels.sigma_rel=0.05"], "axes": {"faults.rate": rates},
        "tasks": ["sst2"], "trials": args.trials, "seed": 0, "max_examples": args.max_examples,
        "max_length": args.max_length, "batch_size": 64,
    })
    import resource

    def cpu() -> float:  # this process and its finished children (the cluster's workers, once closed)
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    res = run_study(spec, out, progress=False, plot=False, num_threads=threads, executor=executor,
                    workers=args.workers if executor == "dask" else None)
    wall, cpu_s = time.perf_counter() - t0, cpu() - c0
    if not res["complete"]:
        raise SystemExit(f"{executor}: the study did not complete")
    return wall, cpu_s, res["csv"]


def study_bench(args: argparse.Namespace) -> None:
    from nn.evaluate import read_results

    n_rows = 1 + args.points * args.trials
    print(f"study: SST-2, {args.points} fault-rate points x {args.trials} chip(s) + digital = {n_rows} rows; "
          f"model {args.model}; {args.max_examples} dev examples, max_length {args.max_length}; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    runs, cpus = [], []
    with tempfile.TemporaryDirectory(prefix="bench_study") as tmp:
        for th in args.serial_threads:
            wall, cpu_s, csv = _study(args, Path(tmp) / f"serial{th}", "serial", th)
            runs.append((f"serial, {th} thread(s)", wall, csv))
            cpus.append(cpu_s)
            print(f"  {runs[-1][0]:<28} {wall:8.1f} s wall, {cpu_s:8.1f} CPU s", flush=True)
        wall, cpu_s, csv = _study(args, Path(tmp) / "dask", "dask", 1)
        runs.append((f"dask, {args.workers} workers x 1 thread", wall, csv))
        cpus.append(cpu_s)
        print(f"  {runs[-1][0]:<28} {wall:8.1f} s wall, {cpu_s:8.1f} CPU s", flush=True)

        def rows(p: Path) -> dict:  # NaN (a metric the task has not) as None, so that rows compare equal
            return {(r["config_hash"], r["trial"]): {k: (None if isinstance(v, float) and v != v else v)
                                                     for k, v in r.items() if k not in ("wall_s", "created")}
                    for r in read_results(p)}

        ref = rows(runs[0][2])
        same = all(rows(c) == ref for _n, _w, c in runs[1:])
        for name, _w, c in runs[1:]:
            other = rows(c)
            for k in sorted(set(ref) | set(other)):
                a, b = ref.get(k, {}), other.get(k, {})
                diff = {col: (a.get(col), b.get(col)) for col in set(a) | set(b) if a.get(col) != b.get(col)}
                if diff:
                    print(f"  {name}: row {k} differs: {diff}")
        row_s = [sum(r["wall_s"] for r in read_results(c)) for _n, _w, c in runs]
    print(f"load average {os.getloadavg()[0]:.1f} at the end; identical rows in every run: {same}")
    print("| run | wall (s) | CPU (s) | sum of the rows' own wall times (s) | wall speed-up of the cluster | "
          "CPU-bound speed-up (CPU / (cluster CPU / workers)) |")
    print("|---|---:|---:|---:|---:|---:|")
    dask_wall, dask_cpu = runs[-1][1], cpus[-1]
    for (name, wall, _c), cpu_s, rs in zip(runs, cpus, row_s):
        print(f"| {name} | {wall:.1f} | {cpu_s:.1f} | {rs:.1f} | {wall / dask_wall:.2f}x | "
              f"{cpu_s / (dask_cpu / args.workers):.2f}x |")
    print("CPU-bound speed-up: the cluster's CPU seconds (driver, start-up, imports and model loads "
          "included) spread over its workers, against a serial run's CPU seconds: the wall-clock "
          "speed-up on cores nobody else uses.")
    if not same:
        raise SystemExit("rows differ between executors")


def bert_base(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    import transformers

    from nn.crossbar_linear import patch_model, program_model, set_simulated
    from nn.evaluate import EvalSession
    from nn.metrics import glue_score
    from nn.models import default_base_model, num_threads
    from nn.sim import build_sim_config

    nt = num_threads(args.threads)
    if nt is not None:
        torch.set_num_threads(nt)
    with tempfile.TemporaryDirectory(prefix="bert_base") as tmp:
        d = Path(tmp)
        tok = transformers.AutoTokenizer.from_pretrained(str(default_base_model()))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2))
        model.save_pretrained(str(d))
        tok.save_pretrained(str(d))
        n_par = sum(p.numel() for p in model.parameters())
        del model
        t0 = time.perf_counter()
        sess = EvalSession.open(d, "sst2", args.glue_dir, max_examples=args.max_examples, max_length=args.max_length,
                                batch_size=64)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        if not args.no_digital:
            glue_score("sst2", sess.predict(), sess.encoded.labels)
        t_dig = time.perf_counter() - t0 if not args.no_digital else float("nan")
        cfg = build_sim_config("default", [])
        t0 = time.perf_counter()
        patch_model(sess.model, cfg)
        program_model(sess.model, np.random.default_rng([0, 0]))
        t_prog = time.perf_counter() - t0
        set_simulated(sess.model, True)
        t0 = time.perf_counter()
        glue_score("sst2", sess.predict(), sess.encoded.labels)
        t_sim = time.perf_counter() - t0
    print(f"BERT-base-shaped classifier ({n_par / 1e6:.1f} M parameters, random weights), SST-2 dev "
          f"{sess.n_examples} examples, max_length {args.max_length}, batch 64, torch threads {torch.get_num_threads()}, "
          f"device cpu, load average {os.getloadavg()[0]:.1f}")
    print("| step | wall (s) |")
    print("|---|---:|")
    for name, t in (("load model + tokenize", t_load), ("digital dev pass", t_dig),
                    ("patch + program a chip (default preset)", t_prog), ("simulated dev pass", t_sim),
                    ("study point (program + simulated pass)", t_prog + t_sim)):
        print(f"| {name} | {t:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cache:minilm-sst2")
    ap.add_argument("--glue-dir", default=str((ROOT / ".." / "shared" / "data" / "glue").resolve()))
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--max-examples", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--serial-threads", default="1,2", help="comma-separated torch thread counts of the serial runs")
    ap.add_argument("--threads", type=int, default=None, help="--bert-base: torch threads")
    ap.add_argument("--overhead", choices=("dask", "ray"), default=None)
    ap.add_argument("--bert-base", action="store_true")
    ap.add_argument("--no-digital", action="store_true", help="--bert-base: skip the digital dev pass")
    args = ap.parse_args()
    args.serial_threads = [int(x) for x in args.serial_threads.split(",") if x]
    if args.overhead:
        overhead(args.overhead, args.workers)
        return
    sys.path.insert(0, str(ROOT))
    if args.bert_base:
        bert_base(args)
    else:
        study_bench(args)


if __name__ == "__main__":
    main()
