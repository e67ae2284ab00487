"""Run complete SPICE decks through ngspice's shared library (PySpice ``NgSpiceShared``).

Every ngspice call of the toolkit goes through :func:`run_netlist`. It loads one deck, runs the
analysis card it contains (``.op`` / ``.dc`` / ``.tran``), copies the result vectors into numpy
arrays and then removes the plot and the circuit (``destroy all`` + ``remcirc``): ngspice keeps
every sourced circuit otherwise, and memory grows without bound over thousands of runs.

Why the shared library: PySpice's subprocess mode is broken with ngspice 39 here, the shared mode
gives results that agree with a sparse nodal solve to ~1e-13. PySpice 1.5 logs "Unsupported
Ngspice version 39" and echoes every ngspice stderr line through :mod:`logging`; those records
are filtered out here (the text ends up in :class:`SpiceError` when a run fails).

Vector names in :attr:`SpiceResult.vectors` (all lower case):

* node voltages as ``"v(node)"`` (e.g. ``"v(wl0_3)"``);
* branch currents of voltage sources (and inductors) both as ``"i(vname)"`` and as ngspice's own
  ``"vname#branch"`` (the same array); ngspice's sign convention applies: the current flows *into*
  the source's positive terminal, through the source, out of its negative terminal;
* sweep / scale vectors under ngspice's name: ``"time"`` (``.tran``), ``"v-sweep"`` /
  ``"i-sweep"`` (``.dc``), ``"frequency"``; other vectors (``@r1[i]`` and the like) verbatim.

Each array has one entry per point of the analysis (length 1 for ``.op``).

PySpice is imported inside the functions, never at module import (``import device`` stays light).
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SpiceError", "SpiceResult", "ngspice_version", "run_netlist", "spice_available"]


class SpiceError(RuntimeError):
    """ngspice failed on a deck (parse error, non-convergence, singular matrix, ...).

    The message says what failed and where the deck and the ngspice log were saved;
    :attr:`netlist_path` holds that path.
    """

    def __init__(self, message: str, netlist_path: Path | None = None):
        super().__init__(message)
        self.netlist_path = netlist_path


@dataclass(frozen=True)
class SpiceResult:
    """Vectors of one finished analysis.

    ``vectors`` maps lower-case names (see the module docstring: ``"v(node)"``, ``"i(vname)"`` /
    ``"vname#branch"``, ``"time"``) to float64 arrays (complex128 for AC), one entry per analysis
    point. ``plot_name`` is ngspice's plot name (``"op1"``, ``"tran1"``, ``"dc1"``).
    """

    vectors: dict[str, np.ndarray] = field(repr=False)
    plot_name: str
    ngspice_version: str


_LOCK = threading.RLock()
_STATE: dict[str, object] = {"instance": None, "running": False}
_SCALE_NAMES = {"time", "frequency", "v-sweep", "i-sweep", "temp-sweep", "res-sweep"}
# ngspice lines that mean the analysis did not produce a valid result. Warnings and "Note:"
# lines (gmin / source stepping that finally converges) are not failures.
_FAILURE = re.compile(
    r"(^\s*error\b|simulation\(s\) aborted|circuit not parsed|timestep too small|"
    r"iteration limit reached|singular matrix.*aborted|no such vector|unknown (parameter|model))",
    re.IGNORECASE | re.MULTILINE,
)


class _QuietPySpice(logging.Filter):
    """Drop PySpice's version complaint and its echo of ngspice stderr (we report it ourselves)."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging API
        if str(record.msg).startswith("Unsupported Ngspice version"):
            return False
        return not _STATE["running"]


def spice_available() -> bool:
    """True when PySpice imports and libngspice loads (tests skip on False only)."""
    try:
        _instance()
    except Exception:  # noqa: BLE001 - any failure to load means "not available"
        return False
    return True


def _instance():
    """The per-process ``NgSpiceShared`` singleton (created on first use, quietly)."""
    with _LOCK:
        if _STATE["instance"] is None:
            logger = logging.getLogger("PySpice.Spice.NgSpice.Shared.NgSpiceShared")
            if not any(isinstance(f, _QuietPySpice) for f in logger.filters):
                logger.addFilter(_QuietPySpice())
            from PySpice.Spice.NgSpice.Shared import NgSpiceShared

            _STATE["instance"] = NgSpiceShared.new_instance()
        return _STATE["instance"]


def ngspice_version() -> str:
    """The loaded libngspice major version as a string, e.g. ``"39"``."""
    return str(_instance().ngspice_version)


def _save_failed(netlist: str, log: str, save_dir: Path | None) -> Path:
    if save_dir is None:
        save_dir = Path(tempfile.mkdtemp(prefix="reram-cosim-spice-"))
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / "failed.cir"
    i = 1
    while path.exists():
        path = save_dir / f"failed_{i}.cir"
        i += 1
    path.write_text(netlist)
    path.with_suffix(".log").write_text(log)
    return path


