"""GLUE evaluation of a model, digital and on simulated crossbars, with trials and resume.

:func:`evaluate_glue` loads a fine-tuned classifier, tokenizes the dev split once, evaluates the
digital model, then patches it (:func:`nn.crossbar_linear.patch_model`) and evaluates ``trials``
independent chips: trial ``t`` is programmed from ``numpy.random.default_rng([seed, t])``, so any
single trial can be reproduced alone. It prints mean +- standard deviation over trials.

Results CSV (one row per evaluation, appended and flushed row by row)
---------------------------------------------------------------------
Columns :data:`CSV_COLUMNS`: ``task, split, method, mode`` (``digital`` / ``simulated``),
``trial`` (-1 for digital), ``seed``, ``n_examples``, the metric columns (``accuracy, f1, mcc,
pearson, spearman, score``; empty where the task has no such metric), ``model``,
``max_examples``, ``max_length``, ``config_hash``, ``sim_config`` (the full
:class:`nn.sim.SimConfig` as JSON), ``wall_s``, ``created``, then what produced the row:
``model_sha256``, ``data_sha256``, ``tables_sha256`` (JSON ``{config field: sha256}``) and
``software_version`` (:mod:`nn.provenance`), and ``majority_score`` (the score of always
answering the split's most frequent label: a plot's chance line, :func:`nn.results.majority_score`).
Then one column per configuration key that differs between the file's simulated rows, named by
its path (``faults.rate``): a tidy table, ``pandas.read_csv`` reads it as it is (:mod:`nn.results`).

The key rule
~~~~~~~~~~~~
``config_hash`` hashes everything that decides a result, by *content*: the model weights, config
and tokenizer files (:func:`nn.provenance.model_digest`), the evaluated data file
(:func:`nn.provenance.data_digest`), task, split, subset, max_length, method, the software version
and, for simulated rows, the sim config with every table it reads replaced by the table's sha256
(:func:`nn.provenance.table_digests`: levels, IR drop, relaxation, fault maps) and the protection
config of a protection method. A digital row's hash leaves the sim config out, so one digital
row serves every sim config of a study. A row is identified by ``(config_hash, trial, seed)``; a
rerun skips the rows already in the file, so a killed run resumes where it stopped, while
re-fine-tuning into the same directory, other data under ``--glue-dir``, a table replaced in
place, another toolkit version or another way of computing (:data:`NUMERICS`) gives new keys and
new rows. The batch size, thread count and device are not in the key: the batch size changes no
bit of a row (:mod:`nn.batching`), the other two only float round-off (studies pin the threads). Paths do not enter the key: a
model or table moved elsewhere still matches its rows.

Writers (:class:`ResultsFile`) check the header before touching a file, repair only a partial
last line of a file that is recognisably theirs, and serialize on a ``flock`` of the sidecar
``.<name>.lock`` so that concurrent runs into one file never write the same key twice.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from device.errors import UserError
from device.io import atomic_write_bytes, atomic_write_text, check_writable, software_version
from nn.results import cell, column_name, flat_config, majority_score, parse_cell, varying_keys
from nn.sim import SimConfig, config_hash

__all__ = [
    "evaluate_split",
    "noise_robustness",
    "CSV_COLUMNS",
    "METRIC_COLUMNS",
    "EvalSession",
    "ResultsFile",
    "ResultsFileError",
    "LEGACY_CSV_COLUMNS",
    "V2_CSV_COLUMNS",
    "result_key",
    "check_sim_config",
    "evaluate_glue",
    "predict",
    "read_results",
    "summarize",
    "format_summary",
]

METRIC_COLUMNS = ("accuracy", "f1", "mcc", "pearson", "spearman", "score")
#: how rows are computed, in the key (a new value gives new rows): 2 = read noise keyed by example
#: and position, a fixed calibration set, sentences batched at widths of their own (issue 20:
#: rows of any batch size are the same bits; before, they moved with the batch size); 3 = the
#: same with 16 token positions per key block (crossbar_matrix.KEY_BLOCK)
NUMERICS = 3
#: chips one evaluation may ask for (each is a pass over the dev split): bounds the rows planned
#: before any work (10^12 trials once tried to plan every row first)
MAX_TRIALS = 100_000
#: the calibration set of calibrated ranges (``adc_range="calibrated"``, ``input_granularity``
#: "layer" / "tile"): the first rows of the evaluated split, this many, in one batch (fixed: it
#: does not depend on ``batch_size``)
CALIBRATION_EXAMPLES = 64
#: the columns of files written before rows were keyed by content (still read by read_results)
LEGACY_CSV_COLUMNS = (
    "task", "split", "method", "mode", "trial", "seed", "n_examples", *METRIC_COLUMNS,
    "model", "max_examples", "max_length", "config_hash", "sim_config", "wall_s", "created",
)
#: the core columns of files written before the majority score (read, and upgraded on a new row)
V2_CSV_COLUMNS = LEGACY_CSV_COLUMNS + ("model_sha256", "data_sha256", "tables_sha256", "software_version")
#: the core columns of a results file; one column per varying config key follows (nn.results)
CSV_COLUMNS = V2_CSV_COLUMNS + ("majority_score",)


# --------------------------------------------------------------------------------------------
# the results file


class ResultsFileError(UserError):
    """A results path that is not a results file of this toolkit (or of an older layout)."""


def _header_line(columns: tuple[str, ...] | list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue()


_HEADER = _header_line(CSV_COLUMNS)
_LEGACY_HEADER = _header_line(LEGACY_CSV_COLUMNS)


def _layout(header: list[str], p: Path) -> tuple[tuple[str, ...], list[str]]:
    """``(core columns, key columns)`` of a results file's header: this toolkit's current core
    (:data:`CSV_COLUMNS`) or that of the files before the majority score (:data:`V2_CSV_COLUMNS`),
    then one column per config key (:mod:`nn.results`). Raises for a legacy or foreign header."""
    h = tuple(header)
    if h == LEGACY_CSV_COLUMNS:
        raise ResultsFileError(
            f"{p} is a results file of an older reram-cosim whose rows are not keyed by the content of the "
            "model, data and tables; its rows can still be read (read_results), but choose another --out "
            "for new results"
        )
    for core in (CSV_COLUMNS, V2_CSV_COLUMNS):
        if h[: len(core)] == core and (core == CSV_COLUMNS or len(h) == len(core)):
            keys = list(h[len(core):])
            if len(set(keys)) == len(keys) and all(k and k not in core for k in keys):
                return core, keys
    raise ResultsFileError(
        f"{p} is not a reram-cosim results file (its header differs); it was left untouched: "
        "choose another --out or delete it"
    )


class ResultsFile:
    """An append-only results CSV, safe for concurrent writers; see the module docstring.

    The header is :data:`CSV_COLUMNS` followed by one column per configuration key whose value
    differs between the file's simulated rows (:mod:`nn.results`: a tidy table for pandas).
    Opening never modifies a file that is not recognisably a results file of this toolkit: the
    header line is checked first (read-only), and only then is a partial last line (a writer
    killed mid-row) dropped. Every change (the repair, the header of a new file, each appended
    row, the rewrite that adds a key column) happens under an exclusive ``fcntl.flock`` on the
    sidecar ``.<name>.lock``; before appending, the rows other writers added since are read, and
    a row whose key is already there is not written again (:meth:`append` returns False). New
    headers and rewrites are atomic (:func:`device.io.atomic_write_text`), so a file never holds
    a partial header; a path through a symbolic link writes the link's target.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.done: set[tuple[str, int, int]] = set()
        self._pos = 0  # bytes of the file already parsed into ``done``
        self._ino: int | None = None
        #: the file's layout: core columns and config-key columns (new files: the current core)
        self.core: tuple[str, ...] = CSV_COLUMNS
        self.keys: list[str] = []
        #: the flat config of the file's first simulated row: a key varies when a row differs from it
        self._ref: dict[str, Any] | None = None
        if self.path.is_dir():
            raise ResultsFileError(f"results file {self.path} is a directory")
        check_writable(self.path)
        self._check_header()
        if self.path.exists():  # a new file: nothing to repair or read, and nothing is created yet
            with self._locked():
                self._repair()
                self._refresh()

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.lock")

    @property
    def columns(self) -> tuple[str, ...]:
        return self.core + tuple(self.keys)

    def _read_header(self) -> list[str] | None:
        """The header line's columns (None for a missing or empty file), read-only."""
        p = self.path
        if not p.exists():
            return None
        with open(p, "rb") as f:
            first = f.readline(1 << 20)
        if not first:
            return None
        return next(csv.reader([first.decode("utf-8", errors="replace").rstrip("\r\n")]), [])

    def _check_header(self) -> None:
        """Raise unless the file is missing, empty, or starts with this toolkit's header (read-only)."""
        header = self._read_header()
        if header is not None:
            _layout(header, self.path)

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _repair(self) -> None:
        """Under the lock, on a file whose header was checked: drop a partial last line."""
        p = self.path
        if not p.exists() or p.stat().st_size == 0:
            return
        data = p.read_bytes()
        if data.endswith(b"\n"):
            return
        self._check_header()  # re-checked under the lock: the file may have been replaced
        atomic_write_bytes(p, data[: data.rfind(b"\n") + 1])

    def _refresh(self) -> None:
        """Under the lock: add the keys of rows written since the last refresh (by any writer)."""
        p = self.path
        if not p.exists():
            self._pos, self._ino = 0, None
            return
        st = p.stat()
        if st.st_ino != self._ino or st.st_size < self._pos:  # replaced (repaired, rewritten): read it all again
            self._pos, self._ino = 0, st.st_ino
            self.done.clear()
            self._ref = None
        with open(p, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        if self._pos == 0:
            nl = data.find(b"\n")
            if nl < 0 or nl >= end:
                return
            header = next(csv.reader([data[:nl].decode("utf-8", errors="replace").rstrip("\r")]), [])
            self.core, self.keys = _layout(header, p)  # replaced by something else meanwhile: raises
            chunk = data[nl + 1 : end]
        else:
            chunk = data[:end]
        cols = self.columns
        for r in csv.reader(io.StringIO(chunk.decode("utf-8"))):
            if len(r) != len(cols):
                continue
            d = dict(zip(cols, r))
            try:
                self.done.add((d["config_hash"], int(d["trial"]), int(d["seed"])))
            except ValueError:
                continue
            if self._ref is None and d["mode"] == "simulated":
                self._ref = _flat(d["sim_config"])
        self._pos += end

    def refresh(self) -> None:
        """Read the rows other writers appended since this object last looked (under the lock)."""
        with self._locked():
            self._refresh()

    def has(self, h: str, trial: int, seed: int) -> bool:
        return (h, int(trial), int(seed)) in self.done

    def _cells(self, row: dict[str, Any], flat: dict[str, Any] | None) -> list[str]:
        core = ["" if row.get(c) is None else row.get(c) for c in self.core]
        return core + [cell(flat.get(k)) if flat is not None else "" for k in self._config_keys()]

    def _config_keys(self) -> list[str]:
        """The config key of each key column (a column clashing with a core name is ``sim.<key>``)."""
        return [k[4:] if k.startswith("sim.") and k[4:] in CSV_COLUMNS else k for k in self.keys]

    def _rewrite(self, keys: list[str]) -> None:
        """Under the lock: the whole file again with the current core and key columns ``keys``
        (sorted), every row's key values from its own ``sim_config`` (empty for digital rows and
        for the majority score of rows written before it existed), atomically."""
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        old_cols = self.columns
        self.core, self.keys = CSV_COLUMNS, sorted(column_name(k, CSV_COLUMNS) for k in keys)
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(self.columns)
        for r in rows[1:]:
            if len(r) != len(old_cols):
                continue
            d = dict(zip(old_cols, r))
            flat = _flat(d["sim_config"]) if d.get("mode") == "simulated" else None
            w.writerow(self._cells(d, flat))
        atomic_write_text(self.path, out.getvalue())
        self._refresh()

    def append(self, row: dict[str, Any]) -> bool:
        """Write one row (header first if the file is new), flush and fsync, under the lock.
        Returns False, writing nothing, when a row with the same key is already in the file. A
        simulated row whose config differs from the file's first simulated row in a key that has
        no column yet adds the column (one atomic rewrite of the file, :mod:`nn.results`)."""
        key = (str(row["config_hash"]), int(row["trial"]), int(row["seed"]))
        flat = _flat(row.get("sim_config") or "{}") if row.get("mode") == "simulated" else None
        with self._locked():
            self._refresh()
            if key in self.done:
                return False
            if not self.path.exists() or self.path.stat().st_size == 0:
                atomic_write_text(self.path, _HEADER)
                self.core, self.keys = CSV_COLUMNS, []
                self._refresh()
            else:
                self._check_header()
            need = set(self._config_keys())
            if flat is not None and self._ref is not None:
                need |= varying_keys(self._ref, flat)
            if self.core != CSV_COLUMNS or need != set(self._config_keys()):
                self._rewrite(sorted(need))
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(self._cells(row, flat))
                f.flush()
                os.fsync(f.fileno())
            self._refresh()
        return True


def _flat(sim_json: str) -> dict[str, Any]:
    try:
        d = json.loads(sim_json)
    except ValueError:
        return {}
    return flat_config(d) if isinstance(d, dict) else {}


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a results CSV as dicts (metrics and ints converted; empty metrics are NaN; the
    config-key columns parsed, :func:`nn.results.parse_cell`). Reads every layout this toolkit
    wrote (legacy, before the majority score, current); anything else is refused."""
    p = Path(path)
    if not p.is_file():
        raise ResultsFileError(f"results file {p} does not exist")
    out = []
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) == LEGACY_CSV_COLUMNS:
            core, keys = LEGACY_CSV_COLUMNS, []
        else:
            core, keys = _layout(header, p)
        cols = tuple(header)
        for r in reader:
            if len(r) != len(cols):
                continue
            d: dict[str, Any] = dict.fromkeys(CSV_COLUMNS, "")
            d.update(zip(cols, r))
            for c in METRIC_COLUMNS + ("wall_s", "majority_score"):
                d[c] = float(d[c]) if d[c] != "" else math.nan
            for c in ("trial", "seed", "n_examples", "max_length"):
                d[c] = int(d[c])
            d["max_examples"] = int(d["max_examples"]) if d["max_examples"] not in ("", "None") else None
            for k in keys:
                d[k] = parse_cell(d[k])
            out.append(d)
    return out


def summarize(rows: list[dict[str, Any]], metric: str = "score") -> dict[str, Any]:
    """Mean and standard deviation (ddof=1, 0 for one trial) of ``metric`` over simulated rows."""
    v = np.asarray([r[metric] for r in rows if r["mode"] == "simulated"], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan}
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


# --------------------------------------------------------------------------------------------
# evaluation


def predict(model: Any, enc: Any, batch_size: int = 64) -> np.ndarray:
    """Outputs ``(n, num_labels)`` of ``model`` for every row of ``enc`` (:class:`nn.glue.Encoded`,
    or any split with ``lengths`` and ``batch``; the model returns an object with ``logits`` or
    the logits themselves), in row order: the one batched forward pass of evaluation and
    fine-tuning, on the model's device, without gradients; the caller sets train/eval mode. The
    outputs are the same bits at any ``batch_size`` (:mod:`nn.batching`): every row padded to a
    width of its own, batches of one width, digital layers on row-aligned inputs, and on
    crossbars each row's read noise keyed by its index in ``enc``
    (:func:`nn.crossbar_linear.keyed_reads`)."""
    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size={batch_size!r} is invalid: must be an integer >= 1")
    from nn.batching import aligned_linears, length_batches
    from nn.crossbar_linear import keyed_reads

    device = next(model.parameters()).device
    batches = length_batches(enc.lengths, batch_size)
    outs = []
    with torch.no_grad(), aligned_linears(model):
        for idx, width in batches:
            b = enc.batch(idx, device) if width == int(enc.lengths[idx].max()) else enc.batch(idx, device, width=width)
            b.pop("labels")
            with keyed_reads(model, idx):  # read noise keyed by example, not by batch
                out = model(**b)
            outs.append((out.logits if hasattr(out, "logits") else out).float().cpu().numpy())
    logits = np.concatenate(outs, axis=0) if outs else np.zeros((0, 1), dtype=np.float32)
    res = np.empty_like(logits)
    res[np.concatenate([idx for idx, _ in batches]) if batches else np.zeros(0, np.int64)] = logits
    return res


def _threads(num_threads: int | None) -> int | None:
    from nn.models import num_threads as resolve

    return resolve(num_threads)


def _sim_key(sim_cfg: SimConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """The sim config as it enters a key: table paths replaced by None, their sha256 beside."""
    from nn.provenance import table_digests, table_paths

    d = sim_cfg.to_dict()
    for role in table_paths(sim_cfg):
        node, parts = d, role.split(".")
        for part in parts[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and parts[-1] in node:
            node[parts[-1]] = None
    return d, table_digests(sim_cfg)


def result_key(
    *,
    model_sha256: str,
    data_sha256: str,
    task: str,
    split: str,
    max_examples: int | None,
    max_length: int,
    method: str,
    sim_cfg: SimConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """The ``config_hash`` of a row (see "The key rule" in the module docstring). ``sim_cfg=None``:
    the digital row. ``extra``: more settings that decide a simulated result (a protection config)."""
    k: dict[str, Any] = {
        "model_sha256": model_sha256, "data_sha256": data_sha256, "task": task, "split": split,
        "max_examples": max_examples, "max_length": max_length, "method": method,
        "software_version": software_version(), "numerics": NUMERICS,
    }
    if sim_cfg is not None:
        k["sim"], k["tables"] = _sim_key(sim_cfg)
        if extra:  # e.g. the protection config of a protection method (nn.protect)
            k.update(extra)
    return config_hash(k)


def _say_clamped(chips: dict[str, Any], sim_cfg: SimConfig, trial: int) -> None:
    """With ``relaxation.out_of_range="clamp"``, say on stderr how many cells of the chip were
    outside the relaxation model's fitted range (they took the nearest bin's law)."""
    n = sum(int((pm.retention or {}).get("clamped", 0)) for pm in chips.values())
    if n:
        import sys

        total = sum(int(pm.fault_counts.sum()) for pm in chips.values())
        print(f"relaxation: chip {trial}: {n} of {total} cells outside the relaxation model's fitted range took the "
              "nearest bin's law (relaxation.out_of_range=clamp)", file=sys.stderr)


@dataclasses.dataclass
class EvalSession:
    """A loaded model and its tokenized dev split, reused across sim configs (studies).

    Build with :meth:`open`; :meth:`run` evaluates one sim config (digital row + trials).
    """

    model_dir: str
    task: str
    split: str
    model: Any
    encoded: Any
    max_examples: int | None
    max_length: int
    batch_size: int
    n_examples: int
    #: content hashes of the model files and of the evaluated data (:mod:`nn.provenance`)
    model_sha256: str = ""
    data_sha256: str = ""
    #: where the split came from (None: the hub); training batches for placement weights come from here too
    glue_dir: str | None = None
    #: the score of always answering the split's most frequent label (:func:`nn.results.majority_score`)
    majority: float = math.nan
    #: what the model is patched with now: ``(sim config JSON, prepare token)``, or None
    _patched: tuple[str, Any] | None = dataclasses.field(default=None, repr=False)
    _programmed: bool = dataclasses.field(default=False, repr=False)

    @classmethod
    def open(
        cls,
        model_dir: str | os.PathLike,
        task: str,
        glue_dir: str | os.PathLike | None,
        *,
        split: str = "dev",
        max_examples: int | None = None,
        max_length: int = 128,
        batch_size: int = 64,
        device: Any = "cpu",
    ) -> "EvalSession":
        """Load a fine-tuned classifier for ``task`` (label count checked) and tokenize its split
        once. ``max_examples``: a stratified subset drawn with ``default_rng(0)`` (the same rows
        for every seed and config)."""
        from nn.glue import get_task, load_split, subsample, tokenize
        from nn.models import check_token_lengths, load_classifier
        from nn.provenance import data_digest, model_digest

        t = get_task(task)
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size} is invalid: must be >= 1")
        if max_examples is not None and max_examples < 1:
            raise UserError(f"max_examples={max_examples} is invalid: must be >= 1 (or None for all)")
        data = load_split(t, split, glue_dir)
        data_sha = data_digest(data)
        data = subsample(data, max_examples, np.random.default_rng(0))
        model, tok = load_classifier(model_dir, None, task=t.name, require_finetuned=True, device=device)
        enc = tokenize(data, tok, max_length)
        check_token_lengths(model, enc.lengths, max_length, str(model_dir))
        return cls(
            model_dir=str(model_dir), task=t.name, split=split, model=model, encoded=enc, max_examples=max_examples,
            max_length=max_length, batch_size=batch_size, n_examples=len(enc), model_sha256=model_digest(model_dir),
            data_sha256=data_sha, glue_dir=None if glue_dir is None else str(glue_dir),
            majority=majority_score(t.name, enc.labels),
        )

    def key(self, method: str, sim_cfg: SimConfig | None, extra: dict[str, Any] | None = None) -> str:
        """The ``config_hash`` of this session's rows for ``method`` and ``sim_cfg`` (None: digital),
        see :func:`result_key`."""
        return result_key(
            model_sha256=self.model_sha256, data_sha256=self.data_sha256, task=self.task, split=self.split,
            max_examples=self.max_examples, max_length=self.max_length, method=method, sim_cfg=sim_cfg, extra=extra,
        )

    def score(self, outputs: np.ndarray) -> dict[str, float]:
        """The task's metrics of model outputs ``(n, num_labels)`` on the split (GLUE's)."""
        from nn.metrics import glue_score

        return glue_score(self.task, outputs, self.encoded.labels)

    def attach_placement_weights(self, sim_cfg: SimConfig) -> None:
        """Placement weights for ``faultaware.placement_weighting`` (:mod:`nn.sensitivity`),
        estimated on training sentences of the task."""
        from nn.sensitivity import attach_placement_weights, training_batches

        attach_placement_weights(self.model, sim_cfg, lambda: training_batches(
            self.model_dir, self.task, self.glue_dir, max_length=self.max_length,
            device=next(self.model.parameters()).device))

    def digital_metrics(self) -> dict[str, float]:
        """The task's metrics of the digital model (unpatching it first if a chip is patched in)."""
        self.unpatch()
        return self.score(self.predict())

    def simulated_metrics(self, sim_cfg: SimConfig, trial: int, seed: int, *, prepare: Any = None,
                          prepare_token: Any = None) -> dict[str, float]:
        """GLUE metrics of chip ``trial``: programmed from ``numpy.random.default_rng([seed, trial])``,
        so a trial gives the same numbers alone, after other trials, in any process. The model is
        patched with ``sim_cfg`` (and ``prepare(model, sim_cfg)`` run) unless it already is for the
        same ``(sim_cfg, prepare_token)``; then only the chip is redrawn (same draw as a fresh
        programming)."""
        from nn.crossbar_linear import patch_model, program_model, reprogram_model, set_simulated

        want = (sim_cfg.to_json(), prepare_token if prepare_token is not None else id(prepare))
        if self._patched != want:
            self.unpatch()
            patch_model(self.model, sim_cfg)
            self._patched, self._programmed = want, False
            if prepare is not None:
                prepare(self.model, sim_cfg)
            if sim_cfg.faultaware.placement and sim_cfg.faultaware.placement_weighting != "none":
                self.attach_placement_weights(sim_cfg)
        rng = np.random.default_rng([seed, trial])
        if self._programmed:
            chips = reprogram_model(self.model, rng)
        else:
            chips = program_model(self.model, rng)
            self._programmed = True
        _say_clamped(chips, sim_cfg, trial)
        set_simulated(self.model, True)
        try:
            if sim_cfg.crossbar.needs_calibration:  # calibrated ADC ranges or per-layer DAC steps
                self._calibrate()
            return self.score(self.predict())
        finally:
            set_simulated(self.model, False)

    def unpatch(self) -> None:
        """Put the plain digital layers back (no-op when the model is not patched)."""
        if self._patched is not None:
            from nn.crossbar_linear import unpatch_model

            unpatch_model(self.model)
            self._patched, self._programmed = None, False

    def predict(self) -> np.ndarray:
        """Model outputs ``(n, num_labels)`` on the split (:func:`predict`)."""
        return predict(self.model, self.encoded, self.batch_size)

    def row(self, mode: str, trial: int, seed: int, metrics: dict[str, float], h: str, sim_cfg: SimConfig,
            method: str, wall: float) -> dict[str, Any]:
        """One results row (see :data:`CSV_COLUMNS`)."""
        from nn.provenance import table_digests

        tables = table_digests(sim_cfg) if mode == "simulated" else {}
        row: dict[str, Any] = {
            "task": self.task, "split": self.split, "method": method, "mode": mode, "trial": trial, "seed": seed,
            "n_examples": self.n_examples, "model": self.model_dir, "max_examples": self.max_examples,
            "max_length": self.max_length, "config_hash": h, "sim_config": sim_cfg.to_json(),
            "wall_s": f"{wall:.3f}", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "model_sha256": self.model_sha256, "data_sha256": self.data_sha256,
            "tables_sha256": json.dumps(tables, sort_keys=True), "software_version": software_version(),
            "majority_score": repr(float(self.majority)) if math.isfinite(self.majority) else "",
        }
        for c in METRIC_COLUMNS:
            if c in metrics:
                row[c] = repr(float(metrics[c]))
        return row

    def run(
        self,
        sim_cfg: SimConfig,
        trials: int,
        seed: int,
        out_csv: str | os.PathLike,
        *,
        method: str = "baseline",
        digital: bool = True,
        progress: bool = True,
        stop_after_rows: int | None = None,
        num_threads: int | None = None,
        prepare: Any = None,
        key_extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Digital row (``digital=True``) and ``trials`` simulated rows for ``sim_cfg``, skipping
        rows already in ``out_csv``. ``stop_after_rows``: return after writing that many new rows
        (a budgeted run; rerun to continue). ``prepare(model, sim_cfg)``: called after patching
        (the protection methods' hook: apply a mapping plan, swap the read). Returns the summary
        of :func:`summarize` for this config plus the digital metrics and the rows. ``key_extra``:
        more settings that decide a simulated result (e.g. ``{"protection": {...}}``), hashed
        into the simulated rows' ``config_hash``."""
        import torch

        if not isinstance(sim_cfg, SimConfig):
            raise ValueError(f"sim_cfg must be a SimConfig, got {type(sim_cfg).__name__}")
        if isinstance(trials, bool) or not isinstance(trials, int) or not 0 <= trials <= MAX_TRIALS:
            raise UserError(f"trials={trials!r} is invalid: must be an integer in [0, {MAX_TRIALS}]")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed={seed!r} is invalid: must be an integer >= 0")
        # before any work: the output can be written and a chip can be built (not after the digital pass)
        res = ResultsFile(out_csv)
        if trials:
            check_sim_config(sim_cfg)
            from nn.crossbar_linear import crossbar_modules, select_modules

            if not crossbar_modules(self.model):
                select_modules(self.model, sim_cfg)  # target_modules match this model (else UserError)
        h_dig = self.key(method, None)
        h_sim = self.key(method, sim_cfg, key_extra)
        todo = ([("digital", -1)] if digital and not res.has(h_dig, -1, seed) else [])
        todo += [("simulated", t) for t in range(trials) if not res.has(h_sim, t, seed)]
        written = 0
        nt = _threads(num_threads)
        old_nt = torch.get_num_threads()
        if nt is not None:
            torch.set_num_threads(nt)
        from device.progress import progress_bar

        bar = progress_bar(total=len(todo), desc=f"{self.task} {method}", unit="pass", enabled=progress, leave=False)
        try:
            for mode, trial in todo:
                if stop_after_rows is not None and written >= stop_after_rows:
                    break
                h = h_dig if mode == "digital" else h_sim
                res.refresh()
                if res.has(h, trial, seed):  # a concurrent run wrote it meanwhile
                    bar.update(1)
                    continue
                t0 = time.perf_counter()
                if mode == "digital":
                    metrics = self.digital_metrics()
                else:
                    metrics = self.simulated_metrics(sim_cfg, trial, seed, prepare=prepare)
                if res.append(self.row(mode, trial, seed, metrics, h, sim_cfg, method, time.perf_counter() - t0)):
                    written += 1
                bar.update(1)
        finally:
            bar.close()
            self.unpatch()
            torch.set_num_threads(old_nt)
        rows = [
            r for r in read_results(out_csv)
            if r["seed"] == seed and ((r["config_hash"] == h_sim) or (digital and r["config_hash"] == h_dig))
        ]
        sim_rows = [r for r in rows if r["mode"] == "simulated"]
        dig = next((r for r in rows if r["mode"] == "digital"), None)
        out = {
            "task": self.task, "method": method, "config_hash": h_sim, "written": written,
            "complete": len(sim_rows) >= trials and (dig is not None or not digital),
            "digital": None if dig is None else {c: dig[c] for c in METRIC_COLUMNS if not math.isnan(dig[c])},
            "simulated": {c: summarize(sim_rows, c) for c in METRIC_COLUMNS if sim_rows and not math.isnan(sim_rows[0][c])},
            "rows": rows,
        }
        return out

    def _calibrate(self) -> None:
        """Calibrate the patched, programmed model (:func:`nn.crossbar_linear.calibrate_model`) on
        the fixed calibration set: the first :data:`CALIBRATION_EXAMPLES` rows of the split, in
        one batch whatever ``batch_size`` is, their read noise keyed by their row indices."""
        from nn.crossbar_linear import calibrate_model

        device = next(self.model.parameters()).device
        idx = np.arange(min(CALIBRATION_EXAMPLES, self.n_examples))
        b = self.encoded.batch(idx, device)
        b.pop("labels")
        calibrate_model(self.model, b, example_ids=idx)


def format_summary(summary: dict[str, Any]) -> str:
    """``sst2 baseline: digital accuracy 0.8658 | simulated accuracy 0.8601 +- 0.0042 (n=3)``
    (the ``score`` column is left out where it repeats the task's only metric)."""
    def keys(d: dict) -> list[str]:
        ks = [k for k in d if k != "score"]
        return ks + ["score"] if len(ks) > 1 and "score" in d else ks or list(d)

    parts = [f"{summary['task']} {summary['method']}:"]
    dig = summary.get("digital") or {}
    if dig:
        parts.append("digital " + ", ".join(f"{k} {dig[k]:.4f}" for k in keys(dig)))
    sim = summary.get("simulated") or {}
    if sim:
        ks = keys(sim)
        parts.append(("| " if dig else "") + "simulated " + ", ".join(
            f"{k} {sim[k]['mean']:.4f} +- {sim[k]['std']:.4f}" for k in ks) + f" (n={sim[ks[0]]['n']})")
    return " ".join(parts)


def check_trials(trials: Any) -> None:
    """Raise :class:`UserError` unless ``trials`` is an integer in ``[0, MAX_TRIALS]``."""
    if isinstance(trials, bool) or not isinstance(trials, int) or not 0 <= trials <= MAX_TRIALS:
        raise UserError(f"trials={trials!r} is invalid: must be an integer in [0, {MAX_TRIALS}]")


#: (sim config JSON, table digests) of the configs :func:`check_sim_config` passed in this process
_CHIP_CHECKED: set[tuple[str, str]] = set()


def check_sim_config(sim_cfg: SimConfig) -> None:
    """Fail before any work (before the digital row) on a sim config no chip can be built from:
    every table loads and validates (:func:`nn.provenance.check_tables`) and one tile of a chip
    is programmed and read (:func:`nn.sim.check_chip`). Each config (by content, tables
    included) is checked once per process."""
    from nn.provenance import check_tables
    from nn.sim import check_chip

    key = (sim_cfg.to_json(), json.dumps(check_tables(sim_cfg), sort_keys=True))
    if key in _CHIP_CHECKED:
        return
    check_chip(sim_cfg)
    _CHIP_CHECKED.add(key)


def preflight(out_csv: str | os.PathLike, sim_cfgs: list[SimConfig]) -> None:
    """Fail before any work: ``out_csv`` must be writable (its directory exists; nothing is
    created, :func:`device.io.check_writable`) and a results file of this toolkit if it exists,
    and every config must give a chip (:func:`check_sim_config`: tables, one programmed tile)."""
    ResultsFile(out_csv)
    for cfg in sim_cfgs:
        check_sim_config(cfg)


def evaluate_glue(
    model_dir: str | os.PathLike,
    task: str,
    glue_dir: str | os.PathLike | None,
    sim_cfg: SimConfig,
    trials: int,
    seed: int,
    out_csv: str | os.PathLike,
    batch_size: int = 64,
    max_examples: int | None = None,
    *,
    max_length: int = 128,
    split: str = "dev",
    method: str = "baseline",
    progress: bool = True,
    stop_after_rows: int | None = None,
    num_threads: int | None = None,
    device: Any = "cpu",
    verbose: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model_dir`` on ``task``'s ``split``: one digital row and ``trials`` simulated
    chips, appended to ``out_csv`` (resumable, see the module docstring). Returns a summary dict
    (``digital`` metrics, ``simulated`` ``{metric: {n, mean, std}}``, ``rows``) and prints
    mean +- std when ``verbose``. The output path and every table are checked before the model
    is loaded (:func:`preflight`)."""
    check_trials(trials)
    preflight(out_csv, [sim_cfg] if trials else [])
    sess = EvalSession.open(
        model_dir, task, glue_dir, split=split, max_examples=max_examples, max_length=max_length,
        batch_size=batch_size, device=device,
    )
    summary = sess.run(
        sim_cfg, trials, seed, out_csv, method=method, progress=progress, stop_after_rows=stop_after_rows,
        num_threads=num_threads,
    )
    if verbose:
        print(format_summary(summary))
    return summary


# --------------------------------------------------------------------------------------------
# one model on one split (fine-tuning's dev scores, weight-noise robustness)


def _model_device(model: Any) -> Any:
    return next(model.parameters()).device


def evaluate_split(
    model: Any,
    split: Any,
    task: str,
    tokenizer: Any = None,
    *,
    max_length: int = 128,
    batch_size: int = 64,
    weight_noise_sigma: float = 0.0,
    noise_distribution: str = "normal",
    noise_target: Sequence[str] | str | None = None,
    generator: Any = None,
) -> dict[str, float]:
    """GLUE metrics of ``model`` on ``split`` (``nn.metrics.glue_score`` keys, plus ``score``).

    ``split``: a :class:`nn.glue.GlueSplit` (then ``tokenizer`` is needed) or an already
    tokenized :class:`nn.glue.Encoded`. With ``weight_noise_sigma > 0`` the ``noise_target``
    weights carry one draw of multiplicative noise (see :func:`nn.dva.weight_noise`) from ``generator``
    for the whole evaluation, and are restored afterwards. The model's train/eval mode is kept.
    """
    from nn import glue as glue_mod
    from nn.dva import select_linear, weight_noise
    from nn.metrics import glue_score

    if isinstance(split, glue_mod.GlueSplit):
        if tokenizer is None:
            raise UserError("evaluate_split needs a tokenizer for an untokenized GlueSplit")
        enc = glue_mod.tokenize(split, tokenizer, max_length)
    else:
        enc = split
    if weight_noise_sigma > 0 and generator is None:
        raise UserError("weight_noise_sigma > 0 needs a seeded torch.Generator (generator=...)")
    was_training = model.training
    model.eval()
    try:
        if noise_target is None:
            from nn.dva import DEFAULT_DVA_TARGET

            noise_target = (DEFAULT_DVA_TARGET,)
        targets = select_linear(model, noise_target) if weight_noise_sigma > 0 else []
        with weight_noise(targets, weight_noise_sigma, generator, noise_distribution):  # type: ignore[arg-type]
            logits = predict(model, enc, batch_size)
    finally:
        model.train(was_training)
    return glue_score(task, logits, enc.labels)


def noise_robustness(
    model: Any,
    split: Any,
    task: str,
    tokenizer: Any = None,
    *,
    sigma: float,
    n_draws: int = 5,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Task score under ``n_draws`` independent weight-noise draws: ``{"scores", "mean", "std"}``.

    ``std`` is the sample standard deviation (ddof=1) over draws. Extra keyword arguments go to
    :func:`evaluate_split` (``max_length``, ``noise_distribution``, ``noise_target`` ...).
    """
    import torch

    from nn import glue as glue_mod

    if isinstance(split, glue_mod.GlueSplit):
        split = glue_mod.tokenize(split, tokenizer, kwargs.pop("max_length", 128))
    gen = torch.Generator(device=_model_device(model)).manual_seed(seed)
    scores = [
        evaluate_split(model, split, task, weight_noise_sigma=sigma, generator=gen, **kwargs)["score"]
        for _ in range(n_draws)
    ]
    return {
        "scores": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores, ddof=1)) if n_draws > 1 else 0.0,
    }
