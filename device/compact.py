"""Compact models of one ReRAM cell and the time integrator shared by all of them.

A compact model maps an applied voltage and an internal state (for filament models: the gap
between the filament tip and the electrode) to a current, and gives the rate of change of the
state. :class:`CompactModel` is the small interface the simulations (:mod:`device.simulate`,
:mod:`device.programming`) and the SPICE cross-check use; a second model (for example a
VTEAM-style threshold model) implements the same few methods and ships its own ``@config``
parameter class with a ``model()`` method, and no caller changes.

The Stanford-PKU filament-gap model
===================================
Guan, Yu, Wong, "A SPICE compact model of metal oxide resistive switching memory with variations",
IEEE Electron Device Letters 33(10), 1405 (2012), doi:10.1109/LED.2012.2210856; Jiang et al.,
"A compact model for metal-oxide resistive random access memory with experiment verification",
IEEE TED 63(5), 1884 (2016), doi:10.1109/TED.2016.2545412; as implemented in MemTorch
(``memtorch/bh/memristor/Stanford_PKU.py``) and nanoHUB's "Stanford RRAM Model 1"::

    I(V, g)   = I0 exp(-g/g0) sinh(V/V0)                                   (current)
    T         = T0 + |V I| R_th                                           (local Joule heating)
    gamma(g)  = gamma0 - beta (g / 1 nm)^alpha,   alpha = 3                (field enhancement)
    dg/dt     = -v0 exp(-q Ea / (k T)) sinh(gamma a0 q V / (t_ox k T))     (gap drift)
                0 when gamma |V| / t_ox < F_min                            (no switching below F_min)
    g in [g_min, g_max]                                                    (clamped)

Sign convention: a positive voltage shrinks the gap (SET, lower resistance), a negative one
widens it (RESET, higher resistance).

Cycle-to-cycle variation (the "dynamic" variant). **Its form here is an assumption of this
toolkit, not the published model**, and its size should be calibrated (``reram-cosim device
calibrate pulses`` fits ``delta_g0_m`` to the spread between measured ramps). The published model adds
``chi * delta_g0 / (1 + exp((T_crit - T) / T_smth))``, ``chi ~ N(0, 1)``, "per time step", which
makes a result depend on the simulator's step. Here the term is a Wiener-type increment whose
variance is proportional to the deterministic gap travel of the step::

    dg_noise = chi * delta_g0 * s(T) * sqrt(|dg_det| / a0),   s(T) = 1 / (1 + exp((T_crit - T)/T_smth))

i.e. ``delta_g0`` is the standard deviation of the random displacement per atomic hop (one
``a0`` of deterministic travel): a reinterpretation of the published per-step amplitude, which
keeps its 0.02 nm value but not its meaning. Variances of independent increments add, so splitting a step in
two leaves the distribution of the result unchanged (dt-consistent, Euler-Maruyama for
``dg = f dt + delta_g0 s(T) sqrt(|f| / a0) dW``); the gap does not diffuse while the cell rests or
is read (``f = 0`` below ``F_min``), so a stored level does not random-walk away. With the
published ``delta_g0 = 0.02 nm`` a full 1.5 nm switching event adds a gap spread of about
0.02 nm, i.e. about 8 % in resistance. It is off when ``c2c_stochastic`` is false or no generator
is given (the deterministic mode of the SPICE cross-check).

Series element (1T1R): the access transistor in series with the cell, **polarity-aware** as in a
real 1T1R. In SET (``V > 0``) its gate is held at a moderate voltage, so it is a resistance
``r_series_ohm`` that saturates at the compliance current ``i_compliance_a``: the SET
self-limits. In RESET (``V < 0``) the gate is driven hard and the transistor is only its small
on-resistance plus the lines, ``r_series_reset_ohm`` (0 by default), with no current limit: a
compliance in RESET would keep the cell from ever resetting (the cell voltage would stay below
the ``F_min`` gate: the audit's 0 of 8 cells reset on a +-2 V sweep through 1 kOhm or 0.5 mA).
:meth:`StanfordPKU.cell_voltage` divides every applied voltage accordingly, and the integrator
follows a SET that the series element self-limits; :func:`set_limit_state` is the state a full
SET through it reaches (where write-verify starts).
A cell hotter than ``t_max_k`` refuses (:class:`OverheatError`).

Device-to-device variation: :meth:`StanfordPKU.per_device` draws per-device ``I0`` and ``v0``
(lognormal) and ``gamma0`` (normal) from a ``numpy.random.Generator``.

Time integration (:func:`integrate`)
====================================
Explicit midpoint (RK2) with **adaptive substeps bounded by the state change**
(``|dg| <= max_dstate``, 0.004 nm by default, 1.6 % of ``g0``), by the applied-voltage change
(``|dV| <= 20 mV`` while the cell can move), landing exactly on waveform corners, output times
and **the analytic opening of the ``F_min`` gate** (a step that starts closed and would end open
ends where ``|V| = F_min t_ox / gamma(g)``, :meth:`CompactModel.gate_voltage`: a step whose
midpoint fell before the opening used to be taken as closed, stepping over a switching onset),
with step rejection when the midpoint rate would move the gap by more than twice the bound.
Each device has its own step size; all devices advance together in one vectorized loop.

Why this scheme: the right-hand side depends on the gap only through exponentials with length
scales ``g0 = 0.25 nm`` (current, hence temperature) and ``~ (gamma / (x * 3 beta g^2))`` (field
enhancement), so ``|df/dg| <~ |f| / l`` with ``l >~ 0.05 nm``. Bounding ``|dg| = dt |f|`` by
``max_dstate`` therefore bounds ``dt |df/dg| <= max_dstate / l < 0.1``, far inside the explicit
stability limit (2), and keeps the local error small: the explicit step is stable *because* the
step follows the state, not the clock. The number of substeps scales with the distance the gap
travels (about 400 for a full switch) plus the voltage path, not with the duration: a 1 ns pulse
and a 10 s DC sweep cost about the same, while a fixed-step scheme would need picosecond steps
for the first and 10^10 of them for the second. An implicit scheme would be stable at any step
but would smear the abrupt SET (positive feedback: the rate grows as the gap shrinks) unless the
step were limited just as much for accuracy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from device.config import Config, ConfigError, check_positive, check_range, config

__all__ = [
    "Q_E",
    "K_B",
    "CompactModel",
    "DeviceParams",
    "StanfordPKUParams",
    "StanfordPKU",
    "Waveform",
    "integrate",
    "ReadDisturbError",
    "OverheatError",
    "read_to_small_signal_s",
    "small_signal_to_read_s",
    "set_limit_state",
]

#: elementary charge, C (CODATA 2018, exact)
Q_E = 1.602176634e-19
#: Boltzmann constant, J/K (CODATA 2018, exact)
K_B = 1.380649e-23
_NM = 1e-9


class ReadDisturbError(ConfigError):
    """The read voltage would move the cell's state: a read must not write."""


