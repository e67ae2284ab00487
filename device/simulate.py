"""Simulations of one cell or a population of cells: DC sweep, pulse train, resistance read-out.

All functions are vectorized over devices: ``n_devices`` cells with device-to-device variation
drawn from ``rng`` (nominal cells when ``rng`` is None), integrated together by
:func:`device.compact.integrate`. Randomness is an argument: the same seed gives bit-identical
arrays. Shapes: time-resolved outputs are ``(time, device)``.

Series element (1T1R): a model's ``r_series_ohm`` / ``i_compliance_a`` (the access transistor)
divide every applied voltage, in sweeps, pulses and write-verify alike
(:meth:`device.compact.StanfordPKU.cell_voltage`); a cell hotter than ``t_max_k`` refuses
(:class:`device.compact.OverheatError`). Reads (``r_read_ohm``, verify reads) are the cell's own
resistance ``V_read / I_cell(V_read)``: the sense circuit measures the cell, not the transistor.

Parameters come as a params config (e.g. :class:`device.compact.StanfordPKUParams`, from
:data:`device.presets.PRESETS`) or as an already drawn :class:`device.compact.DeviceParams`
population; the compact model is ``params.model()``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from device.compact import DeviceParams, ReadDisturbError, Waveform, integrate
from device.config import Config, check_int_range, check_positive, check_range

__all__ = [
    "SweepResult",
    "PulseResult",
    "population",
    "dc_sweep",
    "pulse_train",
    "read_resistance",
    "check_read_voltage",
    "sweep_waveform",
    "pulse_waveform",
    "cell_voltage",
]

#: default read voltage, V (0.1 V, the Stanford-PKU / MemTorch read voltage)
V_READ_V = 0.1
#: default duration of one read, s: the window over which a read must not move the gap
T_READ_S = 1e-6
#: largest gap change a read may cause, m (0.001 nm: 0.4 % change of the read current)
READ_DISTURB_TOL_M = 1e-12


def cell_voltage(model: Any, v_v: np.ndarray, state: np.ndarray, p: Any) -> np.ndarray:
    """The voltage across the cell when ``v_v`` is applied to it and its series element (the
    1T1R access transistor: ``r_series_ohm``, ``i_compliance_a``); ``v_v`` itself for models
    without one. Currents and temperatures of sweeps and pulses are the cell's at this voltage."""
    f = getattr(model, "cell_voltage", None)
    return np.asarray(v_v, float) if f is None else f(v_v, state, p)


def population(params: Config | DeviceParams, n_devices: int = 1, rng: np.random.Generator | None = None) -> DeviceParams:
    """A population of ``n_devices`` cells (device-to-device variation from ``rng``).

    A :class:`DeviceParams` is passed through unchanged (its size wins).
    """
    if isinstance(params, DeviceParams):
        return params
    check_int_range("n_devices", n_devices, 1)
    return params.model().per_device(params, n_devices, rng)  # type: ignore[attr-defined]


def check_read_voltage(
    params: Config | DeviceParams,
    v_read_v: float,
    *,
    t_read_s: float = T_READ_S,
    tol_m: float = READ_DISTURB_TOL_M,
) -> None:
    """Raise :class:`ReadDisturbError` if reading at ``v_read_v`` for ``t_read_s`` would move the
    state of any cell (worst case over the state range) by more than ``tol_m``."""
    check_range("v_read_v", v_read_v, 0.0, None, lo_open=True)
    check_positive("t_read_s", t_read_s)
    model = params.model()
    moved = model.read_disturb(v_read_v, t_read_s, params)
    if moved > tol_m:
        raise ReadDisturbError(
            f"v_read_v={v_read_v!r} would switch the cell: a {t_read_s:g} s read moves the gap by up to "
            f"{moved * 1e9:.3g} nm (allowed {tol_m * 1e9:.3g} nm); use a read voltage below "
            f"{model.switching_threshold_v(params):.3g} V"
        )


