"""Score against a swept setting, from any results file: ``reram-cosim plot`` and study plots.

One drawing (:func:`draw_panel`) serves ``reram-cosim plot RESULTS.csv --x KEY`` (an ``eval``
file or a study's), the study plots (:func:`nn.study.plot_study`) and the demo's figure:

* x: the swept configuration key, named as its field documents it, with its unit
  (:func:`axis_label`, from the ``#:`` comment of the field and the unit in its name); a log
  axis for rates and times (symmetric log, linear through 0, where 0 is swept too);
* y: the mean of the chips (simulated rows) at each setting with its 95 % confidence interval
  (Student t over the chips; none for a single chip), one line per method and per combination
  of the other keys that vary, the number of chips in the legend;
* the digital model's score (dashed) and the majority-class score of the split (dotted, the
  chance line: :func:`nn.results.majority_score`, stored in every row), so a curve that ends at
  the majority class does not read as a recovery;
* legends below the axes (never over the curves), one panel per task.

Rows come from :func:`nn.evaluate.read_results` (or a study's :func:`nn.study.study_rows`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from device.errors import UserError

__all__ = ["axis_label", "log_axis", "row_value", "same_value", "series", "draw_panel", "figure", "legend_below",
           "plot_results", "metric_label", "parse_where", "TASK_NAMES"]

#: display names of the GLUE tasks
TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "digits": "digits"}
#: what the ``score`` column is per task (nn.metrics.glue_score)
_SCORE = {"cola": "MCC", "stsb": "score (mean of Pearson and Spearman)", "mrpc": "score (mean of F1 and accuracy)",
          "qqp": "score (mean of F1 and accuracy)"}
#: SI unit of a field from the end of its name (the house rule: the unit is in the name)
_UNITS = (("_ohm", "Ω"), ("_hz", "Hz"), ("_ev", "eV"), ("_db", "dB"), ("_s", "s"), ("_v", "V"), ("_a", "A"),
          ("_m", "m"), ("_k", "K"), ("_j", "J"), ("_w", "W"), ("_f", "F"))


def _unit(name: str) -> str:
    return next((u for suffix, u in _UNITS if name.endswith(suffix)), "")


def axis_label(key: str) -> str:
    """A human name for config key ``key`` (``faults.rate`` -> "expected fraction of faulty
    cells or of failed lines"), from the first clause of the field's ``#:`` comment, with its SI
    unit from its name (``crossbar.read_time_s`` -> "... [s]"); the key itself when it names no
    documented field."""
    from device.config import field_path_doc
    from nn.sim import SimConfig

    found = field_path_doc(SimConfig, key)
    if not found or not found[1]:
        return key
    name, doc = found
    text = re.sub(r"\s*\([^()]*\)", "", doc)  # parenthetical remarks
    m = re.match(r"^([\w -]{1,30}):\s+(?![\"'])", text)  # a short lead-in ("synthetic: ...") unless it introduces choices
    if m and len(m.group(1).split()) <= 2:
        text = text[m.end():]
    unit = _unit(name)
    cut = [text.find(sep) for sep in (";", ":", ", in [", ". ")]
    if unit:
        cut.append(text.lower().find(f", {name.rsplit('_', 1)[-1]}"))
    cut = [c for c in cut if c > 0]
    text = text[: min(cut)] if cut else text
    text = text.strip().rstrip(".,")
    if len(text) > 60:
        text = text[:60].rsplit(" ", 1)[0] + "..."
    text = text[:1].upper() + text[1:]
    return f"{text} [{unit}]" if unit else text


def log_axis(key: str) -> bool:
    """Whether ``key`` is a rate or a time (a log axis)."""
    name = key.rsplit(".", 1)[-1]
    return name.endswith("rate") or _unit(name) == "s"


def metric_label(task: str, metric: str, split: str = "dev") -> str:
    """``"SST-2 dev accuracy"``: the y axis."""
    what = _SCORE.get(task, "accuracy") if metric == "score" else metric
    return f"{TASK_NAMES.get(task, task)} {split} {what}"


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    flat = row.get("_flat")
    if flat is None:
        import json

        from nn.results import flat_config

        try:
            flat = flat_config(json.loads(row.get("sim_config") or "{}"))
        except ValueError:
            flat = {}
        row["_flat"] = flat
    return flat


def row_value(row: dict[str, Any], key: str) -> Any:
    """The value of config key ``key`` in ``row``: its tidy column where the file has one, else
    its ``sim_config``."""
    v = row.get(key)
    return v if v is not None else _flat(row).get(key)


def _t95(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else math.nan


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def series(rows: list[dict[str, Any]], x: str, metric: str = "score") -> dict[str, Any]:
    """What a panel draws for one task's ``rows``: ``lines`` ``{label: (xs, mean, lo, hi, ns)}``
    (one per method and combination of the other varying keys; the 95 % t interval over the
    chips), ``digital`` ``{method: score}``, ``majority`` (the chance line, or None)."""
    sim = [r for r in rows if r["mode"] == "simulated" and not math.isnan(r[metric])]
    keys = sorted({k for r in sim for k in _flat(r)})
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in sim:
        by_method.setdefault(r["method"], []).append(r)
    # keys that vary within a method besides x (a method's own overrides are its name)
    other = [k for k in keys if k != x and any(len({json.dumps(_flat(r).get(k), sort_keys=True) for r in rs}) > 1
                                               for rs in by_method.values())]
    groups: dict[tuple, dict[Any, list[float]]] = {}
    for r in sim:
        v = row_value(r, x)
        g = (r["method"],) + tuple(_hashable(_flat(r).get(k)) for k in other)
        groups.setdefault(g, {}).setdefault(_hashable(v), []).append(float(r[metric]))
    lines = {}
    for g, by_x in sorted(groups.items(), key=lambda kv: tuple(str(p) for p in kv[0])):
        label = ", ".join([g[0]] + [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(other, g[1:])])
        xs = sorted(by_x, key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v)))
        mean = np.array([np.mean(by_x[v]) for v in xs])
        ns = np.array([len(by_x[v]) for v in xs])
        half = np.array([_t95(len(by_x[v])) * np.std(by_x[v], ddof=1) / math.sqrt(len(by_x[v])) if len(by_x[v]) > 1
                         else 0.0 for v in xs])
        lines[label] = (xs, mean, mean - half, mean + half, ns)
    digital = {}
    for r in rows:
        if r["mode"] == "digital" and not math.isnan(r[metric]):
            digital.setdefault(r["method"], []).append(float(r[metric]))
    maj = [r.get("majority_score", math.nan) for r in rows]
    maj = [float(m) for m in maj if m is not None and not math.isnan(m)]
    return {"lines": lines, "digital": {m: float(np.mean(v)) for m, v in digital.items()},
            "majority": float(np.median(maj)) if maj else None, "other": other}


def _n_text(ns: np.ndarray) -> str:
    lo, hi = int(ns.min()), int(ns.max())
    return f"n={lo} chip{'s' if hi > 1 else ''}" if lo == hi else f"n={lo}-{hi} chips"


def draw_panel(ax: Any, rows: list[dict[str, Any]], x: str, *, metric: str = "score", task: str | None = None,
               xlabel: str | None = None, scale: float = 1.0) -> dict[str, Any]:
    """Draw one task's score against ``x`` on matplotlib axes ``ax`` (module docstring);
    ``scale`` multiplies the x values for display. Returns :func:`series`."""
    s = series(rows, x, metric)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for ln in s["lines"].values() for v in ln[0])
    cats: list[Any] = []
    if not numeric:
        cats = sorted({v for ln in s["lines"].values() for v in ln[0]}, key=str)
    lo_b, hi_b = _bounds(task, metric)
    for i, (label, (xs, mean, lo, hi, ns)) in enumerate(s["lines"].items()):
        xv = np.array([float(v) * scale for v in xs]) if numeric else np.array([cats.index(v) for v in xs], float)
        color = f"C{i}"
        band = "mean ± 95 % CI" if ns.max() > 1 else "one chip"
        ax.plot(xv, mean, "o-", color=color, ms=4, label=f"{label} ({band}, {_n_text(ns)})")
        if ns.max() > 1:
            ax.fill_between(xv, np.maximum(lo, lo_b), np.minimum(hi, hi_b), color=color, alpha=0.2, lw=0)
    dig = s["digital"]
    if dig:
        vals = sorted(set(round(v, 12) for v in dig.values()))
        if len(vals) == 1:
            ax.axhline(vals[0], color="k", ls="--", lw=1, label=f"digital ({vals[0]:.3f})")
        else:
            for i, (m, v) in enumerate(sorted(dig.items())):
                ax.axhline(v, color=f"C{i}", ls="--", lw=1, label=f"{m} digital ({v:.3f})")
    if s["majority"] is not None:
        ax.axhline(s["majority"], color="0.45", ls=":", lw=1.2, label=f"majority class ({s['majority']:.3f})")
    xs_all = sorted({float(v) * scale for ln in s["lines"].values() for v in ln[0]}) if numeric else []
    if numeric and log_axis(x):
        pos = [v for v in xs_all if v > 0]
        if pos and min(xs_all) <= 0:
            ax.set_xscale("symlog", linthresh=min(pos))
            ax.set_xlim(min(xs_all), max(xs_all) * 1.5)
        elif pos:
            ax.set_xscale("log")
    if not numeric:
        crowded = sum(len(str(c)) for c in cats) > 40
        ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=30 if crowded else 0)
        ax.set_xlim(-0.5, len(cats) - 0.5)
    ax.set_xlabel(xlabel or axis_label(x))
    if task is not None:
        ax.set_ylabel(metric_label(task, metric))
    ax.grid(alpha=0.3)
    return s


def figure(n_panels: int = 1) -> tuple[Any, list[Any]]:
    """A figure of ``n_panels`` plot panels side by side, each with its legend in its own box
    below it (:func:`legend_below`): legends never cover curves or axis labels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, n_panels, figsize=(5.6 * n_panels, 5.6), height_ratios=[4.0, 1.4], squeeze=False,
                             layout="constrained")
    for lax in axes[1]:
        lax.axis("off")
    return fig, [(axes[0][i], axes[1][i]) for i in range(n_panels)]