class OverheatError(ConfigError):
    """A simulated cell got hotter than the model's temperature bound (``t_max_k``): the
    stimulus needs a series resistance or a compliance current (a 1T1R access transistor)."""


@config
class StanfordPKUParams(Config):
    """Parameters of the Stanford-PKU filament-gap model, SI units.

    Defaults are the published values (Guan, Yu, Wong, IEEE EDL 33, 1405, 2012; MemTorch
    ``Stanford_PKU`` defaults; see ``docs/REFERENCES.md``). The ``d2d_*`` spreads are not part
    of the publication: they default to 0 here and are set by the presets.
    """

    #: I0, current prefactor, A (1 mA; Guan 2012 / MemTorch)
    i0_a: float = 1e-3
    #: g0, gap decay length of the current, m (0.25 nm; Guan 2012 / MemTorch)
    g0_m: float = 0.25e-9
    #: V0, voltage scale of the sinh current, V (0.25 V; Guan 2012 / MemTorch)
    v0_v: float = 0.25
    #: v0, gap velocity prefactor, m/s (10 m/s; Guan 2012 / MemTorch)
    vel0_m_per_s: float = 10.0
    #: gamma0, field-enhancement factor at zero gap (16; Guan 2012 / MemTorch)
    gamma0: float = 16.0
    #: beta, gap dependence of the field enhancement (0.8; Guan 2012 / MemTorch)
    beta: float = 0.8
    #: alpha, exponent of the gap in gamma = gamma0 - beta (g/1nm)^alpha (3; Guan 2012), in (0, 20]
    alpha: float = 3.0
    #: Ea, activation energy of oxygen-vacancy migration, eV (0.6 eV; Guan 2012 / MemTorch)
    ea_ev: float = 0.6
    #: a0, atomic hopping distance, m (0.25 nm; Guan 2012 / MemTorch)
    a0_m: float = 0.25e-9
    #: t_ox, oxide thickness, m (12 nm; Guan 2012 / MemTorch)
    t_ox_m: float = 12e-9
    #: F_min, field below which the gap does not move, V/m (1.4e9; Guan 2012 / MemTorch)
    f_min_v_per_m: float = 1.4e9
    #: R_th, effective thermal resistance, K/W (2.1e3; Guan 2012 / MemTorch)
    r_th_k_per_w: float = 2.1e3
    #: T0, ambient temperature, K (298 K; Guan 2012 / MemTorch)
    t0_k: float = 298.0
    #: T_crit, temperature above which the random gap term grows, K (450 K; Guan 2012 / MemTorch)
    t_crit_k: float = 450.0
    #: T_smth, width of that onset, K (500 K; Guan 2012 / MemTorch)
    t_smth_k: float = 500.0
    #: delta_g0, cycle-to-cycle term: ASSUMPTION of this toolkit, not a published fit: the random
    #: gap displacement per a0 of gap travel, m; the 0.02 nm is the Verilog-A's per-time-step
    #: amplitude (Guan 2012) reinterpreted per travel (module docstring); calibrate it to your
    #: device with `device calibrate pulses`
    delta_g0_m: float = 0.02e-9
    #: g_min, smallest gap, m (0.2 nm; with I0, g0, V0 gives R_on = 542 ohm at 0.1 V, MemTorch)
    g_min_m: float = 0.2e-9
    #: g_max, largest gap, m (1.7 nm; gives R_off = 218.6 kohm at 0.1 V, MemTorch)
    g_max_m: float = 1.7e-9
    #: cycle-to-cycle random gap term on (the "dynamic" model; needs a generator)
    c2c_stochastic: bool = True
    #: device-to-device spread: sigma of ln(I0) (lognormal), 1; assumption, not published
    d2d_sigma_ln_i0: float = 0.0
    #: device-to-device spread: sigma of ln(v0) (lognormal), 1; assumption, not published
    d2d_sigma_ln_vel0: float = 0.0
    #: device-to-device spread: relative sigma of gamma0 (normal), 1; assumption, not published
    d2d_sigma_rel_gamma0: float = 0.0
    #: series resistance of the 1T1R cell in SET polarity (V > 0: the access transistor at its
    #: SET gate voltage, plus lines), ohm; 0 = the bare cell of Guan 2012. Divides every positive
    #: applied voltage (sweeps, pulses, writes); the SET self-limits through it
    r_series_ohm: float = 0.0
    #: series resistance in RESET polarity (V < 0: the access transistor driven hard, plus
    #: lines), ohm; 0 = negligible against the cell. Assumption: a real 1T1R limits current in
    #: SET, not in RESET, so this is much smaller than r_series_ohm
    r_series_reset_ohm: float = 0.0
    #: compliance current of the access transistor in SET (its saturation current at the SET
    #: gate voltage), A: the SET current never exceeds it (the transistor takes the rest of the
    #: voltage); no limit in RESET (the gate is driven hard); 0 = none
    i_compliance_a: float = 0.0
    #: temperature bound, K: a simulation whose cell gets hotter refuses (OverheatError). 1200 K
    #: is an assumption: the model's Arrhenius hopping is calibrated far below it, and a real
    #: cell breaks down (a bare cell swept to 2 V reaches 3111 K at 0.67 A)
    t_max_k: float = 1200.0

    def __post_init__(self) -> None:
        for name in (
            "i0_a", "g0_m", "v0_v", "vel0_m_per_s", "gamma0", "alpha", "ea_ev", "a0_m", "t_ox_m",
            "f_min_v_per_m", "r_th_k_per_w", "t0_k", "t_crit_k", "t_smth_k", "g_min_m", "g_max_m",
        ):
            check_positive(name, getattr(self, name))
        check_range("beta", self.beta, 0.0, None)
        check_range("delta_g0_m", self.delta_g0_m, 0.0, 1e-9)
        check_range("g_max_m", self.g_max_m, self.g_min_m, 10e-9, lo_open=True)
        check_range("alpha", self.alpha, 0.0, 20.0, lo_open=True)  # (g/1nm)^alpha stays a float (g_max <= 10 nm)
        if not math.isfinite(self.gamma0 - self.beta * (self.g_max_m / _NM) ** self.alpha) or \
                self.gamma0 - self.beta * (self.g_max_m / _NM) ** self.alpha <= 0:
            raise ConfigError(
                f"gamma0={self.gamma0!r}, beta={self.beta!r}, g_max_m={self.g_max_m!r} are invalid: the field "
                "enhancement gamma0 - beta (g_max/1nm)^alpha must stay > 0 over the gap range"
            )
        if not isinstance(self.c2c_stochastic, bool):
            raise ConfigError(f"c2c_stochastic={self.c2c_stochastic!r} is invalid: must be true or false")
        check_range("d2d_sigma_ln_i0", self.d2d_sigma_ln_i0, 0.0, 1.0)
        check_range("d2d_sigma_ln_vel0", self.d2d_sigma_ln_vel0, 0.0, 2.0)
        check_range("d2d_sigma_rel_gamma0", self.d2d_sigma_rel_gamma0, 0.0, 0.2)
        check_range("r_series_ohm", self.r_series_ohm, 0.0, 1e9)
        check_range("r_series_reset_ohm", self.r_series_reset_ohm, 0.0, 1e9)
        check_range("i_compliance_a", self.i_compliance_a, 0.0, 10.0)
        check_range("t_max_k", self.t_max_k, self.t0_k, 1e5, lo_open=True)

    def model(self) -> "StanfordPKU":
        """The compact model these parameters belong to."""
        return STANFORD_PKU

    def resistance_ohm(self, gap_m: Any, v_read_v: float = 0.1) -> np.ndarray:
        """Nominal read resistance ``V / I(V, g)`` at ``v_read_v`` for gap(s) ``gap_m``."""
        return v_read_v / STANFORD_PKU.current(v_read_v, np.asarray(gap_m, float), self)


