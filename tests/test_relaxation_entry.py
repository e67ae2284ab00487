"""Every entry point that builds a chip honours the sim config's relaxation (crossbar mvm, eval,
study, Python), and a level table outside the relaxation model's fitted range is refused before
any work everywhere, unless ``relaxation.out_of_range=clamp`` says otherwise (then the count of
clamped cells is reported)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cli.main import main  # noqa: E402
from device.relaxation import RelaxationRangeError  # noqa: E402
from nn.sim import build_sim_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TECHB = ROOT / "data" / "relaxation_techB.h5"
pytestmark = pytest.mark.skipif(not TECHB.is_file(), reason="the shipped tech-B relaxation table is missing")
OUTSIDE = ["levels.source=synthetic", "levels.on_off_ratio=100"]  # 1..100 uS: below tech B's 1.41 uS


def _mvm(*sets, json_out=True):
    args = ["crossbar", "mvm", "--rows", "64", "--cols", "32", "--batch", "16", "--bits-per-cell", "1"]
    for s in sets:
        args += ["--set", s]
    return main(args + (["--json"] if json_out else []))


def test_crossbar_mvm_reads_the_chip_at_its_read_time(capsys):
    import json

    assert _mvm(f"relaxation.table_path={TECHB}", "crossbar.read_time_s=10000") == 0
    rows = json.loads(capsys.readouterr().out)["steps"]
    names = [r["effects"] for r in rows]
    i = [k for k, n in enumerate(names) if n.startswith("+ relaxation (10000 s")][0]
    # tech B spreads the 10 uS cells by 7 uS in 10^4 s: the error grows several-fold
    assert rows[i]["rel_error"] > 3 * rows[i - 1]["rel_error"]
    assert _mvm("crossbar.read_time_s=100", "crossbar.retention.compensation=global",
                "crossbar.retention.reprogram_rounds=1", "crossbar.retention.reprogram_wait_s=0.1") == 0
    names = [r["effects"] for r in json.loads(capsys.readouterr().out)["steps"]]
    assert any(n.startswith("+ relaxation-aware programming") for n in names)
    assert any(n.startswith("+ drift compensation (global") for n in names)


def test_a_table_outside_the_fitted_range_is_refused_or_clamped_and_counted(capsys):
    assert _mvm(*OUTSIDE, "crossbar.read_time_s=100") == 2
    err = capsys.readouterr().err
    assert "outside the range the relaxation model was fitted on" in err and "Traceback" not in err
    assert _mvm(*OUTSIDE, "crossbar.read_time_s=100", "relaxation.out_of_range=clamp", json_out=False) == 0
    assert "cells outside the relaxation model's fitted range" in capsys.readouterr().out
    # a read time the model never measured: refused before any work
    assert _mvm("crossbar.read_time_s=1e5") == 2
    assert "outside the measured range" in capsys.readouterr().err


def test_python_and_study_entry_points_refuse_before_any_work(tmp_path):
    from crossbar.engine import program_matrix
    from nn.provenance import check_tables
    from nn.sim import build_levels, effective_crossbar, load_relaxation

    sim = build_sim_config("default", OUTSIDE + ["crossbar.read_time_s=100", "crossbar.bits_per_cell=1"])
    with pytest.raises(RelaxationRangeError, match="fitted on"):
        check_tables(sim)  # what eval and study run before the digital pass
    lv = build_levels(sim)
    w = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(RelaxationRangeError, match="fitted on"):
        program_matrix(w, effective_crossbar(sim, lv), lv, None, np.random.default_rng(0), relaxation=load_relaxation(sim))
    ok = build_sim_config("default", OUTSIDE + ["crossbar.read_time_s=100", "crossbar.bits_per_cell=1",
                                                "relaxation.out_of_range=clamp"])
    pm = program_matrix(w, effective_crossbar(ok, lv), lv, None, np.random.default_rng(0), relaxation=load_relaxation(ok))
    assert pm.retention["clamped"] > 0


def test_eval_refuses_before_the_digital_row(tmp_path):
    pytest.importorskip("transformers")
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_bert import write_glue, write_tiny_classifier
    from nn.evaluate import evaluate_glue

    model = write_tiny_classifier(tmp_path / "m")
    glue = write_glue(tmp_path / "glue")
    sim = build_sim_config("default", OUTSIDE + ["crossbar.read_time_s=100", "crossbar.tile_rows=32", "crossbar.tile_cols=32"])
    out = tmp_path / "r.csv"
    with pytest.raises(RelaxationRangeError):
        evaluate_glue(model, "sst2", glue, sim, 1, 0, out, batch_size=8, progress=False, max_length=32, verbose=False)
    assert not out.exists()
