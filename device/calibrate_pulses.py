"""Stanford-PKU parameters and cycle-to-cycle noise from measured potentiation/depression ramps.

Input (tidy CSV, one read a row; :func:`read_ramps_csv`): ``ramp`` (an id), ``direction``
(``set`` or ``reset``), ``pulse`` (0 = the read before the first pulse, then 1, 2, ...),
``i_a`` (read current, A, at ``--v-read``, 0.1 V by default) or ``g_s`` (read conductance, S).
:func:`cross_sim_ramps_csv` converts the shared CrossSim ramp files
(``../shared/data/devices/pulse_ramps/{set,reset}.csv``: one ramp a column, read currents at
0.1 V) to that format.

The fit (:func:`fit_pulses`): identical pulses of an assumed width ``t_pulse_s`` (100 ns: the
files do not say) move the gap by the model's rate at the pulse voltage; a ramp is the map
``g_{k+1} = g_k + t_pulse * f(V, g at the midpoint)`` (one midpoint step per pulse: a pulse moves
the gap by about 1e-3 nm, far below the integrator's 0.004 nm substep, so this is the
integrator's own result for a flat-top pulse; edges neglected), read at ``v_read``. Fitted, by
``scipy.optimize.least_squares`` (trust-region reflective with bounds; chosen over lmfit because
the problem is three bounded parameters with a cheap residual and scipy is already a dependency):

* ``vel0_m_per_s`` (the gap velocity prefactor: only its product with the unknown pulse width is
  determined), ``v_set_v`` and ``v_reset_v`` (the effective pulse amplitudes; their curvature
  signature is the Joule heating, which grows with the read current along a ramp), against the
  mean SET and mean RESET ramp.
* ``delta_g0_m`` (the cycle-to-cycle term, an assumption of the model's form: see
  :mod:`device.compact`) by moments: the variance of pulse-to-pulse increments across ramps,
  minus twice the read-noise variance (estimated from the lag-1 covariance of the increments,
  which read noise makes negative), divided by the model's ``s(T)^2 |dg| / a0`` per pulse.
* ``i0_a`` is pinned, not fitted: a read current fixes ``I0 exp(-g/g0)``, not ``I0`` and ``g``
  separately, and the Joule heating depends only on that product; it is set so that the highest
  conductance seen lies at ``g_min`` (the fitted states then span the model's gap range).

Not determined by ramps (kept at their published values): the pulse width (only
``vel0 * t_pulse``), ``g0_m`` and ``I0`` separately, ``gamma0`` / ``beta`` / ``alpha`` apart from
the voltage (``gamma V`` enters as a product), ``ea_ev`` and ``r_th_k_per_w`` apart from
``vel0`` and the voltage (one temperature range per ramp), and everything the ramps never reach
(``g_max_m``, ``F_min`` beyond "the pulses switch").
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from device.calibrate import CalibrationError, read_tidy_csv
from device.compact import STANFORD_PKU, StanfordPKUParams

__all__ = ["Ramps", "PulseFit", "read_ramps_csv", "cross_sim_ramps_csv", "simulate_ramps", "fit_pulses", "pulse_ramps_dir", "plot_pulse_fit"]

#: assumed flat-top width of the measured pulses, s (not given by the data; only vel0 * width is fitted)
T_PULSE_S = 100e-9


@dataclasses.dataclass(frozen=True)
class Ramps:
    """Measured ramps: ``set`` and ``reset`` read currents, each (ramps, reads) with NaN padding
    (read 0 is before the first pulse); ``v_read_v`` the read voltage."""

    set_a: np.ndarray
    reset_a: np.ndarray
    v_read_v: float = 0.1

    def mean(self, which: str) -> np.ndarray:
        """Mean ramp over the ramps still present at each read (at least half of them)."""
        a = self.set_a if which == "set" else self.reset_a
        n = np.sum(np.isfinite(a), axis=0)
        keep = n >= max(2, a.shape[0] // 2)
        last = int(np.nonzero(keep)[0][-1]) + 1 if keep.any() else 0
        with np.errstate(invalid="ignore"):
            return np.nanmean(a[:, :last], axis=0)


def pulse_ramps_dir() -> Path:
    """The shared CrossSim ramps: ``../shared/data/devices/pulse_ramps`` next to the repository."""
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "devices" / "pulse_ramps"


def cross_sim_ramps_csv(out: str | Path, src: str | Path | None = None) -> Path:
    """Write the CrossSim ramp files (one ramp a column, read currents at 0.1 V; BSD-3,
    github.com/sandialabs/cross-sim) as a tidy ramps CSV (``ramp,direction,pulse,i_a``)."""
    from device.io import atomic_path

    d = Path(src) if src is not None else pulse_ramps_dir()
    rows = []
    for which in ("set", "reset"):
        f = d / f"{which}.csv"
        if not f.is_file():
            raise CalibrationError(f"{f}: no such file")
        a = np.genfromtxt(f, delimiter=",", skip_header=1, ndmin=2)
        for j in range(a.shape[1]):
            for k, v in enumerate(a[:, j]):
                if np.isfinite(v):
                    rows.append(f"{which}{j + 1},{which},{k},{v:.9g}")
    with atomic_path(out) as tmp:
        Path(tmp).write_text("ramp,direction,pulse,i_a\n" + "\n".join(rows) + "\n")
    return Path(out)


def read_ramps_csv(path: str | Path, *, v_read_v: float = 0.1) -> Ramps:
    """A tidy ramps CSV (see the module docstring) as :class:`Ramps`."""
    d = read_tidy_csv(path, text_columns=("ramp", "direction"), float_columns=("pulse", "i_a", "g_s"))
    if "pulse" not in d:
        raise CalibrationError(f"{path}: needs a column 'pulse' (0 = the read before the first pulse)")
    if "i_a" in d:
        i = d["i_a"]
    elif "g_s" in d:
        i = d["g_s"] * v_read_v
    else:
        raise CalibrationError(f"{path}: needs a column 'i_a' (read current, A) or 'g_s' (S)")
    if not np.all(np.isfinite(i)) or np.any(i <= 0):
        raise CalibrationError(f"{path}: read currents must be finite and > 0")
    pulse = d["pulse"]
    bad = ~(np.isfinite(pulse) & (pulse >= 0) & (pulse == np.round(pulse)))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise CalibrationError(f"{path}: pulse number {pulse[j]:g} (data row {j + 1}) is invalid: pulse numbers are "
                               "integers 0, 1, 2, ... (0 = the read before the first pulse)")
    direction = np.char.lower(d["direction"])
    unknown = sorted(set(direction.tolist()) - {"set", "reset"})
    if unknown:
        raise CalibrationError(f"{path}: column 'direction' holds {unknown[0]!r}; it must be set or reset")
    out = {}
    for which in ("set", "reset"):
        m = direction == which
        if not m.any():
            raise CalibrationError(f"{path}: no {which!r} ramps (column 'direction' holds set / reset)")
        ids, row = np.unique(d["ramp"][m], return_inverse=True)
        k = pulse[m].astype(np.int64)
        # every ramp reads pulses 0..n-1, each once: checked on counts before the (ramps, n) array
        # is allocated, so a stray huge pulse number costs nothing
        n_reads = np.bincount(row, minlength=ids.size)
        last = np.full(ids.size, -1, np.int64)
        np.maximum.at(last, row, k)
        _, first = np.unique(np.stack([row, k]), axis=1, return_index=True)
        twice = np.setdiff1d(np.arange(row.size), first)
        if twice.size:
            j = int(twice[0])
            raise CalibrationError(f"{path}: {which} ramp {str(ids[row[j]])!r} reads pulse {int(k[j])} twice: each ramp needs "
                                   "one read for every pulse number 0, 1, 2, ... without gaps")
        wrong = np.flatnonzero(last + 1 != n_reads)
        if wrong.size:
            r = int(wrong[0])
            ks = np.sort(k[row == r])
            gaps = np.setdiff1d(np.arange(min(int(ks[-1]), ks.size + 5) + 1), ks)[:5]
            raise CalibrationError(f"{path}: {which} ramp {str(ids[r])!r} has no read for pulse(s) "
                                   f"{', '.join(str(int(g)) for g in gaps)}: each ramp needs one read for every pulse "
                                   "number 0, 1, 2, ... without gaps")
        a = np.full((ids.size, int(last.max()) + 1), np.nan)
        a[row, k] = i[m]
        out[which] = a
    return Ramps(out["set"], out["reset"], v_read_v)


# -- the pulse map --------------------------------------------------------------------------------
def _step(p: Any, v: float, g: np.ndarray, t_pulse_s: float) -> tuple[np.ndarray, np.ndarray]:
    """One flat-top pulse: midpoint step of the gap; returns (new gap, temperature at midpoint)."""
    m = STANFORD_PKU
    lo, hi = p.g_min_m, p.g_max_m
    f0 = m.state_rate(v, g, p, m.temperature(v, g, p))
    gm = np.clip(g + 0.5 * t_pulse_s * f0, lo, hi)
    tm = m.temperature(v, gm, p)
    fm = m.state_rate(v, gm, p, tm)
    g1 = g + t_pulse_s * fm
    _, lim_hi = m.motion_limit(v, p)
    g1 = np.where(fm > 0, np.minimum(g1, np.maximum(lim_hi, g)), g1)
    return np.clip(g1, lo, hi), tm


def simulate_ramps(
    p: StanfordPKUParams, v_pulse_v: float, i_start_a: np.ndarray, n_pulses: int, *,
    t_pulse_s: float = T_PULSE_S, v_read_v: float = 0.1, rng: np.random.Generator | None = None,
    read_noise_a: float = 0.0,
) -> np.ndarray:
    """(ramps, n_pulses + 1) read currents of ramps of identical pulses from start currents
    ``i_start_a`` (ramps,); with ``rng`` the model's cycle-to-cycle term (per pulse, variance
    ``(delta_g0 s(T))^2 |dg| / a0``) and Gaussian read noise ``read_noise_a`` are added."""
    m = STANFORD_PKU
    i_start = np.atleast_1d(np.asarray(i_start_a, float))
    g = np.clip(m.state_for_resistance(v_read_v / i_start, p, v_read_v), p.g_min_m, p.g_max_m)
    out = np.empty((i_start.size, n_pulses + 1))
    out[:, 0] = m.current(v_read_v, g, p)
    for k in range(n_pulses):
        g1, tm = _step(p, v_pulse_v, g, t_pulse_s)
        if rng is not None:
            std = m.noise_std(g, p, tm, g1 - g)
            if std is not None:
                g1 = np.clip(g1 + std * rng.standard_normal(g.size), p.g_min_m, p.g_max_m)
        g = g1
        out[:, k + 1] = m.current(v_read_v, g, p)
    if rng is not None and read_noise_a > 0:
        out = out + read_noise_a * rng.standard_normal(out.shape)
    return out


@dataclasses.dataclass(frozen=True)
class PulseFit:
    """Result of :func:`fit_pulses`: the fitted preset and what went into it."""

    params: StanfordPKUParams
    v_set_v: float
    v_reset_v: float
    t_pulse_s: float
    read_noise_a: float
    rms_error_set_a: float
    rms_error_reset_a: float
    cost: float

    def preset_json(self) -> dict[str, Any]:
        """The preset file: model parameters plus the pulse settings they were fitted with."""
        return {
            "model": "stanford_pku",
            "params": self.params.to_dict(),
            "fitted": ["vel0_m_per_s", "delta_g0_m", "i0_a (pinned: highest read at g_min)"],
            "pulses": {"v_set_v": self.v_set_v, "v_reset_v": self.v_reset_v, "t_pulse_s": self.t_pulse_s,
                       "note": "effective amplitudes; the width is assumed (only vel0 * width is determined)"},
            "fit": {"rms_error_set_a": self.rms_error_set_a, "rms_error_reset_a": self.rms_error_reset_a,
                    "read_noise_a": self.read_noise_a, "method": "scipy.optimize.least_squares (trf, bounds)"},
        }


def _c2c_moments(a: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(increment variance across ramps and pulses, read-noise variance, mean |increment| per
    pulse) of ramps ``a`` (ramps, reads): Var(d) = c2c + 2 s2, Cov(d_k, d_k+1) = -s2."""
    d = np.diff(a, axis=1)
    dm = d - np.nanmean(d, axis=0)
    var = float(np.nanmean(dm**2))
    cov = float(np.nanmean(dm[:, :-1] * dm[:, 1:]))
    return var, max(-cov, 0.0), np.abs(np.nanmean(d, axis=0))