class DeviceParams:
    """Parameters of a population of ``n`` devices: a config plus per-device arrays.

    Attribute access returns the per-device array (shape ``(n,)``) where the population varies
    that parameter, else the config's scalar, so model formulas broadcast over devices.
    """

    def __init__(self, params: Config, n: int, arrays: dict[str, np.ndarray] | None = None):
        self.params = params
        self.n = int(n)
        self.arrays = {k: np.asarray(v, dtype=float) for k, v in (arrays or {}).items()}
        for k, v in self.arrays.items():
            if v.shape != (self.n,):
                raise ValueError(f"per-device array {k} has shape {v.shape}, expected ({self.n},)")

    def __getattr__(self, name: str) -> Any:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        return getattr(self.__dict__["params"], name)

    def subset(self, idx: np.ndarray) -> "DeviceParams":
        """The devices ``idx`` (an index array or boolean mask) as a new population."""
        arrays = {k: v[idx] for k, v in self.arrays.items()}
        n = int(np.count_nonzero(idx)) if np.asarray(idx).dtype == bool else len(np.asarray(idx))
        return DeviceParams(self.params, n, arrays)

    def model(self) -> "CompactModel":
        return self.params.model()  # type: ignore[attr-defined]


@runtime_checkable
class CompactModel(Protocol):
    """What a compact model provides. ``p`` is a params config or a :class:`DeviceParams`;
    ``v_v`` and ``state`` are arrays broadcasting against the per-device parameters."""

    name: str
    state_name: str  #: e.g. "gap_m"
    state_units: str  #: e.g. "m"

    def per_device(self, params: Config, n: int, rng: np.random.Generator | None) -> DeviceParams:
        """Draw ``n`` devices (device-to-device variation; nominal copies when ``rng`` is None)."""
        ...

    def state_bounds(self, p: Any) -> tuple[Any, Any]:
        """(lowest, highest) state; the integrator clamps to them."""
        ...

    def initial_state(self, p: Any, which: str) -> np.ndarray:
        """State of a freshly reset ("hrs") or set ("lrs") device, shape (n,)."""
        ...

    def current(self, v_v: Any, state: np.ndarray, p: Any) -> np.ndarray:
        """Cell current, A."""
        ...

    def temperature(self, v_v: Any, state: np.ndarray, p: Any) -> np.ndarray:
        """Local temperature, K."""
        ...

    def state_rate(self, v_v: Any, state: np.ndarray, p: Any, temperature: np.ndarray) -> np.ndarray:
        """Deterministic d(state)/dt."""
        ...

    def noise_std(self, state: np.ndarray, p: Any, temperature: np.ndarray, dstate: np.ndarray) -> np.ndarray | None:
        """Standard deviation of the random state increment of a substep that moved the state
        by ``dstate`` deterministically; None when the model has no stochastic term on."""
        ...

    def max_state_step(self, p: Any) -> float:
        """Default bound on the state change per integrator substep."""
        ...

    def motion_limit(self, v_v: Any, p: Any) -> tuple[Any, Any]:
        """(lo, hi): at voltage ``v_v`` the state cannot move below ``lo`` / above ``hi`` (a
        threshold that closes as the state moves, e.g. ``F_min``); ``(-inf, inf)`` if none. The
        integrator uses it to follow a state pinned at the threshold in large steps."""
        ...

    def state_for_resistance(self, r_ohm: Any, p: Any, v_read_v: float) -> np.ndarray:
        """Inverse of the read resistance: the state that reads ``r_ohm`` at ``v_read_v``."""
        ...

    def read_disturb(self, v_read_v: float, t_read_s: float, p: Any) -> float:
        """Largest state change a read of ``t_read_s`` at ``v_read_v`` causes (worst-case state)."""
        ...

    def switching_threshold_v(self, p: Any) -> float:
        """Smallest |voltage| at which the state can move at all (any state in range)."""
        ...

    def cell_voltage(self, v_v: Any, state: np.ndarray, p: Any) -> np.ndarray:
        """Voltage across the cell itself when ``v_v`` is applied to the cell and its series
        element (a 1T1R access transistor: series resistance, compliance current)."""
        ...

    def applied_voltage(self, v_cell_v: Any, state: np.ndarray, p: Any) -> np.ndarray:
        """Inverse of :meth:`cell_voltage` (inf where the series element never allows it)."""
        ...

    def has_series(self, p: Any) -> bool:
        """Whether ``p`` has a series element at all (else :meth:`cell_voltage` is the identity)."""
        ...

    def gate_voltage(self, state: np.ndarray, p: Any) -> np.ndarray:
        """|voltage| at which a cell in ``state`` starts to move (a threshold such as ``F_min``);
        ``inf`` where it never does, 0 where it always may. The integrator lands a step on the
        time the applied voltage reaches it, so that a switching onset is never stepped over."""
        ...