def _normalise(name: str) -> list[str]:
    low = name.lower()
    if low.endswith("#branch"):
        return [f"i({low[: -len('#branch')]})", low]
    if low in _SCALE_NAMES or low.startswith("@") or "(" in low:
        return [low]
    return [f"v({low})"]


def _collect(ng, plot_name: str) -> dict[str, np.ndarray]:
    from PySpice.Spice.NgSpice.Shared import FFI, ffi

    out: dict[str, np.ndarray] = {}
    names_c = ng._ngspice_shared.ngSpice_AllVecs(plot_name.encode("utf8"))
    i = 0
    while names_c[i] != FFI.NULL:
        vname = ffi.string(names_c[i]).decode("utf8")
        info = ng._ngspice_shared.ngGet_Vec_Info(f"{plot_name}.{vname}".encode("utf8"))
        n = info.v_length
        if info.v_compdata == FFI.NULL:
            arr = np.frombuffer(ffi.buffer(info.v_realdata, n * 8), dtype=np.float64).copy()
        else:
            raw = np.frombuffer(ffi.buffer(info.v_compdata, n * 16), dtype=np.float64)
            arr = raw[0::2] + 1j * raw[1::2]
        for key in _normalise(vname):
            out[key] = arr
        i += 1
    return out


def run_netlist(netlist: str, *, save_dir: Path | None = None) -> SpiceResult:
    """Run one complete deck in ngspice (shared mode) and return its vectors.

    ``netlist``: title line, elements, one analysis card (``.op`` / ``.dc`` / ``.tran``), ``.end``
    (appended if missing). The circuit and its plots are removed afterwards whether the run
    succeeded or not. On a parse error, non-convergence or any ngspice error a
    :class:`SpiceError` is raised; the deck is saved as ``failed.cir`` (with ``failed.log``, the
    ngspice output) in ``save_dir`` (default: a new temporary directory) and that path is in the
    message. Thread-safe (one ngspice per process; runs are serialised); for parallel runs use
    processes.
    """
    if not netlist.strip():
        raise ValueError("run_netlist: the netlist is empty")
    text = netlist if netlist.endswith("\n") else netlist + "\n"
    if not re.search(r"^\s*\.end\s*$", text, re.IGNORECASE | re.MULTILINE):
        text += ".end\n"
    with _LOCK:
        ng = _instance()
        from PySpice.Spice.NgSpice.Shared import NgSpiceCommandError, NgSpiceCircuitError

        _STATE["running"] = True
        log_parts: list[str] = []
        failed_reason = ""
        try:
            try:
                ng.load_circuit(text)
            except (NgSpiceCircuitError, NameError) as exc:
                failed_reason = f"ngspice could not load the circuit ({type(exc).__name__})"
            log_parts += [ng.stdout, ng.stderr]
            if not failed_reason:
                try:
                    ng.exec_command("run")
                except NgSpiceCommandError:
                    pass  # decided below from the output: "Note:" lines also set PySpice's flag
                except NameError as exc:
                    failed_reason = f"ngspice 'run' returned an error code ({exc})"
                log_parts += [ng.stdout, ng.stderr]
            log = "\n".join(p for p in log_parts if p)
            if not failed_reason:
                bad = [ln.strip() for ln in log.splitlines() if _FAILURE.search(ln)]
                if bad:
                    failed_reason = f"ngspice reported {bad[0]!r}"
            plot_name = ""
            vectors: dict[str, np.ndarray] = {}
            if not failed_reason:
                plot_name = ng.last_plot
                if plot_name == "const":
                    failed_reason = "ngspice produced no analysis result (is there an .op/.dc/.tran card?)"
                else:
                    vectors = _collect(ng, plot_name)
                    if any(not np.all(np.isfinite(v)) for v in vectors.values()):
                        failed_reason = "ngspice returned non-finite values (no convergence)"
        finally:
            try:
                ng.exec_command("destroy all")
            except Exception:  # noqa: BLE001 - cleanup must not mask the real error
                pass
            try:
                ng.exec_command("remcirc")
            except Exception:  # noqa: BLE001
                pass
            _STATE["running"] = False
        if failed_reason:
            path = _save_failed(text, log, save_dir)
            last = [ln for ln in log.splitlines() if ln.strip()][-3:]
            raise SpiceError(
                f"ngspice run failed: {failed_reason}; netlist saved to {path} "
                f"(log: {path.with_suffix('.log')}); last output: {' | '.join(last)}",
                path,
            )
        return SpiceResult(vectors=vectors, plot_name=plot_name, ngspice_version=str(ng.ngspice_version))
