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
:class:`nn.sim.SimConfig` as JSON), ``wall_s``, ``created``.

``config_hash`` hashes what decides a result: model, task, split, subset, max_length, method and,
for simulated rows, the sim config (a digital row's hash leaves the sim config out, so one digital
row serves every sim config of a study). A rerun skips rows whose ``(config_hash, trial, seed)``
are already in the file: a killed run resumes where it stopped. A partly written last line (a
kill during a write) is dropped on restart.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import UserError
from nn.sim import SimConfig, config_hash

__all__ = [
    "CSV_COLUMNS",
    "METRIC_COLUMNS",
    "EvalSession",
    "ResultsFile",
    "evaluate_glue",
    "predict",
    "read_results",
    "summarize",
    "format_summary",
]

METRIC_COLUMNS = ("accuracy", "f1", "mcc", "pearson", "spearman", "score")
CSV_COLUMNS = (
    "task", "split", "method", "mode", "trial", "seed", "n_examples", *METRIC_COLUMNS,
    "model", "max_examples", "max_length", "config_hash", "sim_config", "wall_s", "created",
)


# --------------------------------------------------------------------------------------------
# the results file


class ResultsFile:
    """An append-only results CSV with a fixed header; see the module docstring."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.done: set[tuple[str, int, int]] = set()
        self._repair_and_load()

    def _repair_and_load(self) -> None:
        p = self.path
        if not p.exists():
            return
        if p.is_dir():
            raise ValueError(f"results file {p} is a directory")
        text = p.read_text(encoding="utf-8")
        if not text:
            return
        if not text.endswith("\n"):  # killed during a write: drop the partial last line
            text = text[: text.rfind("\n") + 1]
            tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, p)
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return
        if tuple(rows[0]) != CSV_COLUMNS:
            raise ValueError(
                f"{p} is not a reram-cosim results file (its header differs); choose another --out or delete it"
            )
        for r in rows[1:]:
            if len(r) != len(CSV_COLUMNS):
                continue
            d = dict(zip(CSV_COLUMNS, r))
            try:
                self.done.add((d["config_hash"], int(d["trial"]), int(d["seed"])))
            except ValueError:
                continue

    def has(self, h: str, trial: int, seed: int) -> bool:
        return (h, int(trial), int(seed)) in self.done

    def append(self, row: dict[str, Any]) -> None:
        """Write one row (header first if the file is new), flush and fsync."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            if new:
                w.writerow(CSV_COLUMNS)
            w.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
            f.flush()
            os.fsync(f.fileno())
        self.done.add((str(row["config_hash"]), int(row["trial"]), int(row["seed"])))


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a results CSV as dicts (metrics and ints converted; empty metrics are NaN)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"results file {p} does not exist")
    out = []
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != CSV_COLUMNS:
            raise ValueError(f"{p} is not a reram-cosim results file (its header differs)")
        for r in reader:
            if len(r) != len(CSV_COLUMNS):
                continue
            d: dict[str, Any] = dict(zip(CSV_COLUMNS, r))
            for c in METRIC_COLUMNS + ("wall_s",):
                d[c] = float(d[c]) if d[c] != "" else math.nan
            for c in ("trial", "seed", "n_examples", "max_length"):
                d[c] = int(d[c])
            d["max_examples"] = int(d["max_examples"]) if d["max_examples"] not in ("", "None") else None
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
    """Outputs ``(n, num_labels)`` of ``model`` for every row of ``enc`` (:class:`nn.glue.Encoded`),
    in row order: the one batched forward pass of evaluation and fine-tuning. Rows are sorted by
    token count and cut into batches of ``batch_size`` (little padding), on the model's device,
    without gradients; the caller sets train/eval mode."""
    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size={batch_size!r} is invalid: must be an integer >= 1")
    device = next(model.parameters()).device
    order = np.argsort(enc.lengths, kind="stable")
    outs = []
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            b = enc.batch(order[i : i + batch_size], device)
            b.pop("labels")
            outs.append(model(**b).logits.float().cpu().numpy())
    logits = np.concatenate(outs, axis=0) if outs else np.zeros((0, 1), dtype=np.float32)
    res = np.empty_like(logits)
    res[order] = logits
    return res


