"""Self-describing HDF5 tables: the one module that reads and writes the project's data files.

Every file the toolkit writes (I-V sweeps, level distributions, fault maps, circuit solutions,
IR-drop tables) goes through :func:`write_table` and comes back through :func:`read_table`, which
always calls :func:`validate` first. The layout follows the openPMD habit of files that describe
themselves:

Root attributes
    ``schema_version`` (``"MAJOR.MINOR"``; a different MAJOR is refused), ``software``
    (``"reram-cosim"``), ``software_version``, ``created`` (ISO 8601 UTC), ``kind`` (what the file
    holds, a key of :data:`SCHEMAS`), ``config_json`` (the full configuration that produced it), and
    for SPICE-derived data ``ngspice_version`` plus the netlist text (dataset ``netlist`` with its
    ``sha256`` attribute).
Datasets
    Every dataset has a ``units`` attribute (SI; ``"1"`` for dimensionless, ``"index"`` for
    integer labels). Every axis is its own dataset, attached to the data as an HDF5 dimension scale,
    so ``h5py``, ``h5dump`` or any HDF5 viewer shows which vector labels which dimension.
Groups
    Names may contain ``/``: ``"bits2/g_s"`` lives in group ``bits2``. A group may carry its own
    ``kind`` attribute when a file bundles several tables (e.g. one level table per bits/cell).

Files are written to a temporary file in the target directory and renamed into place, so an
interrupted write never leaves a truncated table under the final name. An existing file is
replaced only when it is a reram-cosim table of the same kind (:func:`check_out`, the output
rule of every ``--out``).
"""

from __future__ import annotations

from device.errors import UserError
from device.io import atomic_path, software_version  # noqa: F401  (re-exported: the one writer and version)

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "Array",
    "Table",
    "TableError",
    "SCHEMA_VERSION",
    "SOFTWARE",
    "SCHEMAS",
    "ARRAY_SPECS",
    "VALUE_CHECKS",
    "G_WINDOW_S",
    "MAX_LEVEL_CELLS",
    "MAX_DATASET_VALUES",
    "write_table",
    "read_table",
    "check_out",
    "foreign_reason",
    "validate",
    "inspect",
    "software_version",
    "atomic_path",
]

SCHEMA_VERSION = "1.0"
SOFTWARE = "reram-cosim"

#: kind -> names of the arrays that a table of that kind must hold (paths relative to the table's
#: group). A group of a bundle is checked against the schema of its own ``kind`` attribute.
SCHEMAS: dict[str, tuple[str, ...]] = {
    "iv": ("t_s", "v_v", "i_a", "gap_m"),
    "pulse": ("t_s", "v_v", "i_a", "gap_m", "r_read_ohm"),
    "levels": ("level", "g_target_s", "g_s", "r_ohm", "pulses"),
    "faults": ("fault_map",),
    "circuit_solve": ("g_s", "v_in_v", "i_out_a"),
    "irdrop": ("r_wire_ohm", "size", "rms_error_fullscale"),
    "relaxation": ("g0_bin_s", "time_s", "quantile_p", "dg_quantile_s"),
    "bundle": (),
}

#: kind -> {required array: (units, must be finite)}: what :func:`validate` checks of the arrays
#: :data:`SCHEMAS` requires. Units are the SI symbols the writers store (``"1"`` dimensionless,
#: ``"index"`` integer labels); "finite" means no NaN or infinity anywhere in the dataset.
ARRAY_SPECS: dict[str, dict[str, tuple[str, bool]]] = {
    "iv": {"t_s": ("s", True), "v_v": ("V", True), "i_a": ("A", True), "gap_m": ("m", True)},
    "pulse": {"t_s": ("s", True), "v_v": ("V", True), "i_a": ("A", True), "gap_m": ("m", True),
              "r_read_ohm": ("ohm", True)},
    "levels": {"level": ("index", True), "g_target_s": ("S", True), "g_s": ("S", True), "r_ohm": ("ohm", True),
               "pulses": ("1", True)},
    "faults": {"fault_map": ("index", True)},
    "circuit_solve": {"g_s": ("S", True), "v_in_v": ("V", True), "i_out_a": ("A", True)},
    "irdrop": {"r_wire_ohm": ("ohm", True), "size": ("1", True), "rms_error_fullscale": ("1", True)},
    "relaxation": {"g0_bin_s": ("S", True), "time_s": ("s", True), "quantile_p": ("1", True),
                   "dg_quantile_s": ("S", True)},
}