class StanfordPKU:
    """The Stanford-PKU filament-gap model (see the module docstring). Stateless: the gap is
    passed in and returned; parameters come from :class:`StanfordPKUParams` or a population."""

    name = "stanford_pku"
    state_name = "gap_m"
    state_units = "m"

    def per_device(self, params: Config, n: int, rng: np.random.Generator | None) -> DeviceParams:
        """``n`` devices with ``I0``, ``v0`` lognormal (median the nominal value) and ``gamma0``
        normal around the nominal value; nominal copies when ``rng`` is None or spreads are 0.

        Draw order is fixed (I0, v0, gamma0, each ``(n,)``) so a seed gives the same population.
        """
        p = params
        if rng is None:
            return DeviceParams(p, n)
        z = rng.standard_normal((3, n))
        arrays = {
            "i0_a": p.i0_a * np.exp(p.d2d_sigma_ln_i0 * z[0]),
            "vel0_m_per_s": p.vel0_m_per_s * np.exp(p.d2d_sigma_ln_vel0 * z[1]),
            # clipped at 3 sigma so that gamma stays positive over the gap range
            "gamma0": p.gamma0 * (1.0 + p.d2d_sigma_rel_gamma0 * np.clip(z[2], -3.0, 3.0)),
        }
        return DeviceParams(p, n, arrays)

    def state_bounds(self, p: Any) -> tuple[Any, Any]:
        return p.g_min_m, p.g_max_m

    def initial_state(self, p: Any, which: str = "hrs") -> np.ndarray:
        n = getattr(p, "n", 1)
        if which == "hrs":
            return np.full(n, float(p.g_max_m))
        if which == "lrs":
            return np.full(n, float(p.g_min_m))
        raise ConfigError(f"initial={which!r} is invalid: must be one of 'hrs', 'lrs'")

    def current(self, v_v: Any, state: np.ndarray, p: Any) -> np.ndarray:
        return p.i0_a * np.exp(-state / p.g0_m) * np.sinh(np.asarray(v_v, float) / p.v0_v)

    def temperature(self, v_v: Any, state: np.ndarray, p: Any) -> np.ndarray:
        v = np.asarray(v_v, float)
        return p.t0_k + np.abs(v * self.current(v, state, p)) * p.r_th_k_per_w

    def gamma(self, state: np.ndarray, p: Any) -> np.ndarray:
        return p.gamma0 - p.beta * (state / _NM) ** p.alpha

    def state_rate(self, v_v: Any, state: np.ndarray, p: Any, temperature: np.ndarray) -> np.ndarray:
        v = np.asarray(v_v, float)
        gam = self.gamma(state, p)
        kt = K_B * temperature
        x = gam * p.a0_m * Q_E * v / (p.t_ox_m * kt)
        rate = -p.vel0_m_per_s * np.exp(-Q_E * p.ea_ev / kt) * np.sinh(x)
        return np.where(gam * np.abs(v) / p.t_ox_m < p.f_min_v_per_m, 0.0, rate)

    def noise_std(self, state: np.ndarray, p: Any, temperature: np.ndarray, dstate: np.ndarray) -> np.ndarray | None:
        if not p.c2c_stochastic or p.delta_g0_m == 0:
            return None
        s = 1.0 / (1.0 + np.exp((p.t_crit_k - temperature) / p.t_smth_k))
        return p.delta_g0_m * s * np.sqrt(np.abs(dstate) / p.a0_m)

    def max_state_step(self, p: Any) -> float:
        return 0.004e-9

    def motion_limit(self, v_v: Any, p: Any) -> tuple[Any, Any]:
        # the gap moves only while gamma(g) |V| / t_ox >= F_min, i.e. g <= g_b(|V|) with
        # g_b = 1 nm * ((gamma0 - F_min t_ox / |V|) / beta)^(1/alpha); RESET widens the gap
        # until it reaches g_b: the F_min threshold makes RESET self-limiting in amplitude.
        v = np.abs(np.asarray(v_v, float))
        with np.errstate(divide="ignore", invalid="ignore"):
            arg = (p.gamma0 - p.f_min_v_per_m * p.t_ox_m / v) / p.beta
            hi = np.where(arg > 0, _NM * np.abs(arg) ** (1.0 / p.alpha), -np.inf)
        return -np.inf, hi

    def state_for_resistance(self, r_ohm: Any, p: Any, v_read_v: float = 0.1) -> np.ndarray:
        # R = V / (I0 exp(-g/g0) sinh(V/V0))  =>  g = g0 ln(I0 sinh(V/V0) R / V)
        r = np.asarray(r_ohm, float)
        return p.g0_m * np.log(p.i0_a * np.sinh(v_read_v / p.v0_v) * r / v_read_v)

    def switching_threshold_v(self, p: Any) -> float:
        # gamma is largest at the smallest gap, so the F_min gate opens there first
        gam = np.max(np.asarray(self.gamma(np.asarray(p.g_min_m, float), p)))
        return float(p.f_min_v_per_m * p.t_ox_m / gam)

    def has_series(self, p: Any) -> bool:
        """True when ``p`` puts a series element (1T1R access transistor) in front of the cell."""
        return any(float(getattr(p, k, 0.0)) > 0 for k in ("r_series_ohm", "r_series_reset_ohm", "i_compliance_a"))

    def cell_voltage(self, v_v: Any, state: np.ndarray, p: Any) -> np.ndarray:
        """Voltage across the cell when ``v_v`` is applied to the 1T1R series of the cell and its
        access transistor: ``r_series_ohm`` with the current limit ``i_compliance_a`` in SET
        (``v_v > 0``), ``r_series_reset_ohm`` and no limit in RESET (``v_v < 0``); all 0: ``v_v``.

        Solves ``u + R_s A sinh(u / V0) = |V|`` (``A = I0 exp(-g/g0)``) by Newton's method from
        the upper bound ``min(|V|, V0 asinh(|V| / (R_s A)))`` (the left side is convex and
        increasing, so the iterates fall monotonically onto the root), then caps the SET current
        at the compliance: ``u <= V0 asinh(I_cc / A)``. Sign of ``v_v`` kept."""
        v = np.asarray(v_v, float)
        r_set, r_reset, i_cc = float(p.r_series_ohm), float(p.r_series_reset_ohm), float(p.i_compliance_a)
        if r_set == 0 and r_reset == 0 and i_cc == 0:
            return v
        a = p.i0_a * np.exp(-np.asarray(state, float) / p.g0_m)
        pos = v > 0
        x = np.abs(v)
        r_s = np.where(pos, r_set, r_reset)
        x, r_s, a, pos = np.broadcast_arrays(x, r_s, a, pos)
        u = x.copy()
        if r_set > 0 or r_reset > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.where(r_s > 0, np.minimum(x, p.v0_v * np.arcsinh(x / (r_s * a))), x)
            for _ in range(60):
                sh = np.sinh(u / p.v0_v)
                h = u + r_s * a * sh - x
                step = h / (1.0 + r_s * a * np.cosh(u / p.v0_v) / p.v0_v)
                u = np.maximum(u - step, 0.0)
                if np.all(np.abs(step) <= 1e-13 * np.maximum(x, 1e-30)):
                    break
        if i_cc > 0:
            u = np.where(pos, np.minimum(u, p.v0_v * np.arcsinh(i_cc / a)), u)
        return np.sign(v) * u

    def applied_voltage(self, v_cell_v: Any, state: np.ndarray, p: Any) -> np.ndarray:
        """Inverse of :meth:`cell_voltage`: the applied voltage (same sign) at which the cell sees
        ``v_cell_v`` (inf where the SET compliance keeps the cell below it)."""
        vc = np.asarray(v_cell_v, float)
        i = np.abs(self.current(vc, state, p))
        pos = vc > 0
        va = np.abs(vc) + np.where(pos, float(p.r_series_ohm), float(p.r_series_reset_ohm)) * i
        if float(p.i_compliance_a) > 0:
            va = np.where(pos & (i > p.i_compliance_a), np.inf, va)
        return np.sign(vc) * va

    def gate_voltage(self, state: np.ndarray, p: Any) -> np.ndarray:
        # the F_min gate: gamma(g) |V| / t_ox >= F_min  <=>  |V| >= F_min t_ox / gamma(g)
        gam = self.gamma(np.asarray(state, float), p)
        with np.errstate(divide="ignore"):
            return np.where(gam > 0, p.f_min_v_per_m * p.t_ox_m / gam, np.inf)

    def read_disturb(self, v_read_v: float, t_read_s: float, p: Any) -> float:
        lo, hi = float(np.min(p.g_min_m)), float(np.max(p.g_max_m))
        gaps = np.linspace(lo, hi, 301)[:, None]
        rate = self.state_rate(v_read_v, gaps, p, self.temperature(v_read_v, gaps, p))
        return float(np.max(np.abs(rate)) * t_read_s)


