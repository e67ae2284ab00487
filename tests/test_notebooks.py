"""The calibration notebooks (examples/notebooks/*.py, jupytext percent scripts) run end to end
in a Jupyter kernel through the runner of `make notebooks` (examples/run_notebooks.py), each in a
temporary working directory, so that they cannot rot. They read the shared measured data; they
skip only where ../shared/data/devices is absent. The accuracy notebook runs on a tiny BERT and a
tiny SST-2 written here (the cached MiniLM and the full dev set are for `make notebooks`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DEVICES = Path(__file__).parents[2] / "shared" / "data" / "devices"
_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "examples" / "run_notebooks.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)
NOTEBOOKS = runner.notebooks()


def test_every_notebook_is_found_by_the_runner():
    assert {p.stem for p in NOTEBOOKS} >= {"calibrate_levels", "calibrate_pulses", "calibrate_relaxation", "accuracy_vs_time"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    pytest.importorskip("jupytext")
    pytest.importorskip("nbclient")
    if not DEVICES.is_dir():
        pytest.skip("shared measured data absent")
    if path.stem == "accuracy_vs_time":
        from _tiny_bert import write_glue, write_tiny_classifier

        monkeypatch.setenv("RERAM_COSIM_NOTEBOOK_MODEL", str(write_tiny_classifier(tmp_path / "tiny_model")))
        monkeypatch.setenv("RERAM_COSIM_GLUE_DIR", str(write_glue(tmp_path / "glue", n_dev=40)))
    monkeypatch.setenv("RERAM_COSIM_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = tmp_path / "executed" / f"{path.stem}.ipynb"
    out.parent.mkdir()
    nb = runner.run_notebook(path, tmp_path, out=out)
    # each ends in its figure and its fitted table, and the executed notebook is written
    assert list(tmp_path.glob("*.png"))
    if path.stem.startswith("calibrate_"):
        assert list(tmp_path.glob("*.h5")) or list(tmp_path.glob("*.json"))
    last = nb.cells[-1]
    assert any(o.get("output_type") == "display_data" for o in last.get("outputs", []))
    import nbformat

    assert len(nbformat.read(str(out), as_version=4).cells) == len(nb.cells)
