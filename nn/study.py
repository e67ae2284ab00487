"""Parameter studies: sweep physics parameters over tasks and methods, then plot accuracy vs physics.

A study is the cartesian product tasks x methods x sweep points, each point evaluated by
:class:`nn.evaluate.EvalSession` (one digital row per task and method, ``trials`` chips per point)
into one resumable CSV, ``<out>/results.csv``; then one figure per task and sweep axis,
``<out>/plots/<task>__<axis>[__<other axes>].png`` and ``.pdf``: the mean score across trials
against the axis value with a +-1 standard deviation band, one line per method, the digital score
as a dashed line.

Spec format (JSON)
------------------
::

    {
      "name": "faults",                        # free text, used in titles (optional)
      "model": "/path/to/checkpoint",          # fine-tuned classifier directory or hub id, or
                                               #   {"sst2": "...", "mrpc": "..."} per task; a
                                               #   "cache:NAME" entry means nn.models.finetuned_model_dir(NAME);
                                               #   --model on the command line overrides it
      "glue_dir": null,                        # local GLUE directory (null: $GLUE_DIR /
                                               #   ../shared/data/glue / the hub); --glue-dir overrides
      "preset": "default",                     # a key of nn.sim.PRESETS
      "set": ["levels.source=synthetic"],      # --set style overrides of the preset
      "axes": {"faults.rate": [0, 0.005, 0.01, 0.02]},
                                               # sweep axes: SimConfig key path -> values; several
                                               #   axes are crossed (cartesian product); each
                                               #   axis is plotted against the others held fixed
      "tasks": ["sst2"],
      "methods": {"baseline": []},             # name -> list of overrides (applied after "set",
                                               #   before the axis values); default {"baseline": []}
      "trials": 2,                             # chips per point
      "seed": 0,
      "max_examples": null,                    # dev subset per task (stratified); null = all
      "max_length": 128,                       # tokens per example
      "batch_size": 64
    }

Axis keys are any :class:`nn.sim.SimConfig` key path (``faults.rate``, ``faults.sa0_fraction``,
``levels.sigma_rel``, ``levels.on_off_ratio``, ``crossbar.bits_per_cell``,
``crossbar.adc_bits``, ``circuit.r_wire_row_ohm``, ``crossbar.weight_format`` ...); every value
is checked (the whole product is built) before anything runs. Methods are where the
fault-protection schemes of the next issue plug in: today a bundle of overrides; a callable
``prepare(model, sim_cfg)`` can be attached with :func:`run_study`'s ``prepare`` argument.

Protection methods (:mod:`nn.protect`, :mod:`mapping.protection`): a method named after a key of
``nn.protect.PROTECTION_METHODS`` (``unprotected``, ``prune``, ``prune+dup``, ``prune+dup+msb``,
``msb``, ...) runs with that protection, and any method may carry ``"protection.<field>=<value>"``
overrides of :class:`mapping.protection.ProtectionConfig` (on top of the named bundle, else of no
protection); the other overrides go to the sim config as usual. With ``protection.prune`` the
masks come from ``<model>/pruning_masks.safetensors``. An explicit ``prepare`` hook for a method
replaces its protection.

Shipped examples: ``examples/study_faults.json``, ``examples/study_variation.json``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from device.config import apply_overrides
from nn.sim import PRESETS, SimConfig, get_preset

__all__ = ["StudySpec", "load_spec", "study_points", "run_study", "plot_study"]

_KEYS = {"name", "model", "glue_dir", "preset", "set", "axes", "tasks", "methods", "trials", "seed",
         "max_examples", "max_length", "batch_size"}


class StudySpec:
    """A validated study spec (see the module docstring)."""

    def __init__(self, data: dict[str, Any], *, where: str = "study spec") -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
        self.name = str(data.get("name", "study"))
        self.model = data.get("model")
        self.glue_dir = data.get("glue_dir")
        self.preset = data.get("preset", "default")
        if self.preset not in PRESETS:
            raise ValueError(f"{where}: unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        self.overrides = _str_list(data.get("set", []), f"{where}: set")
        axes = data.get("axes", {})
        if not isinstance(axes, dict) or not axes:
            raise ValueError(f"{where}: axes must be a non-empty object {{\"key.path\": [values, ...]}}")
        self.axes: dict[str, list[Any]] = {}
        for k, v in axes.items():
            if not isinstance(v, list) or not v:
                raise ValueError(f"{where}: axis {k!r} must have a non-empty list of values")
            self.axes[str(k)] = list(v)
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise ValueError(f"{where}: tasks must be a non-empty list of GLUE task names")
        from nn.glue import get_task

        self.tasks = [get_task(t).name for t in tasks]
        methods = data.get("methods", {"baseline": []})
        if not isinstance(methods, dict) or not methods:
            raise ValueError(f"{where}: methods must be a non-empty object {{name: [overrides]}}")
        self.methods = {str(k): _str_list(v, f"{where}: method {k}") for k, v in methods.items()}
        from nn.protect import method_protection

        try:  # protection bundles / protection.* overrides, checked now like the sim configs
            self.protections = {m: method_protection(m, ov) for m, ov in self.methods.items()}
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        self.trials = _int(data.get("trials", 1), f"{where}: trials", 0)
        self.seed = _int(data.get("seed", 0), f"{where}: seed", 0)
        me = data.get("max_examples")
        self.max_examples = None if me is None else _int(me, f"{where}: max_examples", 1)
        self.max_length = _int(data.get("max_length", 128), f"{where}: max_length", 8)
        self.batch_size = _int(data.get("batch_size", 64), f"{where}: batch_size", 1)
        self.data = data
        # build every config now: a bad key or value fails before anything runs
        for _m, _p, _cfg in self.points():
            pass

    def base(self, method: str) -> SimConfig:
        sim = [o for o in self.methods[method] if not o.startswith("protection.")]
        return apply_overrides(get_preset(self.preset), self.overrides + sim)

    def protection(self, method: str) -> Any:
        """The method's ``mapping.protection.ProtectionConfig``, or None for a plain method."""
        return self.protections[method]

    def points(self) -> list[tuple[str, dict[str, Any], SimConfig]]:
        """``(method, {axis: value}, sim_cfg)`` for the whole product, in run order."""
        out = []
        keys = list(self.axes)
        for method in self.methods:
            base = self.base(method)
            for combo in itertools.product(*(self.axes[k] for k in keys)):
                point = dict(zip(keys, combo))
                sets = [f"{k}={json.dumps(v)}" for k, v in point.items()]
                out.append((method, point, apply_overrides(base, sets)))
        return out

    def model_for(self, task: str, override: str | None = None) -> str:
        m = override if override is not None else self.model
        if isinstance(m, dict):
            if task not in m:
                raise ValueError(f"study spec: model has no entry for task {task!r}")
            m = m[task]
        if m is None:
            raise ValueError("study spec gives no model; add \"model\" to the spec or pass --model")
        m = str(m)
        if m.startswith("cache:"):
            from nn.models import finetuned_model_dir

            return str(finetuned_model_dir(m[len("cache:"):]))
        return m