_ROOT_ATTRS = ("schema_version", "software", "software_version", "created", "kind", "config_json")

#: the conductances a table may hold, S: 1 pS (1 TOhm) to 1 S (1 Ohm), decades wider than any
#: resistive-memory cell (the crossbar figures of docs/REFERENCES.md span 10 kOhm-1 MOhm);
#: anything outside is corrupt or in another unit (1e-300 S and 1e300 S were accepted once)
G_WINDOW_S = (1e-12, 1.0)
#: samples a level table may hold (levels x samples per level, and measured samples): bounds
#: the memory a file can ask for before a value is read (4 Mi x 16 levels, 512 MiB as float64)
MAX_LEVEL_CELLS = 1 << 26
#: values any one dataset may hold (2^30: 8 GiB as float64); larger is refused before reading
MAX_DATASET_VALUES = 1 << 30
#: values :func:`validate` reads at a time when it checks a dataset (bounded memory)
_SLAB_VALUES = 1 << 22


class TableError(UserError):
    """A file is not a valid reram-cosim table: foreign, truncated, wrong schema or incomplete."""


@dataclasses.dataclass(frozen=True)
class Array:
    """One dataset: values, SI units, and the names of the axis datasets labelling each dimension."""

    data: np.ndarray
    units: str
    dims: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.units, str):
            raise TypeError(f"units must be a string, got {self.units!r}")
        if self.dims and len(self.dims) != np.ndim(self.data):
            raise ValueError(f"dims {self.dims} do not match data with {np.ndim(self.data)} dimensions")


@dataclasses.dataclass(frozen=True)
class Table:
    """A validated table read back from disk."""

    path: Path
    kind: str
    attrs: dict[str, Any]
    config: dict[str, Any]
    arrays: dict[str, Array]
    netlist: str | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name].data

    def group(self, prefix: str) -> dict[str, Array]:
        """Arrays under group ``prefix`` with the prefix stripped."""
        p = prefix.rstrip("/") + "/"
        return {k[len(p):]: v for k, v in self.arrays.items() if k.startswith(p)}


def _config_json(config: Any) -> str:
    if config is None:
        return "{}"
    if hasattr(config, "to_json"):
        return config.to_json()
    return json.dumps(config, sort_keys=True, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"cannot store {type(o).__name__} in config_json")


def _set_attr(obj: Any, key: str, value: Any) -> None:
    if isinstance(value, (dict, list, tuple)) and not (
        isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value)
    ):
        value = json.dumps(value, default=_json_default)
    obj.attrs[key] = value


