"""Conductance relaxation as an engine effect (crossbar.pipeline.relaxation_step): off at read
time 0, applied to the programmed cells once per chip from its own generator stream, never to
stuck cells, and the same statistics as the relaxation model itself (shipped tech-B fit)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from crossbar.engine import CrossbarConfig, program_matrix
from device.config import ConfigError
from device.faults import Fault, FaultConfig
from device.programming import LevelTable

DATA = Path(__file__).resolve().parents[1] / "data"


class Scale:
    """A relaxation law known in closed form: g(t) = g0 * (1 - 0.05 log10(1 + t)) * (1 + 0.01 z)."""

    def __init__(self):
        self.calls = 0

    def sample_torch(self, g0_s, time_s, generator):
        self.calls += 1
        z = torch.randn(g0_s.shape, generator=generator, dtype=torch.float64, device=g0_s.device).to(g0_s.dtype)
        return g0_s * (1 - 0.05 * np.log10(1 + time_s)) * (1 + 0.01 * z)


def _levels():
    return LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=0.0, rng=np.random.default_rng(0))


def _w(seed=1):
    return torch.randn(48, 64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.1


CFG = CrossbarConfig(tile_rows=32, tile_cols=32, weight_bits=8, bits_per_cell=2)


def test_read_time_zero_is_off_and_a_read_time_needs_a_model():
    law = Scale()
    a = program_matrix(_w(), CFG, _levels(), None, np.random.default_rng(0), relaxation=law, keep_conductances=True)
    b = program_matrix(_w(), CFG, _levels(), None, np.random.default_rng(0), keep_conductances=True)
    assert law.calls == 0 and np.array_equal(a.tile_state().g_s, b.tile_state().g_s)
    with pytest.raises(ConfigError, match="relaxation"):
        program_matrix(_w(), CFG.replace(read_time_s=10.0), _levels(), None, np.random.default_rng(0))


def test_relaxation_follows_the_law_spares_stuck_cells_and_redraws_bit_identically():
    cfg = CFG.replace(read_time_s=999.0)  # log10(1000) = 3: mean factor 0.85
    lv = _levels()
    pm = program_matrix(_w(), cfg, lv, FaultConfig(rate=0.05), np.random.default_rng(4), relaxation=Scale(),
                        dtype=torch.float64, keep_conductances=True)
    st = pm.tile_state()
    ok = st.faults == Fault.NONE
    ratio = st.g_s[ok] / np.asarray(lv.g_target_s)[st.levels[ok]]
    n = ratio.size
    # mean 0.85, sigma 0.0085: the sample mean within 5 sigma / sqrt(n), the sample sd within 10 %
    assert abs(ratio.mean() - 0.85) <= 5 * 0.0085 / np.sqrt(n)
    assert ratio.std() == pytest.approx(0.0085, rel=0.1)
    assert np.all(st.g_s[st.faults == Fault.SA0] == lv.g_sa0_s) and np.all(st.g_s[st.faults == Fault.SA1] == lv.g_sa1_s)
    # the chip is a pure function of its seed; the relaxation stream is its own (variation unchanged)
    again = pm.tile_state()  # kept
    redraw = program_matrix(_w(), cfg, lv, FaultConfig(rate=0.05), np.random.default_rng(4), relaxation=Scale(),
                            dtype=torch.float64)
    assert np.array_equal(redraw.tile_state().g_s, again.g_s)


@pytest.mark.skipif(not (DATA / "relaxation_techB.h5").exists(), reason="the shipped tech-B relaxation table is missing")
def test_engine_cells_relax_like_the_techb_model():
    from device.relaxation import RelaxationModel

    model = RelaxationModel.load(DATA / "relaxation_techB.h5")
    lv = LevelTable.load(DATA / "levels_b2.h5")
    cfg = CFG.replace(read_time_s=100.0)

    class Clamp:
        def sample_torch(self, g, t, gen):
            return model.sample_torch(g, t, gen, out_of_range="clamp")

    pm = program_matrix(_w(), cfg, lv, None, np.random.default_rng(7), relaxation=Clamp(), dtype=torch.float64,
                        keep_conductances=True)
    fresh = program_matrix(_w(), cfg.replace(read_time_s=0.0), lv, None, np.random.default_rng(7), dtype=torch.float64,
                           keep_conductances=True)
    g_t, g_0 = pm.tile_state().g_s.ravel(), fresh.tile_state().g_s.ravel()  # same variation draw
    ref = model.sample(g_0, 100.0, np.random.default_rng(1), out_of_range="clamp")
    for d in range(4):  # per programmed level: the engine's and the model's mean and spread agree
        sel = pm.tile_state().levels.ravel() == d
        n = int(sel.sum())
        sd = ref[sel].std()
        assert abs(g_t[sel].mean() - ref[sel].mean()) <= 5 * sd * np.sqrt(2 / n)
        assert g_t[sel].std() == pytest.approx(sd, rel=0.15)