def _str_list(v: Any, what: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{what} must be a list of \"key=value\" strings")
    return list(v)


def _int(v: Any, what: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{what}={v!r} is invalid: must be an integer >= {lo}")
    return v


def load_spec(path: str | os.PathLike) -> StudySpec:
    """Read and validate a study spec JSON file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"study spec {p} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"study spec {p} is not valid JSON: {exc}") from None
    return StudySpec(data, where=str(p))


def study_points(spec: StudySpec) -> int:
    """Number of evaluation rows the study writes (digital rows included)."""
    n_pts = math.prod(len(v) for v in spec.axes.values())
    return len(spec.tasks) * len(spec.methods) * (1 + n_pts * spec.trials)


def run_study(
    spec: StudySpec,
    out_dir: str | os.PathLike,
    *,
    model: str | None = None,
    glue_dir: str | os.PathLike | None = None,
    progress: bool = True,
    stop_after_rows: int | None = None,
    prepare: dict[str, Callable[[Any, SimConfig], None]] | None = None,
    num_threads: int | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Run every point of ``spec`` into ``<out_dir>/results.csv`` (resumable) and draw the plots.

    ``stop_after_rows``: stop after writing that many new rows (rerun to continue; plots are
    drawn from what is there). ``prepare``: ``{method: fn(model, sim_cfg)}`` hooks run after
    patching. Returns ``{"csv": path, "plots": [paths], "written": n, "complete": bool}``.
    """
    from nn.evaluate import EvalSession, format_summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    spec_copy = out / "study.json"
    tmp = out / f".study.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(spec.data, indent=2))
    os.replace(tmp, spec_copy)
    gd = glue_dir if glue_dir is not None else spec.glue_dir
    if gd is None:
        from nn.glue import default_glue_dir

        gd = default_glue_dir()
    budget = stop_after_rows
    written, complete = 0, True
    points = spec.points()
    for task in spec.tasks:
        if budget is not None and budget <= 0:
            complete = False
            break
        sess = EvalSession.open(
            spec.model_for(task, model), task, gd, max_examples=spec.max_examples, max_length=spec.max_length,
            batch_size=spec.batch_size,
        )
        for method, point, cfg in points:
            if budget is not None and budget <= 0:
                complete = False
                break
            hook = (prepare or {}).get(method)
            prot = spec.protection(method)
            if hook is None and prot is not None:
                from nn.protect import make_prepare

                hook = make_prepare(prot, sess.model_dir)
            s = sess.run(
                cfg, spec.trials, spec.seed, csv_path, method=method, progress=progress, stop_after_rows=budget,
                prepare=hook, num_threads=num_threads,
                key_extra=None if prot is None else {"protection": prot.to_dict()},
            )
            written += s["written"]
            if budget is not None:
                budget -= s["written"]
            complete = complete and s["complete"]
            if progress:
                where = ", ".join(f"{k}={v}" for k, v in point.items())
                print(f"[{where}] {format_summary(s)}", flush=True)
    plots = plot_study(spec, csv_path, out / "plots") if plot else []
    return {"csv": csv_path, "plots": plots, "written": written, "complete": complete}


def _get(d: dict[str, Any], path: str) -> Any:
    for p in path.split("."):
        d = d[p]
    return d


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    return float(v) if isinstance(v, (int, float)) else None


def plot_study(spec: StudySpec, csv_path: str | os.PathLike, plot_dir: str | os.PathLike,
               metric: str = "score") -> list[Path]:
    """One figure per task, sweep axis and value combination of the other axes: mean ``metric``
    +- 1 std (band) vs the axis, one line per method, digital as dashed lines. PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from nn.evaluate import read_results

    rows = [r for r in read_results(csv_path) if r["seed"] == spec.seed]
    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    keys = list(spec.axes)
    for r in rows:
        r["_cfg"] = json.loads(r["sim_config"]) if r["mode"] == "simulated" else None
    for task in spec.tasks:
        trows = [r for r in rows if r["task"] == task]
        for axis in keys:
            others = [k for k in keys if k != axis]
            for fixed in itertools.product(*(spec.axes[k] for k in others)):
                fx = dict(zip(others, fixed))
                fig, ax = plt.subplots(figsize=(5.2, 3.6))
                xs_all = spec.axes[axis]
                numeric = all(_num(x) is not None for x in xs_all)
                pos = {json.dumps(x): (float(x) if numeric else i) for i, x in enumerate(xs_all)}
                drew = False
                for mi, method in enumerate(spec.methods):
                    color = f"C{mi}"
                    mrows = [r for r in trows if r["method"] == method]
                    dig = [r[metric] for r in mrows if r["mode"] == "digital"]
                    if dig:
                        ax.axhline(dig[-1], color=color, ls="--", lw=1, label=f"{method} digital")
                    xs, mean, std = [], [], []
                    for x in xs_all:
                        sel = [
                            r[metric] for r in mrows
                            if r["mode"] == "simulated" and _get(r["_cfg"], axis) == x
                            and all(_get(r["_cfg"], k) == v for k, v in fx.items())
                        ]
                        sel = [v for v in sel if not math.isnan(v)]
                        if sel:
                            xs.append(pos[json.dumps(x)])
                            mean.append(float(np.mean(sel)))
                            std.append(float(np.std(sel, ddof=1)) if len(sel) > 1 else 0.0)
                    if xs:
                        m, s = np.asarray(mean), np.asarray(std)
                        ax.plot(xs, m, "o-", color=color, label=f"{method} crossbar")
                        ax.fill_between(xs, m - s, m + s, color=color, alpha=0.2, lw=0)
                        drew = True
                if not drew:
                    plt.close(fig)
                    continue
                if not numeric:
                    ax.set_xticks(range(len(xs_all)), [str(x) for x in xs_all])
                else:
                    pos = [float(x) for x in xs_all if float(x) > 0]
                    if pos and min(float(x) for x in xs_all) >= 0 and max(pos) / min(pos) >= 100:
                        # values spanning decades (fault rates): log scale, linear through 0
                        ax.set_xscale("symlog", linthresh=min(pos))
                ax.set_xlabel(axis)
                ax.set_ylabel(f"{task} dev {metric}")
                title = f"{spec.name}: {task}"
                if fx:
                    title += " (" + ", ".join(f"{k}={v}" for k, v in fx.items()) + ")"
                import textwrap

                ax.set_title("\n".join(textwrap.wrap(title, 64)), fontsize=9)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
                fig.tight_layout()
                stem = f"{task}__{axis}" + "".join(f"__{k}={v}" for k, v in fx.items())
                stem = "".join(c if c.isalnum() or c in "._=-" else "_" for c in stem)
                from device.plots import save_figure

                written += save_figure(fig, plot_dir / f"{stem}.png", dpi=150, formats=("png", "pdf"))
    return written


def fault_tolerance(
    csv_paths: list[str | os.PathLike] | str | os.PathLike,
    *,
    axis: str = "faults.rate",
    drop: float = 0.01,
    reference: str = "unprotected",
    metric: str = "score",
) -> list[dict[str, Any]]:
    """The fault rate each method tolerates: where its mean score falls ``drop`` below its own
    fault-free score (seed paper 1 reports protection tolerating ~2.5x higher fault rates).

    Reads one or more study CSVs (several studies may hold the methods, e.g. a dense and a pruned
    model; an item ``(path, label)`` renames its methods ``"<method> (<label>)"``, to tell apart
    the same method run on another model), averages the simulated trials per (task, method, axis value), takes the score at
    ``axis = 0`` as the method's fault-free score, and finds the first swept rate whose mean is
    below ``fault_free - drop``; the crossing is interpolated linearly in ``log(rate)`` between
    that point and the last point above. ``tolerated_rate`` is ``None`` when the method never
    falls below within the sweep (then ``censored`` gives the largest rate swept), and 0 when it
    is already below at the smallest non-zero rate (the crossing lies below the sweep). ``ratio``
    divides by the reference method's tolerated rate on the same task; when the reference crosses
    below the sweep, ``ratio_lower_bound`` is the rate divided by the smallest swept rate.

    Returns rows ``{task, method, fault_free, tolerated_rate, censored, ratio, points}``.
    """
    from nn.evaluate import read_results

    paths = [csv_paths] if isinstance(csv_paths, (str, os.PathLike, tuple)) else list(csv_paths)
    groups: dict[tuple[str, str], dict[float, list[float]]] = {}
    for item in paths:
        p, label = item if isinstance(item, tuple) else (item, None)
        for r in read_results(p):
            if r["mode"] != "simulated":
                continue
            v = _num(_get(json.loads(r["sim_config"]), axis))
            s = _num(r.get(metric))
            if v is None or s is None:
                continue
            method = r["method"] if label is None else f"{r['method']} ({label})"
            groups.setdefault((r["task"], method), {}).setdefault(v, []).append(s)
    out: list[dict[str, Any]] = []
    for (task, method), by_rate in sorted(groups.items()):
        rates = sorted(by_rate)
        means = {x: float(np.mean(by_rate[x])) for x in rates}
        if 0.0 not in means:
            raise ValueError(f"{task}/{method}: no {axis}=0 point in the study, so no fault-free score")
        base = means[0.0]
        thr = base - drop
        tol: float | None = None
        prev = None
        for x in rates:
            if x == 0.0:
                continue
            if means[x] < thr:
                if prev is None:
                    tol = 0.0
                else:
                    lx0, lx1 = math.log(prev), math.log(x)
                    y0, y1 = means[prev], means[x]
                    tol = math.exp(lx0 + (y0 - thr) / (y0 - y1) * (lx1 - lx0))
                break
            prev = x
        out.append({
            "task": task, "method": method, "fault_free": base, "tolerated_rate": tol,
            "censored": None if tol is not None else rates[-1],
            "points": {x: (means[x], len(by_rate[x])) for x in rates},
        })
    ref = {row["task"]: row for row in out if row["method"] == reference}
    for row in out:
        r0 = ref[row["task"]]["tolerated_rate"] if row["task"] in ref else None
        t = row["tolerated_rate"]
        row["ratio"] = (t / r0) if (r0 and t is not None) else None
        # reference below the sweep (crossing under its smallest rate): the ratio is a lower bound
        row["ratio_lower_bound"] = None
        if r0 == 0.0 and t:
            row["ratio_lower_bound"] = t / min(x for x in ref[row["task"]]["points"] if x > 0)
    return out


def format_tolerance(rows: list[dict[str, Any]], *, drop: float = 0.01, reference: str = "unprotected") -> str:
    """Markdown table of :func:`fault_tolerance` rows."""
    lines = [
        f"| task | method | fault-free score | fault rate at -{drop * 100:g} point | x {reference} |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if r["tolerated_rate"] is None:
            rate = f"> {r['censored']:.2g} (not reached)"
        elif r["tolerated_rate"] == 0.0:
            rate = f"< {min(x for x in r['points'] if x > 0):.2g}"
        else:
            rate = f"{r['tolerated_rate']:.2g}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        if r.get("ratio_lower_bound") is not None:
            ratio = f"> {r['ratio_lower_bound']:.3g}"
        lines.append(f"| {r['task']} | {r['method']} | {r['fault_free']:.4f} | {rate} | {ratio} |")
    return "\n".join(lines) + "\n"
