"""The one place the toolkit writes files and names its own version.

Every file the toolkit writes (HDF5 tables, results CSVs, JSON reports, plots, checkpoints) goes
through :class:`atomic_path` (or the :func:`atomic_write_text` / :func:`atomic_write_bytes`
shortcuts): the data are written to a temporary file in the target directory, flushed and
fsync'ed, then renamed onto the target (``os.replace``, atomic on POSIX). A run that fails or is
killed leaves the previous file untouched and no partial file behind.

:func:`software_version` is the one version string recorded in tables and results keys.

The output rule of every ``--out`` (:func:`check_replace`): an existing file is replaced only when
it is this toolkit's output of the same kind (a results CSV with this toolkit's header, a table of
the same kind, a netlist or preset this toolkit wrote); anything else is refused and left
untouched. A path through a symbolic link writes the link's target and keeps the link.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from device.errors import UserError

__all__ = [
    "OutputPathError", "atomic_path", "atomic_write_text", "atomic_write_bytes", "software_version", "check_writable",
    "check_output_dir", "check_replace",
]

#: bytes :class:`atomic_path` adds to a file name for its temporary file, besides the suffix
#: again: a leading ".", "." and 8 random characters, ".tmp"
_TMP_EXTRA = 14


class OutputPathError(UserError):
    """An output path cannot be written (missing directory, not writable, is a directory)."""


def software_version() -> str:
    """The installed ``reram-cosim`` version, or ``"0+unknown"`` when running from a bare source tree."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return "0+unknown"
    try:
        return version("reram-cosim")
    except PackageNotFoundError:
        return "0+unknown"


def check_writable(path: str | os.PathLike) -> Path:
    """Raise :class:`OutputPathError` unless ``path`` can be created or replaced: its directory
    exists and is writable and ``path`` is not a directory. Never creates directories. Returns
    ``Path(path)``. Call it before any long work so that a bad ``--out`` fails first."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    name = len(os.fsencode(p.name))
    extra = _TMP_EXTRA + len(os.fsencode(p.suffix))  # ".", ".XXXXXXXX", the suffix again, ".tmp"
    name_max = _name_max(parent)
    if name + extra > name_max:
        raise OutputPathError(
            f"cannot write {str(p)[:60]}...: its file name is {name} bytes long; this file system takes names of at most "
            f"{name_max} bytes and the atomic write adds {extra} for its temporary file (so at most {name_max - extra})"
        )
    if p.is_dir():
        raise OutputPathError(f"cannot write {p}: it is a directory")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {p}: directory {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"cannot write {p}: the file is not writable")
    return p


def _name_max(directory: Path) -> int:
    """The longest file name (bytes) ``directory``'s file system takes (255 where unknown, or
    where the directory does not exist: the caller reports that)."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_replace(path: str | os.PathLike, foreign: Callable[[Path], str | None], what: str) -> Path:
    """The output rule of ``--out`` (module docstring): :func:`check_writable`, and an existing
    ``path`` only when ``foreign(path)`` finds nothing against replacing it (it returns None for
    this toolkit's ``what`` of the same kind, else why not). Read-only; returns ``Path(path)``."""
    p = check_writable(path)
    if p.exists():
        why = foreign(p)
        if why is not None:
            raise OutputPathError(f"{p} exists and {why}; it was left untouched: choose another --out or delete it")
    return p


def check_output_dir(path: str | os.PathLike) -> Path:
    """The same rule for an output *directory* (``study --out``, ``demo --out``, ``finetune
    --out``) as :func:`check_writable` for an output file: the directory above it must exist and
    be writable, and nothing above it is ever created; the directory itself may exist (then it
    must be writable) or is created by the caller with a plain ``mkdir()`` once all checks pass.
    Returns ``Path(path)``."""
    p = Path(path)
    name_max = _name_max(p.parent if str(p.parent) else Path("."))
    if len(os.fsencode(p.name)) > name_max:
        raise OutputPathError(f"cannot use {str(p)[:60]}... as an output directory: its name is longer than this file "
                              f"system takes ({name_max} bytes)")
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"cannot use {p} as an output directory: it is a file")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write into {p}: the directory is not writable")
        return p
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"cannot create {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot create {p}: directory {parent} is not writable")
    return p


class atomic_path:
    """Context manager yielding a temporary path next to ``path``; renamed onto it on success.

    ``with atomic_path(out) as tmp: write(tmp)``. The temporary file is fsync'ed before the
    rename. On an exception the temporary file is removed and ``path`` is untouched. Raises
    :class:`OutputPathError` if the directory cannot be written. A ``path`` that is a symbolic
    link is written through: its target is replaced, the link kept.
    """

    def __init__(self, path: str | os.PathLike, suffix: str = "") -> None:
        self.path = Path(path)
        if self.path.is_symlink():  # write the link's target, as a plain open() would: the link stays
            self.path = Path(os.path.realpath(self.path))
        self.suffix = suffix or self.path.suffix
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        check_writable(self.path)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.suffix + ".tmp", dir=parent)
        except OSError as exc:
            raise OutputPathError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        os.close(fd)
        # mkstemp creates 0600; give the final file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        tmp = self.tmp
        self.tmp = None
        if tmp is None:
            return False
        if exc_type is None:
            try:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        else:
            tmp.unlink(missing_ok=True)
        return False


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename). Returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename). Returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))
