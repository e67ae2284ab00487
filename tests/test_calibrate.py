"""Level calibration from measured data (device.calibrate, `device calibrate levels`).

The measured data are the shared tech-B relaxation reads (../shared/data/devices/, MIT license,
github.com/akashlevy/RRAM-Relaxation-Master-Model); the tests skip only where that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.calibrate import CalibrationError, calibrate_levels, calibrate_levels_csv, read_techb, techb_levels_csv
from device.programming import LevelTable, clopper_pearson, empirical_readout_error
from device.tables import read_table, validate
from cli.main import main

DEVICES = Path(__file__).parents[2] / "shared" / "data" / "devices"
TECHB = DEVICES / "relaxation_techB"
needs_techb = pytest.mark.skipif(not (TECHB / "relaxdata_10k.min.tsv.gz").is_file(), reason="shared tech-B data absent")


def _write_csv(path: Path, header: str, rows) -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(str(x) for x in r) for r in rows) + "\n")
    return path


@needs_techb
def test_techb_levels_reproduce_every_level_mean_and_std(tmp_path, capsys):
    # the 32 programmed levels of tech-B read 1000 s after programming (wide, skewed, overlapping)
    csv = techb_levels_csv(tmp_path / "levels.csv", time_s=1000.0, src=TECHB)
    out = tmp_path / "levels.h5"
    assert main(["device", "calibrate", "levels", "--in", str(csv), "--out", str(out)]) == 0
    validate(out, "levels")
    t = LevelTable.load(out)
    d = read_techb(TECHB)
    sel = (d["time_s"] == 1000.0) & (d["range"] <= 31)
    data_mean = np.array([d["g_s"][sel & (d["range"] == k)].mean() for k in range(32)])
    data_std = np.array([d["g_s"][sel & (d["range"] == k)].std(ddof=1) for k in range(32)])
    order = np.argsort(data_mean)
    assert t.bits_per_cell == 5 and t.labels == tuple(str(k) for k in order)
    assert np.all(np.diff(t.g_mean_s) > 0)
    # the acceptance: every level's mean within 1 %, std within 10 %
    np.testing.assert_allclose(t.g_mean_s, data_mean[order], rtol=0.01)
    np.testing.assert_allclose(t.g_std_s, data_std[order], rtol=0.10)
    # the rectangular quantile grid (what consumers of g_samples_s see) keeps them too
    np.testing.assert_allclose(t.g_samples_s.mean(axis=1), data_mean[order], rtol=0.01)
    np.testing.assert_allclose(t.g_samples_s.std(axis=1, ddof=1), data_std[order], rtol=0.10)
    # and so does the engine's draw (numpy and torch), 4000 draws per level: mean within 5 sigma/sqrt(n)
    lv = np.repeat(np.arange(32), 4000)
    g = t.sample(lv, np.random.default_rng(1)).reshape(32, 4000)
    assert np.all(np.abs(g.mean(1) - data_mean[order]) < 5 * data_std[order] / np.sqrt(4000))
    import torch

    gt = t.sample_torch(torch.as_tensor(lv), torch.Generator().manual_seed(1)).numpy().reshape(32, 4000)
    assert np.all(np.abs(gt.mean(1) - data_mean[order]) < 5 * data_std[order] / np.sqrt(4000))
    np.testing.assert_allclose(gt.std(1, ddof=1), data_std[order], rtol=0.10)
    # stored extras: labels, raw samples, fits, empirical errors with intervals
    tab = read_table(out)
    for name in ("label", "g_measured_s", "measured_level", "ks_normal", "ks_lognormal", "threshold_s",
                 "readout_error_empirical", "readout_error_ci_low", "readout_error_ci_high", "n_samples"):
        assert name in tab.arrays and tab.arrays[name].units
    assert tab["g_measured_s"].size == int(sel.sum())
    lo, hi, r = tab["readout_error_ci_low"], tab["readout_error_ci_high"], tab["readout_error_empirical"]
    assert np.all(lo <= r) and np.all(r <= hi)
    assert "32 levels" in capsys.readouterr().out


def test_levels_ordered_by_mean_labels_recorded_resistance_column(tmp_path):
    rng = np.random.default_rng(0)
    means = {"hrs": 5e-6, "b": 60e-6, "a": 30e-6, "lrs": 100e-6}
    rows = [(lab, 1.0 / (m * (1 + 0.02 * z))) for lab, m in means.items() for z in rng.standard_normal(50)]
    csv = _write_csv(tmp_path / "x.csv", "level,r_ohm,comment", [(a, b, "x") for a, b in rows])
    t = calibrate_levels_csv(csv)
    assert t.labels == ("hrs", "a", "b", "lrs") and t.bits_per_cell == 2
    np.testing.assert_allclose(t.g_target_s, [5e-6, 30e-6, 60e-6, 100e-6], rtol=0.01)
    assert t.on_off_ratio == pytest.approx(20.0, rel=0.02)
    # 3 of the 4 levels: not a power of two -> a clear error naming the way out
    with pytest.raises(CalibrationError, match="2\\*\\*bits"):
        calibrate_levels_csv(csv, select=["hrs", "a", "b"])
    assert calibrate_levels_csv(csv, select=["hrs", "lrs"]).labels == ("hrs", "lrs")


def test_bad_level_files_exit_2(tmp_path, capsys):
    out = tmp_path / "o.h5"
    bad = _write_csv(tmp_path / "bad.csv", "level,g_s", [(0, 1e-5), (0, "x")])
    assert main(["device", "calibrate", "levels", "--in", str(bad), "--out", str(out)]) == 2
    assert "line 3" in capsys.readouterr().err
    nocol = _write_csv(tmp_path / "nocol.csv", "level,i_a", [(0, 1e-5), (1, 2e-5)])
    assert main(["device", "calibrate", "levels", "--in", str(nocol), "--out", str(out)]) == 2
    assert "'g_s'" in capsys.readouterr().err
    neg = _write_csv(tmp_path / "neg.csv", "level,g_s", [(0, 1e-5), (0, 2e-5), (1, -3e-5), (1, 4e-5)])
    assert main(["device", "calibrate", "levels", "--in", str(neg), "--out", str(out)]) == 2
    assert not out.exists()


def test_empirical_readout_error_and_its_interval_cover_the_true_rate():
    # two normal levels 4 sigma apart: P(misread) at the midpoint = Phi(-2) = 0.02275 per side
    from scipy.special import ndtr

    rng = np.random.default_rng(3)
    n = 20000
    g = np.concatenate([10e-6 + 1e-6 * rng.standard_normal(n), 14e-6 + 1e-6 * rng.standard_normal(n)])
    t = calibrate_levels(np.repeat(["lo", "hi"], n), g)
    e = empirical_readout_error(t)
    true = float(ndtr(-2.0))
    assert e.ci_low[0] <= true <= e.ci_high[0]
    assert e.rate[0] == pytest.approx(true, rel=0.1)
    # the optimal threshold never misreads more samples than the midpoint
    assert empirical_readout_error(t, thresholds="optimal").errors[0] <= e.errors[0]
    # Clopper-Pearson limits: no error in n trials -> [0, 1 - (a/2)^(1/n)]
    lo, hi = clopper_pearson(np.array([0]), np.array([1000]), 0.95)
    assert lo[0] == 0 and hi[0] == pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-6)


def test_well_separated_levels_report_zero_errors_not_tiny_tails():
    # the audit: lognormal tails fitted to truncated data gave error rates like 1e-181; the
    # empirical rate with its interval says "0 of n, below 3.7e-3"
    rng = np.random.default_rng(0)
    g = np.concatenate([m * (1 + 0.01 * rng.uniform(-1, 1, 500)) for m in (10e-6, 20e-6)])
    t = calibrate_levels(np.repeat([0, 1], 500), g)
    e = empirical_readout_error(t)
    assert e.errors[0] == 0 and e.ci_high[0] == pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-6)


def test_engine_reads_unequal_level_spacing_as_the_analytic_digit_error():
    """A measured 3-bit/cell array with level means 7, 86, 127, ..., 242 uS (the issue's example):
    the engine programs each digit from its own level, so a digit d reads as
    (mean_d - mean_0) / step with step = (mean_7 - mean_0) / 7, and the sum shows that error
    exactly; equally spaced levels between the same extremes read exactly."""
    import torch

    from crossbar.engine import CrossbarConfig, program_matrix

    means = np.array([7, 86, 127, 153, 175, 197, 219, 242]) * 1e-6
    measured = calibrate_levels(np.repeat(np.arange(8), 4), np.repeat(means, 4))
    uniform = LevelTable.synthetic(bits_per_cell=3, g_on_s=means[-1], g_off_s=means[0], sigma_rel=0.0,
                                   rng=np.random.default_rng(0))
    # 4-bit signed weights = one 3-bit magnitude slice, differential; inputs exact on the 8-bit DAC
    cfg = CrossbarConfig(bits_per_cell=3, weight_bits=4, tile_rows=64, tile_cols=64, input_bits=8)
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(-7, 8, (16, 32), generator=gen)
    codes[:, 0] = 7
    w = codes.double() / 4
    x = torch.randint(-127, 128, (5, 32), generator=gen).double()
    x[:, 0] = 127
    y_meas = program_matrix(w, cfg, measured, rng=np.random.default_rng(0), dtype=torch.float64)(x)
    y_unif = program_matrix(w, cfg, uniform, rng=np.random.default_rng(0), dtype=torch.float64)(x)
    ref = x @ w.T
    torch.testing.assert_close(y_unif, ref, rtol=1e-12, atol=1e-9)
    step = (means[-1] - means[0]) / 7
    read_as = torch.as_tensor((means - means[0]) / step)
    predicted = x @ (torch.sign(codes) * read_as[codes.abs()] / 4).T
    torch.testing.assert_close(y_meas, predicted, rtol=1e-12, atol=1e-9)
    assert float((y_meas - ref).norm() / ref.norm()) > 0.1  # the error is there, not assumed away


def test_calibrated_table_loads_through_the_sim_config(tmp_path):
    # what `reram-cosim eval ... --set levels.table_path=PATH` does with a calibrated table
    from device.config import apply_overrides
    from nn.sim import SimConfig, build_levels

    rng = np.random.default_rng(0)
    means = np.array([7, 86, 127, 153, 175, 197, 219, 242]) * 1e-6
    g = np.repeat(means, 100) * (1 + 0.02 * rng.standard_normal(800))
    p = calibrate_levels(np.repeat(np.arange(8), 100), g).save(tmp_path / "l3.h5")
    cfg = apply_overrides(SimConfig(), [f"levels.table_path={p}", "crossbar.bits_per_cell=3"])
    t = build_levels(cfg)
    assert t.is_measured and t.labels == tuple(str(k) for k in range(8))
    np.testing.assert_allclose(t.g_mean_s, [g[k * 100:(k + 1) * 100].mean() for k in range(8)], rtol=1e-12)


def _repeated_reads(rng, n_cells=150, n_reads=4, sigma_read=0.02, sigma_prog=0.06):
    """4 levels of n_cells cells each, programmed with lognormal spread sigma_prog, every cell read
    n_reads times with relative read noise sigma_read (cell names restart at every level)."""
    rows, g_prog = [], {}
    for k, g0 in enumerate((5e-6, 20e-6, 40e-6, 80e-6)):
        gp = g0 * rng.lognormal(0.0, sigma_prog, n_cells)
        for c in range(n_cells):
            g_prog[(k, c)] = gp[c]
            for _ in range(n_reads):
                rows.append((f"L{k}", c, gp[c] * (1.0 + sigma_read * rng.standard_normal())))
    return rows, g_prog


def test_read_noise_from_repeated_reads_of_a_cell(tmp_path, capsys):
    rows, g_prog = _repeated_reads(np.random.default_rng(3))
    labels, cells, g = zip(*rows)
    t = calibrate_levels(labels, np.array(g), cells=cells)
    # 150 cells x 4 levels x 3 dof = 1800 dof: the estimate's relative sd is 1/sqrt(2*1800) = 1.7 %
    assert t.read_noise_rel == pytest.approx(0.02, rel=0.06)
    assert t.read_noise_source.startswith("repeated reads: 2400 reads of 600 cells")
    # each cell counts once, at its mean read: the level spread is the programming spread
    assert list(t.n_per_level) == [150] * 4
    ln_sd = np.std(np.log(t.g_measured_s[t.measured_level == 2]), ddof=1)
    assert ln_sd == pytest.approx(0.06, rel=0.15)  # 150 cells: sd of the sd ~6 %; read noise adds 0.02^2/4

    csv = _write_csv(tmp_path / "reads.csv", "level,cell,g_s", rows)
    out = tmp_path / "lv.h5"
    assert main(["device", "calibrate", "levels", "--in", str(csv), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"read noise (relative sigma per read, stored as read_noise_rel) {t.read_noise_rel:.3g}: repeated reads" in printed
    back = LevelTable.load(out)
    assert back.read_noise_rel == t.read_noise_rel and back.read_noise_source == t.read_noise_source
    assert read_table(out).attrs["read_noise_source"].startswith("repeated reads")
    # an option overrides the data (and the data's estimate is still said)
    assert main(["device", "calibrate", "levels", "--in", str(csv), "--out", str(out), "--read-noise-rel", "0.01"]) == 0
    given = LevelTable.load(out)
    assert given.read_noise_rel == 0.01 and given.read_noise_source.startswith("given: 0.01 (the data's repeated reads")


def test_without_repeated_reads_the_read_noise_is_zero_or_the_option_and_the_table_says_so(tmp_path, capsys):
    rows = [(f"L{k}", g * (1 + 0.05 * i / 10)) for k, g in enumerate((5e-6, 50e-6)) for i in range(10)]
    csv = _write_csv(tmp_path / "once.csv", "level,g_s", rows)
    out = tmp_path / "lv.h5"
    assert main(["device", "calibrate", "levels", "--in", str(csv), "--out", str(out)]) == 0
    t = LevelTable.load(out)
    assert t.read_noise_rel == 0.0 and t.read_noise_source.startswith("none: no cell is read twice")
    assert "none: no cell is read twice" in capsys.readouterr().out
    assert main(["device", "calibrate", "levels", "--in", str(csv), "--out", str(out), "--read-noise-rel", "0.015"]) == 0
    t = LevelTable.load(out)
    assert t.read_noise_rel == 0.015 and t.read_noise_source == "given: 0.015"
    assert main(["device", "calibrate", "levels", "--in", str(csv), "--out", str(tmp_path / "x.h5"), "--read-noise-rel", "0.9"]) == 2
    assert "read_noise_rel=0.9 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
