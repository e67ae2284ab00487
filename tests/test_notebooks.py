"""The calibration notebooks (examples/notebooks/*.py, jupytext percent scripts) run end to end
in a Jupyter kernel (nbclient), each in a temporary working directory, so that they cannot rot.
They read the shared measured data; they skip only where ../shared/data/devices is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.py"))
DEVICES = Path(__file__).parents[2] / "shared" / "data" / "devices"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    if not DEVICES.is_dir():
        pytest.skip("shared measured data absent")
    if path.stem == "accuracy_vs_time":
        from nn.models import finetuned_model_dir

        glue = Path(__file__).parents[2] / "shared" / "data" / "glue"
        if not (Path(finetuned_model_dir("minilm-sst2")) / "config.json").is_file() or not glue.is_dir():
            # no cached MiniLM (it is made by `make demo`) or no GLUE: the same notebook on a tiny
            # BERT and a tiny SST-2 written here, so it runs in every checkout
            from _tiny_bert import write_glue, write_tiny_classifier

            monkeypatch.setenv("RERAM_COSIM_NOTEBOOK_MODEL", str(write_tiny_classifier(tmp_path / "tiny_model")))
            monkeypatch.setenv("RERAM_COSIM_GLUE_DIR", str(write_glue(tmp_path / "glue", n_dev=40)))
    nb = jupytext.read(path)
    monkeypatch.setenv("RERAM_COSIM_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    # each ends in its figure and its fitted table
    assert list(tmp_path.glob("*.png"))
    if path.stem.startswith("calibrate_"):
        assert list(tmp_path.glob("*.h5")) or list(tmp_path.glob("*.json"))
    last = nb.cells[-1]
    assert any(o.get("output_type") == "display_data" for o in last.get("outputs", []))
