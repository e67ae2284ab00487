"""Frozen, keyword-only configuration dataclasses shared by every layer.

Every physical or numerical setting of the toolkit lives in a ``@config`` dataclass: frozen,
keyword-only, SI units in the field names, validated in ``__post_init__`` with
:func:`check_range` and friends so that a bad value fails at construction with the field, the
value and the allowed range in the message.

Configs round-trip through plain dicts / JSON (:meth:`Config.to_dict`,
:meth:`Config.from_dict`) and accept dotted, type-checked overrides from the command line
(:func:`apply_overrides`, e.g. ``["programming.sigma_rel=0.05", "crossbar.adc_bits=6"]``).
Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

from device.errors import UserError

import dataclasses
import functools
import json
import math
import typing
from typing import Any, TypeVar

__all__ = [
    "Config",
    "ConfigError",
    "read_json_file",
    "load_config_file",
    "config",
    "check_range",
    "check_positive",
    "check_choice",
    "check_int_range",
    "apply_overrides",
    "override_dict",
    "field_doc",
    "field_path_doc",
]

C = TypeVar("C", bound="Config")


class ConfigError(UserError):
    """A configuration value or key is invalid. The message names the field and what is allowed."""


def read_json_file(path: Any, what: str) -> Any:
    """The parsed content of the JSON file ``path``; a :class:`ConfigError` naming it as ``what``
    (e.g. "study spec") when it is missing or not valid JSON."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{what} {p} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p} is not UTF-8 text (byte {exc.start}: {exc.reason}); JSON files are UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {p} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} {p} nests deeper than JSON can be read; a config nests at most {MAX_JSON_DEPTH} levels") from None
    if _json_depth(data) > MAX_JSON_DEPTH:
        raise ConfigError(f"{what} {p} nests more than {MAX_JSON_DEPTH} levels deep; a config nests at most {MAX_JSON_DEPTH}")
    return data


#: how deep a JSON config file may nest (the deepest config, a study spec with a method's
#: overrides, nests 3 levels)
MAX_JSON_DEPTH = 32


def _json_depth(data: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0) up to ``MAX_JSON_DEPTH + 1``, without recursion."""
    depth, stack = 0, [(data, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            depth = max(depth, d)
            if d > MAX_JSON_DEPTH:
                return d
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return depth


def config(cls):
    """Class decorator: a frozen, keyword-only dataclass deriving from :class:`Config`."""
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{name}={value!r} is invalid: must be {allowed}")


def check_range(
    name: str,
    value: float,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise :class:`ConfigError` unless ``lo <= value <= hi`` (open ends where asked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        _fail(name, value, "a real number")
    lo_s = "-inf" if lo is None else f"{lo:g}"
    hi_s = "inf" if hi is None else f"{hi:g}"
    allowed = f"in {'(' if lo_open else '['}{lo_s}, {hi_s}{')' if hi_open else ']'}"
    if lo is not None and (value < lo or (lo_open and value == lo)):
        _fail(name, value, allowed)
    if hi is not None and (value > hi or (hi_open and value == hi)):
        _fail(name, value, allowed)


def check_positive(name: str, value: float) -> None:
    """Raise unless ``value > 0`` and finite."""
    check_range(name, value, 0.0, None, lo_open=True)
    if math.isinf(value):
        _fail(name, value, "finite and > 0")


def check_int_range(name: str, value: int, lo: int, hi: int | None = None) -> None:
    """Raise unless ``value`` is an int in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, value, "an integer")
    if value < lo or (hi is not None and value > hi):
        _fail(name, value, f"an integer in [{lo}, {'inf' if hi is None else hi}]")


def check_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        _fail(name, value, "one of " + ", ".join(repr(c) for c in choices))


