"""Remedies against relaxation in the engine (crossbar.config.RetentionConfig): relaxation-aware
programming (crossbar.pipeline.reverify_step), refresh (relaxation_step) and read-time drift
compensation (ProgrammedMatrix.compensate), each checked against what it must do in closed form
or statistically, with a relaxation model fitted to data of a known law."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crossbar.config import CrossbarConfig, RetentionConfig  # noqa: E402
from crossbar.engine import program_matrix  # noqa: E402
from device.config import ConfigError  # noqa: E402
from device.programming import LevelTable  # noqa: E402
from device.relaxation import RelaxationModel, relaxation_data  # noqa: E402

CFG = CrossbarConfig(tile_rows=32, tile_cols=32, weight_bits=8, bits_per_cell=2)
TIMES = (0.01, 0.1, 1.0, 100.0, 1e4)


@pytest.fixture(scope="module")
def model():
    """Relaxation with a known law: change 0.015 g0 (1 + log10(t / 10 ms)) z, z a Gaussian
    Markov chain over the read times with link correlation 0.6 (the fitted copula recovers it)."""
    rng = np.random.default_rng(0)
    n = 4000
    g0 = rng.uniform(5e-6, 120e-6, n)
    z = rng.standard_normal(n)
    rows = []
    for k, t in enumerate(TIMES):
        if k:
            z = 0.6 * z + 0.8 * rng.standard_normal(n)
        rows.append((np.arange(n), np.full(n, t), g0 + 0.015 * g0 * (1 + np.log10(t / 0.01)) * z, g0))
    c, t, g, g0s = (np.concatenate(x) for x in zip(*rows))
    return RelaxationModel.fit(relaxation_data(c, t, g, g0s), min_cells_per_bin=1000)


def _levels():
    lv = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=10e-6, sigma_rel=0.01, rng=np.random.default_rng(0))
    return LevelTable(bits_per_cell=2, g_target_s=lv.g_target_s, g_samples_s=lv.g_samples_s, g_sa0_s=lv.g_sa0_s,
                      g_sa1_s=lv.g_sa1_s, source="test", verify_half_window_s=0.03 * lv.g_target_s)


def _w(seed=1, shape=(64, 96)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.1


def _cells(cfg, model, seed=3, **kw):
    return program_matrix(_w(), cfg, _levels(), None, np.random.default_rng(seed), relaxation=model,
                          dtype=torch.float64, keep_conductances=True, **kw)


def test_off_by_default_and_off_at_read_time_zero(model):
    a = _cells(CFG.replace(read_time_s=100.0), model)
    b = _cells(CFG.replace(read_time_s=100.0, retention=RetentionConfig()), model)
    assert np.array_equal(a.tile_state().g_s, b.tile_state().g_s) and a.retention is None
    c = _cells(CFG, model)
    d = _cells(CFG.replace(retention=RetentionConfig(reprogram_rounds=3, reprogram_wait_s=0.1)), model)
    assert np.array_equal(c.tile_state().g_s, d.tile_state().g_s) and d.retention is None


def test_reverify_reprograms_what_left_its_window(model):
    """Round 1 re-programs each cell with the probability that its relaxation at the wait leaves
    the window (no read noise: exactly |dg(tw)| > window); a window wider than any change
    re-programs nothing."""
    cfg = CFG.replace(read_time_s=100.0, read_noise_sigma_rel=0.0,
                      retention=RetentionConfig(reprogram_rounds=1, reprogram_wait_s=1.0))
    pm = _cells(cfg, model)
    rep = pm.retention
    lv = _levels()
    n_lv = rep["cells_per_level"]
    # expected re-program probability per level from the model: P(|dg(1 s)| > 3 % of target)
    dg = model.sample(np.repeat(lv.g_target_s, 100_000), 1.0, np.random.default_rng(5)).reshape(4, -1) - lv.g_target_s[:, None]
    p = (np.abs(dg) > 0.03 * lv.g_target_s[:, None]).mean(axis=1)
    got = rep["rewrites_per_level"] / n_lv
    # binomial: within 5 sigma; the cells' own programming variation (1 %) shifts p a little: + 0.02
    assert np.all(np.abs(got - p) <= 5 * np.sqrt(p * (1 - p) / n_lv) + 0.02), (got, p)
    assert rep["writes"][1] + rep["writes"][2] == rep["cells"]
    # at 10 ms the largest change is 1.5 % of g0 x the tail of z: none leaves a half-step window
    wide = _cells(cfg.replace(retention=RetentionConfig(reprogram_rounds=2, reprogram_wait_s=0.01, reverify_window_frac=0.5)), model)
    assert wide.retention["writes"][1] == wide.retention["cells"]
    # every cell re-programmed in the last round is read at its fresh programming plus read_time_s
    tight = _cells(cfg.replace(read_time_s=1e-2, retention=RetentionConfig(reprogram_rounds=1, reprogram_wait_s=1.0,
                                                                           reverify_window_frac=1e-9)), model)
    assert tight.retention["writes"][2] == tight.retention["cells"]


def test_reverify_narrows_the_spread_the_copula_way(model):
    """Kept cells are those whose change was small at the verify; with the copula's dependence
    their change at the read is smaller too, so the relaxed chip's cell error shrinks; more
    rounds shrink it more."""
    def cell_err(rounds):
        cfg = CFG.replace(read_time_s=100.0, read_noise_sigma_rel=0.0,
                          retention=RetentionConfig(reprogram_rounds=rounds, reprogram_wait_s=1.0))
        st = _cells(cfg, model, seed=7).tile_state()
        return float(np.sqrt(np.mean((st.g_s - _levels().g_target_s[st.levels]) ** 2)))

    e0, e1, e3 = cell_err(0), cell_err(1), cell_err(3)
    assert e3 < e1 < e0


def test_refresh_reads_at_the_worst_phase(model):
    a = _cells(CFG.replace(read_time_s=1e4, retention=RetentionConfig(refresh_period_s=100.0)), model)
    b = _cells(CFG.replace(read_time_s=100.0), model)
    assert np.array_equal(a.tile_state().g_s, b.tile_state().g_s)
    c = _cells(CFG.replace(read_time_s=10.0, retention=RetentionConfig(refresh_period_s=100.0)), model)
    d = _cells(CFG.replace(read_time_s=10.0), model)
    assert np.array_equal(c.tile_state().g_s, d.tile_state().g_s)


class Gain:
    """Every cell's conductance scales by 0.8 (a pure gain drift, closed form)."""

    def sample_torch(self, g_s, time_s, generator):
        return g_s * 0.8


