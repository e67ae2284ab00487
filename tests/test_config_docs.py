"""One way to document a configuration field: a ``#:`` comment right above it (Sphinx reads it as
the attribute's documentation). Checked for every ``@config`` class of the toolkit."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re

import pytest

from device.config import Config

pytest.importorskip("torch")


def _config_classes() -> list[type]:
    found: dict[str, type] = {}
    for pkg in ("device", "crossbar", "mapping", "nn"):
        root = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(root.__path__, pkg + "."):
            mod = importlib.import_module(info.name)
            for obj in vars(mod).values():
                if inspect.isclass(obj) and issubclass(obj, Config) and obj is not Config and obj.__module__ == mod.__name__:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def test_every_config_field_has_a_hash_colon_comment():
    classes = _config_classes()
    assert len(classes) >= 10  # the walk found the toolkit's configs
    undocumented = []
    for cls in classes:
        lines = inspect.getsource(cls).split("\n")
        for f in dataclasses.fields(cls):
            at = next((i for i, line in enumerate(lines) if re.match(rf"^    {f.name}\s*:", line)), None)
            if at is None or not lines[at - 1].strip().startswith("#:"):
                undocumented.append(f"{cls.__module__}.{cls.__name__}.{f.name}")
            elif at + 1 < len(lines) and lines[at + 1].strip().startswith(('"""', "'''")):
                undocumented.append(f"{cls.__module__}.{cls.__name__}.{f.name} (also an attribute docstring)")
    assert not undocumented, "fields without a '#:' comment above them: " + ", ".join(undocumented)