class Config:
    """Mixin for ``@config`` dataclasses: strict dict/JSON round trip and dotted overrides."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Config):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = [x.to_dict() if isinstance(x, Config) else x for x in v]
            out[f.name] = v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, _path: str = "") -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{_path or cls.__name__}: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(_path + k for k in unknown)} for {cls.__name__}; "
                f"known: {', '.join(sorted(names))}"
            )
        kwargs = {}
        for k, v in data.items():
            kwargs[k] = _coerce(hints[k], v, _path + k)
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Convert JSON-ish ``value`` to the annotated type ``tp``, strictly."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        return tp.from_dict(value, _path=path + ".")
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}={value!r} does not match {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}={value!r} is invalid: must be one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r} is invalid: expected a list")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{path}={value!r} is invalid: expected {len(args)} items")
            return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        return tuple(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}={value!r} is invalid: expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}={value!r} is invalid: expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}={value!r} is invalid: expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}={value!r} is invalid: expected a string")
        return value
    return value


def _parse_scalar(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value``: JSON first, else the bare string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text


def apply_overrides(cfg: C, overrides: typing.Iterable[str], *, flag: str = "--set") -> C:
    """Return ``cfg`` with dotted ``key=value`` overrides applied and re-validated.

    ``apply_overrides(cfg, ["programming.sigma_rel=0.05"])``; values are parsed as JSON
    (numbers, lists, booleans) or taken as strings, then converted to the field's annotated
    type. An unknown key or a value the field rejects raises :class:`ConfigError` naming it;
    ``flag`` is the command-line option the messages name (``--program-set`` ...).
    """
    return type(cfg).from_dict(override_dict(cfg.to_dict(), overrides, flag=flag, root=type(cfg).__name__))


def load_config_file(path: Any, base: C, *, what: str = "preset file") -> C:
    """``base`` with the fields of the JSON file ``path`` put over it, re-validated: the one
    ``--preset-file`` of every command (device model parameters, sim configs).

    The file holds a JSON object of the config's fields, nested as :meth:`Config.to_dict` (and
    ``--show-config``) writes them: all of them (a saved config) or some (the rest keep
    ``base``'s values, the ``--preset``). A file that wraps them as ``{"params": {...}}`` (``device
    calibrate pulses``) is read through the wrapper. An unknown key, a wrong type or a value out
    of range is a :class:`ConfigError` naming the file and the key."""
    data = read_json_file(path, what)
    if isinstance(data, dict) and isinstance(data.get("params"), dict):
        data = data["params"]
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a JSON object of {type(base).__name__} fields")

    def merge(into: dict[str, Any], new: dict[str, Any], where: str) -> None:
        for k, v in new.items():
            if k not in into:
                known = ", ".join(sorted(into))
                raise ConfigError(f"{what} {path}: unknown key {where + k!r}; known{' in ' + where[:-1] if where else ''}: {known}")
            if isinstance(into[k], dict) and isinstance(v, dict):
                merge(into[k], v, f"{where}{k}.")
            else:
                into[k] = v

    merged = base.to_dict()
    merge(merged, data, "")
    try:
        return type(base).from_dict(merged)
    except ConfigError as exc:
        raise ConfigError(f"{what} {path}: {exc}") from None


def override_dict(
    data: dict[str, Any], overrides: typing.Iterable[str], *, flag: str = "--set", root: str = "the config"
) -> dict[str, Any]:
    """A copy of ``data`` (a :meth:`Config.to_dict`) with dotted ``key=value`` overrides applied;
    values are parsed (JSON, else the bare string) but not yet type-checked: pass the result to
    :meth:`Config.from_dict`. An unknown key raises :class:`ConfigError` naming ``flag`` (and
    ``root`` for a top-level key)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected key=value")
        key, _, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        node = data
        for i, p in enumerate(parts):
            if not isinstance(node, dict) or p not in node:
                where = ".".join(parts[:i]) or root
                known = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
                raise ConfigError(f"{flag} {key}: unknown key {p!r} in {where}; known: {known}")
            if i == len(parts) - 1:
                node[p] = _parse_scalar(raw)
            else:
                node = node[p]
    return data


@functools.lru_cache(maxsize=256)
def field_doc(cls: type, name: str) -> str:
    """The ``#:`` comment above field ``name`` of config class ``cls`` (the one way fields are
    documented; ``tests/test_config_docs.py``), its lines joined; "" when there is none."""
    import inspect
    import re

    try:
        lines = inspect.getsource(cls).split("\n")
    except (OSError, TypeError):
        return ""
    at = next((i for i, line in enumerate(lines) if re.match(rf"^    {re.escape(name)}\s*:", line)), None)
    if at is None:
        return ""
    doc: list[str] = []
    i = at - 1
    while i >= 0 and lines[i].strip().startswith("#:"):
        doc.insert(0, lines[i].strip()[2:].strip())
        i -= 1
    return " ".join(doc)


def field_path_doc(cls: type, path: str) -> tuple[str, str] | None:
    """``(field name, #: doc)`` of the field a dotted ``path`` names below config class ``cls``
    (``"faults.rate"`` under ``SimConfig``), following the fields' config types; None when the
    path names no field."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        if i == len(parts) - 1:
            return part, field_doc(cls, part)
        sub = hints[part]
        cls = next((a for a in (typing.get_args(sub) or (sub,)) if isinstance(a, type) and dataclasses.is_dataclass(a)), None)
    return None
