"""Conductance relaxation model (device.relaxation, `device calibrate relaxation`).

Measured data: the shared tech-B reads (../shared/data/devices/relaxation_techB, MIT license,
github.com/akashlevy/RRAM-Relaxation-Master-Model); those tests skip only where it is absent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.relaxation import (
    RelaxationModel,
    RelaxationRangeError,
    bin_statistics,
    compare_forms,
    relaxation_data,
)
from device.tables import read_table, validate
from cli.main import main

TECHB = Path(__file__).parents[2] / "shared" / "data" / "devices" / "relaxation_techB"
needs_techb = pytest.mark.skipif(not (TECHB / "relaxdata_10k.min.tsv.gz").is_file(), reason="shared tech-B data absent")
ROOT = Path(__file__).parents[1]


def _synthetic(rng, n_cells=3000, times=(0.01, 0.1, 1.0, 100.0, 1e4)):
    """Cells whose change follows a known law: mean drift -0.01 g0 log10(t / 1 ms), standard
    deviation 0.02 g0 (1 + log10(t / 10 ms)), normal."""
    g0 = rng.uniform(10e-6, 100e-6, n_cells)
    rows = []
    for t in times:
        mu = -0.01 * g0 * np.log10(t / 1e-3)
        sd = 0.02 * g0 * (1 + np.log10(t / 1e-2))
        rows.append((np.arange(n_cells), np.full(n_cells, t), g0 + mu + sd * rng.standard_normal(n_cells), g0))
    c, t, g, g0s = (np.concatenate(x) for x in zip(*rows))
    return relaxation_data(c, t, g, g0s)


def test_recovers_a_known_law_and_interpolates_in_log_time():
    rng = np.random.default_rng(0)
    n_bin = 2000
    m = RelaxationModel.fit(_synthetic(rng, n_cells=10 * n_bin), min_cells_per_bin=n_bin)
    assert m.time_s.tolist() == pytest.approx([0.01, 0.1, 1.0, 100.0, 1e4])
    # at 10 s (not measured: between 1 s and 100 s) the law is linear in log t, so is the model
    g0 = np.full(40000, 50e-6)
    g = m.sample(g0, 10.0, np.random.default_rng(1))
    mu, sd = -0.01 * 50e-6 * 4, 0.02 * 50e-6 * 4
    # the table's own estimation noise sets the tolerance: each bin's quantiles come from n_bin
    # cells, so its mean is known to sd / sqrt(n_bin); 4 of those (the draws add 1/sqrt(40000))
    assert abs(g.mean() - (50e-6 + mu)) < 4 * sd / np.sqrt(n_bin)
    assert g.std() == pytest.approx(sd, rel=4 / np.sqrt(2 * n_bin) + 0.02)
    # time 0 is the programmed conductance, bit for bit, and draws nothing
    r = np.random.default_rng(2)
    assert np.array_equal(m.sample(g0[:5], 0.0, r), g0[:5])
    assert r.random() == np.random.default_rng(2).random()


def test_refuses_outside_the_measured_range():
    m = RelaxationModel.fit(_synthetic(np.random.default_rng(0), n_cells=1000), min_cells_per_bin=200)
    rng = np.random.default_rng(0)
    with pytest.raises(RelaxationRangeError, match="outside the measured range"):
        m.sample(np.array([50e-6]), 1e5, rng)
    with pytest.raises(RelaxationRangeError, match="outside the measured range"):
        m.sample(np.array([50e-6]), 1e-3, rng)
    with pytest.raises(RelaxationRangeError, match="fitted range"):
        m.sample(np.array([1e-6]), 1.0, rng)
    # clamp: the nearest bin's distribution, for stuck or extreme cells
    assert m.sample(np.array([1e-6]), 1.0, rng, out_of_range="clamp").shape == (1,)
    with pytest.raises(RelaxationRangeError):
        m.sample(np.array([50e-6]), -1.0, rng)


def test_save_load_units_and_seeded_draws_numpy_and_torch(tmp_path):
    import torch

    m = RelaxationModel.fit(_synthetic(np.random.default_rng(0), n_cells=1000), min_cells_per_bin=200)
    p = m.save(tmp_path / "r.h5")
    validate(p, "relaxation")
    tab = read_table(p)
    assert all(a.units for a in tab.arrays.values())
    assert tab.arrays["dg_quantile_s"].units == "S" and tab.arrays["time_s"].units == "s"
    m2 = RelaxationModel.load(p)
    g0 = np.linspace(20e-6, 90e-6, 5000)
    a = m2.sample(g0, 100.0, np.random.default_rng(7))
    assert np.array_equal(a, m.sample(g0, 100.0, np.random.default_rng(7)))
    t1 = m2.sample_torch(torch.as_tensor(g0), 100.0, torch.Generator().manual_seed(7))
    t2 = m2.sample_torch(torch.as_tensor(g0), 100.0, torch.Generator().manual_seed(7))
    assert t1.dtype == torch.float64 and torch.equal(t1, t2)
    # the two samplers draw the same distribution: mean change within 5 sigma / sqrt(n)
    d1, d2 = a - g0, t1.numpy() - g0
    assert abs(d1.mean() - d2.mean()) < 5 * d1.std() * np.sqrt(2 / g0.size)
    assert d2.std() == pytest.approx(d1.std(), rel=0.05)
    with pytest.raises(RelaxationRangeError):
        m2.sample_torch(torch.as_tensor(g0), 1e6, torch.Generator())


@needs_techb
def test_techb_fit_on_half_predicts_the_other_half(tmp_path):
    """The issue's held-out check on tech-B: fit on half the cells (random split, seed 0), predict
    per programmed-conductance bin (16 equal-count bins) and measured time the other half.

    Tolerances, each in units of the held-out data's own spread in that (bin, time):
    * mean: within 0.25 standard deviations in every (bin, time);
    * spread: interquartile range within 25 % in every (bin, time); standard deviation within 25 %
      in at least 90 % of them and within 50 % in all. The standard deviation of these heavy-tailed
      changes is itself noisy: the two data halves differ by more than 25 % in 5 to 6 of the 96
      (bin, time) cells (up to 45 %), so no model can meet 25 % everywhere on the std.
    """
    from device.calibrate import techb_relaxation_csv

    csv = techb_relaxation_csv(tmp_path / "techb.csv", src=TECHB)
    from device.relaxation import read_relaxation_csv

    data = read_relaxation_csv(csv)
    fit, held = data.split_cells(np.random.default_rng(0))
    model = RelaxationModel.fit(fit)
    edges = np.quantile(np.unique(held.g0_s), np.linspace(0, 1, 17))
    r = compare_forms(model, held, edges, np.random.default_rng(1))
    assert np.all(r["count"] >= 100)
    assert np.nanmax(r["mean_err_in_std"]) <= 0.25
    assert np.nanmax(r["iqr_err_rel"]) <= 0.25
    assert np.mean(r["std_err_in_std"] <= 0.25) >= 0.90 and np.nanmax(r["std_err_in_std"]) <= 0.5
    # the form: quantiles beat a normal law with the same mean and spread (held-out KS distance)
    assert np.nanmedian(r["ks_quantile"]) < np.nanmedian(r["ks_normal"])
    # the data: the spread grows with time in every bin (first vs last measured time)
    _, sd, _, _ = bin_statistics(held, edges, model.time_s, held.g_s - held.g0_s)
    assert np.all(sd[:, -1] > sd[:, 0])


def test_cli_fits_a_tidy_csv_and_refuses_bad_ones(tmp_path, capsys):
    d = _synthetic(np.random.default_rng(0), n_cells=600)
    csv = tmp_path / "relax.csv"
    # no g0_s column: the earliest read (time 0) is the programmed conductance
    g0_rows = [f"{c},0,{g:.8g}" for c, g in zip(range(600), d.g0_s[:600])]
    rows = [f"{c},{t:g},{g:.8g}" for c, t, g in zip(d.cell, d.time_s, d.g_s)]
    csv.write_text("cell,time_s,g_s\n" + "\n".join(g0_rows + rows) + "\n")
    out, png = tmp_path / "r.h5", tmp_path / "r.png"
    assert main(["device", "calibrate", "relaxation", "--in", str(csv), "--out", str(out), "--plot", str(png)]) == 0
    m = RelaxationModel.load(out)
    assert m.time_s.size == 5 and png.stat().st_size > 0
    np.testing.assert_allclose(m.g0_min_s, d.g0_s.min(), rtol=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("cell,g_s\n1,1e-5\n")
    assert main(["device", "calibrate", "relaxation", "--in", str(bad), "--out", str(tmp_path / "b.h5")]) == 2
    assert "time_s" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["device.calibrate", "device.relaxation", "cli.calibrate"])
def test_calibration_modules_import_light(module):
    code = (f"import sys, {module}\n"
            "print(','.join(m for m in ('torch', 'matplotlib', 'scipy', 'PySpice') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    assert out == ""


def test_shipped_techb_table_loads_and_covers_the_measured_times():
    p = ROOT / "data" / "relaxation_techB.h5"
    m = RelaxationModel.load(p)
    assert m.time_s[0] == pytest.approx(0.01, rel=0.1) and m.time_s[-1] == pytest.approx(1e4, rel=0.1)
    # tech-B's mid levels spread by more than 5 uS within 10^4 s; its top levels by less than 2 uS
    mid = np.argmin(np.abs(m.g0_bin_s - 50e-6))
    top = np.argmin(np.abs(m.g0_bin_s - 115e-6))
    assert m.std_s[mid, -1] > 5e-6 and m.std_s[top, -1] < 2e-6