STANFORD_PKU = StanfordPKU()


def state_for_read_conductance(model: "CompactModel", p: Any, g_read_s: np.ndarray, v_read_v: float, *,
                               iters: int = 80) -> np.ndarray:
    """(n,) the state at which each cell of population ``p`` reads ``g_read_s`` (S) at
    ``v_read_v``: ``current(v_read, state) / v_read = g``, by bisection between the model's state
    bounds (the read conductance falls monotonically as the gap opens); a conductance the cell
    cannot read is clipped to the nearest bound. For starting write-verify from a cell's present
    conductance (re-programming after relaxation)."""
    g = np.asarray(g_read_s, float).ravel()
    lo, hi = model.state_bounds(p)
    n = g.size
    a = np.broadcast_to(np.asarray(lo, float), (n,)).copy()  # small gap: high conductance
    b = np.broadcast_to(np.asarray(hi, float), (n,)).copy()
    for _ in range(int(iters)):
        m = 0.5 * (a + b)
        high = model.current(v_read_v, m, p) / v_read_v > g  # still too conductive: open the gap
        a = np.where(high, m, a)
        b = np.where(high, b, m)
    return 0.5 * (a + b)


def read_to_small_signal_s(g_read_s: Any, v_read_v: float, v0_v: float) -> np.ndarray:
    """Convert a *read* conductance to the *small-signal* one of a sinh cell: the one place.

    A sinh cell ``I = A sinh(V / V0)`` has two "conductances": the read (chord) conductance that
    level tables and measurements store, ``g_read = I(V_read) / V_read = A sinh(x) / V_read``, and
    the small-signal conductance at 0 V that the crossbar solver's sinh cells take
    (``I = g V0 sinh(V / V0)``, ``g = A / V0``). With ``x = V_read / V0``::

        g_small_signal = g_read * x / sinh(x)

    (Stanford-PKU at 0.1 V: ``x = 0.4``, ``sinh(x)/x = 1.0268``: the two differ by 2.7 %). Use it
    wherever a level-table conductance feeds a nonlinear (sinh) cell, and
    :func:`small_signal_to_read_s` for the way back. Linear cells (``V0`` infinite) need neither."""
    check_positive("v_read_v", v_read_v)
    check_positive("v0_v", v0_v)
    x = v_read_v / v0_v
    return np.asarray(g_read_s, float) * (x / np.sinh(x))


