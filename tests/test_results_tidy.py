"""Tidy results files (issue 22): one column per configuration key that differs between the
simulated rows, readable by ``pandas.read_csv`` as it is; files written before the columns
existed are read, and upgraded on their first new row; the majority-class score in every row."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nn.evaluate import CSV_COLUMNS, V2_CSV_COLUMNS, ResultsFile, read_results
from nn.results import flat_config, majority_score
from nn.sim import build_sim_config


def _row(trial: int, cfg, mode: str = "simulated", score: float = 0.5, h: str | None = None) -> dict:
    sim = cfg.to_json()
    return {c: "" for c in CSV_COLUMNS} | {
        "task": "sst2", "split": "dev", "method": "baseline", "mode": mode, "trial": trial, "seed": 0, "n_examples": 10,
        "score": repr(score), "accuracy": repr(score), "max_length": 32, "config_hash": h or f"h{sim.__hash__() % 997}",
        "sim_config": sim, "majority_score": "0.5"}


def _header(p) -> list[str]:
    with open(p, newline="") as f:
        return next(csv.reader(f))


def test_a_column_per_key_that_varies_and_the_file_grows_it(tmp_path):
    p = tmp_path / "r.csv"
    base = build_sim_config("default", ["faults.rate=0.01"])
    res = ResultsFile(p)
    assert res.append(_row(-1, base, "digital", 0.9, "dig")) and res.append(_row(0, base, h="a"))
    assert _header(p) == list(CSV_COLUMNS)  # one config: nothing varies
    res.append(_row(0, base.replace(faults=base.faults.replace(rate=0.02)), h="b"))
    assert _header(p) == list(CSV_COLUMNS) + ["faults.rate"]
    other = ResultsFile(p)  # a second writer adds a second key: one rewrite, every earlier row kept
    other.append(_row(0, build_sim_config("default", ["faults.rate=0.01", "crossbar.adc_bits=6"]), h="c"))
    assert _header(p) == list(CSV_COLUMNS) + ["crossbar.adc_bits", "faults.rate"]
    rows = read_results(p)
    assert [(r["config_hash"], r["faults.rate"], r["crossbar.adc_bits"]) for r in rows] == [
        ("dig", None, None), ("a", 0.01, None), ("b", 0.02, None), ("c", 0.01, 6)]
    assert res.append(_row(0, base, h="a")) is False  # the first writer sees the rewritten file
    import pandas as pd  # the test extra installs it (pyproject.toml)
    df = pd.read_csv(p)
    sim = df[df["mode"] == "simulated"]
    assert list(sim["faults.rate"]) == [0.01, 0.02, 0.01] and sim["crossbar.adc_bits"].isna().tolist() == [True, True, False]
    assert sim.groupby("faults.rate")["score"].count().to_dict() == {0.01: 2, 0.02: 1}


def test_files_before_the_columns_are_read_and_upgraded(tmp_path):
    p = tmp_path / "old.csv"
    base = build_sim_config("default")
    with open(p, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(V2_CSV_COLUMNS)
        r = _row(0, base, h="old")
        w.writerow([r[c] for c in V2_CSV_COLUMNS])
    assert read_results(p)[0]["config_hash"] == "old" and np.isnan(read_results(p)[0]["majority_score"])
    ResultsFile(p).append(_row(0, base.replace(faults=base.faults.replace(rate=0.5)), h="new"))
    assert _header(p) == list(CSV_COLUMNS) + ["faults.rate"]
    assert [(r["config_hash"], r["faults.rate"]) for r in read_results(p)] == [("old", 0.0), ("new", 0.5)]


def test_flat_config_and_majority_score():
    flat = flat_config(build_sim_config("default").to_dict())
    assert flat["faults.rate"] == 0.0 and "crossbar.adc_bits" in flat and isinstance(flat["target_modules"], list)
    assert majority_score("sst2", np.array([1, 1, 0, 1])) == 0.75
    assert majority_score("mrpc", np.array([1, 1, 0, 1])) == pytest.approx(0.5 * (6 / 7 + 0.75))  # F1 and accuracy
    assert majority_score("cola", np.array([1, 1, 0])) == 0.0 and majority_score("stsb", np.array([1.0, 2.5])) == 0.0


def test_an_eval_into_one_file_with_other_settings_is_tidy(tmp_path):
    pytest.importorskip("transformers")
    from cli.main import main
    from _tiny_bert import write_glue, write_tiny_classifier

    model, glue = write_tiny_classifier(tmp_path / "m"), write_glue(tmp_path / "g")
    out = tmp_path / "r.csv"
    for rate in ("0.01", "0.1"):
        assert main(["eval", "--model", str(model), "--task", "sst2", "--glue-dir", str(glue), "--out", str(out),
                     "--no-progress", "--batch-size", "8", "--max-length", "32", "--set", "crossbar.tile_rows=32",
                     "--set", "crossbar.tile_cols=32", "--set", "levels.source=synthetic", "--set",
                     f"faults.rate={rate}"]) == 0
    rows = read_results(out)
    assert [(r["mode"], r["faults.rate"]) for r in rows] == [("digital", None), ("simulated", 0.01), ("simulated", 0.1)]
    labels = [int(line.split("\t")[1]) for line in (glue / "SST-2" / "dev.tsv").read_text().splitlines()[1:]]
    assert all(r["majority_score"] == majority_score("sst2", np.array(labels)) for r in rows)
    assert json.loads(rows[2]["sim_config"])["faults"]["rate"] == 0.1  # the full config stays


# --- reram-cosim plot (issue 22) -------------------------------------------------------------------


def test_axis_names_units_and_log_axes():
    from nn.plots import axis_label, log_axis

    assert axis_label("faults.rate") == "Expected fraction of faulty cells or of failed lines"
    assert axis_label("crossbar.read_time_s") == "Time between programming and the reads [s]"
    assert axis_label("circuit.r_wire_row_ohm") == "Word-line wire resistance per segment [Ω]"
    assert axis_label("levels.sigma_rel") == "Programming variation, relative sigma of each level"
    assert axis_label("crossbar.adc_bits") == "ADC resolution in bits, signed"
    assert axis_label("no.such_key") == "no.such_key"
    assert log_axis("faults.rate") and log_axis("crossbar.read_time_s") and not log_axis("crossbar.adc_bits")


def test_chips_mean_and_t_interval():
    from nn.plots import series

    cfg = build_sim_config("default", ["faults.rate=0.01"])
    rows = read_results_like([(_row(t, cfg, score=s, h="a"), s) for t, s in enumerate((0.5, 0.6, 0.7))])
    rows.append(read_results_like([(_row(-1, cfg, "digital", 0.9, "d"), 0.9)])[0])
    s = series(rows, "faults.rate")
    xs, mean, lo, hi, ns = s["lines"]["baseline"]
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert xs == [0.01] and mean[0] == pytest.approx(0.6) and hi[0] - mean[0] == pytest.approx(half) and ns[0] == 3
    assert s["digital"] == {"baseline": 0.9} and s["majority"] == 0.5


def read_results_like(pairs):
    """Rows as read_results returns them, from _row dicts."""
    out = []
    for r, score in pairs:
        d = dict(r)
        d.update(score=score, accuracy=score, majority_score=0.5, trial=int(r["trial"]), seed=0)
        out.append(d)
    return out


def test_plot_command_on_an_eval_file(tmp_path, capsys):
    from cli.main import main

    p = tmp_path / "r.csv"
    res = ResultsFile(p)
    for i, rate in enumerate((0.0, 0.001, 0.01)):
        cfg = build_sim_config("default", [f"faults.rate={rate}"])
        for t in range(3):
            res.append(_row(t, cfg, score=0.8 - 3 * rate - 0.01 * t, h=f"h{i}"))
    res.append(_row(-1, build_sim_config("default"), "digital", 0.85, "dig"))
    assert main(["plot", str(p), "--x", "faults.rate"]) == 0
    png = tmp_path / "r_faults_rate.png"
    assert png.is_file() and png.stat().st_size > 10_000 and f"plot: {png}" in capsys.readouterr().out
    assert main(["plot", str(p), "--x", "faults.rat", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no row sets 'faults.rat'") and "faults.rate" in err
    assert main(["plot", str(p), "--x", "faults.rate", "--where", "faults.rate=0.5", "--out", str(tmp_path / "y.png")]) == 2
    assert "no simulated rows match" in capsys.readouterr().err
    (tmp_path / "foreign.csv").write_text("a,b\n1,2\n")
    assert main(["plot", str(tmp_path / "foreign.csv"), "--x", "faults.rate"]) == 2
    assert "not a reram-cosim results file" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()
