"""Parameter studies: sweep physics parameters over tasks and methods, then plot accuracy vs physics.

A study is the cartesian product tasks x methods x sweep points, each point evaluated by
:class:`nn.evaluate.EvalSession` (one digital row per task and method, ``trials`` chips per point)
into one resumable CSV, ``<out>/results.csv``; then one figure per task and sweep axis,
``<out>/plots/<task>__<axis>[__<other axes>].png`` and ``.pdf``: the mean score across trials
against the axis value with a +-1 standard deviation band, one line per method, the digital score
as a dashed line.

The rows run on an executor (:mod:`nn.executor`: ``serial``, or ``dask`` on a local or remote
cluster); each row is keyed by the content of what produced it (:mod:`nn.evaluate`, "The key
rule"), and the driver alone writes the results file, so a killed run resumes exactly.

A study directory belongs to one spec: ``<out>/study.json`` records it, and running another spec
into the directory is refused (:class:`StudyDirError`). Summaries (the plots, the printed lines,
``tolerance.md``) use only the rows of the current spec *and* content (:func:`study_rows`): after
the weights, the data or a table change, the rows of the old content stay in ``results.csv``
but are never averaged with the new ones. A study that fails before its first row leaves
nothing behind (no ``study.json``, no lock file, no new directory).

Spec format (JSON; :class:`StudySpec`, a frozen ``@config`` dataclass validated like every config)
------------------------------------------------------------------------------------------------
::

    {
      "name": "faults",                        # free text, used in titles (optional)
      "model": "/path/to/checkpoint",          # fine-tuned classifier directory or hub id (or a
                                               #   small net's directory, nn.smallnets), or
                                               #   {"sst2": "...", "mrpc": "..."} per task; a
                                               #   "cache:NAME" entry means nn.models.finetuned_model_dir(NAME);
                                               #   --model on the command line overrides it
      "glue_dir": null,                        # local GLUE directory (null: $GLUE_DIR, else
                                               #   the hub); --glue-dir overrides
      "preset": "default",                     # a key of nn.sim.PRESETS
      "preset_file": null,                     # sim config fields (JSON) over the preset, before "set"
      "set": ["levels.source=synthetic"],      # --set style overrides of the preset
      "axes": {"faults.rate": [0, 0.005, 0.01, 0.02]},
                                               # sweep axes: SimConfig key path -> values; several
                                               #   axes are crossed (cartesian product); each
                                               #   axis is plotted against the others held fixed
      "tasks": ["sst2"],                       # GLUE tasks, or "digits" (nn.smallnets' CNN)
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
is checked (the whole product is built) before anything runs. A method is a bundle of overrides
and, for the fault-protection schemes, a protection (below); any other callable
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

import dataclasses
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from device.config import Config, ConfigError, apply_overrides, check_int_range, config, read_json_file
from device.errors import UserError
from nn.sim import PRESETS, SimConfig, get_preset

__all__ = ["StudySpec", "StudyDirError", "load_spec", "study_points", "plan_study", "run_study", "study_rows",
           "check_study_dir", "plot_study"]


#: rows one study may plan (each a pass over a dev split)
MAX_STUDY_ROWS = 1_000_000


class StudyDirError(UserError):
    """A study directory that holds another study (its ``study.json`` records another spec)."""


@config
class StudySpec(Config):
    """A study: tasks x methods x the product of the sweep axes, ``trials`` chips per point (see
    the module docstring). Built from JSON with :meth:`from_dict` / :func:`load_spec` and
    validated like every config (unknown keys, types, ranges); every sim config of the product
    is built at construction, so a bad axis key or value fails before anything runs."""

    #: free text, used in plot titles
    name: str = "study"
    #: fine-tuned classifier directory or hub id, or {task: model}; "cache:NAME" is
    #: nn.models.finetuned_model_dir(NAME); --model on the command line overrides it
    model: str | dict[str, str] | None = None
    #: local GLUE directory (null: $GLUE_DIR, else the hub); --glue-dir overrides it
    glue_dir: str | None = None
    #: a key of nn.sim.PRESETS
    preset: str = "default"
    #: sim config fields from a JSON file put over the preset, before "set" (all or some, nested
    #: as `eval --show-config` prints them; device.config.load_config_file); --preset-file overrides
    preset_file: str | None = None
    #: --set style overrides of the preset, e.g. ["levels.source=synthetic"]
    set: tuple[str, ...] = ()
    #: sweep axes, SimConfig key path -> values; several axes are crossed (cartesian product)
    axes: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    #: GLUE task names, or "digits" (a small-net CNN, nn.smallnets)
    tasks: tuple[str, ...] = ()
    #: method name -> overrides (applied after "set", before the axis values); "protection.*"
    #: overrides and names of nn.protect.PROTECTION_METHODS select a protection
    methods: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=lambda: {"baseline": ()})
    #: chips per point (trial t is programmed from numpy default_rng([seed, t]))
    trials: int = 1
    #: seed of the chips
    seed: int = 0
    #: stratified dev subset per task; null = all
    max_examples: int | None = None
    #: tokens per example
    max_length: int = 128
    #: examples per forward pass
    batch_size: int = 64

    def __post_init__(self) -> None:
        from nn.glue import get_task
        from nn.protect import method_protection
        from nn.smallnets import TASKS as SMALLNET_TASKS

        if not isinstance(self.name, str):
            raise ConfigError(f"name={self.name!r} is invalid: must be a string")
        m = self.model
        if not (m is None or isinstance(m, str) or (
                isinstance(m, dict) and m and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()))):
            raise ConfigError(f"model={m!r} is invalid: must be a path or hub id, or {{task: model}}")
        if self.glue_dir is not None and not isinstance(self.glue_dir, str):
            raise ConfigError(f"glue_dir={self.glue_dir!r} is invalid: must be a path or null")
        if self.preset not in PRESETS:
            raise ConfigError(f"preset={self.preset!r} is invalid: unknown preset; known: {', '.join(PRESETS)}")
        if self.preset_file is not None and not isinstance(self.preset_file, str):
            raise ConfigError(f"preset_file={self.preset_file!r} is invalid: must be a path or null")
        _strings("set", self.set)
        axes = self.axes
        if not isinstance(axes, dict) or not axes:
            raise ConfigError("axes must be a non-empty object {\"key.path\": [values, ...]}")
        for k, v in axes.items():
            if not isinstance(v, (list, tuple)) or not v:
                raise ConfigError(f"axes[{k!r}] must be a non-empty list of values")
        object.__setattr__(self, "axes", {str(k): tuple(v) for k, v in axes.items()})
        if not isinstance(self.tasks, tuple) or not self.tasks:
            raise ConfigError("tasks must be a non-empty list of GLUE task names")
        # GLUE tasks, or the small nets' own (nn.smallnets.TASKS: "digits")
        object.__setattr__(self, "tasks", tuple(t if t in SMALLNET_TASKS else get_task(t).name for t in self.tasks))
        methods = self.methods
        if not isinstance(methods, dict) or not methods:
            raise ConfigError("methods must be a non-empty object {name: [overrides]}")
        for k, v in methods.items():
            _strings(f"methods[{k!r}]", v)
        object.__setattr__(self, "methods", {str(k): tuple(v) for k, v in methods.items()})
        from nn.evaluate import MAX_TRIALS

        check_int_range("trials", self.trials, 0, MAX_TRIALS)
        check_int_range("seed", self.seed, 0)
        if self.max_examples is not None:
            check_int_range("max_examples", self.max_examples, 1)
        check_int_range("max_length", self.max_length, 8)
        check_int_range("batch_size", self.batch_size, 1)
        n_rows = study_points(self)  # arithmetic: before a single point or row is built
        n_configs = math.prod(len(v) for v in self.axes.values()) * len(self.methods)
        if n_configs > MAX_STUDY_ROWS:
            raise ConfigError(f"the study sweeps {n_configs} configurations (methods x the product of the axes); a "
                              f"study holds at most {MAX_STUDY_ROWS}")
        if n_rows > MAX_STUDY_ROWS:
            raise ConfigError(f"the study has {n_rows} rows (tasks x methods x (1 + points x trials)); a study holds at "
                              f"most {MAX_STUDY_ROWS}: each row is a pass over a dev split")
        # protection bundles / protection.* overrides, checked now like the sim configs
        object.__setattr__(self, "_protections", {k: method_protection(k, v) for k, v in self.methods.items()})
        # build every config now: a bad key or value fails before anything runs
        object.__setattr__(self, "_points", self._build_points())

    @property
    def overrides(self) -> list[str]:
        """The ``set`` overrides as a list."""
        return list(self.set)

    @property
    def data(self) -> dict[str, Any]:
        """The spec as a JSON-able dict (written to ``<out>/study.json``)."""
        return json.loads(json.dumps(self.to_dict()))

    def base(self, method: str) -> SimConfig:
        sim = [o for o in self.methods[method] if not o.startswith("protection.")]
        return apply_overrides(self.preset_config(), self.overrides + sim)

    def preset_config(self) -> SimConfig:
        """The preset with the preset file's fields over it (before ``set``)."""
        cfg = get_preset(self.preset)
        if self.preset_file is None:
            return cfg
        from device.config import load_config_file

        return load_config_file(self.preset_file, cfg)

    def protection(self, method: str) -> Any:
        """The method's ``mapping.protection.ProtectionConfig``, or None for a plain method."""
        return self._protections[method]  # type: ignore[attr-defined]

    def _build_points(self) -> list[tuple[str, dict[str, Any], SimConfig]]:
        out = []
        keys = list(self.axes)
        for method in self.methods:
            base = self.base(method)
            for combo in itertools.product(*(self.axes[k] for k in keys)):
                point = dict(zip(keys, combo))
                sets = [f"{k}={json.dumps(v)}" for k, v in point.items()]
                out.append((method, point, apply_overrides(base, sets)))
        return out

    def points(self) -> list[tuple[str, dict[str, Any], SimConfig]]:
        """``(method, {axis: value}, sim_cfg)`` for the whole product, in run order."""
        return list(self._points)  # type: ignore[attr-defined]

    def model_for(self, task: str, override: str | None = None) -> str:
        m = override if override is not None else self.model
        if isinstance(m, dict):
            if task not in m:
                raise ConfigError(f"study spec: model has no entry for task {task!r}")
            m = m[task]
        if m is None:
            raise ConfigError("study spec gives no model; add \"model\" to the spec or pass --model")
        m = str(m)
        if m.startswith("cache:"):
            from nn.models import finetuned_model_dir

            return str(finetuned_model_dir(m[len("cache:"):]))
        return m


