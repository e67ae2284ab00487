"""The layering of the code base (CONTRIBUTING.md, "Layout"): imports point down the chain only.

``device`` -> ``crossbar`` -> ``mapping`` -> ``nn`` -> ``cli``. A module may import its own
package and the packages to its left, never one to its right; this reads every import statement
of every module (the ones inside functions too, which is where a heavy or upward import would
hide) with :mod:`ast`, so it fails on an upward import before anything runs it. It also refuses
imports of another module's private (``_underscore``) names across modules, and import cycles
between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("device", "crossbar", "mapping", "nn", "cli")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in LAYERS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(line, module, names)`` of every import statement in the file (absolute modules;
    relative imports resolved against the file's package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append((node.lineno, a.name, ()))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = path.relative_to(ROOT).with_suffix("").parts[:-1]
                base = package[: len(package) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.append((node.lineno, mod, tuple(a.name for a in node.names)))
    return out


def _layer(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def test_every_layer_is_found():
    for pkg in LAYERS:
        assert pkg in MODULES, f"package {pkg}/ is missing"
    assert len(MODULES) > 40


@pytest.mark.parametrize("pkg", LAYERS)
def test_no_import_from_a_higher_layer(pkg):
    bad = []
    for name, path in MODULES.items():
        if name.split(".")[0] != pkg:
            continue
        own = _layer(name)
        for line, mod, _ in _imports(path):
            other = _layer(mod)
            if other is not None and other > own:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_no_private_names_across_modules():
    bad = []
    for name, path in MODULES.items():
        for line, mod, names in _imports(path):
            if _layer(mod) is None or mod == name:
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}.{n}")
            if any(part.startswith("_") and not part.startswith("__") for part in mod.split(".")):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports private module {mod}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _, mod, names in _imports(path):
            targets = [mod] + [f"{mod}.{n}" for n in names]
            for t in targets:
                if t in MODULES and t != name:
                    graph[name].add(t)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other through imports (strongly connected components
    with more than one module; a package's ``__init__`` re-exporting its modules is not one)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    names = sorted(graph)
    ix = {n: i for i, n in enumerate(names)}
    edges = [(ix[a], ix[b]) for a in names for b in graph[a]]
    rows, cols = zip(*edges) if edges else ((), ())
    adj = coo_matrix(([1] * len(rows), (rows, cols)), shape=(len(names), len(names)))
    _, label = connected_components(adj, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for n, lab in zip(names, label):
        if n not in LAYERS:
            groups.setdefault(int(lab), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def test_no_import_cycles_between_modules():
    """No two modules import each other, directly or around a longer loop (imports inside
    functions count: a cycle there is the same tangle, only deferred)."""
    cycles = import_cycles(_graph())
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_planted_bad_imports(tmp_path):
    """The checks above can fail: a planted upward import inside a function and a planted private
    import are found."""
    pkg = tmp_path / "crossbar"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("def f():\n    from nn.sim import SimConfig\n    from device.io import _tmp\n")
    found = _imports(pkg / "bad.py")
    assert (2, "nn.sim", ("SimConfig",)) in found
    assert _layer("nn.sim") > _layer("crossbar.bad")
    assert any(n.startswith("_") for _, _, names in found for n in names)
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
