"""Relaxation-aware training (nn.hwtrain with crossbar.read_time_s > 0): the chip-matched weight
statistics of the view are those of the engine's chips read at that time (shipped tech-B
relaxation), per code, within sampling error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crossbar.engine import program_matrix  # noqa: E402
from nn.hwtrain import HardwareView, code_statistics, relaxed_moments  # noqa: E402
from nn.sim import build_levels, build_sim_config, effective_crossbar, load_relaxation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "data" / "relaxation_techB.h5").is_file(), reason="tech-B table missing")


@pytest.mark.parametrize("sets", [["crossbar.read_time_s=100"],
                                  ["crossbar.read_time_s=10000", "crossbar.bits_per_cell=1"],
                                  ["crossbar.read_time_s=10000", "crossbar.retention.refresh_period_s=10"]])
def test_relaxed_view_matches_the_relaxed_chip(sets):
    sim = build_sim_config("default", sets + ["read_noise=crossbar"])
    levels = build_levels(sim)
    cfg = effective_crossbar(sim, levels)
    view = HardwareView(sim, noise_scale=1.0)
    st = view.stats
    fresh = code_statistics(cfg, levels)
    n = 512
    codes = torch.arange(-st.q_max, st.q_max + 1, dtype=torch.float64).view(-1, 1).expand(-1, n)
    w = codes * 2.0**-6
    pm = program_matrix(w, cfg, levels, None, np.random.default_rng(5), relaxation=load_relaxation(sim), dtype=torch.float64)
    err = pm.readout.numpy() * 64.0  # read-back weight in LSB, (codes, n)
    m = err.mean(axis=1)
    d = err - m[:, None]
    s2 = (d**2).mean(axis=1)
    se = np.sqrt(((d**4).mean(axis=1) - s2**2) / n)
    # relaxation widens the spread well beyond the fresh chip's
    assert np.median(st.std / fresh.std) > 1.5
    # per code: mean within 5 standard errors; the variance pooled over the codes within 5 standard
    # errors (tech B's relaxation has heavy tails: a few cells jump by tens of uS, so one code's
    # 512 samples may or may not hold one, and the per-code fourth moment is no reliable error bar)
    assert np.all(np.abs(m - st.mean) < 5 * st.std / math.sqrt(n))
    assert abs(s2.mean() - (st.std**2).mean()) < 5 * np.sqrt((se**2).sum()) / s2.size
    assert view.describe()["relaxation_read_time_s"] == sim.crossbar.read_time_s


def test_no_relaxation_at_read_time_zero():
    sim = build_sim_config("default", [])
    assert relaxed_moments(sim, build_levels(sim)) is None