def read_resistance(
    params: Config | DeviceParams,
    state: np.ndarray,
    v_read_v: float = V_READ_V,
    *,
    t_read_s: float = T_READ_S,
) -> np.ndarray:
    """Read resistance ``V_read / I(V_read, state)``, ohm, same shape as ``state``.

    The read voltage is validated first (:func:`check_read_voltage`): a read that would move the
    gap is refused rather than silently reported.
    """
    check_read_voltage(params, v_read_v, t_read_s=t_read_s)
    model = params.model()
    return v_read_v / model.current(v_read_v, np.asarray(state, float), params)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A DC (slow triangular) voltage sweep of ``n`` devices.

    ``t_s``, ``v_v``: (time,); ``i_a``, ``gap_m``, ``temperature_k``: (time, device).
    """

    t_s: np.ndarray
    v_v: np.ndarray
    i_a: np.ndarray
    gap_m: np.ndarray
    temperature_k: np.ndarray
    v_read_v: float
    r_read_ohm: np.ndarray  #: (time, device) read resistance of the state at each time

    def thresholds_v(self, frac: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """(SET, RESET) voltages per device: where the read resistance first crosses the
        geometric mean of its extremes on the positive / negative branch (NaN if it never does)."""
        r = self.r_read_ohm
        mid = np.sqrt(r.min(axis=0) * r.max(axis=0))
        v = self.v_v
        pos = v > 0
        neg = v < 0
        out = []
        for branch, cond in ((pos, r < mid), (neg, r > mid)):
            th = np.full(r.shape[1], np.nan)
            for j in range(r.shape[1]):
                # first crossing after the branch starts, with the state on the other side before
                hits = np.nonzero(branch & cond[:, j])[0]
                if hits.size:
                    th[j] = v[hits[0]]
            out.append(th)
        return out[0], out[1]

    def loop_area_w(self) -> np.ndarray:
        """(device,) area of the I-V loop, ``|oint I dV|`` in W (V*A); > 0 for a hysteretic loop."""
        return np.abs(np.trapezoid(self.i_a, self.v_v, axis=0)) if hasattr(np, "trapezoid") else np.abs(
            np.trapz(self.i_a, self.v_v, axis=0)
        )

    def save(self, path: str | Path, *, config: Any = None) -> Path:
        from device import tables as T

        arrays = {
            "t_s": T.Array(self.t_s, "s"),
            "v_v": T.Array(self.v_v, "V", ("t_s",), "applied voltage"),
            "i_a": T.Array(self.i_a, "A", ("t_s", "device"), "cell current"),
            "gap_m": T.Array(self.gap_m, "m", ("t_s", "device"), "filament gap"),
            "temperature_k": T.Array(self.temperature_k, "K", ("t_s", "device"), "local temperature"),
            "r_read_ohm": T.Array(self.r_read_ohm, "ohm", ("t_s", "device"), f"read resistance at {self.v_read_v} V"),
        }
        return T.write_table(path, kind="iv", arrays=arrays, config=config, attrs={"v_read_v": self.v_read_v})


@dataclasses.dataclass(frozen=True)
class PulseResult:
    """A pulse train applied to ``n`` devices.

    ``t_s``, ``v_v``: (time,) for a unit-scaled waveform; ``i_a``, ``gap_m``: (time, device);
    ``t_end_s``: (pulses,) end of each pulse; ``v_pulse_v``: (pulses,) amplitudes;
    ``gap_after_m``, ``r_read_ohm``: (pulses, device) state and read resistance after each pulse.
    """

    t_s: np.ndarray
    v_v: np.ndarray
    i_a: np.ndarray
    gap_m: np.ndarray
    t_end_s: np.ndarray
    v_pulse_v: np.ndarray
    gap_after_m: np.ndarray
    r_read_ohm: np.ndarray
    r_initial_ohm: np.ndarray
    v_read_v: float

    def save(self, path: str | Path, *, config: Any = None) -> Path:
        from device import tables as T

        arrays = {
            "t_s": T.Array(self.t_s, "s"),
            "v_v": T.Array(self.v_v, "V", ("t_s",), "applied voltage"),
            "i_a": T.Array(self.i_a, "A", ("t_s", "device"), "cell current"),
            "gap_m": T.Array(self.gap_m, "m", ("t_s", "device"), "filament gap"),
            "pulse": T.Array(np.arange(self.t_end_s.size), "index"),
            "t_end_s": T.Array(self.t_end_s, "s", ("pulse",), "end of each pulse"),
            "v_pulse_v": T.Array(self.v_pulse_v, "V", ("pulse",), "pulse amplitude"),
            "gap_after_m": T.Array(self.gap_after_m, "m", ("pulse", "device"), "gap after each pulse"),
            "r_read_ohm": T.Array(self.r_read_ohm, "ohm", ("pulse", "device"), f"read resistance after each pulse at {self.v_read_v} V"),
        }
        return T.write_table(path, kind="pulse", arrays=arrays, config=config, attrs={"v_read_v": self.v_read_v})


def sweep_waveform(v_set_max_v: float, v_reset_max_v: float, sweep_rate_v_per_s: float) -> Waveform:
    """Triangle 0 -> +v_set_max -> 0 -> -v_reset_max -> 0 at a constant |dV/dt|."""
    check_positive("v_set_max_v", v_set_max_v)
    check_positive("v_reset_max_v", v_reset_max_v)
    check_positive("sweep_rate_v_per_s", sweep_rate_v_per_s)
    a, b = v_set_max_v / sweep_rate_v_per_s, v_reset_max_v / sweep_rate_v_per_s
    t = np.cumsum([0.0, a, a, b, b])
    return Waveform(t, np.array([0.0, v_set_max_v, 0.0, -v_reset_max_v, 0.0]))


def pulse_waveform(
    v_pulse_v: Sequence[float], t_pulse_s: float, t_edge_s: float, t_gap_s: float
) -> tuple[Waveform, np.ndarray]:
    """Trapezoidal pulses (flat top ``t_pulse_s``, linear edges ``t_edge_s``) separated by
    ``t_gap_s`` at 0 V. Returns the waveform and the end time of each pulse (after its fall)."""
    check_positive("t_pulse_s", t_pulse_s)
    check_positive("t_edge_s", t_edge_s)
    check_range("t_gap_s", t_gap_s, 0.0, None)
    t, v, ends = [0.0], [0.0], []
    now = 0.0
    for amp in v_pulse_v:
        if t_gap_s > 0:
            now += t_gap_s
            t.append(now)
            v.append(0.0)
        for dt_, vv in ((t_edge_s, amp), (t_pulse_s, amp), (t_edge_s, 0.0)):
            now += dt_
            t.append(now)
            v.append(float(amp) if vv else 0.0)
        ends.append(now)
    return Waveform(np.array(t), np.array(v)), np.array(ends)


def dc_sweep(
    params: Config | DeviceParams,
    *,
    n_devices: int = 1,
    rng: np.random.Generator | None = None,
    v_set_max_v: float = 1.5,
    v_reset_max_v: float = 1.5,
    sweep_rate_v_per_s: float = 1.0,
    n_points: int = 601,
    initial: str = "hrs",
    v_read_v: float = V_READ_V,
    max_dstate: float | None = None,
) -> SweepResult:
    """Quasi-static triangular sweep 0 -> +v_set_max -> 0 -> -v_reset_max -> 0 (SET then RESET).

    ``n_points`` equally spaced output times; ``initial`` "hrs" (gap g_max) or "lrs" (g_min).
    ``rng`` draws the device-to-device variation and the cycle-to-cycle term; None = nominal,
    deterministic. Returns a :class:`SweepResult` with currents (time, device).
    """
    check_int_range("n_points", n_points, 3)
    check_read_voltage(params, v_read_v)
    p = population(params, n_devices, rng)
    model = p.model()
    wave = sweep_waveform(v_set_max_v, v_reset_max_v, sweep_rate_v_per_s)
    t_out = np.linspace(wave.t_s[0], wave.t_s[-1], n_points)
    gap = integrate(model, p, model.initial_state(p, initial), wave, t_out, rng=rng, max_dstate=max_dstate)
    v = wave(t_out)
    vcell = cell_voltage(model, v[:, None], gap, p)
    return SweepResult(
        t_s=t_out,
        v_v=v,
        i_a=model.current(vcell, gap, p),
        gap_m=gap,
        temperature_k=model.temperature(vcell, gap, p),
        v_read_v=float(v_read_v),
        r_read_ohm=v_read_v / model.current(v_read_v, gap, p),
    )


def pulse_train(
    params: Config | DeviceParams,
    v_pulse_v: Sequence[float],
    *,
    t_pulse_s: float = 50e-9,
    t_edge_s: float = 1e-9,
    t_gap_s: float = 50e-9,
    n_devices: int = 1,
    rng: np.random.Generator | None = None,
    initial: str | np.ndarray = "hrs",
    v_read_v: float = V_READ_V,
    points_per_pulse: int = 40,
    max_dstate: float | None = None,
) -> PulseResult:
    """Apply trapezoidal pulses of amplitudes ``v_pulse_v`` (V; > 0 SET, < 0 RESET) and read
    the resistance at ``v_read_v`` after each one (the read itself is validated not to disturb
    the state, so it is taken from the state at the end of the pulse).

    ``initial``: "hrs", "lrs" or a (device,) array of gaps. Returns a :class:`PulseResult`.
    """
    amps = np.asarray(v_pulse_v, float).ravel()
    if amps.size == 0:
        raise ValueError("pulse_train needs at least one pulse amplitude")
    check_int_range("points_per_pulse", points_per_pulse, 4)
    check_read_voltage(params, v_read_v)
    p = population(params, n_devices, rng)
    model = p.model()
    wave, ends = pulse_waveform(amps, t_pulse_s, t_edge_s, t_gap_s)
    t_out = np.unique(np.concatenate([np.linspace(wave.t_s[0], wave.t_s[-1], points_per_pulse * amps.size + 1), wave.t_s]))
    g0 = model.initial_state(p, initial) if isinstance(initial, str) else np.broadcast_to(np.asarray(initial, float), (p.n,))
    gap = integrate(model, p, g0, wave, t_out, rng=rng, max_dstate=max_dstate)
    v = wave(t_out)
    after = gap[np.searchsorted(t_out, ends)]
    return PulseResult(
        t_s=t_out,
        v_v=v,
        i_a=model.current(cell_voltage(model, v[:, None], gap, p), gap, p),
        gap_m=gap,
        t_end_s=ends,
        v_pulse_v=amps,
        gap_after_m=after,
        r_read_ohm=v_read_v / model.current(v_read_v, after, p),
        r_initial_ohm=v_read_v / model.current(v_read_v, np.asarray(g0, float), p),
        v_read_v=float(v_read_v),
    )
