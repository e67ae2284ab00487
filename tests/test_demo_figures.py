"""The demo's figures say what they show: level histograms on bins fine enough for their fits
(one line convention, levels labelled, read voltage stated, read-out error with its interval),
the read-out error figure, and IR-drop figures whose printed error is the plotted one."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from device.plots import draw_level_histograms  # noqa: E402
from device.programming import LevelTable, empirical_readout_error  # noqa: E402


def test_level_bars_reach_their_fitted_peaks_and_every_level_is_labelled():
    table = LevelTable.load("levels_b2")  # levels of very different widths (1.5 % sigma at 10..100 uS)
    fig, ax = plt.subplots()
    draw_level_histograms(ax, table, empirical_readout_error(table).threshold_s)
    for k in range(table.levels):
        color = matplotlib.colors.to_rgb(f"C{k}")
        bars = [p.get_height() for p in ax.patches if np.allclose(p.get_facecolor()[:3], color)]
        lines = [ln for ln in ax.lines if np.allclose(matplotlib.colors.to_rgb(ln.get_color()), color)]
        styles = sorted(ln.get_linestyle() for ln in lines)
        assert styles == ["--", "-"] or styles == ["-", "--"]  # normal dashed, lognormal solid
        logn = next(ln for ln in lines if ln.get_linestyle() == "-")
        peak_fit = float(np.max(logn.get_ydata()))
        # the densities share units (1/uS) and the bins resolve the peak: within 35 % (512 cells)
        assert 0.65 * peak_fit < max(bars) < 1.35 * peak_fit, (k, max(bars), peak_fit)
        # each level's bars integrate to 1
        widths = [p.get_width() for p in ax.patches if np.allclose(p.get_facecolor()[:3], color)]
        assert abs(np.dot(bars, widths) - 1.0) < 1e-6
    assert [t.get_text() for t in ax.texts] == [f"level {k}" for k in range(table.levels)]
    assert ax.get_xlabel() == "conductance read at 0.1 V (uS)"
    plt.close(fig)


def test_the_device_demo_writes_the_readout_error_figure_with_intervals(tmp_path, capsys):
    from cli.demo_device import run_device_demo

    s = run_device_demo(tmp_path, n_devices=64)
    out = capsys.readouterr().out
    assert (tmp_path / "readout_error.png").is_file() and (tmp_path / "levels_b2.png").is_file()
    for bits, d in s["write_verify"].items():
        n = d["cells_read"]
        assert n == 64 * 2**bits
        # no misread cell: the 95 % upper bound is 1 - 0.025^(1/n) (Clopper-Pearson at k = 0)
        if d["cells_misread"] == 0:
            assert np.isclose(d["cell_error_ci_high"], 1 - 0.025 ** (1 / n))
        assert f"cells misread {d['cells_misread']} of {n} [95 % CI" in out
    assert "0.00e+00" not in out


def test_irdrop_figures_print_what_they_plot(tmp_path, capsys):
    from crossbar.irdrop import demo_figures
    from device.config import ConfigError

    files = demo_figures(tmp_path)
    assert [f.name for f in files] == ["irdrop_map.png", "irdrop_error_vs_position.png"]
    out = capsys.readouterr().out
    assert "ideal G" not in out and "lines only" not in out
    lines = [ln for ln in out.splitlines() if ln.startswith("IR-drop model error")]
    assert len(lines) == 2 and all("signed inputs U(-0.2, 0.2) V" in ln and "32 vectors" in ln
                                   and "RMS column-current error / RMS column current" in ln for ln in lines)
    for ln in lines:
        errs = [float(x) for x in __import__("re").findall(r"([0-9.]+) %", ln)]
        # physics on signed inputs: no wires >> each wire alone > the tabulated homogenized-lines model,
        # which holds the 1 % of the column current it promises where it accepts the tile
        assert errs[0] > 10 * errs[1] > 0 and errs[1] > errs[2] > 0 and errs[2] < 1.0
    # a tile the table refuses (64 x 64 at 2.5 ohm: 16 % coupling; 1.4 % error on signed inputs) is refused here
    # too, before any file
    with pytest.raises(ConfigError, match="not accurate for 64x64 tiles at r_wire=2.5 ohm"):
        demo_figures(tmp_path / "refused", r_wire_ohm=2.5)
    assert not (tmp_path / "refused").exists()
