"""The tables shipped with the toolkit, and how a table is found by name.

The shipped level, relaxation and IR-drop tables live in ``data/`` at the top of the repository
(``data/README.md`` says how each was made). A wheel installs that folder as the package
``reram_cosim_data`` (``pyproject.toml`` maps the package onto ``data/``), so the same names work
from a source checkout, from any working directory and from an installed wheel::

    LevelTable.load("levels_b2")                  # the shipped 2-bit write-verify levels
    RelaxationModel.load("relaxation_techB")
    IRDropTable.load("irdrop_default")

Rule (:func:`resolve_table`): an existing file is always read as given; otherwise a bare name
(no directory part, with or without ``.h5``) is the shipped table of that name.
"""

from __future__ import annotations

import os
from pathlib import Path

from device.errors import UserError

__all__ = ["DATA_PACKAGE", "data_dir", "shipped_tables", "shipped_table", "resolve_table"]

#: the import name of the installed data package (data/ of the repository)
DATA_PACKAGE = "reram_cosim_data"

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The folder of the shipped tables: ``data/`` of the source checkout this package is
    imported from, else the installed ``reram_cosim_data`` package."""
    local = _SOURCE_ROOT / "data"
    if (_SOURCE_ROOT / "pyproject.toml").is_file() and local.is_dir():
        return local
    from importlib.resources import files

    try:
        return Path(str(files(DATA_PACKAGE)))
    except ModuleNotFoundError as e:  # an install without its data: a broken install, not user input
        raise RuntimeError(f"the shipped tables are missing: neither {local} nor the package {DATA_PACKAGE}") from e


def shipped_tables() -> list[str]:
    """The names of the shipped tables (file stems of ``data/*.h5``), sorted."""
    return sorted(p.stem for p in data_dir().glob("*.h5"))


def shipped_table(name: str) -> Path:
    """The path of the shipped table ``name`` (``"levels_b2"`` or ``"levels_b2.h5"``)."""
    stem = name[:-3] if name.endswith(".h5") else name
    path = data_dir() / f"{stem}.h5"
    if not path.is_file():
        raise UserError(f"no shipped table named {name!r}; shipped: {', '.join(shipped_tables())}")
    return path


def resolve_table(path_or_name: str | os.PathLike) -> Path:
    """A table argument as a path: an existing file as given; a bare name that is not a file
    here (``"levels_b2"``) the shipped table of that name; anything else as given (the loader
    then reports the missing file)."""
    path = Path(path_or_name)
    if path.exists() or len(path.parts) != 1 or str(path) in ("", ".", ".."):
        return path
    stem = path.name[:-3] if path.name.endswith(".h5") else path.name
    shipped = data_dir() / f"{stem}.h5"
    return shipped if shipped.is_file() else path
