"""Write-verify programming with every pulse and every read run as an ngspice transient.

:class:`SpiceEngine` plugs into :func:`device.programming.program_levels` (``engine=``): the same
ISPP loop and decisions as the Python engine, but each pulse is a transient of the cell netlist of
:mod:`device.spice.cell` from the cell's present gap (its own device-to-device parameters), and
each read a short transient at the read voltage whose final current gives the read conductance.
Cells are independent, so the runs of one loop iteration go to a pool of worker processes
(``processes``). Results are cached on disk (``cache_dir``, one small JSON file per run, keyed by
the sha256 of the deck): an interrupted run resumes where it stopped, recomputing nothing.

For small populations (tens of cells per level): about 40 ms of ngspice per pulse. The netlist is
deterministic: no cycle-to-cycle term (compare with a Python run whose ``c2c_stochastic`` is off),
and it has no series element: a 1T1R cell (``r_series_ohm``, ``r_series_reset_ohm``,
``i_compliance_a``) is refused rather than programmed as a bare cell.

A table made this way records it: :func:`device.programming.program_levels` reads the engine's
``name`` ("spice"), ``ngspice_version`` and a representative ``netlist`` (one nominal cell, one
unit pulse), and the saved table carries them (root attributes ``engine`` and
``ngspice_version``, dataset ``netlist``).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from device.compact import DeviceParams, Waveform

__all__ = ["SpiceEngine"]


def _cell_params(pop: DeviceParams, i: int) -> Any:
    return pop.params.replace(**{k: float(v[i]) for k, v in pop.arrays.items()})


def _run(job: tuple[dict, list, list, float, float | None, str | None]) -> float:
    """One transient: returns the final gap (m), or with ``v_read`` the final read conductance (S)."""
    params_d, t, v, gap0, v_read, cache = job
    from device.compact import StanfordPKUParams
    from device.spice.cell import cell_netlist, run_cell

    params = StanfordPKUParams.from_dict(params_d)
    wave = Waveform(np.array(t), np.array(v))
    step = wave.duration_s / 200
    key = None
    if cache:
        deck = cell_netlist(params, wave, gap0_m=gap0, t_max_step_s=step)
        key = Path(cache) / (hashlib.sha256(deck.encode()).hexdigest() + ".json")
        if key.is_file():
            return float(json.loads(key.read_text())["value"])
    res = run_cell(params, wave, gap0_m=gap0, t_max_step_s=step)
    value = float(res.i_a[-1] / v_read) if v_read else float(res.gap_m[-1])
    if key is not None:
        from device.io import atomic_write_text

        atomic_write_text(key, json.dumps({"value": value}))
    return value


class SpiceEngine:
    """Pulses and reads of :func:`device.programming.program_levels` as ngspice transients.

    ``processes``: worker processes (1 = in this process); ``cache_dir``: where finished runs are
    kept so that a rerun resumes (None = no cache). Use as a context manager, or call
    :meth:`close`."""

    #: what :func:`device.programming.program_levels` records as the table's engine
    name = "spice"

    def __init__(self, processes: int = 2, cache_dir: str | Path | None = None) -> None:
        from device.config import check_int_range

        check_int_range("processes", processes, 1, 256)
        self.processes = processes
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        if self.cache_dir is not None:
            Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "SpiceEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def ngspice_version(self) -> str:
        """The loaded libngspice version (recorded in the tables this engine makes)."""
        from device.spice.runner import ngspice_version

        return ngspice_version()

    @property
    def netlist(self) -> str:
        """A representative deck: the nominal cell under one unit (1 V) pulse of the shape
        write-verify uses, from the reset state (the decks of a run differ only in their
        parameters, amplitude and initial gap)."""
        from device.presets import stanford_pku_ideal
        from device.spice.cell import cell_netlist

        p = stanford_pku_ideal()
        wave = Waveform(np.array([0.0, 2e-9, 102e-9, 104e-9]), np.array([0.0, 1.0, 1.0, 0.0]))
        return cell_netlist(p, wave, gap0_m=p.g_max_m, t_max_step_s=wave.duration_s / 200)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _map(self, jobs: list) -> np.ndarray:
        if self.processes == 1 or len(jobs) == 1:
            return np.array([_run(j) for j in jobs])
        if self._pool is None:
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(self.processes, mp_context=mp.get_context("spawn"))
        return np.array(list(self._pool.map(_run, jobs, chunksize=max(1, len(jobs) // (4 * self.processes)))))

    @staticmethod
    def _check_bare(pop: DeviceParams) -> None:
        has_series = getattr(pop.model(), "has_series", None)
        if has_series is not None and has_series(pop):
            from device.config import ConfigError

            raise ConfigError(
                "--engine spice programs the bare cell: its netlist has no 1T1R series element "
                "(r_series_ohm, r_series_reset_ohm, i_compliance_a must be 0); use --engine python"
            )

    def pulse(self, pop: DeviceParams, gap_m: np.ndarray, wave: Waveform, v_amp: np.ndarray) -> np.ndarray:
        """Gaps after one pulse ``v_amp[i] * wave`` on each cell ``i`` of ``pop``."""
        self._check_bare(pop)
        jobs = [(_cell_params(pop, i).to_dict(), wave.t_s.tolist(), (float(v_amp[i]) * wave.v_v).tolist(),
                 float(gap_m[i]), None, self.cache_dir) for i in range(pop.n)]
        return self._map(jobs)

    def read(self, pop: DeviceParams, gap_m: np.ndarray, v_read_v: float, t_read_s: float) -> np.ndarray:
        """Read conductances ``I(v_read) / v_read`` at the end of a read transient (edge 10 % of it)."""
        self._check_bare(pop)
        t = [0.0, 0.1 * t_read_s, t_read_s]
        v = [0.0, v_read_v, v_read_v]
        jobs = [(_cell_params(pop, i).to_dict(), t, v, float(gap_m[i]), float(v_read_v), self.cache_dir) for i in range(pop.n)]
        return self._map(jobs)
