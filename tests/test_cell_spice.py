"""Cross-check: the Python Stanford-PKU model against the same cell as an ngspice transient.

The netlist (device/spice/cell.py) integrates the gap as a capacitor voltage driven by a
behavioural source; both are deterministic (no c2c/d2d variation). Agreement required: 1 % in
the cell current (relative, currents above 1e-3 of the peak) and in the read resistance after
the waveform, on a DC-like triangular sweep through SET and RESET and on single pulses.
"""

import numpy as np
import pytest

from device.compact import STANFORD_PKU, StanfordPKUParams, integrate
from device.simulate import population, pulse_waveform, sweep_waveform

pytestmark = pytest.mark.spice

P = StanfordPKUParams(c2c_stochastic=False)


@pytest.fixture(scope="module")
def spice():
    from device.spice import runner

    if not runner.spice_available():
        pytest.skip("PySpice / libngspice not available")
    from device.spice import cell

    return cell


def _compare(cell, wave, gap0, max_dstate=None):
    s = cell.run_cell(P, wave, gap0_m=gap0)
    g = integrate(STANFORD_PKU, population(P, 1), np.array([gap0]), wave, s.t_s, max_dstate=max_dstate)[:, 0]
    i_py = STANFORD_PKU.current(wave(s.t_s), g, P)
    floor = 1e-3 * np.abs(s.i_a).max()
    rel_i = np.abs(i_py - s.i_a) / np.maximum(np.abs(s.i_a), floor)
    r_py, r_sp = P.resistance_ohm(g[-1]), P.resistance_ohm(s.gap_m[-1])
    return s, g, rel_i, abs(r_py / r_sp - 1)


def test_dc_sweep_agrees_with_ngspice(spice):
    wave = sweep_waveform(1.5, 1.5, 0.75e6)  # 8 us triangle: SET and RESET, rate-limited switching
    # The SET ends in a collapse (the gap falls 0.3 nm within 2 ns); against a tight scipy
    # reference (tests/test_device_audit.py) ngspice (gear, 4 ns max step) is off by up to
    # 0.007 nm there and the Python integrator, once its F_min onset was fixed, by 0.017 nm at its
    # default 0.004 nm substeps (second order: 0.002 nm at 0.001 nm). So Python runs at 0.001 nm
    # here, and the current, exponential in the gap (0.25 nm), agrees within 2 % (0.005 nm).
    s, g, rel_i, rel_r = _compare(spice, wave, P.g_max_m, max_dstate=0.001e-9)
    assert np.abs(s.v_v - wave(s.t_s)).max() < 1e-9
    assert g.min() < 0.25e-9 and s.gap_m.min() < 0.25e-9  # both switched to LRS ...
    assert g[-1] > 1.6e-9 and s.gap_m[-1] > 1.6e-9  # ... and back
    assert rel_i.max() < 0.02, rel_i.max()
    assert np.abs(g - s.gap_m).max() < 0.005e-9
    assert rel_r < 0.01


@pytest.mark.parametrize("amp,gap0", [(1.5, 1.7e-9), (-1.25, 0.2e-9)])
def test_pulse_agrees_with_ngspice(spice, amp, gap0):
    wave, _ = pulse_waveform([amp], 50e-9, 1e-9, 5e-9)
    s, g, rel_i, rel_r = _compare(spice, wave, gap0)
    assert abs(g[-1] - gap0) > 0.04e-9  # the pulse moved the gap
    assert rel_i.max() < 0.01, rel_i.max()
    assert rel_r < 0.01, rel_r
