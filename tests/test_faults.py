"""Stuck-at fault maps: realised rates and SA0 fractions against the configuration.

Statistical checks use a seeded generator and bounds of k = 5 binomial standard deviations, so a
correct sampler fails with probability below 1e-6 per check.
"""

import numpy as np
import pytest

from device.config import ConfigError
from device.faults import Fault, FaultConfig, fault_statistics, load_fault_map, sample_fault_map, save_fault_map

K = 5.0


def _within(observed_rate, p, n):
    sigma = np.sqrt(p * (1 - p) / n)
    return abs(observed_rate - p) <= K * sigma + 1e-12


def test_convention_is_stored_with_the_map(tmp_path):
    import h5py

    m = sample_fault_map((8, 8), FaultConfig(rate=0.5), np.random.default_rng(0))
    p = save_fault_map(tmp_path / "f.h5", m, FaultConfig(rate=0.5))
    with h5py.File(p) as f:
        assert "1=SA0 (stuck at HRS" in f.attrs["fault_encoding"]
        assert "2=SA1 (stuck at LRS" in f.attrs["fault_encoding"]


@pytest.mark.parametrize("rate,sa0", [(0.001, 0.5), (0.02, 0.9), (0.1, 0.0), (0.7, 1.0)])
def test_random_rates(rate, sa0):
    m = sample_fault_map((16, 128, 128), FaultConfig(rate=rate, sa0_fraction=sa0), np.random.default_rng(7))
    s = fault_statistics(m)
    n = m.size
    assert _within(s["fault_rate"], rate, n)
    assert _within(s["sa0_rate"], rate * sa0, n)
    assert _within(s["sa1_rate"], rate * (1 - sa0), n)


@pytest.mark.parametrize("pattern,axis", [("rows", -1), ("cols", -2)])
def test_line_patterns(pattern, axis):
    cfg = FaultConfig(rate=0.05, sa0_fraction=0.7, pattern=pattern)
    m = sample_fault_map((64, 64, 64), cfg, np.random.default_rng(3))
    # a failed line is faulty along its whole length, with one kind
    lines = m if pattern == "rows" else np.swapaxes(m, -1, -2)
    first = lines[..., :1]
    assert np.all(lines == first)
    n_lines = first.size
    failed = np.count_nonzero(first)
    assert _within(failed / n_lines, 0.05, n_lines)
    assert _within(np.count_nonzero(first == Fault.SA0) / n_lines, 0.05 * 0.7, n_lines)


@pytest.mark.parametrize("cluster_size", [4.0, 16.0])
def test_clustered_rate_and_clumping(cluster_size):
    cfg = FaultConfig(rate=0.03, pattern="clustered", cluster_size=cluster_size)
    m = sample_fault_map((300, 64, 64), cfg, np.random.default_rng(11))
    s = fault_statistics(m)
    # the number of clusters, not cells, is the independent unit: n_eff = cells / cluster_size
    n_eff = m.size / cluster_size
    assert _within(s["fault_rate"], 0.03, n_eff)
    # clustering: a faulty cell's right neighbour is faulty far more often than the base rate
    f = m != 0
    p_neighbour = np.count_nonzero(f[..., :-1] & f[..., 1:]) / np.count_nonzero(f[..., :-1])
    assert p_neighbour > 0.3
    r = sample_fault_map((300, 64, 64), FaultConfig(rate=0.03), np.random.default_rng(11)) != 0
    assert np.count_nonzero(r[..., :-1] & r[..., 1:]) / np.count_nonzero(r[..., :-1]) < 0.05


def test_same_seed_same_map_and_round_trip(tmp_path):
    cfg = FaultConfig(rate=0.05, pattern="clustered")
    a = sample_fault_map((3, 32, 32), cfg, np.random.default_rng(5))
    b = sample_fault_map((3, 32, 32), cfg, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    p = save_fault_map(tmp_path / "f.h5", a, cfg, seed=5)
    m, c = load_fault_map(p)
    np.testing.assert_array_equal(m, a)
    assert c == cfg


@pytest.mark.parametrize("kw,msg", [({"rate": 1.5}, "rate=1.5"), ({"rate": -0.1}, "rate=-0.1"), ({"sa0_fraction": 2.0}, "sa0_fraction"), ({"pattern": "diagonal"}, "pattern")])
def test_bad_config(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        FaultConfig(**kw)


def test_zero_and_full_rate():
    assert not sample_fault_map((4, 8), FaultConfig(rate=0.0), np.random.default_rng(0)).any()
    m = sample_fault_map((4, 8), FaultConfig(rate=1.0, sa0_fraction=1.0), np.random.default_rng(0))
    assert np.all(m == Fault.SA0)


@pytest.mark.parametrize("rate", [0.5, 0.7, 0.95])
def test_random_pattern_is_unbiased_on_small_maps(rate):
    # Many small independent maps (8x8: the dense branch, k > n/2, is taken about half the time
    # at rate 0.5). The count of faulty cells per map must be Binomial(64, rate): mean within
    # K standard errors and variance within K standard errors of n p (1 - p). The sampler once
    # redrew the count in the dense branch and realised 0.4929 at rate 0.5 (0.475 on 8x8 maps).
    rng = np.random.default_rng(11)
    n, maps = 64, 4000
    counts = np.array([np.count_nonzero(sample_fault_map((8, 8), FaultConfig(rate=rate), rng)) for _ in range(maps)])
    mean, var = n * rate, n * rate * (1 - rate)
    assert abs(counts.mean() - mean) <= K * np.sqrt(var / maps)
    # standard error of a sample variance of a near-normal count: var * sqrt(2 / (maps - 1))
    assert abs(counts.var(ddof=1) - var) <= K * var * np.sqrt(2 / (maps - 1)) + 0.5
    # every cell position is equally likely to fail
    per_cell = np.zeros(n)
    for seed in range(400):
        per_cell += sample_fault_map((8, 8), FaultConfig(rate=rate), np.random.default_rng([5, seed])).ravel() != 0
    assert np.all(np.abs(per_cell / 400 - rate) <= K * np.sqrt(rate * (1 - rate) / 400))


def test_cluster_size_must_be_finite():
    with pytest.raises(ConfigError, match="cluster_size=inf is invalid"):
        FaultConfig(pattern="clustered", rate=0.1, cluster_size=float("inf"))
    with pytest.raises(ConfigError, match="cluster_size"):
        FaultConfig(cluster_size=float("nan"))


def test_sample_bytes_bounds_the_map():
    from device.faults import sample_bytes

    cfg = FaultConfig(rate=0.5)
    assert sample_bytes((100_000, 100_000), cfg) > 100_000 * 100_000  # at least the int8 map
    assert sample_bytes((128, 128), FaultConfig(rate=0.0)) == 128 * 128
