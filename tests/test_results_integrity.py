"""Results files you can trust (issue 14's four defects), on the tiny random BERT:

1. rows are keyed by the content of the model weights, the evaluated data, every table and the
   software version, so changed inputs are evaluated again instead of reporting old numbers;
2. ``--out`` never modifies a file that is not recognisably a results file of this toolkit;
3. concurrent writers (two processes) never write a key twice;
4. output paths: nothing is created above ``--out``, and the output and every table are checked
   before the digital pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from device.io import OutputPathError  # noqa: E402
from device.tables import TableError  # noqa: E402
from nn.evaluate import CSV_COLUMNS, LEGACY_CSV_COLUMNS, ResultsFile, evaluate_glue, read_results  # noqa: E402
from nn.sim import build_sim_config, level_table_path  # noqa: E402
from _tiny_bert import write_glue, write_tiny_classifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic", "faults.rate=0.05"]
KW = dict(batch_size=8, progress=False, max_length=32, verbose=False)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture()
def files(tmp_path):
    return {"model": write_tiny_classifier(tmp_path / "model"), "glue": write_glue(tmp_path / "glue")}


def cfg(*extra):
    return build_sim_config("default", SMALL + list(extra))


def digital_score(rows):
    return [r["accuracy"] for r in rows if r["mode"] == "digital"]


# ---------------------------------------------------------------------------------------------
# 1. keys by content


def test_retrained_weights_in_the_same_directory_are_evaluated_again(files, tmp_path):
    out = tmp_path / "r.csv"
    evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 1, 0, out, **KW)
    write_tiny_classifier(files["model"], seed=7)  # "re-fine-tuned" into the same directory
    s = evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 1, 0, out, **KW)
    assert s["written"] == 2  # not the old rows
    fresh = tmp_path / "fresh.csv"
    evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 1, 0, fresh, **KW)
    assert s["digital"]["accuracy"] == digital_score(read_results(fresh))[0]
    rows = read_results(out)
    assert len({r["model_sha256"] for r in rows}) == 2 and all(r["model_sha256"].startswith("sha256:") for r in rows)


def test_other_data_under_the_same_glue_dir_is_evaluated_again(files, tmp_path):
    out = tmp_path / "r.csv"
    evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 0, 0, out, **KW)
    dev = files["glue"] / "SST-2" / "dev.tsv"
    lines = dev.read_text().splitlines(keepends=True)
    dev.write_text("".join(lines[:-1]))  # other data: the last row dropped
    s = evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 0, 0, out, **KW)
    assert s["written"] == 1
    rows = read_results(out)
    assert [r["n_examples"] for r in rows] == [24, 23] and rows[0]["data_sha256"] != rows[1]["data_sha256"]


def test_a_level_table_replaced_in_place_gives_new_keys(files, tmp_path):
    from device.programming import LevelTable

    table = tmp_path / "levels.h5"
    shutil.copy(level_table_path(2), table)
    c = build_sim_config("default", ["crossbar.tile_rows=32", "crossbar.tile_cols=32", f"levels.table_path={table}"])
    out = tmp_path / "r.csv"
    assert evaluate_glue(files["model"], "sst2", files["glue"], c, 1, 0, out, **KW)["written"] == 2
    assert evaluate_glue(files["model"], "sst2", files["glue"], c, 1, 0, out, **KW)["written"] == 0
    LevelTable.synthetic(bits_per_cell=2, g_on_s=1e-4, g_off_s=1e-6, sigma_rel=0.2, n_samples=64,
                         rng=__import__("numpy").random.default_rng(0)).save(table)
    assert evaluate_glue(files["model"], "sst2", files["glue"], c, 1, 0, out, **KW)["written"] == 1  # the chip row
    sim = [r for r in read_results(out) if r["mode"] == "simulated"]
    assert len({json.loads(r["tables_sha256"])["levels.table_path"] for r in sim}) == 2
    # the path is not part of the key: the same table elsewhere matches its rows
    moved = tmp_path / "moved.h5"
    shutil.copy(table, moved)
    c2 = c.replace(levels=c.levels.replace(table_path=str(moved)))
    assert evaluate_glue(files["model"], "sst2", files["glue"], c2, 1, 0, out, **KW)["written"] == 0


def test_the_software_version_is_part_of_the_key(files, tmp_path, monkeypatch):
    import nn.evaluate as ev

    out = tmp_path / "r.csv"
    evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 1, 0, out, **KW)
    assert {r["software_version"] for r in read_results(out)} == {ev.software_version()}
    monkeypatch.setattr(ev, "software_version", lambda: "99.0")
    assert evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 1, 0, out, **KW)["written"] == 2


# ---------------------------------------------------------------------------------------------
# 2. never modify a file that is not ours


@pytest.mark.parametrize("text", ["just one line", "a,b\n1,2\n3,", ",".join(LEGACY_CSV_COLUMNS) + "\nsst2,dev"])
def test_a_foreign_or_older_file_is_refused_and_left_untouched(files, tmp_path, text, capsys):
    from cli.main import main

    p = tmp_path / "x.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match="results file"):
        ResultsFile(p)
    assert p.read_text() == text
    args = ["eval", "--model", str(files["model"]), "--task", "sst2", "--glue-dir", str(files["glue"]),
            "--out", str(p), "--no-progress", "--batch-size", "8", "--max-length", "32", "--trials", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert p.read_text() == text
    assert sorted(x.name for x in tmp_path.iterdir() if x.name.startswith(".")) == []  # no temp files


def test_a_partial_last_row_of_our_own_file_is_dropped(tmp_path):
    p = tmp_path / "r.csv"
    header = ",".join(CSV_COLUMNS) + "\n"
    p.write_text(header + "sst2,dev,base")
    ResultsFile(p)
    assert p.read_text() == header


# ---------------------------------------------------------------------------------------------
# 3. concurrent writers


def _row(h, trial):
    return {c: "" for c in CSV_COLUMNS} | {"config_hash": h, "trial": trial, "seed": 0, "n_examples": 1, "max_length": 8}


def test_a_writer_sees_rows_another_wrote_and_does_not_repeat_them(tmp_path):
    p = tmp_path / "r.csv"
    a, b = ResultsFile(p), ResultsFile(p)
    assert a.append(_row("h", 0)) and b.append(_row("h", 1))
    assert not b.append(_row("h", 0)) and not a.append(_row("h", 1))
    assert len(read_results(p)) == 2


_WORKER = """
import sys, time
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
import torch
torch.set_num_threads(1)
from nn.evaluate import evaluate_glue
from nn.sim import build_sim_config
go = Path({go!r})
while not go.exists():
    time.sleep(0.01)
