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

        if not (Path(finetuned_model_dir("minilm-sst2")) / "config.json").is_file():
            pytest.skip("the fine-tuned MiniLM SST-2 model is not cached (make demo caches it)")
        if not (Path(__file__).parents[2] / "shared" / "data" / "glue").is_dir():
            pytest.skip("GLUE data absent")
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
