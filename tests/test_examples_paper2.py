"""The seed paper 2 example scripts (examples/paper2_cnn_digits.py, examples/paper2_lstm_sst2.py)
run end to end on tiny data: train the four models, evaluate them on a chip, print the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--tiny", "--quiet", *args],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _check_table(text: str) -> None:
    assert "| sigma | bits/cell | on/off | normal/static_fp | normal/dfp | dva/static_fp | dva/dfp | hwdva/static_fp | hwdva/dfp | hwdva_ft/static_fp | hwdva_ft/dfp |" in text
    assert "| 0.1 | 2 | 2 |" in text and "| mean |" in text
    assert "* dva/dfp vs normal/static_fp: mean relative accuracy gain" in text


def test_cnn_digits_example(tmp_path):
    text = _run("paper2_cnn_digits.py", "--out", str(tmp_path / "cnn"))
    _check_table(text)
    assert (tmp_path / "cnn" / "hwdva" / "results.csv").is_file()
    assert (tmp_path / "cnn" / "models" / "digits-cnn-dva-tiny" / "smallnet.json").is_file()


def test_lstm_sst2_example(tmp_path):
    from test_smallnets import synthetic_sst2

    glue = synthetic_sst2(tmp_path / "glue")
    text = _run("paper2_lstm_sst2.py", "--out", str(tmp_path / "lstm"), "--glue-dir", str(glue))
    _check_table(text)
    # a rerun reuses the models and the rows
    again = _run("paper2_lstm_sst2.py", "--out", str(tmp_path / "lstm"), "--glue-dir", str(glue))
    assert "cached" in again and again.split("digital accuracy")[1] == text.split("digital accuracy")[1]