def _strings(what: str, v: Any) -> None:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{what} must be a list of \"key=value\" strings")


def load_spec(path: str | os.PathLike) -> StudySpec:
    """Read and validate a study spec JSON file."""
    p = Path(path)
    data = read_json_file(p, "study spec")
    try:
        return StudySpec.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def study_points(spec: StudySpec) -> int:
    """Number of evaluation rows the study writes (digital rows included)."""
    n_pts = math.prod(len(v) for v in spec.axes.values())
    return len(spec.tasks) * len(spec.methods) * (1 + n_pts * spec.trials)



def _check_targets(model_dir: Any, task: str, cfgs: list[SimConfig]) -> None:
    """Before any row: every config's ``target_modules`` / ``exclude_modules`` select at least one
    module of the model (:func:`nn.crossbar_linear.select_modules`, a ``UserError`` naming the
    model's supported modules otherwise). Loads the model once, on the CPU."""
    from nn.crossbar_linear import select_modules
    from nn.models import load_classifier
    from nn.smallnets import is_smallnet_dir, load_model

    pairs = {(tuple(c.target_modules), tuple(c.exclude_modules)): c for c in cfgs}
    if not pairs:
        return
    if is_smallnet_dir(model_dir):  # the toolkit's own CNN / LSTM (nn.smallnets)
        net = load_model(model_dir)[0]
    else:
        net, _tok = load_classifier(model_dir, None, task=task, require_finetuned=True)
    for cfg in pairs.values():
        select_modules(net, cfg)

