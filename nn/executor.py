"""The study engine: every results row is one task, run serially or on a Dask cluster; the driver writes.

A study (:mod:`nn.study`) or an ``eval`` is planned as a list of :class:`RowTask`: one per
(GLUE task, physics point, method, chip), plus one digital row per (GLUE task, method). Each
task carries its row key (:func:`nn.evaluate.result_key`, computed by the driver from content
hashes before anything runs), so the driver skips the rows already in the results file and a
killed run resumes exactly where it stopped.

Executors
---------
``serial``
    Runs the tasks one after another in this process (the default).
``dask``
    Runs them on a Dask distributed cluster: a local one started for the run (``workers``
    processes of one thread each), or an existing one (``address``: a scheduler started with
    ``dask scheduler`` and joined by ``dask worker`` on each machine). Dask rather than Ray: see
    BENCHMARKS.md ("Study engine") for the measured start-up and per-task overheads; it installs
    as a few pure-Python wheels (about 5 MB, no extra daemons), and ``resources={"GPU": 1}``
    schedules CUDA tasks on workers started with ``--resources GPU=1``.

What goes where
~~~~~~~~~~~~~~~
* Sent per task: a :class:`RowTask` (a few kB: the sim config as JSON, method, trial, seed, key).
* Cached per worker process: one :class:`nn.evaluate.EvalSession` per :class:`Source` (the model
  loaded and the dev split tokenized once, reused by every later task of that source) and the
  protection hooks; a worker keeps the model patched for the last sim config and only redraws
  the chip (``reprogram_model``) when the next task has the same config.
* Returned per task: the results row (a dict of about 3 kB). Only the driver writes the
  results file (:class:`nn.evaluate.ResultsFile`: locked, fsync'ed row by row).

Same numbers everywhere: chip ``t`` is programmed from ``numpy.random.default_rng([seed, t])``
whichever process runs it and whatever ran before it there, and every task computes with the
same number of torch threads (:func:`task_threads`: ``--threads``, else 1), so every executor
and any number of workers give identical rows (only ``wall_s`` and ``created`` differ; rows
arrive in completion order). A worker checks that its model and data files hash to what the driver
hashed (workers on other machines must see the same files, e.g. on a shared filesystem).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterator

from device.errors import UserError

__all__ = ["EXECUTORS", "ExecutorError", "Source", "RowTask", "plan_rows", "run_task", "run_tasks", "local_cluster"]

#: the executor names ``--executor`` accepts
EXECUTORS = ("serial", "dask")


class ExecutorError(UserError):
    """A bad executor request (unknown name, a worker count below 1, Dask not installed, a
    worker whose files differ from the driver's)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """What a worker loads once and reuses: a model evaluated on one GLUE split."""

    model: str
    task: str
    split: str
    glue_dir: str | None
    max_examples: int | None
    max_length: int
    batch_size: int
    device: str = "cpu"
    #: torch threads of the process running the task (None: torch's default); the planners
    #: pin it (:func:`task_threads`) so that every executor computes with the same count
    num_threads: int | None = None
    #: the driver's content hashes; a worker refuses to run when its own differ
    model_sha256: str = ""
    data_sha256: str = ""

    @property
    def wants_gpu(self) -> bool:
        return self.device.startswith("cuda")


@dataclasses.dataclass(frozen=True)
class RowTask:
    """One results row to compute: digital (``trial=-1``) or chip ``trial`` of a sim config."""

    source: Source
    method: str
    mode: str  # "digital" or "simulated"
    trial: int
    seed: int
    #: the full nn.sim.SimConfig as JSON (recorded in the row even for the digital row)
    sim_json: str
    key: str
    #: mapping.protection.ProtectionConfig as a dict, or None for a plain method
    protection: dict[str, Any] | None = None
    #: an explicit ``prepare(model, sim_cfg)`` hook (pickled with cloudpickle for Dask workers)
    prepare: Callable[[Any, Any], None] | None = dataclasses.field(default=None, compare=False)
    #: free-form labels for progress output (the physics point)
    point: tuple[tuple[str, Any], ...] = ()

    @property
    def row_id(self) -> tuple[str, int, int]:
        return (self.key, self.trial, self.seed)


def task_threads(requested: int | None) -> int:
    """Torch threads of every task: ``requested``, else ``$RERAM_COSIM_NUM_THREADS``, else 1, on
    every executor. A row's float sums depend on the thread count, so pinning it is what makes
    the same spec give the same numbers serially and on any number of workers; the parallelism
    of a study comes from its workers."""
    from nn.models import num_threads

    return num_threads(requested) or 1


def source_digests(model: str, task: str, split: str, glue_dir: str | os.PathLike | None) -> tuple[str, str]:
    """``(model_sha256, data_sha256)`` as :meth:`nn.evaluate.EvalSession.open` computes them,
    without loading the model (the driver keys rows before any worker starts)."""
    from nn.glue import get_task, load_split
    from nn.provenance import data_digest, model_digest
    from nn.smallnets import digits_digest

    if task == "digits":  # scikit-learn's bundled digits (nn.smallnets), not GLUE
        return model_digest(model), digits_digest()
    data = load_split(get_task(task), split, glue_dir)
    return model_digest(model), data_digest(data)


def plan_rows(
    source: Source,
    method: str,
    sim_cfg: Any,
    trials: int,
    seed: int,
    *,
    protection: Any = None,
    prepare: Callable[[Any, Any], None] | None = None,
    digital: bool = True,
    point: dict[str, Any] | None = None,
) -> list[RowTask]:
    """The digital row (``digital=True``) and ``trials`` chips of one sim config, keyed by
    :func:`nn.evaluate.result_key` (``source`` must carry the content hashes)."""
    from nn.evaluate import result_key

    prot = None if protection is None else protection.to_dict()
    common = dict(
        model_sha256=source.model_sha256, data_sha256=source.data_sha256, task=source.task, split=source.split,
        max_examples=source.max_examples, max_length=source.max_length, method=method,
    )
    sim_json = sim_cfg.to_json()
    pt = tuple((point or {}).items())
    out = []
    if digital:
        out.append(RowTask(source, method, "digital", -1, seed, sim_json, result_key(**common), prot, prepare, pt))
    h = result_key(**common, sim_cfg=sim_cfg, extra=None if prot is None else {"protection": prot})
    out += [RowTask(source, method, "simulated", t, seed, sim_json, h, prot, prepare, pt) for t in range(trials)]
    return out


# --------------------------------------------------------------------------------------------
# the worker side: one cache per process

_SESSIONS: dict[Source, Any] = {}
_HOOKS: dict[tuple[str, str, str], Callable[[Any, Any], None]] = {}


def _session(src: Source) -> Any:
    from nn.evaluate import EvalSession
    from nn.smallnets import is_smallnet_dir, open_session

    sess = _SESSIONS.get(src)
    if sess is None:
        # a toolkit-native small net (nn.smallnets: CNN, LSTM) or a Hugging Face classifier
        opener = open_session if is_smallnet_dir(src.model) else EvalSession.open
        sess = opener(
            src.model, src.task, src.glue_dir, split=src.split, max_examples=src.max_examples,
            max_length=src.max_length, batch_size=src.batch_size, device=src.device,
        )
        for what, mine, theirs in (("model", sess.model_sha256, src.model_sha256),
                                   ("data", sess.data_sha256, src.data_sha256)):
            if theirs and mine != theirs:
                raise ExecutorError(
                    f"the {what} files of {src.model if what == 'model' else src.glue_dir} differ on this worker "
                    f"({mine}) from the driver's ({theirs}); every machine must see the same files"
                )
        for other in [s for s in _SESSIONS if s.device == src.device]:  # one model per device in memory
            _SESSIONS.pop(other).unpatch()
        _SESSIONS[src] = sess
    return sess


def _hook(t: RowTask) -> tuple[Callable[[Any, Any], None] | None, Any]:
    if t.prepare is not None:
        return t.prepare, ("explicit", t.method)
    if t.protection is None:
        return None, None
    from mapping.protection import ProtectionConfig
    from nn.protect import make_prepare

    token = (t.source.model, t.method, json.dumps(t.protection, sort_keys=True))
    hook = _HOOKS.get(token)
    if hook is None:
        hook = _HOOKS[token] = make_prepare(ProtectionConfig.from_dict(t.protection), _session(t.source).model_dir)
    return hook, token


def run_task(t: RowTask) -> dict[str, Any]:
    """Compute one row (in whichever process runs it): the cached session for ``t.source``,
    then the digital model or chip ``t.trial``. Returns the results row."""
    import torch

    from nn.models import num_threads
    from nn.sim import SimConfig

    nt = num_threads(t.source.num_threads)
    if nt is not None and torch.get_num_threads() != nt:
        torch.set_num_threads(nt)
    sess = _session(t.source)
    cfg = SimConfig.from_json(t.sim_json)
    t0 = time.perf_counter()
    if t.mode == "digital":
        metrics = sess.digital_metrics()
    else:
        hook, token = _hook(t)
        metrics = sess.simulated_metrics(cfg, t.trial, t.seed, prepare=hook, prepare_token=token)
    return sess.row(t.mode, t.trial, t.seed, metrics, t.key, cfg, t.method, time.perf_counter() - t0)


def release_sessions() -> None:
    """Drop this process's cached models (the serial executor calls it at the end of a run)."""
    for s in list(_SESSIONS):
        _SESSIONS.pop(s).unpatch()
    _HOOKS.clear()


# --------------------------------------------------------------------------------------------
# the driver side


def _dask():
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError:
        raise ExecutorError(
            "--executor dask needs Dask distributed: pip install 'reram-cosim[cluster]' (or 'dask[distributed]')"
        ) from None
    return distributed


@contextlib.contextmanager
def local_cluster(workers: int, *, gpu: bool = False, timeout_s: float = 120.0) -> Iterator[Any]:
    """A Dask ``LocalCluster`` of ``workers`` processes with one thread each (one torch thread
    unless ``$RERAM_COSIM_NUM_THREADS`` is set; one ``GPU`` resource each when ``gpu``) and a
    client on it; closed on exit."""
    distributed = _dask()
    import logging

    # one torch thread per worker process (unless $RERAM_COSIM_NUM_THREADS says otherwise): N
    # workers on N cores, not N x N threads
    env = {"RERAM_COSIM_NUM_THREADS": os.environ.get("RERAM_COSIM_NUM_THREADS", "1")}
    import dask

    # Dask sets MALLOC_TRIM_THRESHOLD_ in every worker, which switches off glibc's dynamic mmap
    # threshold: every large tensor is then a fresh mmap, page-faulted and zeroed, and a MiniLM
    # study row took 1.6-4x longer than in this process (measured, BENCHMARKS.md). Left unset.
    # The nanny also writes its variables into this process's environment: restored below.
    saved = {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                            "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")}
    try:
        # and no statistical profiler sampling the task thread every 10 ms (tasks are seconds long)
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                              "distributed.worker.profile.enabled": False}):
            # dashboard_address=None still starts the scheduler's HTTP server on 8787 and warns
            # when that port is taken (another cluster on the machine); ":0" takes a free port
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                silence_logs=logging.ERROR, resources={"GPU": 1} if gpu else None, env=env,
            )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        client = distributed.Client(cluster, timeout=timeout_s)
        try:
            client.wait_for_workers(workers, timeout=timeout_s)
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