def foreign_reason(path: str | os.PathLike, kind: str) -> str | None:
    """Why the existing file ``path`` may not be replaced by a ``kind`` table (None: it may, being
    a reram-cosim table of that kind): the output rule of ``--out`` (:func:`device.io.check_replace`)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            software, file_kind = _s(f.attrs.get("software", "")), _s(f.attrs.get("kind", ""))
    except Exception:  # noqa: BLE001 - any file h5py cannot open is not one of our tables
        return "is not a reram-cosim table (not a readable HDF5 file)"
    if software != SOFTWARE:
        return f"is not a reram-cosim table (written by {software or 'another program'})"
    if file_kind != kind:
        return f"holds a {file_kind!r} table, not the {kind!r} table this writes"
    return None


def check_out(path: str | os.PathLike, kind: str) -> Path:
    """Refuse, before any work, an output path a ``kind`` table cannot be written to: one
    :func:`device.io.check_writable` refuses, or an existing file that is not a reram-cosim table
    of that kind (:func:`foreign_reason`). Returns ``Path(path)``."""
    from device.io import check_replace

    return check_replace(path, lambda p: foreign_reason(p, kind), f"{kind} table")


def write_table(
    path: str | os.PathLike,
    *,
    kind: str,
    arrays: Mapping[str, Array],
    config: Any = None,
    attrs: Mapping[str, Any] | None = None,
    group_kinds: Mapping[str, str] | None = None,
    netlist: str | None = None,
    ngspice_version: str | None = None,
) -> Path:
    """Write a self-describing table atomically and return its path.

    Parameters
    ----------
    kind:
        A key of :data:`SCHEMAS`; the required arrays of that kind must be present.
    arrays:
        ``name -> Array``; names may contain ``/`` for groups. An axis is an Array whose name is
        listed in another array's ``dims``; it is looked up in the same group first, then at the
        root. A dim naming no array gets an integer index axis (``units="index"``) automatically.
    config:
        The full configuration (a :class:`device.config.Config` or a JSON-able dict).
    group_kinds:
        ``group -> kind`` for bundles: each such group is validated against its own schema.
    netlist, ngspice_version:
        Provenance for SPICE-derived data: stored as dataset ``netlist`` (with ``sha256``) and
        root attribute ``ngspice_version``.
    """
    import h5py

    if kind not in SCHEMAS:
        raise TableError(f"unknown table kind {kind!r}; known: {', '.join(sorted(SCHEMAS))}")
    check_out(path, kind)  # a foreign file, or another kind of table, is never replaced
    group_kinds = dict(group_kinds or {})
    for g, k in group_kinds.items():
        if k not in SCHEMAS:
            raise TableError(f"group {g!r}: unknown table kind {k!r}")
    _check_required(kind, "", set(arrays), where="root")
    for g, k in group_kinds.items():
        prefix = g.rstrip("/") + "/"
        _check_required(k, prefix, set(arrays), where=f"group {g!r}")

    with atomic_path(path, ".h5") as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["software"] = SOFTWARE
            f.attrs["software_version"] = software_version()
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            f.attrs["kind"] = kind
            f.attrs["config_json"] = _config_json(config)
            if ngspice_version is not None:
                f.attrs["ngspice_version"] = str(ngspice_version)
            for k, v in (attrs or {}).items():
                _set_attr(f, k, v)
            if netlist is not None:
                ds = f.create_dataset("netlist", data=netlist, dtype=h5py.string_dtype())
                ds.attrs["units"] = "text"
                ds.attrs["sha256"] = hashlib.sha256(netlist.encode()).hexdigest()
            for g, k in group_kinds.items():
                f.require_group(g).attrs["kind"] = k

            axis_names = _axis_names(arrays)
            # axes first, so that data can attach them
            for name in sorted(axis_names, key=lambda n: n.count("/")):
                if name in arrays:
                    _create(f, name, arrays[name])
            for name, arr in arrays.items():
                if name not in axis_names:
                    _create(f, name, arr)
            for name, arr in arrays.items():
                if not arr.dims:
                    continue
                ds = f[name]
                for i, dim in enumerate(arr.dims):
                    axis = _resolve_axis(name, dim, arrays)
                    if axis is None:
                        axis = _group_of(name) + dim
                        if axis not in f:
                            _create(f, axis, Array(np.arange(ds.shape[i]), "index"))
                    scale = f[axis]
                    if not scale.is_scale:
                        scale.make_scale(dim)
                    if scale.shape != (ds.shape[i],):
                        raise TableError(
                            f"axis {axis} has shape {scale.shape} but {name} dimension {i} has {ds.shape[i]}"
                        )
                    ds.dims[i].attach_scale(scale)
                    ds.dims[i].label = dim
    return Path(path)


def _group_of(name: str) -> str:
    return name.rsplit("/", 1)[0] + "/" if "/" in name else ""


def _resolve_axis(name: str, dim: str, arrays: Mapping[str, Array]) -> str | None:
    local = _group_of(name) + dim
    if local in arrays:
        return local
    if dim in arrays:
        return dim
    return None


def _axis_names(arrays: Mapping[str, Array]) -> set[str]:
    out = set()
    for name, arr in arrays.items():
        for dim in arr.dims:
            a = _resolve_axis(name, dim, arrays)
            if a is not None and a != name:
                out.add(a)
    return out


def _create(f: Any, name: str, arr: Array) -> None:
    data = np.asarray(arr.data)
    kw = {}
    if data.size >= 4096 and data.dtype.kind in "fiub":
        # gzip is deterministic for identical bytes; shuffle improves float compression
        kw = dict(compression="gzip", compression_opts=4, shuffle=True)
    if data.dtype.kind == "U":
        import h5py

        ds = f.create_dataset(name, data=data.astype(object), dtype=h5py.string_dtype(), **kw)
    else:
        ds = f.create_dataset(name, data=data, **kw)
    ds.attrs["units"] = arr.units
    if arr.description:
        ds.attrs["description"] = arr.description


def _check_required(kind: str, prefix: str, names: set[str], where: str) -> None:
    missing = [prefix + r for r in SCHEMAS[kind] if prefix + r not in names]
    if missing:
        raise TableError(f"{where}: a {kind!r} table needs array(s) {', '.join(missing)}")


def validate(path: str | os.PathLike, kind: str | None = None) -> None:
    """Check that ``path`` is a complete reram-cosim table (of ``kind`` if given).

    Raises :class:`TableError` with one sentence for: a missing, unreadable, truncated or foreign
    file; a missing root attribute; a schema version with another major number; an unknown kind
    or a kind other than the one asked for; a required array missing; a dataset without ``units``;
    a dimension of a data array without an attached axis dataset; a required array whose
    ``units`` differ from :data:`ARRAY_SPECS` or that holds NaN or infinite values where the
    schema says it is finite; a dataset over :data:`MAX_DATASET_VALUES`; and what
    :data:`VALUE_CHECKS` asks of the kind (level tables: shapes, conductances within
    :data:`G_WINDOW_S`, finite statistics, stuck-cell conductances, read noise). Shapes are
    checked before values are read, and values are read in slabs. Every loader calls it
    (:func:`read_table`). An unknown ``kind`` is refused before the file is opened.
    """
    import h5py

    if kind is not None and kind not in SCHEMAS:
        raise TableError(f"unknown table kind {kind!r}; known: {', '.join(sorted(SCHEMAS))}")
    p = Path(path)
    if not p.exists():
        raise TableError(f"{p}: no such file")
    if not p.is_file():
        raise TableError(f"{p}: not a regular file")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise TableError(f"{p}: not a readable HDF5 file (foreign or truncated): {exc}") from None
    with f:
        try:
            for a in _ROOT_ATTRS:
                if a not in f.attrs:
                    if a == "software" or a == "schema_version":
                        raise TableError(f"{p}: not a reram-cosim table (root attribute {a!r} is missing)")
                    raise TableError(f"{p}: root attribute {a!r} is missing")
            if _s(f.attrs["software"]) != SOFTWARE:
                raise TableError(f"{p}: written by {_s(f.attrs['software'])!r}, not {SOFTWARE!r}")
            ver = _s(f.attrs["schema_version"])
            if ver.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
                raise TableError(
                    f"{p}: schema version {ver} is incompatible with this software's {SCHEMA_VERSION}"
                )
            file_kind = _s(f.attrs["kind"])
            if file_kind not in SCHEMAS:
                raise TableError(f"{p}: unknown table kind {file_kind!r}")
            if kind is not None and file_kind != kind and not _bundle_has(f, kind):
                raise TableError(f"{p}: holds a {file_kind!r} table, expected {kind!r}")
            try:
                json.loads(_s(f.attrs["config_json"]))
            except json.JSONDecodeError:
                raise TableError(f"{p}: config_json is not valid JSON") from None
            _check_group(p, f, file_kind, "")
            problems: list[str] = []

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group):
                    if "kind" in obj.attrs:
                        k = _s(obj.attrs["kind"])
                        if k not in SCHEMAS:
                            problems.append(f"group {name}: unknown kind {k!r}")
                        else:
                            try:
                                _check_group(p, obj, k, name + "/")
                            except TableError as exc:
                                problems.append(str(exc))
                    return
                if "units" not in obj.attrs:
                    problems.append(f"dataset {name} has no 'units' attribute")
                if name == "netlist" or obj.is_scale:
                    return
                for i in range(obj.ndim):
                    if len(obj.dims[i]) == 0:
                        problems.append(f"dataset {name} dimension {i} has no axis dataset")
                if obj.size > MAX_DATASET_VALUES:
                    problems.append(f"dataset {name} holds {obj.size} values, more than a table may hold ({MAX_DATASET_VALUES})")
                obj.id  # touch
                try:
                    if obj.size:
                        obj[(0,) * obj.ndim] if obj.ndim else obj[()]
                        obj[tuple(s - 1 for s in obj.shape)] if obj.ndim else None
                except Exception as exc:  # truncated data chunks
                    problems.append(f"dataset {name} cannot be read ({exc})")

            f.visititems(visit)
            if problems:
                raise TableError(f"{p}: " + problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        except TableError:
            raise
        except Exception as exc:  # corrupted metadata surfaces as assorted h5py errors
            raise TableError(f"{p}: corrupted HDF5 content ({type(exc).__name__}: {exc})") from None


def _bundle_has(f: Any, kind: str) -> bool:
    found = []

    def visit(name: str, obj: Any) -> None:
        if "kind" in getattr(obj, "attrs", {}) and _s(obj.attrs["kind"]) == kind:
            found.append(name)

    f.visititems(visit)
    return bool(found)


def _check_group(p: Path, g: Any, kind: str, prefix: str) -> None:
    missing = [r for r in SCHEMAS[kind] if r not in g]
    if missing:
        raise TableError(f"{p}: {kind!r} table {prefix or '/'} lacks array(s) {', '.join(missing)}")
    specs = ARRAY_SPECS.get(kind, {})
    for name, (units, _finite) in specs.items():  # metadata first: nothing is read yet
        if name not in g:
            continue
        ds = g[name]
        got = _s(ds.attrs.get("units", ""))
        if got != units:
            raise TableError(f"{p}: dataset {prefix}{name} has units {got!r}, the {kind!r} schema declares {units!r}")
        if ds.size > MAX_DATASET_VALUES:
            raise TableError(f"{p}: dataset {prefix}{name} holds {ds.size} values, more than a table may hold "
                             f"({MAX_DATASET_VALUES})")
    check = VALUE_CHECKS.get(kind)
    if check is not None:  # shapes, then values
        check(p, g, prefix)
    for name, (units, finite) in specs.items():
        if name not in g:
            continue
        ds = g[name]
        if finite and ds.dtype.kind in "fc" and ds.size:
            bad = sum(int(np.count_nonzero(~np.isfinite(a))) for a in _slabs(ds))
            if bad:
                raise TableError(f"{p}: dataset {prefix}{name} holds {bad} NaN or infinite value(s); it must be finite")


def _slabs(ds: Any):
    """The values of dataset ``ds`` in slabs along its first axis of about :data:`_SLAB_VALUES`
    (a file cannot make a check read it all at once)."""
    if ds.ndim == 0:
        yield np.asarray(ds[()])
        return
    per = max(1, ds.size // max(1, ds.shape[0]))
    step = max(1, _SLAB_VALUES // per)
    for i in range(0, ds.shape[0], step):
        yield ds[i : i + step]


def _levels_values(p: Path, g: Any, prefix: str) -> None:
    """What a level table must hold beyond its schema (:data:`VALUE_CHECKS`): shapes first (no
    value is read before they agree and are bounded), then every conductance finite and inside
    :data:`G_WINDOW_S`, level targets ascending, statistics finite, the stuck-cell conductances
    (``g_sa0_s``, ``g_sa1_s``), read noise and read voltage attributes valid."""
    where = f"{p}: level table {prefix or '/'}"
    L = int(g["g_target_s"].shape[0]) if g["g_target_s"].ndim == 1 else -1
    if L < 2 or L & (L - 1) or L > 256:
        raise TableError(f"{where}: g_target_s has shape {g['g_target_s'].shape}; it must hold 2**bits levels (2..256)")
    bits = g.attrs.get("bits_per_cell")
    if bits is not None and (_number(bits) is None or 2 ** int(_number(bits)) != L):
        raise TableError(f"{where}: bits_per_cell={_s(bits)} does not match its {L} levels")
    shape = g["g_s"].shape
    if len(shape) != 2 or shape[0] != L or shape[1] < 2:
        raise TableError(f"{where}: g_s has shape {shape}; it must be ({L}, samples >= 2)")
    if shape[0] * shape[1] > MAX_LEVEL_CELLS:
        raise TableError(f"{where}: g_s holds {shape[0] * shape[1]} samples, more than a level table may hold "
                         f"({MAX_LEVEL_CELLS})")
    for name in ("r_ohm", "pulses"):
        if g[name].shape != shape:
            raise TableError(f"{where}: {name} has shape {g[name].shape}, g_s has {shape}")
    per_level = ("g_mean_s", "g_std_s", "ln_mu", "ln_sigma", "ks_normal", "ks_lognormal", "n_samples", "g_mean_data_s",
                 "verify_half_window_s")
    per_boundary = ("readout_error_rate", "readout_error_rate_lognormal", "threshold_s", "readout_errors",
                    "readout_trials", "readout_error_empirical", "readout_error_ci_low", "readout_error_ci_high")
    for names, n in ((per_level, L), (per_boundary, L - 1)):
        for name in names:
            if name in g and g[name].shape != (n,):
                raise TableError(f"{where}: {name} has shape {g[name].shape}, expected ({n},)")
    if "g_measured_s" in g or "measured_level" in g:
        if "g_measured_s" not in g or "measured_level" not in g:
            raise TableError(f"{where}: g_measured_s and measured_level go together")
        m = g["g_measured_s"].shape
        if len(m) != 1 or g["measured_level"].shape != m or m[0] > MAX_LEVEL_CELLS:
            raise TableError(f"{where}: g_measured_s {m} and measured_level {g['measured_level'].shape} must be one "
                             f"1-d length of at most {MAX_LEVEL_CELLS}")
    # values: bounded by the shapes above
    lo, hi = G_WINDOW_S
    for name in ("g_target_s", "g_s", "g_measured_s"):
        if name not in g:
            continue
        nonfinite = sum(int(np.count_nonzero(~np.isfinite(a))) for a in _slabs(g[name]))
        if nonfinite:
            raise TableError(f"{p}: dataset {prefix}{name} holds {nonfinite} NaN or infinite value(s); it must be finite")
        for a in _slabs(g[name]):
            a = np.asarray(a, float)
            bad = (a < lo) | (a > hi)
            if bad.any():
                raise TableError(f"{where}: {name} holds {a[bad].flat[0]:g} S; conductances must lie within "
                                 f"[{lo:g}, {hi:g}] S (1 TOhm .. 1 Ohm)")
    t = np.asarray(g["g_target_s"][()], float)
    if np.any(np.diff(t) <= 0):
        raise TableError(f"{where}: g_target_s must be strictly ascending (level 0 = HRS)")
    for a in _slabs(g["r_ohm"]):
        if not np.all(np.isfinite(a) & (np.asarray(a) > 0)):
            raise TableError(f"{where}: r_ohm must be finite and > 0")
    for name in per_level + per_boundary:
        if name in g and g[name].dtype.kind in "fciu" and not np.all(np.isfinite(np.asarray(g[name][()], float))):
            raise TableError(f"{where}: statistic {name} holds NaN or infinite values")
    if "measured_level" in g:
        ml = g["measured_level"][()]
        if ml.size and (ml.min() < 0 or ml.max() >= L):
            raise TableError(f"{where}: measured_level must index levels 0..{L - 1}")
    for name in ("g_sa0_s", "g_sa1_s"):
        if name in g.attrs:
            v = _number(g.attrs[name])
            if v is None or not lo <= v <= hi:
                raise TableError(f"{where}: attribute {name}={_s(g.attrs[name])} must be a conductance within "
                                 f"[{lo:g}, {hi:g}] S")
    if "read_noise_rel" in g.attrs:
        v = _number(g.attrs["read_noise_rel"])
        if v is None or not 0.0 <= v <= 0.5:
            raise TableError(f"{where}: attribute read_noise_rel={_s(g.attrs['read_noise_rel'])} must be in [0, 0.5]")
    if "v_read_v" in g.attrs:
        v = _number(g.attrs["v_read_v"])
        if v is None or not 0.0 < v <= 10.0:
            raise TableError(f"{where}: attribute v_read_v={_s(g.attrs['v_read_v'])} must be a read voltage in (0, 10] V")


def _number(v: Any) -> float | None:
    """A finite real number from an HDF5 attribute, else None."""
    try:
        x = float(np.asarray(v).item())
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


#: kind -> check of a table's values beyond its schema, run by :func:`validate` (so by every loader)
VALUE_CHECKS: dict[str, Any] = {"levels": _levels_values}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_table(path: str | os.PathLike, kind: str | None = None) -> Table:
    """Validate ``path`` (see :func:`validate`) and read every array into memory."""
    import h5py

    validate(path, kind)
    arrays: dict[str, Array] = {}
    netlist = None
    with h5py.File(path, "r") as f:
        attrs = {k: _attr_value(v) for k, v in f.attrs.items()}

        def visit(name: str, obj: Any) -> None:
            nonlocal netlist
            if not isinstance(obj, h5py.Dataset):
                return
            if name == "netlist":
                netlist = _s(obj[()])
                return
            data = obj[()]
            if obj.dtype.kind == "O":
                data = np.array([_s(x) for x in np.ravel(data)]).reshape(obj.shape)
            dims = tuple(obj.dims[i].label or "" for i in range(obj.ndim)) if not obj.is_scale else ()
            arrays[name] = Array(
                data=data,
                units=_s(obj.attrs["units"]),
                dims=dims if all(dims) else (),
                description=_s(obj.attrs.get("description", "")),
            )

        f.visititems(visit)
    return Table(
        path=Path(path),
        kind=str(attrs["kind"]),
        attrs=attrs,
        config=json.loads(attrs["config_json"]),
        arrays=arrays,
        netlist=netlist,
    )


def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def inspect(path: str | os.PathLike) -> str:
    """Human-readable summary of a validated table: provenance, groups, arrays, shapes, units."""
    t = read_table(path)
    lines = [
        f"{t.path}: reram-cosim table, kind {t.kind!r}, schema {t.attrs['schema_version']}",
        f"  written by {t.attrs['software']} {t.attrs['software_version']} at {t.attrs['created']}",
    ]
    if "ngspice_version" in t.attrs:
        lines.append(f"  ngspice {t.attrs['ngspice_version']}; netlist stored ({len(t.netlist or '')} characters)")
    extra = {k: v for k, v in t.attrs.items() if k not in _ROOT_ATTRS and k != "ngspice_version"}
    for k, v in extra.items():
        lines.append(f"  attr {k} = {_short(v)}")
    if t.config:
        lines.append(f"  config: {_short(json.dumps(t.config, sort_keys=True), 200)}")
    lines.append("  arrays:")
    for name, a in t.arrays.items():
        d = np.asarray(a.data)
        dims = f" [{', '.join(a.dims)}]" if a.dims else ""
        stat = ""
        if d.dtype.kind in "fiu" and d.size:
            stat = f"  min {d.min():.4g} max {d.max():.4g}"
        lines.append(f"    {name:<32} {str(d.shape):<16} {d.dtype!s:<8} units={a.units}{dims}{stat}")
    return "\n".join(lines)


def _short(v: Any, n: int = 80) -> str:
    s = str(v)
    return s if len(s) <= n else s[: n - 3] + "..."