def plan_study(
    spec: StudySpec,
    *,
    model: str | None = None,
    glue_dir: str | os.PathLike | None = None,
    prepare: dict[str, Callable[[Any, SimConfig], None]] | None = None,
    num_threads: int | None = None,
    device: str = "cpu",
) -> list[Any]:
    """Every row of ``spec`` as a :class:`nn.executor.RowTask`, in run order (per GLUE task and
    method: the digital row, then the chips of each point), keyed by content. Checks every config
    (tables and one chip tile, :func:`nn.evaluate.check_sim_config`) and every protection (masks beside the model) first."""
    from nn.evaluate import check_sim_config
    from nn.executor import Source, plan_rows, source_digests, task_threads

    gd = glue_dir if glue_dir is not None else spec.glue_dir
    if gd is None:
        from nn.glue import default_glue_dir

        gd = default_glue_dir()
    points = spec.points()
    if spec.trials:
        for _m, _p, cfg in points:
            check_sim_config(cfg)
    tasks = []
    checked_models: set[str] = set()
    for task in spec.tasks:
        m = spec.model_for(task, model)
        if spec.trials and str(m) not in checked_models:
            _check_targets(m, task, [cfg for _m, _p, cfg in points])
            checked_models.add(str(m))
        model_sha, data_sha = source_digests(m, task, "dev", gd)
        src = Source(m, task, "dev", None if gd is None else str(gd), spec.max_examples, spec.max_length,
                     spec.batch_size, device, task_threads(num_threads), model_sha, data_sha)
        seen_digital: set[str] = set()
        for method, point, cfg in points:
            hook = (prepare or {}).get(method)
            prot = spec.protection(method)
            if hook is None and prot is not None and prot.prune:
                from nn.protect import masks_for

                masks_for(m)  # the masks must be there before anything runs
            tasks += plan_rows(src, method, cfg, spec.trials, spec.seed, protection=None if hook else prot,
                               prepare=hook, digital=method not in seen_digital, point=point)
            seen_digital.add(method)
    return tasks