@contextlib.contextmanager
def _client(workers: int | None, address: str | None, gpu: bool) -> Iterator[Any]:
    if address is not None:
        distributed = _dask()
        try:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(f"cannot join the Dask scheduler at {address} ({exc}); is `dask scheduler` running "
                                "there and reachable from here?") from None
        try:
            yield client
        finally:
            client.close()
    else:
        with local_cluster(workers or 2, gpu=gpu) as client:
            yield client


def submit_options(t: RowTask) -> dict[str, Any]:
    """Keyword arguments of ``Client.submit`` for a task: a unique key, never cached, and one
    ``GPU`` resource when its model is simulated on CUDA (it then runs only on workers started
    with ``--resources GPU=1``, one task per GPU at a time)."""
    return {"key": f"row-{t.key}-{t.trial}-{t.seed}", "pure": False,
            "resources": {"GPU": 1} if t.source.wants_gpu else None}


def check_executor(executor: str, workers: int | None, address: str | None) -> None:
    if executor not in EXECUTORS:
        raise ExecutorError(f"executor={executor!r} is invalid: must be one of {', '.join(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ExecutorError(f"workers={workers!r} is invalid: must be an integer >= 1")
    if executor == "serial" and (address is not None or (workers or 1) > 1):
        raise ExecutorError("--workers above 1 and --address need --executor dask")
    if executor == "dask":
        _dask()
        if address is not None:
            check_address(address)


#: seconds to wait for a scheduler to answer (the probe before any work, and the client)
CONNECT_TIMEOUT_S = 10.0


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`ExecutorError` unless ``address`` names a scheduler this machine can reach:
    a well-formed Dask address (``tcp://host:port``, ``tls://...``; a bare ``host:port`` is
    TCP) whose host and port accept a TCP connection within ``timeout_s``. Run before any work,
    so an unreachable ``--address`` fails at once instead of after the first rows."""
    import socket

    from distributed.comm import parse_address, parse_host_port

    if not isinstance(address, str) or not address.strip():
        raise ExecutorError(f"--address {address!r} is invalid: give the scheduler as tcp://host:port")
    try:
        scheme, loc = parse_address(address)
    except (ValueError, TypeError) as exc:
        raise ExecutorError(f"--address {address!r} is invalid ({exc}): give the scheduler as tcp://host:port") from None
    if scheme not in ("tcp", "tls", "ws", "wss", "inproc", "ucx"):
        raise ExecutorError(f"--address {address!r} is invalid: Dask has no protocol {scheme!r} (use tcp://host:port)")
    if scheme not in ("tcp", "tls", "ws", "wss"):
        return  # in-process or UCX addresses: Dask checks them itself
    try:
        host, port = parse_host_port(loc)
    except (ValueError, TypeError) as exc:
        raise ExecutorError(f"--address {address!r} is invalid ({exc}): give the scheduler as tcp://host:port") from None
    if not port:
        raise ExecutorError(f"--address {address!r} names no port: give the scheduler as tcp://host:8786")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        why = f"no answer within {timeout_s:g} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise ExecutorError(f"cannot reach the Dask scheduler at {address} ({why}); is `dask scheduler` running there "
                            "and reachable from here?") from None


def run_tasks(
    tasks: list[RowTask],
    results: Any,
    *,
    executor: str = "serial",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    stop_after_rows: int | None = None,
    on_row: Callable[[RowTask, dict[str, Any]], None] | None = None,
) -> int:
    """Run the tasks whose rows ``results`` (a :class:`nn.evaluate.ResultsFile`) lacks, append
    each row as it arrives (the driver alone writes), and return the number of rows written.
    ``stop_after_rows``: run only that many of the missing rows (rerun to continue). One
    progress bar (stderr) counts every row of ``tasks``, those already done included."""
    from device.progress import progress_bar

    check_executor(executor, workers, address)
    seen: set[tuple[str, int, int]] = set()
    todo = []
    for t in tasks:
        if t.row_id not in seen and not results.has(*t.row_id):
            todo.append(t)
        seen.add(t.row_id)
    n_done = len(seen) - len(todo)
    if stop_after_rows is not None:
        todo = todo[: max(0, stop_after_rows)]
    bar = progress_bar(total=len(seen), initial=n_done, desc="rows", unit="row", enabled=progress)
    written = 0

    def done(t: RowTask, row: dict[str, Any]) -> None:
        nonlocal written
        if results.append(row):
            written += 1
        bar.update(1)
        if on_row is not None:
            on_row(t, row)

    try:
        if not todo:
            return 0
        if executor == "serial":
            import torch

            old = torch.get_num_threads()
            try:
                for t in todo:
                    results.refresh()
                    if results.has(*t.row_id):  # a concurrent run wrote it meanwhile
                        bar.update(1)
                        continue
                    done(t, run_task(t))
            finally:
                release_sessions()
                torch.set_num_threads(old)
        else:
            distributed = _dask()
            gpu = any(t.source.wants_gpu for t in todo)
            with _client(workers, address, gpu) as client:
                futures = {client.submit(run_task, t, **submit_options(t)): t for t in todo}
                for fut in distributed.as_completed(futures):
                    done(futures[fut], fut.result())
    finally:
        bar.close()
    return written


# --------------------------------------------------------------------------------------------
# command line


def add_executor_args(p: Any) -> None:
    """``--executor``, ``--workers``, ``--address`` (for ``eval`` and ``study``)."""
    g = p.add_argument_group("executor", "where the rows run (the driver alone writes --out)")
    g.add_argument("--executor", choices=EXECUTORS, default="serial",
                   help="serial: in this process (default); dask: on a Dask cluster, one task per row")
    g.add_argument("--workers", type=int, default=None,
                   help="dask: worker processes of the local cluster started for this run (default 2)")
    g.add_argument("--address", default=None,
                   help="dask: join the scheduler at this address (e.g. tcp://head:8786) instead of a local cluster")


def evaluate_rows(
    model: str,
    task: str,
    glue_dir: str | os.PathLike | None,
    sim_cfg: Any,
    trials: int,
    seed: int,
    out_csv: str | os.PathLike,
    *,
    batch_size: int = 64,
    max_examples: int | None = None,
    max_length: int = 128,
    split: str = "dev",
    method: str = "baseline",
    progress: bool = True,
    num_threads: int | None = None,
    device: str = "cpu",
    executor: str = "serial",
    workers: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """:func:`nn.evaluate.evaluate_glue` on an executor: the digital row and ``trials`` chips are
    tasks; returns the same summary (``written``, ``digital``, ``simulated``, ``rows``)."""
    import math

    from nn.evaluate import METRIC_COLUMNS, ResultsFile, check_trials, preflight, read_results, summarize

    check_executor(executor, workers, address)
    check_trials(trials)
    preflight(out_csv, [sim_cfg] if trials else [])
    model_sha, data_sha = source_digests(str(model), task, split, glue_dir)
    from nn.glue import get_task

    src = Source(str(model), get_task(task).name, split, None if glue_dir is None else str(glue_dir), max_examples,
                 max_length, batch_size, str(device), task_threads(num_threads), model_sha, data_sha)
    tasks = plan_rows(src, method, sim_cfg, trials, seed)
    res = ResultsFile(out_csv)
    written = run_tasks(tasks, res, executor=executor, workers=workers, address=address, progress=progress)
    keys = {t.key for t in tasks}
    rows = [r for r in read_results(out_csv) if r["seed"] == seed and r["config_hash"] in keys]
    sim = [r for r in rows if r["mode"] == "simulated"]
    dig = next((r for r in rows if r["mode"] == "digital"), None)
    return {
        "task": src.task, "method": method, "config_hash": tasks[-1].key, "written": written,
        "complete": len(sim) >= trials and dig is not None,
        "digital": None if dig is None else {c: dig[c] for c in METRIC_COLUMNS if not math.isnan(dig[c])},
        "simulated": {c: summarize(sim, c) for c in METRIC_COLUMNS if sim and not math.isnan(sim[0][c])},
        "rows": rows,
    }
