"""evaluate_glue and ``reram-cosim eval`` on a tiny random BERT classifier and tiny SST-2 TSVs:
row layout, full config in every row, resume after a kill, and one clear error per bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from device.config import ConfigError  # noqa: E402
from nn.evaluate import CSV_COLUMNS, ResultsFile, evaluate_glue, read_results  # noqa: E402
from nn.sim import SimConfig, build_sim_config  # noqa: E402
from _tiny_bert import write_glue, write_tiny_classifier  # noqa: E402

SMALL = ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {
        "model": write_tiny_classifier(root / "model"),
        "model3": write_tiny_classifier(root / "model3", num_labels=3),
        "glue": write_glue(root / "glue"),
    }


def cfg(*extra):
    return build_sim_config("default", SMALL + ["faults.rate=0.05", "levels.sigma_rel=0.05", *extra])


def test_rows_config_and_trials(files, tmp_path):
    out = tmp_path / "r.csv"
    s = evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 3, 7, out, batch_size=8, progress=False,
                      max_length=32)
    rows = read_results(out)
    with open(out, newline="") as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    assert [(r["mode"], r["trial"], r["seed"]) for r in rows] == [("digital", -1, 7)] + [("simulated", t, 7) for t in range(3)]
    for r in rows:
        assert r["task"] == "sst2" and r["n_examples"] == 24 and 0 <= r["accuracy"] <= 1
        assert SimConfig.from_json(r["sim_config"]) == cfg()  # the full config, round-trips
        assert np.isnan(r["mcc"])
    assert len({r["config_hash"] for r in rows}) == 2  # digital hash leaves the sim config out
    sim = s["simulated"]["accuracy"]
    acc = [r["accuracy"] for r in rows if r["mode"] == "simulated"]
    assert sim["n"] == 3 and sim["mean"] == pytest.approx(np.mean(acc)) and sim["std"] == pytest.approx(np.std(acc, ddof=1))
    assert s["digital"]["accuracy"] == rows[0]["accuracy"]


def test_resume_skips_finished_rows(files, tmp_path):
    out = tmp_path / "r.csv"
    kw = dict(batch_size=8, progress=False, max_length=32, verbose=False)
    s1 = evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 4, 0, out, stop_after_rows=2, **kw)  # "killed"
    assert s1["written"] == 2 and not s1["complete"]
    first = read_results(out)
    # a kill in the middle of a write leaves a partial line: it is dropped on restart
    with open(out, "a") as f:
        f.write("sst2,dev,baseline,simulated,2,0,24,0.5")
    s2 = evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 4, 0, out, **kw)
    assert s2["written"] == 3 and s2["complete"]
    rows = read_results(out)
    assert [(r["mode"], r["trial"]) for r in rows] == [("digital", -1)] + [("simulated", t) for t in range(4)]
    assert rows[:2] == first
    s3 = evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 4, 0, out, **kw)
    assert s3["written"] == 0
    # a trial computed alone equals the same trial of the full run (generator [seed, trial])
    alone = tmp_path / "alone.csv"
    evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 4, 0, alone, **kw)
    assert [r["accuracy"] for r in read_results(alone)] == [r["accuracy"] for r in rows]
    # another config appends, the digital row is shared
    s4 = evaluate_glue(files["model"], "sst2", files["glue"], cfg("faults.rate=0.1"), 1, 0, out, **kw)
    assert s4["written"] == 1


def test_results_file_with_a_foreign_header_is_refused(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a reram-cosim results file"):
        ResultsFile(p)


def test_bad_inputs_one_clear_error(files, tmp_path):
    out = tmp_path / "r.csv"
    kw = dict(batch_size=8, progress=False, verbose=False)
    with pytest.raises(ValueError, match="unknown GLUE task 'sst3'"):
        evaluate_glue(files["model"], "sst3", files["glue"], cfg(), 1, 0, out, **kw)
    with pytest.raises(ValueError, match="3 output label"):
        evaluate_glue(files["model3"], "sst2", files["glue"], cfg(), 1, 0, out, **kw)
    with pytest.raises(ValueError, match="does not exist|no such|missing"):
        evaluate_glue(files["model"], "sst2", tmp_path / "nowhere", cfg(), 1, 0, out, **kw)
    bad = tmp_path / "badglue" / "SST-2"
    bad.mkdir(parents=True)
    (bad / "dev.tsv").write_text("sentence\tgrade\nnice film\t1\n")
    with pytest.raises(ValueError, match="label"):
        evaluate_glue(files["model"], "sst2", tmp_path / "badglue", cfg(), 1, 0, out, **kw)
    with pytest.raises(ConfigError, match="unknown key"):
        build_sim_config("default", ["faults.rat=0.1"])
    assert not out.exists()  # nothing written, nothing lost


def test_cli_eval(files, tmp_path, capsys):
    from cli.main import main

    out = tmp_path / "cli.csv"
    args = ["eval", "--model", str(files["model"]), "--task", "sst2", "--glue-dir", str(files["glue"]),
            "--trials", "2", "--out", str(out), "--no-progress", "--batch-size", "8", "--max-length", "32",
            "--set", "crossbar.tile_rows=32", "--set", "crossbar.tile_cols=32", "--set", "levels.source=synthetic",
            "--set", "faults.rate=0.01"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "sst2 baseline: digital accuracy" in text and "+-" in text
    rows = read_results(out)
    assert len(rows) == 3 and json.loads(rows[1]["sim_config"])["faults"]["rate"] == 0.01
    assert main(args) == 0 and len(read_results(out)) == 3  # resumed: nothing to do
    capsys.readouterr()
    assert main(args[:-2] + ["--set", "faults.rte=0.01"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "faults.rte" in err and err.count("\n") == 1
    assert main(["eval", "--model", str(files["model3"]), "--task", "sst2", "--glue-dir", str(files["glue"]),
                 "--out", str(tmp_path / "y.csv"), "--no-progress"]) == 2
    assert "label" in capsys.readouterr().err
