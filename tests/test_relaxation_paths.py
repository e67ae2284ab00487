"""What relaxation-aware programming needs from the relaxation model (device.relaxation): invalid
reads dropped and recorded, the Gaussian copula between times recovered from data with a known
dependence, paths that keep the table's marginals, exact moments, and the range check.

Measured data: the shared tech-B reads (../shared/data/devices/relaxation_techB, MIT license,
github.com/akashlevy/RRAM-Relaxation-Master-Model); those tests skip only where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.relaxation import RelaxationError, RelaxationModel, RelaxationRangeError, read_relaxation_csv, relaxation_data

torch = pytest.importorskip("torch")

TECHB = Path(__file__).parents[2] / "shared" / "data" / "devices" / "relaxation_techB"
needs_techb = pytest.mark.skipif(not (TECHB / "relaxdata_10k.min.tsv.gz").is_file(), reason="shared tech-B data absent")

TIMES = (0.01, 1.0, 100.0, 1e4)
RHO = {(0, 1): 0.6, (1, 2): 0.7, (2, 3): 0.5}


def _copula_data(rng, n_cells=6000):
    """Cells with a known dependence between times: the change at time k is
    ``0.05 g0 (1 + k) z_k`` with ``z`` a Gaussian Markov chain, ``corr(z_k, z_k+1) = RHO``; so the
    normal-score correlation of times j < k is the product of the links between them."""
    g0 = rng.uniform(10e-6, 100e-6, n_cells)
    z = rng.standard_normal(n_cells)
    rows = []
    for k, t in enumerate(TIMES):
        if k:
            r = RHO[(k - 1, k)]
            z = r * z + np.sqrt(1 - r * r) * rng.standard_normal(n_cells)
        rows.append((np.arange(n_cells), np.full(n_cells, t), g0 + 0.05 * g0 * (1 + k) * z, g0))
    c, t, g, g0s = (np.concatenate(x) for x in zip(*rows))
    return relaxation_data(c, t, g, g0s)


@pytest.fixture(scope="module")
def copula_model():
    return RelaxationModel.fit(_copula_data(np.random.default_rng(0)), min_cells_per_bin=1500)


def test_time_correlation_recovers_a_known_copula(copula_model):
    m = copula_model
    assert m.z_corr.shape == (4, 4, 4)
    # the sample correlation of n = 1500 pairs has a standard error <= (1 - rho^2) / sqrt(n) < 0.026
    tol = 4 * 1 / np.sqrt(1500)
    for (j, k), r in RHO.items():
        assert np.all(np.abs(m.z_corr[:, j, k] - r) < tol)
    assert np.all(np.abs(m.z_corr[:, 0, 2] - 0.6 * 0.7) < tol)
    assert np.all(m.z_corr[:, [0, 1, 2, 3], [0, 1, 2, 3]] == 1.0)
    # equal ages: fully correlated; between measured times: bilinear in log t, between the corners
    assert np.all(m.time_correlation(5.0, 5.0) == 1.0)
    r = m.time_correlation(1.0, 10.0)  # halfway (in log t) from (1, 1) = 1 to (1, 100) = 0.7
    assert np.allclose(r, 0.5 * (1 + m.z_corr[:, 1, 2]))


def test_paths_keep_the_marginals_and_carry_the_dependence(copula_model):
    m = copula_model
    n = 200_000
    g0 = torch.full((n,), 55e-6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    g1, z1 = m.sample_path_torch(g0, torch.zeros(()), torch.zeros(()), torch.tensor(1.0), gen)
    g2, z2 = m.sample_path_torch(g0, torch.tensor(1.0), z1, torch.tensor(100.0), gen)
    direct = m.sample_torch(g0, 100.0, torch.Generator().manual_seed(4))
    d2, dd = (g2 - g0).numpy(), (direct - g0).numpy()
    # the continued path has the table's marginal at 100 s: mean within 5 sigma / sqrt(n), sd within 2 %
    assert abs(d2.mean() - dd.mean()) < 5 * dd.std() * np.sqrt(2 / n)
    assert d2.std() == pytest.approx(dd.std(), rel=0.02)
    # and the dependence of the data: the normal scores correlate as the table says (+- 5 / sqrt(n))
    i = np.searchsorted(m.g0_bin_s, 55e-6)
    lo, hi = sorted((m.time_correlation(1.0, 100.0)[i - 1], m.time_correlation(1.0, 100.0)[i]))
    r = np.corrcoef(z1.numpy(), z2.numpy())[0, 1]
    assert lo - 5 / np.sqrt(n) <= r <= hi + 5 / np.sqrt(n)
    # a fresh cell (t_prev = 0) ignores z_prev
    a, _ = m.sample_path_torch(g0[:10], torch.zeros(()), torch.full((10,), 3.0), torch.tensor(1.0), torch.Generator().manual_seed(9))
    b, _ = m.sample_path_torch(g0[:10], torch.zeros(()), torch.zeros(10), torch.tensor(1.0), torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    with pytest.raises(RelaxationRangeError, match="ages only grow"):
        m.sample_path_torch(g0[:3], torch.tensor(10.0), z1[:3], torch.tensor(1.0), gen)


def test_moments_are_those_of_the_sampler(copula_model):
    m = copula_model
    g0 = np.array([12e-6, 37.3e-6, 80e-6])
    mean, msq = m.dg_moments(g0, 30.0)
    draws = m.sample(np.repeat(g0, 400_000), 30.0, np.random.default_rng(1)).reshape(3, -1) - g0[:, None]
    sd = draws.std(axis=1)
    assert np.all(np.abs(draws.mean(axis=1) - mean) < 5 * sd / np.sqrt(400_000))
    assert np.sqrt(msq - mean**2) == pytest.approx(sd, rel=0.01)
    z, z2 = m.dg_moments(g0, 0.0)
    assert np.all(z == 0) and np.all(z2 == 0)


def test_invalid_reads_are_refused_or_dropped_and_recorded(tmp_path):
    rng = np.random.default_rng(0)
    d = _copula_data(rng, n_cells=900)
    g = d.g_s.copy()
    g[17] = -3e-6  # one negative read, as measurement files have
    with pytest.raises(RelaxationError, match=r"row 18 .* invalid read .*drop_invalid"):
        relaxation_data(d.cell, d.time_s, g, d.g0_s)
    ok = relaxation_data(d.cell, d.time_s, g, d.g0_s, drop_invalid=True)
    assert ok.dropped_cells == 1 and ok.dropped_reads == 4 and ok.g_s.size == d.g_s.size - 4
    assert d.cell[17] not in set(ok.cell.tolist())
    # a tidy CSV with a negative and a non-numeric read: refused, or fitted without those cells
    csv = tmp_path / "r.csv"
    lines = ["cell,time_s,g_s,g0_s"] + [f"{c},{t:g},{x:.8g},{x0:.8g}" for c, t, x, x0 in zip(d.cell, d.time_s, d.g_s, d.g0_s)]
    lines[5] = lines[5].rsplit(",", 2)[0] + ",-1e-6," + lines[5].rsplit(",", 1)[1]
    lines[9] = lines[9].rsplit(",", 2)[0] + ",n/a," + lines[9].rsplit(",", 1)[1]
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match="not a number|invalid"):
        read_relaxation_csv(csv)
    data = read_relaxation_csv(csv, drop_invalid=True)
    assert data.dropped_cells == 2
    m = RelaxationModel.fit(data, min_cells_per_bin=200)
    assert m.dropped_cells == 2 and m.dropped_reads == 8
    m2 = RelaxationModel.load(m.save(tmp_path / "r.h5"))
    assert m2.dropped_cells == 2 and np.array_equal(m2.z_corr, m.z_corr)
    assert "left out: 2 cells" in m2.summary()


def test_range_check_names_the_table_and_the_clamp(copula_model):
    m = copula_model
    m.check_conductances(20e-6, 90e-6, "level table x.h5")
    with pytest.raises(RelaxationRangeError, match=r"level table x\.h5 .* 3 uS|level table x\.h5 holds conductances 3"):
        m.check_conductances(3e-6, 90e-6, "level table x.h5")
    m.check_conductances(3e-6, 90e-6, "level table x.h5", out_of_range="clamp")
    assert m.clamped_cells(np.array([3e-6, 50e-6, 200e-6])) == 2
    assert m.clamped_cells(torch.tensor([3e-6, 50e-6])) == 1


@needs_techb
def test_techb_copula_predicts_the_cells_a_verify_keeps(tmp_path):
    """The check of what relaxation-aware programming assumes about a kept cell, on held-out
    tech-B cells: fit on half the cells; in the other half, keep the cells whose change at 1 s is
    inside +-1 uS (a verify window), and compare how much narrower their change is at 100 s and
    10^4 s than that of all cells (std of the kept / std of all) with the model's ratio for cells
    selected the same way (paths through its Gaussian copula).

    What the data say: the selection narrows the spread, and the Gaussian copula narrows it less
    than the data do (it has no tail dependence: a quiet cell stays quiet more often than a
    Gaussian dependence says), so it is conservative for relaxation-aware programming. Asserted:
    the model's ratio is below 1, at least the data's - 0.05 and at most the data's + 0.25 in
    each g0 range and time (RESULTS.md has the figures)."""
    from device.calibrate import techb_relaxation_csv

    data = read_relaxation_csv(techb_relaxation_csv(tmp_path / "t.csv", src=TECHB))
    fit, held = data.split_cells(np.random.default_rng(0))
    model = RelaxationModel.fit(fit)
    by = {}
    for t in (1.0, 100.0, 1e4):
        m = np.isclose(held.time_s, t, rtol=0.5)
        by[t] = dict(zip(held.cell[m].tolist(), (held.g_s[m] - held.g0_s[m]).tolist()))
    g0_of = dict(zip(held.cell.tolist(), held.g0_s.tolist()))
    keep = [c for c in np.unique(held.cell).tolist() if all(c in by[t] for t in by)]
    g0 = np.array([g0_of[c] for c in keep])
    d1 = np.array([by[1.0][c] for c in keep])
    for lo, hi in ((25e-6, 45e-6), (45e-6, 70e-6), (80e-6, 120e-6)):
        sel = (g0 >= lo) & (g0 < hi)
        g0t = torch.as_tensor(np.repeat(g0[sel], 20))
        gen = torch.Generator().manual_seed(0)
        p1, z1 = model.sample_path_torch(g0t, torch.zeros(()), torch.zeros(()), torch.tensor(1.0), gen)
        passed = ((p1 - g0t).abs() <= 1e-6).numpy()
        # the marginal at the verify: the fraction kept as in the data (+-0.06)
        assert passed.mean() == pytest.approx(np.mean(np.abs(d1[sel]) <= 1e-6), abs=0.06)
        for t in (100.0, 1e4):
            dt = np.array([by[t][c] for c in np.asarray(keep)[sel]])
            ratio_data = dt[np.abs(d1[sel]) <= 1e-6].std() / dt.std()
            pt, _ = model.sample_path_torch(g0t, torch.tensor(1.0), z1, torch.tensor(t), gen)
            dp = (pt - g0t).numpy()
            ratio_model = dp[passed].std() / dp.std()
            assert ratio_model < 1.0 and ratio_data - 0.05 <= ratio_model <= ratio_data + 0.25, (lo, t, ratio_data, ratio_model)


def test_cli_drop_invalid(tmp_path, capsys):
    from cli.main import main
    from device.tables import read_table

    d = _copula_data(np.random.default_rng(1), n_cells=800)
    lines = ["cell,time_s,g_s,g0_s"] + [f"{c},{t:g},{x:.8g},{x0:.8g}" for c, t, x, x0 in zip(d.cell, d.time_s, d.g_s, d.g0_s)]
    lines[3] = lines[3].rsplit(",", 2)[0] + ",-2e-6," + lines[3].rsplit(",", 1)[1]  # one negative read
    csv = tmp_path / "r.csv"
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.h5"
    args = ["device", "calibrate", "relaxation", "--in", str(csv), "--out", str(out), "--min-cells-per-bin", "200"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "invalid read" in err and "--drop-invalid" in err and not out.exists()
    assert main(args + ["--drop-invalid"]) == 0
    assert "dropped 1 cell(s) (4 reads)" in capsys.readouterr().out
    t = read_table(out)
    assert int(t.attrs["dropped_cells"]) == 1 and t.config["drop_invalid"] is True