@pytest.mark.parametrize("mode", ["global", "column"])
def test_compensation_undoes_a_gain_drift(mode):
    cfg = CFG.replace(read_time_s=10.0, read_noise_sigma_rel=0.0, retention=RetentionConfig(compensation=mode))
    w = _w()
    x = torch.randn(40, w.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lv = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=10e-6, sigma_rel=0.0, rng=np.random.default_rng(0))
    drifted = program_matrix(w, CFG.replace(read_time_s=10.0, read_noise_sigma_rel=0.0), lv, None,
                             np.random.default_rng(0), relaxation=Gain(), dtype=torch.float64)
    fixed = program_matrix(w, cfg, lv, None, np.random.default_rng(0), relaxation=Gain(), dtype=torch.float64)
    fresh = program_matrix(w, CFG, lv, None, np.random.default_rng(0), dtype=torch.float64)
    # both cells of a differential pair scale by 0.8, so the weight does: the gain is exactly 1 / 0.8
    assert torch.allclose(fixed.output_gain, torch.full((w.shape[0],), 1.25, dtype=torch.float64), rtol=1e-9)
    assert torch.allclose(fixed(x), fresh(x), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(drifted(x), fresh(x), rtol=1e-3)


def test_compensation_fit_has_its_reads_noise(model):
    """With read noise the fitted gains scatter (the reads' own noise) around the noiseless fit:
    more reference reads, less scatter."""
    base = CFG.replace(read_time_s=100.0, read_noise_sigma_rel=0.05)

    def gains(reads, seed):
        pm = _cells(base.replace(retention=RetentionConfig(compensation="column", compensation_reads=reads)), model, seed=seed)
        return pm.output_gain.numpy()

    quiet = _cells(base.replace(read_noise_sigma_rel=0.0, retention=RetentionConfig(compensation="column",
                                                                                    compensation_reads=512)), model, seed=4)
    ref = quiet.output_gain.numpy()
    few, many = gains(16, 4), gains(512, 4)
    assert np.sqrt(np.mean((many - ref) ** 2)) < np.sqrt(np.mean((few - ref) ** 2))


def test_refusals(model):
    with pytest.raises(ConfigError, match="reprogram_rounds"):
        RetentionConfig(reprogram_rounds=-1)
    with pytest.raises(ConfigError, match="compensation"):
        RetentionConfig(compensation="both")
    lv = LevelTable.synthetic(bits_per_cell=2, g_on_s=100e-6, g_off_s=10e-6, sigma_rel=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="write-verify window"):
        program_matrix(_w(), CFG.replace(read_time_s=1.0, retention=RetentionConfig(reprogram_rounds=1)), lv, None,
                       np.random.default_rng(0), relaxation=model)
    with pytest.raises(ConfigError, match="continues a cell"):
        program_matrix(_w(), CFG.replace(read_time_s=1.0, retention=RetentionConfig(reprogram_rounds=1, reverify_window_frac=0.1)),
                       lv, None, np.random.default_rng(0), relaxation=Gain())
    with pytest.raises(ConfigError, match="calibrated"):
        program_matrix(_w(), CFG.replace(adc_bits=8, adc_range="calibrated", retention=RetentionConfig(compensation="global")),
                       lv, None, np.random.default_rng(0))


def test_write_verify_from_a_given_conductance():
    """Re-programming starts where the cell is: a cell already inside its window needs no pulse
    (its first verify accepts it), one far away needs pulses, and the result is inside the window
    like a fresh write."""
    from device.programming import ProgrammingConfig, program_levels

    cfg = ProgrammingConfig(bits_per_cell=1, read_noise_rel=0.0)
    t = np.array([1 / cfg.r_hrs_ohm, 1 / cfg.r_lrs_ohm])
    inside = program_levels(cfg, n_devices=8, rng=np.random.default_rng(0), initial_g_s=np.repeat(t[:, None], 8, 1))
    assert np.all(inside.pulses == 0) and inside.converged.all()
    far = program_levels(cfg, n_devices=8, rng=np.random.default_rng(0), initial_g_s=np.repeat(t[::-1, None], 8, 1))
    assert np.all(far.pulses > 0)
    hw = 0.03 * t
    ok = far.converged
    assert np.all(np.abs(far.table.g_samples_s - t[:, None])[ok] <= np.repeat(hw[:, None], 8, 1)[ok])
    with pytest.raises(ConfigError, match="initial_g_s"):
        program_levels(cfg, n_devices=8, rng=np.random.default_rng(0), initial_g_s=np.ones((3, 8)))


def _example(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cell_classes_msb_mask_holds_the_top_bit():
    """examples/relaxation_cell_classes.py's most-significant-slice mask: the cells it marks hold
    exactly the top bit of each code's magnitude (differential pairs: one cell per weight)."""
    from crossbar.pipeline import cell_digits

    ex = _example("relaxation_cell_classes")
    w = _w(seed=5)
    w[0, 0] = 1.0  # a few codes reach the top slice
    pm = program_matrix(w, CFG, _levels(), None, np.random.default_rng(0))
    msb = ex.msb_cells(pm.layout, CFG.n_slices)
    d = cell_digits(pm.qweight, pm.layout, CFG)
    assert msb.shape == d.shape
    top = CFG.code_bits - CFG.slice_bits[-1]
    n_top = int((pm.qweight.q.abs() >> top).clamp(max=1).sum())
    assert 0 < n_top < pm.qweight.q.numel()
    assert int(d[msb].count_nonzero()) == n_top
    assert int(msb.sum()) == pm.layout.n_tiles * pm.layout.tile_rows * int((pm.layout.col_slice == CFG.n_slices - 1).sum()) // pm.layout.n_col_blocks


class _Shift:
    """A relaxation model that scales every conductance by ``factor`` (``RelaxationModel.sample``'s signature)."""

    def __init__(self, factor):
        self.factor = factor

    def sample(self, g0, t, rng, out_of_range="raise"):
        return np.asarray(g0) * self.factor


def test_retention_cost_prices_a_rewrite_from_where_the_cell_is():
    """examples/retention_cost.py: a write of p pulses takes p pulse slots and p + 1 verify passes;
    a refresh of cells that did not move costs (almost) no pulse, and cells that relaxed out of
    their window cost a write; with a re-verify window, only the cells outside it are sent back."""
    from device.programming import ProgrammingConfig, program_levels

    ex = _example("retention_cost")
    prog = ProgrammingConfig(bits_per_cell=1)
    assert ex.write_time_s(0, prog) == pytest.approx(prog.verify_reads * prog.t_read_s)
    assert ex.write_time_s(3, prog) == pytest.approx(3 * (prog.t_pulse_s + 2 * prog.t_edge_s) + 4 * prog.verify_reads * prog.t_read_s)
    table = program_levels(prog, n_devices=16, rng=np.random.default_rng(0)).table
    still, t_still, sent = ex.reprogram_pulses(table, _Shift(1.0), 1.0, prog, None, np.random.default_rng(1), 16, None, 0.0)
    assert np.all(sent == 1.0) and np.all(still < 1.0) and np.all(t_still < 2 * prog.verify_reads * prog.t_read_s)
    moved, t_moved, _ = ex.reprogram_pulses(table, _Shift(0.8), 1.0, prog, None, np.random.default_rng(1), 16, None, 0.0)
    assert np.all(moved >= 1.0) and np.all(t_moved > t_still)
    hw = 0.05 * table.g_target_s
    _, _, sent_in = ex.reprogram_pulses(table, _Shift(1.0), 1.0, prog, None, np.random.default_rng(1), 16, hw, 0.0)
    _, _, sent_out = ex.reprogram_pulses(table, _Shift(0.8), 1.0, prog, None, np.random.default_rng(1), 16, hw, 0.0)
    assert np.all(sent_in == 0.0) and np.all(sent_out == 1.0)