def small_signal_to_read_s(g_small_signal_s: Any, v_read_v: float, v0_v: float) -> np.ndarray:
    """Inverse of :func:`read_to_small_signal_s`: ``g_read = g_small_signal * sinh(x) / x``."""
    check_positive("v_read_v", v_read_v)
    check_positive("v0_v", v0_v)
    x = v_read_v / v0_v
    return np.asarray(g_small_signal_s, float) * (np.sinh(x) / x)


def set_limit_state(model: "CompactModel", p: Any, v_set_v: float) -> np.ndarray:
    """(n,) the state a full SET at applied voltage ``v_set_v`` (> 0) reaches from the reset
    state: where the series element (``cell_voltage``) closes the switching gate, i.e. the
    smallest state at which ``v_set_v`` still puts the gate voltage across the cell. A bare cell
    (no series element, or a model without a gate) reaches its lower bound: the SET runs away.
    It is the "after a full SET" state write-verify starts from: a 1T1R cell cannot be brought
    below it by its own pulses, so starting lower would start from an unreachable state."""
    n = getattr(p, "n", 1)
    lo, hi = model.state_bounds(p)
    lo = np.broadcast_to(np.asarray(lo, float), (n,)).copy()
    hi = np.broadcast_to(np.asarray(hi, float), (n,)).copy()
    has_series = getattr(model, "has_series", None)
    if has_series is None or not has_series(p) or getattr(model, "gate_voltage", None) is None:
        return lo
    va = np.full(n, float(v_set_v))
    return _threshold_state(model, va, hi, -np.ones(n), p, lo, hi, lambda v, g, pp: model.cell_voltage(v, g, pp))


@dataclasses.dataclass(frozen=True)
class Waveform:
    """A piecewise-linear voltage waveform: corners ``t_s`` (ascending, s) and ``v_v`` (V).

    Devices may scale it individually (``integrate(..., v_scale=...)``): device ``i`` sees
    ``v_scale[i] * v(t)``.
    """

    t_s: np.ndarray
    v_v: np.ndarray

    def __post_init__(self) -> None:
        t = np.asarray(self.t_s, float)
        v = np.asarray(self.v_v, float)
        object.__setattr__(self, "t_s", t)
        object.__setattr__(self, "v_v", v)
        if t.ndim != 1 or t.shape != v.shape or t.size < 2:
            raise ValueError("a waveform needs matching 1-D t_s and v_v with at least 2 corners")
        if np.any(np.diff(t) < 0) or not np.all(np.isfinite(t)) or not np.all(np.isfinite(v)):
            raise ValueError("waveform corner times must be finite and non-decreasing")

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.t_s, self.v_v)

    @property
    def duration_s(self) -> float:
        return float(self.t_s[-1] - self.t_s[0])


