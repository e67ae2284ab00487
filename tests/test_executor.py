"""The study engine (nn.executor): the same spec and seeds give identical rows serially and on a
local Dask cluster of two workers started inside the test (and stopped), and a run cut short on
one executor is finished on another with nothing lost or repeated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from nn.evaluate import read_results  # noqa: E402
from nn.executor import ExecutorError, check_executor  # noqa: E402
from nn.study import StudySpec, run_study, study_points  # noqa: E402
from _tiny_bert import write_glue, write_tiny_classifier  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

#: what differs between two runs of the same row: when and how long
VOLATILE = ("wall_s", "created")


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("executor")
    model, glue = write_tiny_classifier(root / "model"), write_glue(root / "glue", n_dev=16)
    return StudySpec.from_dict({
        "name": "tiny", "model": str(model), "glue_dir": str(glue),
        "set": ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic",
                "levels.sigma_rel=0.1", "crossbar.read_noise_sigma_rel=0.02"],
        "axes": {"faults.rate": [0.02, 0.1]}, "tasks": ["sst2"],
        "methods": {"baseline": [], "sa1_only": ["faults.sa0_fraction=0"]},
        "trials": 2, "seed": 3, "max_length": 32, "batch_size": 8,
    })


def rows_by_key(path: Path) -> dict[tuple[str, int, int], dict]:
    out = {}
    for r in read_results(path):
        k = (r["config_hash"], r["trial"], r["seed"])
        assert k not in out, "a key written twice"
        out[k] = {c: v for c, v in r.items() if c not in VOLATILE}
    return out


def test_cuda_tasks_ask_for_a_gpu(spec):
    from nn.executor import Source, plan_rows, submit_options

    cfg = spec.points()[0][2]
    for device, want in (("cpu", None), ("cuda", {"GPU": 1}), ("cuda:1", {"GPU": 1})):
        src = Source("m", "sst2", "dev", None, None, 32, 8, device, 1, "sha256:0", "sha256:1")
        tasks = plan_rows(src, "baseline", cfg, 2, 0)
        assert [submit_options(t)["resources"] for t in tasks] == [want] * 3
        assert len({submit_options(t)["key"] for t in tasks}) == 3


def test_executor_arguments_are_checked():
    with pytest.raises(ExecutorError, match="executor"):
        check_executor("ray", None, None)
    with pytest.raises(ExecutorError, match="workers"):
        check_executor("dask", 0, None)
    with pytest.raises(ExecutorError, match="--executor dask"):
        check_executor("serial", 2, None)


@pytest.mark.slow  # a local cluster of two worker processes (started and stopped here): 20-45 s on 2 shared cores
def test_serial_and_two_dask_workers_give_identical_rows(spec, tmp_path):
    pytest.importorskip("distributed")
    n = study_points(spec)
    serial = run_study(spec, tmp_path / "serial", progress=False, plot=False)
    assert serial["written"] == n and serial["complete"]
    # a run cut short on the cluster, then finished serially: every row once, same numbers
    part = run_study(spec, tmp_path / "dask", progress=False, plot=False, executor="dask", workers=2,
                     stop_after_rows=n - 3)
    assert part["written"] == n - 3 and not part["complete"]
    rest = run_study(spec, tmp_path / "dask", progress=False, plot=False)
    assert rest["written"] == 3 and rest["complete"]
    a, b = rows_by_key(serial["csv"]), rows_by_key(part["csv"])
    assert len(a) == n and a == b
    # the chips differ from one another (the comparison is not of constants)
    sim = [r["accuracy"] for r in a.values() if r["mode"] == "simulated"]
    assert len(set(sim)) > 1
    assert json.loads((tmp_path / "dask" / "study.json").read_text())["trials"] == 2


def test_cli_refuses_workers_without_a_cluster_executor(spec, tmp_path, capsys):
    from cli.main import main

    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec.data))
    assert main(["study", "--spec", str(path), "--out", str(tmp_path / "o"), "--workers", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--executor dask" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
