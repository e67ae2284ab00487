"""`reram-cosim demo` end to end on a tiny BERT and a tiny SST-2 (the real one fine-tunes MiniLM):
every figure and table it promises is written, and the summary says where the time went."""

from __future__ import annotations

import json

import pytest

from _tiny_bert import write_glue, write_tiny_classifier


@pytest.mark.slow
def test_the_demo_writes_what_it_promises(tmp_path, monkeypatch, capsys):
    from cli.demo import run_demo
    from nn.finetune import FINETUNE_JSON

    monkeypatch.setenv("RERAM_COSIM_CACHE", str(tmp_path / "cache"))
    model = write_tiny_classifier(tmp_path / "cache" / "models" / "minilm-sst2")
    (model / FINETUNE_JSON).write_text(json.dumps({"config": {"max_length": 32}, "metrics": {"dev": {"accuracy": 0.9}}}))
    glue = write_glue(tmp_path / "glue", n_dev=24)
    res = run_demo(tmp_path / "out", glue, trials=1, progress=False)
    out = tmp_path / "out"
    for f in ("device/iv.png", "device/levels_b1.png", "device/levels_b2.png", "device/readout_error.png",
              "irdrop/irdrop_map.png", "irdrop/irdrop_error_vs_position.png", "results.csv", "summary.md",
              "accuracy_vs_faults.png"):
        assert (out / f).is_file(), f
    md = (out / "summary.md").read_text()
    assert "where the time went: device figures" in md and "chip rows (programming + one dev pass each)" in md
    assert res["results"] == out / "results.csv"
    assert "0.00e+00" not in capsys.readouterr().out