cfg = build_sim_config("default", {small!r})
s = evaluate_glue({model!r}, "sst2", {glue!r}, cfg, 3, 0, {out!r}, batch_size=8, progress=False, max_length=32,
                  verbose=False)
print(s["written"])
"""


@pytest.mark.slow  # two fresh interpreters importing torch and transformers: 15-45 s on 2 shared cores
def test_two_identical_runs_at_once_write_each_row_once(files, tmp_path):
    out, go = tmp_path / "r.csv", tmp_path / "go"
    code = _WORKER.format(root=str(ROOT), tests=str(ROOT / "tests"), go=str(go), small=SMALL,
                          model=str(files["model"]), glue=str(files["glue"]), out=str(out))
    env = dict(os.environ, RERAM_COSIM_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    time.sleep(0.5)
    go.touch()  # both start together (each waits for this file after its imports)
    res = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in res]
    rows = read_results(out)
    keys = [(r["config_hash"], r["trial"], r["seed"]) for r in rows]
    assert len(rows) == 4 and len(set(keys)) == 4  # one digital + three chips, each once
    assert sum(int(r[0].split()[-1]) for r in res) == 4  # every row written by exactly one of them


# ---------------------------------------------------------------------------------------------
# 4. output paths and tables checked before any work


def test_eval_creates_no_directory_and_checks_tables_first(files, tmp_path, monkeypatch, capsys):
    from cli.main import main

    missing = tmp_path / "missing" / "deeper"
    with pytest.raises(OutputPathError, match="does not exist"):
        evaluate_glue(files["model"], "sst2", files["glue"], cfg(), 1, 0, missing / "r.csv", **KW)
    assert not (tmp_path / "missing").exists()
    # a missing table fails before the digital pass: no CSV with a digital row left behind
    import nn.evaluate as ev

    called = []
    monkeypatch.setattr(ev.EvalSession, "open", classmethod(lambda *a, **k: called.append(1)))
    out = tmp_path / "r.csv"
    bad = build_sim_config("default", ["levels.source=table", f"levels.table_path={tmp_path / 'none.h5'}"])
    with pytest.raises(TableError, match="does not exist"):
        evaluate_glue(files["model"], "sst2", files["glue"], bad, 1, 0, out, **KW)
    assert not out.exists() and not called
    monkeypatch.undo()
    for cmd in (["eval", "--model", str(files["model"]), "--task", "sst2", "--glue-dir", str(files["glue"]),
                 "--out", str(missing / "r.csv"), "--no-progress"],
                ["study", "--spec", str(ROOT / "examples" / "study_faults.json"), "--out", str(missing),
                 "--model", str(files["model"]), "--glue-dir", str(files["glue"]), "--no-progress"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1
        assert not (tmp_path / "missing").exists()


def test_every_table_the_chip_reads_is_in_the_key(tmp_path):
    from nn.evaluate import result_key
    from nn.provenance import table_digests

    common = dict(model_sha256="sha256:m", data_sha256="sha256:d", task="sst2", split="dev", max_examples=None,
                  max_length=32, method="baseline")
    base = build_sim_config("default", [])
    assert set(table_digests(base)) == {"levels.table_path"}
    relax = build_sim_config("default", ["crossbar.read_time_s=1000"])  # the shipped relaxation table
    assert set(table_digests(relax)) == {"levels.table_path", "relaxation.table_path"}
    # a copy of the shipped table at another path: same content, same key; other content: another key
    shipped = Path(__file__).resolve().parents[1] / "data" / "relaxation_techB.h5"
    copy = tmp_path / "relax.h5"
    shutil.copy(shipped, copy)
    moved = build_sim_config("default", ["crossbar.read_time_s=1000", f"relaxation.table_path={copy}"])
    assert result_key(**common, sim_cfg=moved) == result_key(**common, sim_cfg=relax)
    with open(copy, "ab") as f:
        f.write(b"\0")  # other bytes (the key does not read the table, it hashes it)
    assert result_key(**common, sim_cfg=moved) != result_key(**common, sim_cfg=relax)