def _threads(num_threads: int | None) -> int | None:
    from nn.models import num_threads as resolve

    return resolve(num_threads)


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
        from nn.models import load_classifier

        t = get_task(task)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} is invalid: must be >= 1")
        if max_examples is not None and max_examples < 1:
            raise ValueError(f"max_examples={max_examples} is invalid: must be >= 1 (or None for all)")
        data = load_split(t, split, glue_dir)
        data = subsample(data, max_examples, np.random.default_rng(0))
        model, tok = load_classifier(model_dir, None, task=t.name, require_finetuned=True, device=device,
                                     max_length=max_length)
        enc = tokenize(data, tok, max_length)
        return cls(
            model_dir=str(model_dir), task=t.name, split=split, model=model, encoded=enc, max_examples=max_examples,
            max_length=max_length, batch_size=batch_size, n_examples=len(enc),
        )

    def _key(self, method: str, sim_cfg: SimConfig | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        k = {
            "model": str(Path(self.model_dir).expanduser().resolve()) if Path(self.model_dir).exists() else self.model_dir,
            "task": self.task, "split": self.split, "max_examples": self.max_examples,
            "max_length": self.max_length, "method": method,
        }
        if sim_cfg is not None:
            k["sim"] = sim_cfg.to_dict()
            if extra:  # e.g. the protection config of a protection method (nn.protect)
                k.update(extra)
        return k

    def predict(self) -> np.ndarray:
        """Model outputs ``(n, num_labels)`` on the split (:func:`predict`)."""
        return predict(self.model, self.encoded, self.batch_size)

    def _row(self, mode: str, trial: int, seed: int, metrics: dict[str, float], h: str, sim_cfg: SimConfig,
             method: str, wall: float) -> dict[str, Any]:
        row: dict[str, Any] = {
            "task": self.task, "split": self.split, "method": method, "mode": mode, "trial": trial, "seed": seed,
            "n_examples": self.n_examples, "model": self.model_dir, "max_examples": self.max_examples,
            "max_length": self.max_length, "config_hash": h, "sim_config": sim_cfg.to_json(),
            "wall_s": f"{wall:.3f}", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
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

        from nn.crossbar_linear import calibrate_model, patch_model, program_model, reprogram_model, set_simulated, unpatch_model
        from nn.metrics import glue_score

        if not isinstance(sim_cfg, SimConfig):
            raise ValueError(f"sim_cfg must be a SimConfig, got {type(sim_cfg).__name__}")
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 0:
            raise ValueError(f"trials={trials!r} is invalid: must be an integer >= 0")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} is invalid: must be an integer >= 0")
        res = ResultsFile(out_csv)
        h_dig = config_hash(self._key(method, None))
        h_sim = config_hash(self._key(method, sim_cfg, key_extra))
        todo = ([("digital", -1)] if digital and not res.has(h_dig, -1, seed) else [])
        todo += [("simulated", t) for t in range(trials) if not res.has(h_sim, t, seed)]
        written = 0
        nt = _threads(num_threads)
        old_nt = torch.get_num_threads()
        if nt is not None:
            torch.set_num_threads(nt)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"{self.task} {method}", unit="pass", disable=not progress, file=sys.stderr,
                   leave=False)
        patched = False
        try:
            programmed_once = False
            for mode, trial in todo:
                if stop_after_rows is not None and written >= stop_after_rows:
                    break
                t0 = time.perf_counter()
                if mode == "digital":
                    metrics = glue_score(self.task, self.predict(), self.encoded.labels)
                    h = h_dig
                else:
                    if not patched:
                        patch_model(self.model, sim_cfg)
                        patched = True
                        if prepare is not None:
                            prepare(self.model, sim_cfg)
                    rng = np.random.default_rng([seed, trial])
                    if programmed_once:
                        reprogram_model(self.model, rng)
                    else:
                        program_model(self.model, rng)
                        programmed_once = True
                    set_simulated(self.model, True)
                    if sim_cfg.crossbar.adc_bits is not None and sim_cfg.crossbar.adc_range == "calibrated":
                        calibrate_model(self.model, self._calibration_batch())
                    metrics = glue_score(self.task, self.predict(), self.encoded.labels)
                    set_simulated(self.model, False)
                    h = h_sim
                res.append(self._row(mode, trial, seed, metrics, h, sim_cfg, method, time.perf_counter() - t0))
                written += 1
                bar.update(1)
        finally:
            bar.close()
            if patched:
                unpatch_model(self.model)
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

    def _calibration_batch(self) -> dict[str, Any]:
        """The first ``batch_size`` rows of the split (the ADC range is set on them)."""
        device = next(self.model.parameters()).device
        b = self.encoded.batch(np.arange(min(self.batch_size, self.n_examples)), device)
        b.pop("labels")
        return b


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
    mean +- std when ``verbose``."""
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