def check_study_dir(spec: StudySpec, out_dir: str | os.PathLike) -> None:
    """Raise :class:`StudyDirError` unless ``out_dir`` is new, holds no ``study.json``, or holds
    this very spec's (a rerun resumes). Read-only."""
    rec = Path(out_dir) / "study.json"
    if not rec.is_file():
        return
    try:
        old = json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StudyDirError(f"{rec} cannot be read as a study spec ({exc}); it was left untouched: choose another "
                            "--out or delete it") from None
    new = spec.data
    if old == new:
        return
    if not isinstance(old, dict):
        raise StudyDirError(f"{rec} is not a study spec; it was left untouched: choose another --out or delete it")
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise StudyDirError(
        f"{Path(out_dir)} holds another study (its study.json differs in {', '.join(diff)}); rows of two specs are never "
        "mixed: choose another --out (to extend a study, copy its results.csv into the new directory: rows are keyed "
        "by content and are reused)"
    )


def study_rows(spec: StudySpec, csv_path: str | os.PathLike, *, tasks: list[Any] | None = None,
               model: str | None = None, glue_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The rows of ``csv_path`` that belong to ``spec`` with today's content: those whose key
    ``(config_hash, trial, seed)`` is one of the planned rows (``tasks`` from :func:`plan_study`,
    planned here when None, with ``model`` / ``glue_dir`` as the run used). Rows of an earlier
    model, data set, table or toolkit version, and of another spec, are left out."""
    from nn.evaluate import read_results

    if tasks is None:
        tasks = plan_study(spec, model=model, glue_dir=glue_dir)
    want = {t.row_id for t in tasks}
    return [r for r in read_results(csv_path) if (r["config_hash"], r["trial"], r["seed"]) in want]


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
    executor: str = "serial",
    workers: int | None = None,
    address: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run every point of ``spec`` into ``<out_dir>/results.csv`` (resumable) and draw the plots.

    Before any work: the output directory (:func:`device.io.check_output_dir`), the results file, every
    table and every protection are checked, and every row is keyed (:func:`plan_study`). Then
    the missing rows run on ``executor`` (``"serial"`` or ``"dask"``, :mod:`nn.executor`;
    ``workers`` local processes, or the cluster at ``address``); the driver writes each row as
    it arrives. ``stop_after_rows``: stop after that many new rows (rerun to continue; plots
    are drawn from what is there). ``prepare``: ``{method: fn(model, sim_cfg)}`` hooks run after
    patching (with Dask they are pickled to the workers). Returns ``{"csv": path, "plots":
    [paths], "written": n, "complete": bool, "rows": the rows of this spec and content}``.
    Another study's directory is refused (:func:`check_study_dir`); a run that fails before its
    first row leaves nothing behind.
    """
    from device.io import atomic_write_text, check_output_dir
    from nn.evaluate import ResultsFile, format_summary, summarize
    from nn.executor import check_executor, run_tasks

    check_executor(executor, workers, address)
    out = check_output_dir(out_dir)
    csv_path = out / "results.csv"
    if out.is_dir():
        ResultsFile(csv_path)  # a foreign file is refused before any work
        check_study_dir(spec, out)  # so is another study's directory
    tasks = plan_study(spec, model=model, glue_dir=glue_dir, prepare=prepare, num_threads=num_threads, device=device)
    made_dir = not out.exists()
    rec = out / "study.json"
    made_rec = not rec.exists()
    had_csv = csv_path.exists()
    out.mkdir(exist_ok=True)  # one level: its parent was checked to exist
    res = ResultsFile(csv_path)
    lock_existed = res.lock_path.exists()
    written = 0
    try:
        if made_rec:
            atomic_write_text(rec, json.dumps(spec.data, indent=2))
        written = run_tasks(tasks, res, executor=executor, workers=workers, address=address, progress=progress,
                            stop_after_rows=stop_after_rows)
    except BaseException:
        if not had_csv and not csv_path.exists():  # failed before its first row: leave nothing behind
            for p, made in ((rec, made_rec), (res.lock_path, not lock_existed)):
                if made:
                    p.unlink(missing_ok=True)
            if made_dir and not any(out.iterdir()):
                out.rmdir()
        raise
    res.refresh()
    complete = all(res.has(*t.row_id) for t in tasks)
    current = study_rows(spec, csv_path, tasks=tasks) if csv_path.exists() else []
    if progress and current:
        by_key: dict[str, list[dict[str, Any]]] = {}
        for r in current:
            by_key.setdefault(r["config_hash"], []).append(r)
        shown = set()
        digital_key = {(d.source, d.method): d.key for d in tasks if d.mode == "digital"}
        for t in tasks:
            if t.mode != "simulated" or t.key in shown:
                continue
            shown.add(t.key)
            sim = [r for r in by_key.get(t.key, []) if r["seed"] == spec.seed]
            dk = digital_key.get((t.source, t.method))
            dig = next((r for r in by_key.get(dk, []) if r["seed"] == spec.seed), None)
            summary = {
                "task": t.source.task, "method": t.method,
                "digital": None if dig is None else {c: dig[c] for c in _metrics(dig)},
                "simulated": {c: summarize(sim, c) for c in (_metrics(sim[0]) if sim else [])},
            }
            where = ", ".join(f"{k}={v}" for k, v in t.point)
            print(f"[{where}] {format_summary(summary)}", flush=True)
    plots = plot_study(spec, csv_path, out / "plots", rows=current) if plot and current else []
    return {"csv": csv_path, "plots": plots, "written": written, "complete": complete, "rows": current}


def _metrics(row: dict[str, Any]) -> list[str]:
    from nn.evaluate import METRIC_COLUMNS

    return [c for c in METRIC_COLUMNS if not math.isnan(row[c])]


def _get(d: dict[str, Any], path: str) -> Any:
    for p in path.split("."):
        d = d[p]
    return d


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    return float(v) if isinstance(v, (int, float)) else None


def plot_study(spec: StudySpec, csv_path: str | os.PathLike, plot_dir: str | os.PathLike,
               metric: str = "score", *, rows: list[dict[str, Any]] | None = None, model: str | None = None,
               glue_dir: str | os.PathLike | None = None) -> list[Path]:
    """One figure per task, sweep axis and value combination of the other axes, drawn by the one
    results plot (:func:`nn.plots.draw_panel`: mean of the chips with its 95 % confidence
    interval, n in the legend, one line per method, the digital and majority-class lines, the
    axis named from its field's documentation with its unit, log axes for rates and times).
    PNG and PDF. ``rows``: the rows to draw (default :func:`study_rows`: this spec's, with
    today's content)."""
    import hashlib
    import textwrap

    from device.plots import save_figure
    from nn.plots import draw_panel, figure, legend_below, row_value, same_value

    if rows is None:
        rows = study_rows(spec, csv_path, model=model, glue_dir=glue_dir)
    rows = [dict(r) for r in rows if r["seed"] == spec.seed]
    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    keys = list(spec.axes)
    for task in spec.tasks:
        trows = [r for r in rows if r["task"] == task]
        for axis in keys:
            others = [k for k in keys if k != axis]
            for fixed in itertools.product(*(spec.axes[k] for k in others)):
                fx = dict(zip(others, fixed))
                sel = [r for r in trows if r["mode"] == "digital"
                       or all(same_value(row_value(r, k), v) for k, v in fx.items())]
                if not any(r["mode"] == "simulated" for r in sel):
                    continue
                fig, [(ax, box)] = figure(1)
                draw_panel(ax, sel, axis, metric=metric, task=task)
                title = f"{spec.name}: {task}"
                if fx:
                    title += " (" + ", ".join(f"{k}={v}" for k, v in fx.items()) + ")"
                ax.set_title("\n".join(textwrap.wrap(title, 64)), fontsize=9)
                legend_below(ax, box)
                stem = f"{task}__{axis}" + "".join(f"__{k}={v}" for k, v in fx.items())
                stem = "".join(c if c.isalnum() or c in "._=-" else "_" for c in stem)
                if len(stem) > 120:  # many fixed axes: a name the file system takes, still unique
                    stem = stem[:100] + "__" + hashlib.sha256(stem.encode()).hexdigest()[:12]
                written += save_figure(fig, plot_dir / f"{stem}.png", dpi=150, formats=("png", "pdf"))
    return written


def fault_tolerance(
    csv_paths: list[str | os.PathLike] | str | os.PathLike,
    *,
    axis: str = "faults.rate",
    drop: float = 0.01,
    reference: str = "unprotected",
    metric: str = "score",
    rows: list[dict[str, Any]] | None = None,
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

    ``rows``: the rows of ``csv_paths`` (one file) to use, e.g. a study's :func:`study_rows`
    (default: every row of the files).

    Returns rows ``{task, method, fault_free, tolerated_rate, censored, ratio, points}``.
    """
    from nn.evaluate import read_results

    paths = [csv_paths] if isinstance(csv_paths, (str, os.PathLike, tuple)) else list(csv_paths)
    groups: dict[tuple[str, str], dict[float, list[float]]] = {}
    for item in paths:
        p, label = item if isinstance(item, tuple) else (item, None)
        for r in read_results(p) if rows is None else rows:
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
