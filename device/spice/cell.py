"""One Stanford-PKU cell as an ngspice transient: the independent check of the Python model.

The netlist mirrors :class:`device.compact.StanfordPKU` with behavioural sources only:

* ``Bcell``: the cell current ``I0 exp(-g/g0) sinh(V/V0)`` between the cell node and ground,
  measured by the 0 V source ``Vsense``;
* the gap is the voltage of node ``gap`` **in nm**, a state integrated by capacitor ``Cgap``
  (1 nF) that the current source ``Bgap`` charges with ``Cgap * dg/dt``;
* helper nodes ``gapc`` (gap clamped to [g_min, g_max], nm), ``temp`` (local temperature,
  ``T0 + |V I| R_th``, K), ``gam`` (field enhancement ``gamma0 - beta g^alpha``) and ``rate``
  (dg/dt in nm/ns, zero below ``F_min`` and at a bound when pushing outward).

Deterministic (no cycle-to-cycle term, no device-to-device variation): :func:`run_cell` takes a
nominal parameter config and a piecewise-linear waveform and returns time, voltage, current and
gap, so tests compare it with :func:`device.compact.integrate` on the same waveform.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from device.compact import K_B, Q_E, StanfordPKUParams, Waveform

__all__ = ["CellTransient", "cell_netlist", "run_cell"]


def _f(x: float) -> str:
    return repr(float(x))


def cell_netlist(
    params: StanfordPKUParams,
    wave: Waveform,
    *,
    gap0_m: float,
    t_max_step_s: float,
    reltol: float = 1e-6,
) -> str:
    """The complete deck (title, elements, options, ``.tran ... uic``, ``.end``)."""
    p = params
    nm = 1e-9
    pwl = " ".join(f"{_f(t)} {_f(v)}" for t, v in zip(wave.t_s, wave.v_v))
    ea_k = Q_E * p.ea_ev / K_B  # q Ea / k, K
    c1 = p.a0_m / p.t_ox_m * Q_E / K_B  # gamma a0 q V / (t_ox k T) = gamma V c1 / T
    vel_nm_per_ns = p.vel0_m_per_s  # 1 m/s = 1 nm/ns
    fmin_tox = p.f_min_v_per_m * p.t_ox_m  # gamma |V| >= F_min t_ox
    gmin, gmax = p.g_min_m / nm, p.g_max_m / nm
    i_cell = f"{_f(p.i0_a)}*exp(-v(gapc)/{_f(p.g0_m / nm)})*sinh(v(c)/{_f(p.v0_v)})"
    lines = [
        "* Stanford-PKU filament-gap cell (reram-cosim device/spice/cell.py); gap node in nm",
        f"Vin in 0 PWL({pwl})",
        "Vsense in c 0",
        f"Bcell c 0 I={i_cell}",
        f"Bgc gapc 0 V=min(max(v(gap),{_f(gmin)}),{_f(gmax)})",
        f"Btemp temp 0 V={_f(p.t0_k)}+abs(v(c)*{i_cell})*{_f(p.r_th_k_per_w)}",
        f"Bgam gam 0 V={_f(p.gamma0)}-{_f(p.beta)}*pow(v(gapc),{_f(p.alpha)})",
        # dg/dt in nm/ns: -v0 exp(-q Ea/kT) sinh(gamma a0 q V/(t_ox k T)), gated by F_min
        f"Bfree free 0 V=(v(gam)*abs(v(c)) >= {_f(fmin_tox)}) ? "
        f"-{_f(vel_nm_per_ns)}*exp(-{_f(ea_k)}/v(temp))*sinh(v(gam)*v(c)*{_f(c1)}/v(temp)) : 0",
        # no motion out of [g_min, g_max] at a bound
        f"Brate rate 0 V=((v(gap) <= {_f(gmin)} && v(free) < 0) || (v(gap) >= {_f(gmax)} && v(free) > 0)) ? 0 : v(free)",
        # Cgap dv/dt = I with v in nm and rate in nm/ns: I = Cgap * 1e9 * rate
        "Bgap 0 gap I=1e-9*1e9*v(rate)",
        f"Cgap gap 0 1e-9 IC={_f(gap0_m / nm)}",
        f".options reltol={_f(reltol)} abstol=1e-15 vntol=1e-9 method=gear maxord=2 itl4=100",
        f".tran {_f(t_max_step_s)} {_f(wave.t_s[-1])} 0 {_f(t_max_step_s)} uic",
        ".end",
    ]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class CellTransient:
    """ngspice result: ``t_s``, ``v_v`` (cell voltage), ``i_a`` (cell current), ``gap_m``;
    all (time,). ``netlist`` and ``ngspice_version`` for provenance."""

    t_s: np.ndarray
    v_v: np.ndarray
    i_a: np.ndarray
    gap_m: np.ndarray
    netlist: str
    ngspice_version: str


def run_cell(
    params: StanfordPKUParams,
    wave: Waveform,
    *,
    gap0_m: float,
    t_max_step_s: float | None = None,
    reltol: float = 1e-6,
) -> CellTransient:
    """Run the cell netlist in ngspice (through :func:`device.spice.runner.run_netlist`).

    ``t_max_step_s`` defaults to 1/2000 of the waveform duration.
    """
    from device.spice.runner import run_netlist

    if t_max_step_s is None:
        t_max_step_s = wave.duration_s / 2000
    net = cell_netlist(params, wave, gap0_m=gap0_m, t_max_step_s=t_max_step_s, reltol=reltol)
    res = run_netlist(net)
    vec = res.vectors
    # ngspice: the branch current flows into the + terminal of Vsense (node in), i.e. into the cell
    return CellTransient(
        t_s=np.asarray(vec["time"]),
        v_v=np.asarray(vec["v(c)"]),
        i_a=np.asarray(vec["i(vsense)"]),
        gap_m=np.clip(np.asarray(vec["v(gap)"]), params.g_min_m / 1e-9, params.g_max_m / 1e-9) * 1e-9,
        netlist=net,
        ngspice_version=res.ngspice_version,
    )