def fit_pulses(ramps: Ramps, base: StanfordPKUParams | None = None, *, t_pulse_s: float = T_PULSE_S) -> PulseFit:
    """Fit ``vel0_m_per_s``, the SET / RESET amplitudes and ``delta_g0_m`` to ``ramps`` (see the
    module docstring); every other parameter from ``base`` (the published set by default)."""
    from scipy.optimize import least_squares

    base = StanfordPKUParams(c2c_stochastic=False) if base is None else base.replace(c2c_stochastic=False)
    ms, mr = ramps.mean("set"), ramps.mean("reset")
    if ms.size < 5 or mr.size < 5:
        raise CalibrationError("each direction needs ramps of at least 5 reads")
    x_read = math.sinh(ramps.v_read_v / base.v0_v)
    i_hi = float(np.nanmax(np.concatenate([ramps.set_a.ravel(), ramps.reset_a.ravel()])))
    # pin I0 so that the highest read current sits at g_min (2 % margin)
    i0 = 1.02 * i_hi / (math.exp(-base.g_min_m / base.g0_m) * x_read)
    p0 = base.replace(i0_a=i0)
    scale = float(np.nanstd(np.concatenate([ms, mr]))) or 1.0

    def params_of(x: np.ndarray) -> StanfordPKUParams:
        return p0.replace(vel0_m_per_s=float(10.0 ** x[0]))

    def resid(x: np.ndarray) -> np.ndarray:
        p = params_of(x)
        rs = simulate_ramps(p, x[1], ms[:1], ms.size - 1, t_pulse_s=t_pulse_s, v_read_v=ramps.v_read_v)[0]
        rr = simulate_ramps(p, -x[2], mr[:1], mr.size - 1, t_pulse_s=t_pulse_s, v_read_v=ramps.v_read_v)[0]
        return np.concatenate([rs - ms, rr - mr]) / scale

    best = None
    lb, ub = np.array([-6.0, 0.2, 0.2]), np.array([6.0, 3.0, 3.0])
    for v in (0.8, 1.2, 1.6):
        # for each start amplitude, the vel0 that moves the SET ramp by the right amount
        grid = np.linspace(-5.0, 5.0, 21)
        errs = [np.sum(resid(np.array([lv, v, v])) ** 2) for lv in grid]
        x0 = np.array([grid[int(np.argmin(errs))], v, v])
        with np.errstate(over="ignore", invalid="ignore"):
            r = least_squares(resid, x0, bounds=(lb, ub), x_scale=np.array([0.1, 0.01, 0.01]), diff_step=1e-6)
        if best is None or r.cost < best.cost:
            best = r
    x = best.x
    p = params_of(x)
    # cycle-to-cycle term by moments on the SET ramps (the longer, the more increments)
    var, s2, inc = _c2c_moments(ramps.set_a)
    c2c_var_a2 = max(var - 2.0 * s2, 0.0)
    sim = simulate_ramps(p, x[1], ms[:1], ms.size - 1, t_pulse_s=t_pulse_s, v_read_v=ramps.v_read_v)[0]
    g = STANFORD_PKU.state_for_resistance(ramps.v_read_v / sim, p, ramps.v_read_v)
    dg = np.abs(np.diff(g))
    _, tm = _step(p, x[1], g[:-1], t_pulse_s)
    s = 1.0 / (1.0 + np.exp((p.t_crit_k - tm) / p.t_smth_k))
    # per pulse: Var(dI) = (dI/dg)^2 delta^2 s^2 |dg| / a0, dI/dg = -I / g0
    k_unit = np.mean((sim[:-1] / p.g0_m) ** 2 * s**2 * dg / p.a0_m)
    delta = math.sqrt(c2c_var_a2 / k_unit) if k_unit > 0 else 0.0
    p = p.replace(delta_g0_m=float(min(delta, 1e-9)), c2c_stochastic=True)
    rs, rr = np.split(resid(x) * scale, [ms.size])
    return PulseFit(params=p, v_set_v=float(x[1]), v_reset_v=float(x[2]), t_pulse_s=t_pulse_s,
                    read_noise_a=math.sqrt(s2), rms_error_set_a=float(np.sqrt(np.mean(rs**2))),
                    rms_error_reset_a=float(np.sqrt(np.mean(rr**2))), cost=float(best.cost))


