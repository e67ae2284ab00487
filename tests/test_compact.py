"""Stanford-PKU compact model: analytic limits, switching physics, integrator step independence."""

import numpy as np
import pytest

from device.compact import STANFORD_PKU, CompactModel, ReadDisturbError, StanfordPKUParams, Waveform, integrate
from device.config import ConfigError, apply_overrides
from device.presets import PRESETS, get_preset
from device.simulate import dc_sweep, population, pulse_train, read_resistance

P = StanfordPKUParams(c2c_stochastic=False)
M = STANFORD_PKU


def test_protocol_and_presets():
    assert isinstance(M, CompactModel)
    for name, factory in PRESETS.items():
        p = factory()
        assert isinstance(p.model(), CompactModel)
        assert p.__class__.from_json(p.to_json()) == p
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        get_preset("nope")


def test_published_window_matches_memtorch_pairing():
    # g_min / g_max with I0, g0, V0 at 0.1 V give MemTorch's R_on = 542 ohm, R_off = 218,586 ohm
    np.testing.assert_allclose(P.resistance_ohm(P.g_min_m), 542.0, rtol=2e-3)
    np.testing.assert_allclose(P.resistance_ohm(P.g_max_m), 218586.0, rtol=2e-3)
    np.testing.assert_allclose(M.state_for_resistance(P.resistance_ohm(1.1e-9), P), 1.1e-9, rtol=1e-12)


def test_current_small_voltage_limit_and_odd_symmetry():
    g = np.linspace(P.g_min_m, P.g_max_m, 7)
    v = 1e-3
    ohmic = P.i0_a * np.exp(-g / P.g0_m) * v / P.v0_v  # sinh(x) ~ x
    np.testing.assert_allclose(M.current(v, g, P), ohmic, rtol=1e-5)  # x^2/6 = 2.7e-6
    np.testing.assert_array_equal(M.current(-0.7, g, P), -M.current(0.7, g, P))


def test_read_voltage_does_not_move_the_gap():
    pop = population(P, 5)
    g0 = np.linspace(P.g_min_m, P.g_max_m, 5)
    wave = Waveform(np.array([0.0, 1e-9, 1.0]), np.array([0.0, 0.1, 0.1]))  # 1 s at 0.1 V
    g = integrate(M, pop, g0, wave, np.array([1.0]))[0]
    np.testing.assert_array_equal(g, g0)
    assert M.read_disturb(0.1, 1.0, P) == 0.0
    with pytest.raises(ReadDisturbError, match="would switch the cell"):
        read_resistance(P, g0, v_read_v=1.2)


def test_set_lowers_and_reset_raises_resistance():
    r = pulse_train(P, [1.6] * 3 + [-1.3] * 3, t_pulse_s=20e-9)
    rr = np.concatenate([r.r_initial_ohm, r.r_read_ohm[:, 0]])
    assert np.all(np.diff(rr[:4]) < 0), rr  # SET pulses: resistance falls
    assert np.all(np.diff(rr[3:]) > 0), rr  # RESET pulses: resistance rises


def test_dc_sweep_hysteresis_and_thresholds():
    s = dc_sweep(P, n_points=1201)
    v_set, v_reset = s.thresholds_v()
    # SET from g_max opens when gamma(g_max)|V|/t_ox = F_min: |V| = F_min t_ox / (gamma0 - beta 1.7^3) = 1.392 V
    v_th_set = P.f_min_v_per_m * P.t_ox_m / (P.gamma0 - P.beta * 1.7**3)
    assert v_th_set <= v_set[0] <= v_th_set + 0.03
    # RESET is gradual: it starts at F_min t_ox / gamma(g_min) = 1.050 V and is half done well before 1.39 V
    assert -1.39 < v_reset[0] < -1.05
    assert s.loop_area_w()[0] > 1e-3  # W = V*A; the loop encloses the SET/RESET hysteresis
    assert s.r_read_ohm[0, 0] > 2e5 and s.r_read_ohm.min() < 600 and s.r_read_ohm[-1, 0] > 2e5


def test_reset_is_self_limiting_at_the_fmin_gap():
    # a long RESET pulse stops where gamma(g)|V|/t_ox = F_min: g = ((gamma0 - F_min t_ox/|V|)/beta)^(1/3) nm
    v = 1.2
    r = pulse_train(P, [-v], t_pulse_s=20e-6, initial="lrs")
    g_b = ((P.gamma0 - P.f_min_v_per_m * P.t_ox_m / v) / P.beta) ** (1 / 3) * 1e-9
    np.testing.assert_allclose(r.gap_after_m[0, 0], g_b, atol=2e-12)


@pytest.mark.parametrize("amps", [[1.5, 1.5], [-1.25, -1.25]])
def test_pulse_result_independent_of_step_bound(amps):
    kw = dict(t_pulse_s=20e-9, t_edge_s=1e-9, initial="hrs" if amps[0] > 0 else "lrs")
    coarse = pulse_train(P, amps, max_dstate=16e-12, **kw).r_read_ohm
    fine = pulse_train(P, amps, max_dstate=1e-12, **kw).r_read_ohm
    np.testing.assert_allclose(coarse, fine, rtol=5e-3)


def test_stochastic_term_is_step_consistent():
    # variance of the cycle-to-cycle term adds per unit gap travel: same spread at two step bounds
    p = StanfordPKUParams()  # c2c on, no d2d spread
    spreads = []
    for dmax in (16e-12, 2e-12):
        r = pulse_train(p, [-1.25], t_pulse_s=20e-9, initial="lrs", n_devices=1500,
                        rng=np.random.default_rng(1), max_dstate=dmax)
        spreads.append(r.gap_after_m[0].std())
    # sample std of n=1500 has a relative standard error of 1/sqrt(2n) = 1.8 %; allow ~4 sigma
    assert spreads[0] > 0.005e-9
    np.testing.assert_allclose(spreads[0], spreads[1], rtol=0.08)


def test_same_seed_bit_identical_and_d2d_variation():
    p = get_preset("stanford_pku")
    a = dc_sweep(p, n_devices=3, rng=np.random.default_rng(7), n_points=101, sweep_rate_v_per_s=100.0)
    b = dc_sweep(p, n_devices=3, rng=np.random.default_rng(7), n_points=101, sweep_rate_v_per_s=100.0)
    np.testing.assert_array_equal(a.i_a, b.i_a)
    np.testing.assert_array_equal(a.gap_m, b.gap_m)
    pop = population(p, 4000, np.random.default_rng(0))
    np.testing.assert_allclose(np.log(pop.i0_a).std(), p.d2d_sigma_ln_i0, rtol=0.1)
    np.testing.assert_allclose(np.median(pop.vel0_m_per_s), p.vel0_m_per_s, rtol=0.05)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="i0_a"):
        StanfordPKUParams(i0_a=-1e-3)
    with pytest.raises(ConfigError, match="g_max_m"):
        StanfordPKUParams(g_max_m=0.1e-9)
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        apply_overrides(P, ["bogus=1"])
    assert apply_overrides(P, ["i0_a=5e-4"]).i0_a == 5e-4