def legend_below(ax: Any, box: Any) -> None:
    """``ax``'s legend in ``box``, the empty panel below it (:func:`figure`)."""
    handles, labels = ax.get_legend_handles_labels()
    box.legend(handles, labels, loc="upper center", fontsize=7, frameon=False)


def _bounds(task: str | None, metric: str) -> tuple[float, float]:
    """The range a metric can take (confidence bands are cut to it): correlations and MCC in
    [-1, 1], the rest in [0, 1]."""
    if metric in ("mcc", "pearson", "spearman") or (metric == "score" and task in ("cola", "stsb")):
        return -1.0, 1.0
    return 0.0, 1.0


def plot_results(rows: list[dict[str, Any]], x: str, out: str | Path, *, metric: str = "score",
                 where: dict[str, Any] | None = None, title: str | None = None,
                 formats: tuple[str, ...] | None = None) -> list[Path]:
    """The figure of ``reram-cosim plot``: one panel per task of ``rows`` (only those whose
    config matches ``where``, ``{key: value}``), ``metric`` against config key ``x``. Writes
    ``out`` (and its other ``formats``) atomically; returns the paths. A key no row has, or rows
    left with no chip, is a :class:`UserError` naming the keys that vary."""
    from device.plots import save_figure

    where = dict(where or {})
    sel = [r for r in rows if all(same_value(row_value(r, k), v) for k, v in where.items())
           or r["mode"] == "digital" and r["task"] in {q["task"] for q in rows if q["mode"] == "simulated"}]
    sim = [r for r in sel if r["mode"] == "simulated"]
    if not sim:
        raise UserError("no simulated rows" + (f" match {where}" if where else "") + " in the results")
    if all(row_value(r, x) is None for r in sim):
        keys = sorted({k for r in sim for k in _flat(r) if any(_flat(q).get(k) != _flat(r).get(k) for q in sim)})
        raise UserError(f"no row sets {x!r}; keys that vary in these rows: {', '.join(keys) or '(none)'}")
    tasks = sorted({r["task"] for r in sim})
    fig, panels = figure(len(tasks))
    for (ax, box), task in zip(panels, tasks):
        draw_panel(ax, [r for r in sel if r["task"] == task], x, metric=metric, task=task)
        legend_below(ax, box)
        ax.set_title(TASK_NAMES.get(task, task), fontsize=10)
    sup = title or (", ".join(f"{k}={v}" for k, v in where.items()) if where else "")
    if sup:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(sup, 90)), fontsize=10)
    return save_figure(fig, out, dpi=150, formats=formats)


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return _hashable(a) == _hashable(b) or str(a) == str(b)


def parse_where(items: Iterable[str]) -> dict[str, Any]:
    """``["crossbar.adc_bits=6", "faults.pattern=clustered"]`` -> ``{key: value}`` (values as JSON
    where they parse, else strings)."""
    from nn.results import parse_cell

    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.strip():
            raise UserError(f"--where {it!r} is invalid: give KEY=VALUE")
        out[k.strip()] = parse_cell(v.strip())
    return out