def plot_pulse_fit(ramps: Ramps, fit: PulseFit, path: str | Path) -> Path:
    """Measured ramps (grey), their means and the fitted model's ramps (lines). PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from device.plots import save_figure

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for a, which, v, axx in ((ramps.set_a, "set", fit.v_set_v, ax[0]), (ramps.reset_a, "reset", -fit.v_reset_v, ax[1])):
        for row in a:
            axx.plot(row * 1e6, color="0.8", lw=0.5)
        m = ramps.mean(which)
        axx.plot(m * 1e6, "k", lw=1.5, label="mean of measured ramps")
        sim = simulate_ramps(fit.params, v, m[:1], m.size - 1, t_pulse_s=fit.t_pulse_s, v_read_v=ramps.v_read_v)[0]
        axx.plot(sim * 1e6, "r--", lw=1.5, label=f"fit: {abs(v):.3f} V x {fit.t_pulse_s * 1e9:.0f} ns")
        axx.set(xlabel="pulse", ylabel=f"read current at {ramps.v_read_v} V (uA)", title=which.upper())
        axx.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)[0]


def register_cli(cs: Any) -> None:
    """``device calibrate pulses`` (added to the ``calibrate`` subparsers ``cs``)."""
    pp = cs.add_parser(
        "pulses", help="Stanford-PKU preset (vel0, pulse amplitudes, c2c noise) from potentiation/depression ramps",
        description="Columns: ramp, direction (set/reset), pulse (0 = read before the first pulse), i_a (read current, A) "
        "or g_s (S). Fits vel0_m_per_s and the SET/RESET amplitudes by scipy.optimize.least_squares and delta_g0_m by "
        "moments; writes a preset JSON usable with --preset-file by device iv/pulse/program.",
    )
    pp.add_argument("--in", dest="inp", required=True, help="tidy ramps CSV")
    pp.add_argument("--out", required=True, help="output preset JSON")
    pp.add_argument("--plot", default=None, help="also write measured and fitted ramps (PNG)")
    pp.add_argument("--v-read", type=float, default=0.1, help="read voltage of the currents, V (default: %(default)s)")
    pp.add_argument("--t-pulse", type=float, default=T_PULSE_S, help="assumed pulse width, s (default: %(default)s)")
    pp.set_defaults(func=_cmd_pulses)


def _cmd_pulses(args: Any) -> int:
    import json

    from device.config import check_positive
    from device.io import atomic_write_text, check_replace, check_writable
    from device.presets import preset_foreign_reason

    check_replace(args.out, preset_foreign_reason, "preset file")
    if args.plot:
        check_writable(args.plot)
    check_positive("--v-read", args.v_read)
    check_positive("--t-pulse", args.t_pulse)
    ramps = read_ramps_csv(args.inp, v_read_v=args.v_read)
    fit = fit_pulses(ramps, t_pulse_s=args.t_pulse)
    atomic_write_text(args.out, json.dumps(fit.preset_json(), indent=2, sort_keys=True) + "\n")
    print(f"{ramps.set_a.shape[0]} SET and {ramps.reset_a.shape[0]} RESET ramps: vel0 {fit.params.vel0_m_per_s:.4g} m/s, "
          f"SET {fit.v_set_v:.4f} V, RESET {fit.v_reset_v:.4f} V ({fit.t_pulse_s * 1e9:g} ns assumed), "
          f"I0 {fit.params.i0_a:.4g} A (pinned), delta_g0 {fit.params.delta_g0_m * 1e9:.4g} nm, read noise {fit.read_noise_a * 1e6:.3g} uA; "
          f"rms error SET {fit.rms_error_set_a * 1e6:.3g} uA, RESET {fit.rms_error_reset_a * 1e6:.3g} uA")
    if args.plot:
        plot_pulse_fit(ramps, fit, args.plot)
    print(f"  wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0
