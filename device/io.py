"""The one place the toolkit writes files and names its own version.

Every file the toolkit writes (HDF5 tables, results CSVs, JSON reports, plots, checkpoints) goes
through :class:`atomic_path` (or the :func:`atomic_write_text` / :func:`atomic_write_bytes`
shortcuts): the data are written to a temporary file in the target directory, flushed and
fsync'ed, then renamed onto the target (``os.replace``, atomic on POSIX). A run that fails or is
killed leaves the previous file untouched and no partial file behind.

:func:`software_version` is the one version string recorded in tables and results keys.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from device.errors import UserError

__all__ = [
    "OutputPathError", "atomic_path", "atomic_write_text", "atomic_write_bytes", "software_version", "check_writable",
    "check_output_dir",
]


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
    if p.is_dir():
        raise OutputPathError(f"cannot write {p}: it is a directory")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {p}: directory {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"cannot write {p}: the file is not writable")
    return p


def check_output_dir(path: str | os.PathLike) -> Path:
    """The same rule for an output *directory* (``study --out``, ``demo --out``, ``finetune
    --out``) as :func:`check_writable` for an output file: the directory above it must exist and
    be writable, and nothing above it is ever created; the directory itself may exist (then it
    must be writable) or is created by the caller with a plain ``mkdir()`` once all checks pass.
    Returns ``Path(path)``."""
    p = Path(path)
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
    :class:`OutputPathError` if the directory cannot be written.
    """

    def __init__(self, path: str | os.PathLike, suffix: str = "") -> None:
        self.path = Path(path)
        self.suffix = suffix or self.path.suffix
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        check_writable(self.path)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.suffix + ".tmp", dir=parent)
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
