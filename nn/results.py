"""Tidy results: one column per swept configuration key, and the chance line of every task.

A results CSV (:class:`nn.evaluate.ResultsFile`) holds the core columns
(:data:`nn.evaluate.CSV_COLUMNS`: task, method, mode, trial, seed, the metrics, the majority-class
score, the keys and hashes, the full ``sim_config`` JSON) followed by one column per
configuration key whose value differs between the file's simulated rows: a study's axes and its
methods' overrides, the ``--set`` keys that differ between evaluations written into one file.
The column is named by the key's path (``faults.rate``, ``crossbar.adc_bits``), its cells hold
the values as JSON scalars (``0.01``, ``6``, ``dynamic``, ``true``; lists as JSON; empty for
None and for digital rows), so ``pandas.read_csv(path)`` gives a table to group by as it is::

    df = pandas.read_csv("studies/faults/results.csv")
    df[df["mode"] == "simulated"].groupby(["task", "method", "faults.rate"])["score"].agg(["mean", "std", "count"])

A row's key values are those of its own ``sim_config``, which stays the full record. When a new
row differs in a key the file has no column for, the file is rewritten once with the column
added (every earlier row's value taken from its ``sim_config``), atomically and under the file's
lock; so are files written before the columns existed, on their first new row.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

import numpy as np

__all__ = ["flat_config", "cell", "parse_cell", "varying_keys", "column_name", "majority_score", "fill_majority"]


def flat_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"faults.rate": 0.01, ...}``: the leaves of a nested config dict (``Config.to_dict()``)
    by dotted path (sub-configs are nested dicts; lists stay whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def cell(v: Any) -> str:
    """A key value as a CSV cell: JSON scalars (``0.01``, ``true``), strings bare, None empty."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True)


def parse_cell(s: str) -> Any:
    """The inverse of :func:`cell`: a JSON value where the cell is one, else the string; None
    for an empty cell."""
    if s == "":
        return None
    try:
        return json.loads(s)
    except ValueError:
        return s


def varying_keys(ref: dict[str, Any], flat: dict[str, Any]) -> set[str]:
    """Keys whose value in ``flat`` differs from ``ref`` (missing counts as None)."""
    return {k for k in set(ref) | set(flat) if ref.get(k) != flat.get(k)}


def column_name(key: str, core: Iterable[str]) -> str:
    """The column of config key ``key``: the key itself, or ``sim.<key>`` where it would clash
    with a core column."""
    return f"sim.{key}" if key in set(core) else key


def majority_score(task: str, labels: np.ndarray) -> float:
    """The task's ``score`` (:func:`nn.metrics.glue_score`) of a classifier that always answers
    the most frequent label of ``labels``: the chance line of a plot (0.5 on a balanced binary
    split, the majority fraction otherwise; F1 of the majority class where the score has F1;
    0 for CoLA's MCC). STS-B: 0, the correlation of any constant prediction (undefined, and
    the score a random one tends to)."""
    from nn.glue import get_task
    from nn.metrics import glue_score

    t = get_task(task)
    y = np.asarray(labels)
    if t.is_regression or y.size == 0:
        return 0.0
    values, counts = np.unique(y, return_counts=True)
    pred = np.full(y.shape, values[int(np.argmax(counts))])
    if t.name == "cola":  # MCC of a constant prediction: 0 (sklearn would warn on 0 / 0)
        return 0.0
    s = float(glue_score(t.name, pred, y)["score"])
    return s if math.isfinite(s) else 0.0


def fill_majority(rows: list[dict[str, Any]], glue_dir: Any) -> list[str]:
    """Give rows written before ``majority_score`` existed (NaN) their task's majority-class
    score, from the dev labels under ``glue_dir`` (the evaluated subset: ``max_examples`` drawn
    as evaluation draws it), only where the file's content hash matches the row's
    ``data_sha256``. Returns notes on what could not be filled (no ``glue_dir``, other data)."""
    from nn.glue import load_local, subsample
    from nn.provenance import data_digest

    missing = {(r["task"], r["split"], r["max_examples"], r.get("data_sha256", "")) for r in rows
               if r.get("majority_score") is None or math.isnan(r["majority_score"])}
    notes, found = [], {}
    for task, split, max_ex, sha in sorted(missing, key=str):
        if task == "digits" or glue_dir is None:
            notes.append(f"{task}: no majority-class line (the rows predate it; pass --glue-dir to compute it)")
            continue
        try:
            data = load_local(task, split, glue_dir)
        except Exception as exc:  # noqa: BLE001 - a note, not a failure: the plot is still drawn
            notes.append(f"{task}: no majority-class line ({exc})")
            continue
        if sha and data_digest(data) != sha:
            notes.append(f"{task}: no majority-class line (the {split} data under {glue_dir} differ from the rows')")
            continue
        data = subsample(data, max_ex, np.random.default_rng(0))
        found[(task, split, max_ex, sha)] = majority_score(task, data.labels)
    for r in rows:
        k = (r["task"], r["split"], r["max_examples"], r.get("data_sha256", ""))
        if k in found:
            r["majority_score"] = found[k]
    return notes
