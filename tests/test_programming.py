"""Multi-level programming: seeded statistical checks of level distributions, read-out error
rates, the LevelTable interface and its files, and bad configurations."""

import numpy as np
import pytest

from device.compact import ReadDisturbError
from device.config import ConfigError
from device.presets import get_preset
from device.programming import (
    LevelTable,
    ProgrammingConfig,
    cell_error_rate,
    level_targets,
    program_levels,
    readout_error_rate,
)


@pytest.mark.parametrize("distribution", ["lognormal", "normal"])
def test_synthetic_levels_mean_and_sigma(distribution):
    n, sigma = 4096, 0.05
    t = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=10e-6, sigma_rel=sigma,
                             distribution=distribution, n_samples=n, rng=np.random.default_rng(0))
    np.testing.assert_allclose(t.g_target_s, [10e-6, 40e-6, 70e-6, 100e-6])
    sd = sigma * t.g_target_s
    # mean within 4 sigma/sqrt(n) of the target; std within 4 sigma/sqrt(2n) of sigma
    assert np.all(np.abs(t.g_mean_s - t.g_target_s) < 4 * sd / np.sqrt(n))
    assert np.all(np.abs(t.g_std_s - sd) < 4 * sd / np.sqrt(2 * n))
    assert t.g_sa0_s == t.g_target_s[0] and t.g_sa1_s == t.g_target_s[-1]
    np.testing.assert_allclose(t.on_off_ratio, 10.0, rtol=0.01)


def test_error_rate_grows_with_bits_and_falls_with_on_off():
    rng = np.random.default_rng(1)
    by_bits = [cell_error_rate(LevelTable.synthetic(bits_per_cell=b, g_on_s=100e-6, g_off_s=10e-6, sigma_rel=0.04, rng=rng))
               for b in (1, 2, 3, 4)]
    assert all(a < b for a, b in zip(by_bits, by_bits[1:])), by_bits
    by_ratio = [cell_error_rate(LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=100e-6 / r, sigma_rel=0.04, rng=rng))
                for r in (2, 4, 10, 100)]
    assert all(a > b for a, b in zip(by_ratio, by_ratio[1:])), by_ratio


def test_readout_error_rate_fit_matches_samples():
    # with overlap large enough to count, the lognormal-fit tail equals the empirical rate
    t = LevelTable.synthetic(bits_per_cell=3, g_on_s=100e-6, g_off_s=10e-6, sigma_rel=0.1,
                             n_samples=20000, rng=np.random.default_rng(2))
    fit, emp = readout_error_rate(t), readout_error_rate(t, "empirical")
    assert fit.shape == (7,)
    # binomial standard error of each rate ~ sqrt(p/(2n)); allow 5 of them plus 5 %
    assert np.all(np.abs(fit - emp) < 5 * np.sqrt(fit / 40000) + 0.05 * fit)


def test_sample_resamples_each_level():
    t = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=10e-6, sigma_rel=0.02, n_samples=64,
                             rng=np.random.default_rng(3))
    lv = np.array([[0, 1, 2], [3, 3, 0]])
    g = t.sample(lv, np.random.default_rng(4))
    assert g.shape == lv.shape
    for k in range(4):
        assert np.all(np.isin(g[lv == k], t.g_samples_s[k]))
    np.testing.assert_array_equal(g, t.sample(lv, np.random.default_rng(4)))
    with pytest.raises(ValueError, match="level indices"):
        t.sample(np.array([4]), np.random.default_rng(0))


@pytest.fixture(scope="module")
def programmed():
    cfg = ProgrammingConfig(bits_per_cell=2)
    return program_levels(cfg, get_preset("stanford_pku"), n_devices=48, rng=np.random.default_rng(0))


def test_write_verify_levels_within_verify_window(programmed):
    r = programmed
    t = r.table
    tol = r.config.tolerance_rel
    assert r.converged.mean() >= 0.95
    # every level mean within the verify window of its target; spread about the window size
    assert np.all(np.abs(t.g_mean_s - t.g_target_s) <= tol * t.g_target_s)
    assert np.all(t.g_std_s / t.g_mean_s < 1.5 * tol)
    assert np.all(t.g_std_s > 0)  # programming variation is present
    np.testing.assert_allclose(t.on_off_ratio, 10.0, rtol=2 * tol)
    assert np.all(r.pulses >= 1) and r.pulses.max() <= r.config.max_pulses
    assert r.error_rate.shape == (3,) and np.all(r.error_rate < 1e-3)
    assert "levels" in r.summary()


def test_same_seed_bit_identical_and_file_round_trip(programmed, tmp_path):
    again = program_levels(ProgrammingConfig(bits_per_cell=2), get_preset("stanford_pku"), n_devices=48,
                           rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.table.g_samples_s, programmed.table.g_samples_s)
    np.testing.assert_array_equal(again.pulses, programmed.pulses)
    p = programmed.save(tmp_path / "l.h5", seed=0)
    back = LevelTable.load(p)
    np.testing.assert_array_equal(back.g_samples_s, programmed.table.g_samples_s)
    np.testing.assert_array_equal(back.g_target_s, programmed.table.g_target_s)
    assert back.bits_per_cell == 2 and back.g_sa1_s == programmed.table.g_sa1_s and back.source == str(p)


def test_one_bit_reads_better_than_two_bits():
    p = get_preset("stanford_pku")
    e1 = cell_error_rate(program_levels(ProgrammingConfig(bits_per_cell=1), p, n_devices=24, rng=np.random.default_rng(5)).table)
    e2 = cell_error_rate(program_levels(ProgrammingConfig(bits_per_cell=2, tolerance_rel=0.06, read_noise_rel=0.03), p,
                                        n_devices=24, rng=np.random.default_rng(5)).table)
    assert e1 < e2


def test_resistance_spacing():
    g = level_targets(2, 1e-5, 1e-4, "resistance")
    np.testing.assert_allclose(np.diff(1 / g[::-1]), np.diff(1 / g[::-1])[0])


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(bits_per_cell=0), "bits_per_cell"),
        (dict(bits_per_cell=5), "bits_per_cell"),
        (dict(r_lrs_ohm=-1.0), "r_lrs_ohm"),
        (dict(r_lrs_ohm=0.0), "r_lrs_ohm"),
        (dict(r_hrs_ohm=5e3), "r_hrs_ohm"),
        (dict(tolerance_rel=0.0), "tolerance_rel"),
        (dict(read_noise_rel=-0.1), "read_noise_rel"),
    ],
)
def test_bad_programming_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        ProgrammingConfig(**kw)


def test_bad_programming_inputs():
    p = get_preset("stanford_pku")
    rng = np.random.default_rng(0)
    with pytest.raises(ReadDisturbError, match="would switch the cell"):
        program_levels(ProgrammingConfig(v_read_v=1.3), p, n_devices=4, rng=rng)
    with pytest.raises(ConfigError, match="device reads between"):
        program_levels(ProgrammingConfig(r_lrs_ohm=100.0), p, n_devices=4, rng=rng)
    with pytest.raises(ValueError, match="finite and > 0"):
        LevelTable(bits_per_cell=1, g_target_s=np.array([1e-5, 1e-4]), g_samples_s=-np.ones((2, 4)),
                   g_sa0_s=1e-5, g_sa1_s=1e-4, source="x")
    with pytest.raises(ConfigError, match="sigma_rel"):
        LevelTable.synthetic(bits_per_cell=1, g_on_s=1e-4, g_off_s=1e-5, sigma_rel=-0.1, rng=rng)
