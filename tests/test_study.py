"""Study specs, the resumable sweep and its plots, on a tiny random BERT and tiny SST-2 TSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from nn.evaluate import read_results  # noqa: E402
from nn.study import StudySpec, load_spec, run_study, study_points  # noqa: E402
from _tiny_bert import write_glue, write_tiny_classifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return {"model": write_tiny_classifier(root / "model"), "glue": write_glue(root / "glue", n_dev=16)}


def spec_dict(files, **kw):
    d = {
        "name": "tiny",
        "model": str(files["model"]),
        "glue_dir": str(files["glue"]),
        "preset": "default",
        "set": ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic"],
        "axes": {"faults.rate": [0, 0.05], "crossbar.weight_format": ["dynamic", "static"]},
        "tasks": ["sst2"],
        "methods": {"baseline": [], "sa1_only": ["faults.sa0_fraction=0"]},
        "trials": 2,
        "seed": 0,
        "max_length": 32,
        "batch_size": 8,
    }
    d.update(kw)
    return d


def test_shipped_examples_are_valid():
    for name in ("study_faults.json", "study_variation.json"):
        spec = load_spec(ROOT / "examples" / name)
        assert spec.points() and study_points(spec) > len(spec.points())


@pytest.mark.parametrize(
    "change, match",
    [
        ({"axes": {"faults.rat": [0, 0.1]}}, "unknown key 'rat'"),
        ({"axes": {"faults.rate": [0, 2]}}, "rate"),
        ({"tasks": ["sst3"]}, "unknown GLUE task"),
        ({"preset": "nope"}, "unknown preset"),
        ({"trails": 2}, "unknown key"),
        ({"axes": {}}, "axes"),
        ({"methods": {"x": "faults.rate=0"}}, "list"),
    ],
)
def test_bad_specs(files, change, match):
    with pytest.raises(ValueError, match=match):
        StudySpec.from_dict(spec_dict(files, **change))


def test_study_runs_resumes_and_plots(files, tmp_path):
    spec = StudySpec.from_dict(spec_dict(files))
    n = study_points(spec)
    assert n == 2 * (1 + 4 * 2)
    r1 = run_study(spec, tmp_path, progress=False, stop_after_rows=5, plot=False)
    assert r1["written"] == 5 and not r1["complete"]
    r2 = run_study(spec, tmp_path, progress=False)
    assert r2["written"] == n - 5 and r2["complete"]
    rows = read_results(tmp_path / "results.csv")
    assert len(rows) == n
    keys = {(r["config_hash"], r["trial"]) for r in rows}
    assert len(keys) == n  # no duplicates after the resume
    pngs = sorted(p.name for p in r2["plots"] if p.suffix == ".png")
    # one figure per axis and value of the other axis
    assert pngs == sorted([
        "sst2__faults.rate__crossbar.weight_format=dynamic.png", "sst2__faults.rate__crossbar.weight_format=static.png",
        "sst2__crossbar.weight_format__faults.rate=0.png", "sst2__crossbar.weight_format__faults.rate=0.05.png",
    ])
    assert all(p.stat().st_size > 1000 for p in r2["plots"])
    assert {p.suffix for p in r2["plots"]} == {".png", ".pdf"}
    assert json.loads((tmp_path / "study.json").read_text())["name"] == "tiny"
    assert run_study(spec, tmp_path, progress=False, plot=False)["written"] == 0


def test_cli_study(files, tmp_path, capsys):
    from cli.main import main

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(spec_dict(files, axes={"faults.rate": [0.05]}, methods={"baseline": []}, trials=1)))
    out = tmp_path / "out"
    assert main(["study", "--spec", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "plot:" in capsys.readouterr().out
    assert len(read_results(out / "results.csv")) == 2
    assert main(["study", "--spec", str(spec), "--out", str(out), "--plot-only"]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    capsys.readouterr()
    assert main(["study", "--spec", str(bad), "--out", str(out)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_fault_tolerance_interpolates_the_one_point_crossing(tmp_path):
    import csv
    import json

    from nn.evaluate import CSV_COLUMNS
    from nn.study import fault_tolerance, format_tolerance

    p = tmp_path / "r.csv"
    # method a: 0.90 fault-free, 0.895 at 1e-4, 0.86 at 1e-3 -> crosses 0.89 at 10**(-4 + 0.5/3.5)
    # method b (reference): below already at the first rate; method c never falls
    data = {"a": {0.0: 0.90, 1e-4: 0.895, 1e-3: 0.86}, "unprotected": {0.0: 0.9, 1e-4: 0.80, 1e-3: 0.5},
            "c": {0.0: 0.9, 1e-4: 0.9, 1e-3: 0.899}}
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for m, pts in data.items():
            for rate, s in pts.items():
                for trial, d in enumerate((-0.001, 0.001)):
                    w.writerow({"task": "sst2", "method": m, "mode": "simulated", "trial": trial, "seed": 0,
                                "n_examples": 10, "max_length": 64, "score": s + d,
                                "sim_config": json.dumps({"faults": {"rate": rate}})})
    rows = {r["method"]: r for r in fault_tolerance(p)}
    assert rows["a"]["fault_free"] == pytest.approx(0.90)
    assert rows["a"]["tolerated_rate"] == pytest.approx(10 ** (-4 + 0.5 / 3.5), rel=1e-9)
    assert rows["unprotected"]["tolerated_rate"] == 0.0 and rows["a"]["ratio"] is None
    assert rows["c"]["tolerated_rate"] is None and rows["c"]["censored"] == 1e-3
    table = format_tolerance(list(rows.values()))
    assert "< 0.0001" in table and "> 0.001 (not reached)" in table
    # the reference crosses below the sweep: a's ratio is a lower bound, rate / smallest rate
    assert rows["a"]["ratio_lower_bound"] == pytest.approx(10 ** (0.5 / 3.5), rel=1e-9)
    assert f"> {10 ** (0.5 / 3.5):.3g}" in table
    # a labelled CSV keeps the same method apart
    labelled = {r["method"] for r in fault_tolerance([p, (p, "retrained")])}
    assert {"a", "a (retrained)", "unprotected", "unprotected (retrained)"} <= labelled


# --- honest summaries (issue 20, "silent wrong numbers" 2) ----------------------------------------


def _tolerance_fault_free(out: Path) -> float:
    line = [ln for ln in (out / "tolerance.md").read_text().splitlines() if ln.startswith("| sst2 |")][0]
    return float(line.split("|")[3])


def test_summaries_use_only_the_rows_of_todays_content(files, tmp_path, capsys):
    """Re-fine-tuning into the same model directory gives new rows; tolerance.md, the printed
    lines and the plots use those only, never averaged with the old model's rows."""
    from cli.main import main

    model = write_tiny_classifier(tmp_path / "model", seed=0)
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(spec_dict(files, model=str(model), axes={"faults.rate": [0, 0.05]},
                                         methods={"baseline": []}, trials=1)))
    out = tmp_path / "out"
    argv = ["study", "--spec", str(spec), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    first = {r["config_hash"] for r in read_results(out / "results.csv")}
    write_tiny_classifier(model, seed=1)  # the weights change in place
    assert main(argv) == 0
    rows = read_results(out / "results.csv")
    new = [r for r in rows if r["config_hash"] not in first]
    assert len(rows) == 6 and len(new) == 3  # the old rows stay in the file
    fault_free = [r["score"] for r in new if r["mode"] == "simulated" and json.loads(r["sim_config"])["faults"]["rate"] == 0]
    old = [r["score"] for r in rows if r["config_hash"] in first and r["mode"] == "simulated"
           and json.loads(r["sim_config"])["faults"]["rate"] == 0]
    assert fault_free != old  # the two models score differently (else the test could not fail)
    assert _tolerance_fault_free(out) == pytest.approx(fault_free[0], abs=5e-5)
    from nn.study import load_spec, study_rows

    assert {r["config_hash"] for r in study_rows(load_spec(spec), out / "results.csv")} == {r["config_hash"] for r in new}


def test_another_spec_into_a_study_directory_is_refused(files, tmp_path, capsys):
    from cli.main import main

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(spec_dict(files, axes={"faults.rate": [0.05]}, methods={"baseline": []}, trials=1)))
    out = tmp_path / "out"
    assert main(["study", "--spec", str(spec), "--out", str(out), "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = tmp_path / "t.json"
    other.write_text(json.dumps(spec_dict(files, axes={"faults.rate": [0.05]}, methods={"baseline": []}, trials=2)))
    capsys.readouterr()
    for extra in ([], ["--plot-only"]):
        assert main(["study", "--spec", str(other), "--out", str(out), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "holds another study" in err and "trials" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_study_that_fails_before_its_first_row_leaves_nothing(files, tmp_path, monkeypatch):
    from device.errors import UserError
    from nn.evaluate import EvalSession

    def boom(self):
        raise UserError("the digital pass failed")

    monkeypatch.setattr(EvalSession, "digital_metrics", boom)
    spec = StudySpec.from_dict(spec_dict(files, axes={"faults.rate": [0.05]}, methods={"baseline": []}, trials=1))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="digital pass failed"):
        run_study(spec, out, progress=False)
    assert not out.exists()
    out.mkdir()  # an existing, empty directory stays, and stays empty
    with pytest.raises(UserError, match="digital pass failed"):
        run_study(spec, out, progress=False)
    assert list(out.iterdir()) == []