def integrate(
    model: CompactModel,
    p: DeviceParams,
    state0: np.ndarray,
    wave: Waveform,
    t_out_s: np.ndarray,
    *,
    v_scale: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    max_dstate: float | None = None,
    max_dv_v: float = 0.02,
) -> np.ndarray:
    """Integrate the state of ``p.n`` devices under ``wave``; return it at ``t_out_s``.

    Parameters
    ----------
    state0: (n,) initial states.
    t_out_s: (n_out,) ascending output times within the waveform's span; the state is returned
        exactly at these times.
    v_scale: (n,) per-device multiplier of the waveform (default 1).
    rng: generator for the model's stochastic term; None integrates deterministically.
    max_dstate: bound on the state change per substep (default ``model.max_state_step``).
    max_dv_v: bound on the applied-voltage change per substep.

    Returns
    -------
    (n_out, n) states. See the module docstring for the scheme (explicit midpoint, substeps
    bounded by the state change, rejection on overshoot, per-device step sizes).
    """
    n = p.n
    t_out = np.asarray(t_out_s, float)
    if t_out.ndim != 1 or t_out.size == 0 or np.any(np.diff(t_out) < 0):
        raise ValueError("t_out_s must be a non-empty ascending 1-D array")
    if t_out[0] < wave.t_s[0] or t_out[-1] > wave.t_s[-1] * (1 + 1e-12) + 1e-300:
        raise ValueError("t_out_s must lie within the waveform")
    scale = np.ones(n) if v_scale is None else np.broadcast_to(np.asarray(v_scale, float), (n,)).copy()
    dmax = float(model.max_state_step(p) if max_dstate is None else max_dstate)
    lo_b, hi_b = model.state_bounds(p)
    lo_b = np.broadcast_to(np.asarray(lo_b, float), (n,))
    hi_b = np.broadcast_to(np.asarray(hi_b, float), (n,))
    g = np.clip(np.asarray(state0, float).copy(), lo_b, hi_b)
    out = np.empty((t_out.size, n))
    tb = wave.t_s
    vb = wave.v_v
    seg_slope = np.abs(np.diff(vb)) / np.maximum(np.diff(tb), 1e-300)
    t = np.full(n, float(tb[0]))
    k = np.zeros(n, dtype=np.int64)  # next output index per device
    cell_v = getattr(model, "cell_voltage", None)
    has_series = getattr(model, "has_series", None)
    series = cell_v is not None and has_series is not None and bool(has_series(p))

    def vcell(v_app: np.ndarray, g_: np.ndarray, pp: Any) -> np.ndarray:
        # the voltage across the cell (a 1T1R series element divides the applied one)
        return cell_v(v_app, g_, pp) if series else v_app

    t_max = float(getattr(p, "t_max_k", np.inf))
    dt_cap = np.full(n, np.inf)
    # per-device parameter arrays are indexed along with the active devices
    while True:
        # record every output time a device has reached
        while True:
            hit = (k < t_out.size)
            hit[hit] = t[hit] >= t_out[k[hit]]
            if not hit.any():
                break
            idx = np.nonzero(hit)[0]
            out[k[idx], idx] = g[idx]
            k[idx] += 1
        act = np.nonzero(k < t_out.size)[0]
        if act.size == 0:
            break
        pa = p.subset(act) if (p.arrays and act.size < n) else p
        ga, ta, sa = g[act], t[act], scale[act]
        lo, hi = lo_b[act], hi_b[act]
        t_target = t_out[k[act]]
        nxt = np.searchsorted(tb, ta, side="right")
        t_bp = tb[np.minimum(nxt, tb.size - 1)]
        t_bp = np.where(t_bp > ta, t_bp, np.inf)
        t_lim = np.minimum(t_target, t_bp)
        slope = seg_slope[np.clip(nxt - 1, 0, seg_slope.size - 1)] * np.abs(sa)

        va0 = sa * wave(ta)
        v0 = vcell(va0, ga, pa)
        f0 = _gated_rate(model, v0, ga, pa, lo, hi)
        af0 = np.abs(f0)
        # a state pinned at a threshold that closes as the state itself moves (SET through a
        # series resistance: the shrinking gap draws more current, the cell voltage falls below
        # the F_min gate): it follows the threshold as the applied voltage moves, not its rate
        pin_s = np.zeros(act.size, bool)
        if series and (f0 != 0).any():
            probe = np.clip(ga + np.sign(f0) * dmax, lo, hi)
            pin_s = (f0 != 0) & (_gated_rate(model, vcell(va0, probe, pa), probe, pa, lo, hi) * f0 <= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            dt_rate = np.where(pin_s, np.inf, dmax / af0)
            # a state pinned at a closing threshold (e.g. F_min during RESET) moves with the
            # threshold, not with its (much larger) rate: step by the threshold's motion
            lim_lo, lim_hi = model.motion_limit(v0, pa)
            pinned = ((f0 > 0) & (lim_hi - ga <= dmax)) | ((f0 < 0) & (ga - lim_lo <= dmax))
            if pinned.any():
                dv_probe = 1e-6 * np.sign(v0 + (v0 == 0))
                lo2, hi2 = model.motion_limit(v0 + dv_probe, pa)
                dlim_dv = np.where(f0 > 0, np.abs(hi2 - lim_hi), np.abs(lo2 - lim_lo)) / 1e-6
                dt_pin = dmax / (dlim_dv * slope)
                dt_rate = np.where(pinned & np.isfinite(dlim_dv), np.maximum(dt_rate, dt_pin), dt_rate)
            # a state within one bound of its clamp, moving into it, lands on it in one step
            at_bound = ((f0 > 0) & (hi - ga <= dmax)) | ((f0 < 0) & (ga - lo <= dmax))
            pinned |= at_bound
            dt_rate = np.where(at_bound, np.inf, dt_rate)
            dt_free = np.minimum(dt_rate, dt_cap[act])
            dt_dv = max_dv_v / slope
        # the voltage bound matters only while the state can move: at the start of the step, or
        # at its end (a threshold opening inside the step); a closed cell takes one long step
        closed = f0 == 0
        dt_open = np.full(act.size, np.inf)
        if closed.any():
            t_try = np.minimum(ta + dt_free, t_lim)
            f_end = _gated_rate(model, vcell(sa * wave(t_try), ga, pa), ga, pa, lo, hi)
            opens = closed & (f_end != 0)
            closed &= f_end == 0
            if opens.any():
                # the gate opens inside this step: land on the analytic opening time (the
                # voltage is linear within a waveform segment), so the closed part of the step
                # moves nothing and the next step starts with the gate open
                dt_open = _gate_opening_dt(model, ga, pa, sa, va0, wave, ta, t_try, opens, series)
        dt_free = np.where(closed, dt_free, np.minimum(np.minimum(dt_free, dt_dv), dt_open))
        land = dt_free >= (t_lim - ta)
        dt = np.where(land, t_lim - ta, dt_free)
        t_new = np.where(land, t_lim, ta + dt)

        gm = np.clip(ga + 0.5 * dt * f0, lo, hi)
        vm = vcell(sa * wave(ta + 0.5 * dt), gm, pa)
        fm = _gated_rate(model, vm, gm, pa, lo, hi)
        # pinned devices: explicit Euler with the open-gate rate, then the threshold clip below
        dg = dt * np.where(pinned, f0, fm)
        v1 = vcell(sa * wave(t_new), ga, pa)
        lim_lo1, lim_hi1 = model.motion_limit(v1, pa)
        dg = np.where(dg > 0, np.minimum(dg, np.maximum(lim_hi1 - ga, 0.0)), dg)
        dg = np.where(dg < 0, np.maximum(dg, np.minimum(lim_lo1 - ga, 0.0)), dg)
        if pin_s.any():
            gs = _threshold_state(model, sa[pin_s] * wave(t_new[pin_s]), ga[pin_s], np.sign(f0[pin_s]),
                                  pa.subset(np.nonzero(pin_s)[0]) if pa.arrays else pa, lo[pin_s], hi[pin_s], vcell)
            dg[pin_s] = gs - ga[pin_s]
        dg = np.clip(ga + dg, lo, hi) - ga
        reject = np.abs(dg) > 2.0 * dmax
        big = np.abs(dg) > 2.0 * dmax
        if big.any():
            r = act[big]
            dt_cap[r] = dt[big] * np.maximum(0.05, 0.9 * dmax / np.abs(dg[big]))
        ok = ~reject
        g_new = ga + dg
        temp = model.temperature(vm, gm, pa)
        hot = ok & (temp > t_max)
        if hot.any():
            j = int(np.nonzero(hot)[0][np.argmax(temp[hot])])
            raise OverheatError(
                f"the cell reaches {temp[j]:.0f} K (t_max_k={t_max:g}) at {sa[j] * wave(ta[j] + 0.5 * dt[j]):.3g} V applied, "
                f"{abs(float(np.atleast_1d(model.current(vm, gm, pa))[j])):.3g} A: add a series element "
                "(r_series_ohm, or i_compliance_a: the access transistor of a 1T1R cell) or lower the voltage"
            )
        if rng is not None:
            # noise variance follows the travel actually made (none once clamped at a bound)
            std = model.noise_std(gm, pa, temp, g_new - ga)
            if std is not None:
                g_new = g_new + std * rng.standard_normal(act.size)
        g_new = np.clip(g_new, lo, hi)
        upd = act[ok]
        g[upd] = g_new[ok]
        t[upd] = t_new[ok]
        dt_cap[upd] = np.where(np.isfinite(dt_cap[upd]), 4.0 * dt[ok], np.inf)
    return out


def _gate_opening_dt(
    model: CompactModel, g: np.ndarray, p: Any, sa: np.ndarray, v0: np.ndarray, wave: Waveform, ta: np.ndarray, t_try: np.ndarray, opens: np.ndarray,
    series: bool = False,
) -> np.ndarray:
    """Time from ``ta`` until |V| first reaches the gate voltage of state ``g`` (inf where
    ``opens`` is False or the model has no gate), for devices whose voltage is linear on
    ``[ta, t_try]`` (one waveform segment). Slightly past the opening (1e-12 relative in
    voltage), so that the gate is open at the end of the landed step despite rounding."""
    gate = getattr(model, "gate_voltage", None)
    out = np.full(g.shape, np.inf)
    if gate is None:
        return out
    vg = np.broadcast_to(np.asarray(gate(g, p), float), g.shape) * (1 + 1e-12)
    targets = (vg, -vg)
    if series:
        # the applied voltage at which the cell (closed: its state fixed) sees the gate voltage,
        # per polarity (the series element differs between SET and RESET)
        with np.errstate(over="ignore", invalid="ignore"):
            targets = tuple(np.broadcast_to(np.asarray(model.applied_voltage(sg * vg, g, p), float), g.shape) * (1 + 1e-12)
                            for sg in (1.0, -1.0))
    v1 = sa * wave(t_try)
    span = t_try - ta
    with np.errstate(divide="ignore", invalid="ignore"):
        dvdt = (v1 - v0) / span
        cands = []
        for target in targets:
            d = (target - v0) / dvdt
            cands.append(np.where((d > 0) & (d <= span) & np.isfinite(d), d, np.inf))
        d = np.minimum(cands[0], cands[1])
    return np.where(opens & np.isfinite(d), d, np.inf)


def _threshold_state(model: CompactModel, va: np.ndarray, g: np.ndarray, direction: np.ndarray, p: Any,
                     lo: np.ndarray, hi: np.ndarray, vcell: Any) -> np.ndarray:
    """How far the state moves from ``g`` in ``direction`` at applied voltage ``va`` before the
    gate closes (bisection, 36 halvings; ``g`` where it is closed already, the bound where it
    never closes)."""
    gate, applied = getattr(model, "gate_voltage", None), getattr(model, "applied_voltage", None)
    if gate is not None and applied is not None:
        # explicit: the gate is open at state x iff |va| reaches the applied voltage that puts
        # the gate voltage of x across the cell (no divider solve per probe)
        sgn = np.where(np.asarray(va) < 0, -1.0, 1.0)

        def open_at(x: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore", invalid="ignore"):
                need = np.abs(applied(sgn * gate(x, p), x, p))
            return np.abs(va) >= need
    else:
        def open_at(x: np.ndarray) -> np.ndarray:
            return _gated_rate(model, vcell(va, x, p), x, p, lo, hi) * direction > 0

    a = g.copy()
    b = np.where(direction < 0, lo, hi).astype(float)
    far = open_at(b)
    for _ in range(36):  # the gap range / 2**36 < 1e-19 m
        m = 0.5 * (a + b)
        om = open_at(m)
        a = np.where(om, m, a)
        b = np.where(om, b, m)
    return np.where(open_at(g), np.where(far, b, a), g)


def _gated_rate(model: CompactModel, v: np.ndarray, g: np.ndarray, p: Any, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """State rate with the clamp applied: no motion out of ``[lo, hi]`` at a bound."""
    f = model.state_rate(v, g, p, model.temperature(v, g, p))
    return np.where(((g <= lo) & (f < 0)) | ((g >= hi) & (f > 0)), 0.0, f)
