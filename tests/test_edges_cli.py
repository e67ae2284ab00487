"""Bad input at the command line (issue "The edges"): each case gives exactly one ``error:`` line on
stderr, exit status 2, no traceback, and leaves no file behind. A bug (any exception that is not a
:class:`device.errors.UserError`) is not dressed up as a user error; ``--debug`` shows the
traceback of user errors too."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli.main import main

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from _tiny_bert import write_glue, write_tiny_classifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "crossbar.tile_rows=32", "--set", "crossbar.tile_cols=32", "--set", "levels.source=synthetic"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    return {"model": write_tiny_classifier(root / "model"), "glue": write_glue(root / "glue")}


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def user_error(capsys, argv, where: Path, *needles: str) -> str:
    """Run ``reram-cosim argv``: exit 2, one ``error:`` line naming ``needles``, no traceback,
    no new file under ``where``."""
    before = _listing(where)
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    assert _listing(where) == before, "a file was left behind"
    return err


def eval_args(model, glue, out, *extra):
    return ["eval", "--model", model, "--task", "sst2", "--glue-dir", glue, "--out", out, "--no-progress",
            "--batch-size", "8", "--trials", "0", *SMALL, *extra]


# --- models ------------------------------------------------------------------------------------


def test_max_length_above_position_embeddings(files, tmp_path, capsys):
    # the tiny BERT has 64 position embeddings: a row of 80 words at --max-length 100 used to fail
    # inside the forward pass ("The size of tensor a (..) must match ..")
    long_row = " ".join(["the film was good"] * 20)
    glue = _glue_with_dev(tmp_path, f"sentence\tlabel\ngood film \t1\n{long_row} \t1\n")
    user_error(capsys, eval_args(files["model"], glue, tmp_path / "r.csv", "--max-length", "100"), tmp_path,
               "max_length=100 is too long", "position embeddings hold 64", "1 example(s)", "--max-length 64")
    # a limit above the positions that no row reaches is harmless: the short rows evaluate
    out = tmp_path / "ok.csv"
    assert main([str(a) for a in eval_args(files["model"], files["glue"], out, "--max-length", "100")]) == 0
    assert out.is_file()


def test_truncated_safetensors(files, tmp_path, capsys):
    bad = tmp_path / "model"
    shutil.copytree(files["model"], bad)
    st = bad / "model.safetensors"
    st.write_bytes(st.read_bytes()[:5])
    user_error(capsys, eval_args(bad, files["glue"], tmp_path / "r.csv"), tmp_path, "truncated or corrupt")


class _Payload:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


def test_pickled_checkpoint_refused_plainly(files, tmp_path, capsys):
    bad = tmp_path / "model"
    shutil.copytree(files["model"], bad)
    (bad / "model.safetensors").unlink()
    with open(bad / "pytorch_model.bin", "wb") as f:
        pickle.dump({"payload": _Payload()}, f)
    err = user_error(capsys, eval_args(bad, files["glue"], tmp_path / "r.csv"), tmp_path,
                     "pickled checkpoints are refused")
    assert "weights_only" not in err
    assert "this ran while unpickling" not in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(files, tmp_path, capsys):
    user_error(capsys, eval_args(files["model"], files["glue"], tmp_path / "r.csv", "--device", "cuda"), tmp_path,
               "CUDA is not available")


def test_unknown_device(files, tmp_path, capsys):
    user_error(capsys, eval_args(files["model"], files["glue"], tmp_path / "r.csv", "--device", "tpu9"), tmp_path,
               "--device")


@pytest.mark.parametrize("flags,needle", [(["--max-examples", "0"], "max_examples=0 is invalid"),
                                          (["--batch-size", "0"], "--batch-size 0 is invalid"),
                                          (["--trials", "-1"], "--trials -1 is invalid")])
def test_bad_eval_numbers(files, tmp_path, capsys, flags, needle):
    user_error(capsys, eval_args(files["model"], files["glue"], tmp_path / "r.csv", *flags), tmp_path, needle)


@pytest.mark.parametrize("path", ["/nonexistent/model", "./no/such/model", "~/no-such-model-dir"])
def test_missing_local_model_is_reported_as_missing(files, tmp_path, capsys, path):
    err = user_error(capsys, eval_args(path, files["glue"], tmp_path / "r.csv"), tmp_path, "does not exist")
    assert "Repo id" not in err and "repo id" not in err


# --- GLUE files --------------------------------------------------------------------------------


def _glue_with_dev(tmp_path: Path, dev_text: str, name: str = "glue") -> Path:
    d = tmp_path / name / "SST-2"
    d.mkdir(parents=True)
    (d / "train.tsv").write_text("sentence\tlabel\ngood film \t1\n")
    (d / "dev.tsv").write_text(dev_text, encoding="utf-8")
    return tmp_path / name


def test_dev_file_with_malformed_rows_is_refused_with_line_numbers(files, tmp_path, capsys):
    rows = ["sentence\tlabel", "good film \t1", "bad film \t0", "a fine story \t1", "dull plot \t7",
            "the actors were superb", "boring \t0"]
    glue = _glue_with_dev(tmp_path, "\n".join(rows) + "\n")
    user_error(capsys, eval_args(files["model"], glue, tmp_path / "r.csv"), tmp_path,
               "2 malformed row(s) at line(s) 5, 6", "label '7'", "has 1 fields", "must be complete")


@pytest.mark.parametrize("score,why", [("nan", "not a finite number"), ("inf", "not a finite number"),
                                       ("-7", "outside [0, 5]"), ("5.5", "outside [0, 5]")])
def test_stsb_gold_scores_outside_0_5_are_refused(files, tmp_path, capsys, score, why):
    # issue 20: nan / inf / -7 were accepted and gave rows with a NaN pearson, exit 0
    d = tmp_path / "glue" / "STS-B"
    d.mkdir(parents=True)
    rows = "sentence1\tsentence2\tscore\na good film\ta fine film\t4.2\nthe plot\tthe story\t{}\n"
    for name in ("train.tsv", "dev.tsv"):
        (d / name).write_text(rows.format(score if name == "dev.tsv" else "3.0"))
    argv = eval_args(files["model"], tmp_path / "glue", tmp_path / "r.csv")
    argv[argv.index("sst2")] = "stsb"
    user_error(capsys, argv, tmp_path, str(d / "dev.tsv"), "line 3", f"has score '{score}'", why)


def test_glue_field_longer_than_the_csv_limit(files, tmp_path, capsys):
    glue = _glue_with_dev(tmp_path, "sentence\tlabel\ngood film \t1\n" + "a" * 140_000 + " \t1\n")
    user_error(capsys, eval_args(files["model"], glue, tmp_path / "r.csv"), tmp_path, "dev.tsv line 3",
               "field larger than field limit")


def test_utf8_bom_in_any_task_file(files, tmp_path, capsys):
    text = (files["glue"] / "SST-2" / "dev.tsv").read_text()
    glue = _glue_with_dev(tmp_path, "\ufeff" + text)
    out = tmp_path / "r.csv"
    capsys.readouterr()
    assert main([str(a) for a in eval_args(files["model"], glue, out)]) == 0
    assert "\\ufeff" not in capsys.readouterr().err and out.is_file()


# --- device and tables -------------------------------------------------------------------------


def test_fault_map_larger_than_memory(tmp_path, capsys):
    user_error(capsys, ["device", "faults", "--rows", "100000", "--cols", "100000", "--rate", "0.5",
                        "--out", tmp_path / "f.h5"], tmp_path, "GiB of memory", "are available")


def test_cluster_size_inf(tmp_path, capsys):
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")  # no numpy RuntimeWarning on the way
        user_error(capsys, ["device", "faults", "--rows", "8", "--cols", "8", "--rate", "0.1", "--pattern", "clustered",
                            "--cluster-size", "inf", "--out", tmp_path / "f.h5"], tmp_path, "cluster_size=inf is invalid")


def test_program_set_errors_name_the_flag(tmp_path, capsys):
    err = user_error(capsys, ["device", "program", "--bits-per-cell", "1", "--devices", "4", "--program-set", "nope=1",
                              "--out", tmp_path / "l.h5"], tmp_path, "--program-set nope", "unknown key 'nope'")
    assert "--set nope" not in err


def _levels_table(path: Path, g_s: np.ndarray, g_units: str = "S", attrs: dict | None = None,
                  **extra: np.ndarray) -> Path:
    from device import tables

    arrays = {
        "level": tables.Array(np.arange(2), "index"),
        "g_target_s": tables.Array(np.array([1e-6, 1e-4]), "S", ("level",)),
        "g_s": tables.Array(g_s, g_units, ("level", "device")),
        "r_ohm": tables.Array(1 / np.maximum(np.abs(g_s), 1e-300), "ohm", ("level", "device")),
        "pulses": tables.Array(np.ones(g_s.shape, np.int32), "1", ("level", "device")),
    }
    arrays.update({k: tables.Array(v, "S" if k.endswith("_s") else "1", ("level",)) for k, v in extra.items()})
    return tables.write_table(path, kind="levels", arrays=arrays,
                              attrs={"bits_per_cell": 1, "g_sa0_s": 1e-6, "g_sa1_s": 1e-4, **(attrs or {})})


def test_tables_validate_checks_finiteness_and_units(tmp_path, capsys):
    g = np.array([[1e-6, 1.1e-6, 0.9e-6], [1e-4, 1.01e-4, 0.99e-4]])
    ok = _levels_table(tmp_path / "ok.h5", g)
    assert main(["tables", "validate", str(ok)]) == 0
    g_nan = g.copy()
    g_nan[1, 2] = np.nan
    nan = _levels_table(tmp_path / "nan.h5", g_nan)
    user_error(capsys, ["tables", "validate", nan], tmp_path, "g_s holds 1 NaN or infinite value")
    uS = _levels_table(tmp_path / "us.h5", g * 1e6, g_units="uS")
    user_error(capsys, ["tables", "validate", uS], tmp_path, "g_s has units 'uS'", "declares 'S'")


GOOD_G = np.array([[1e-6, 1.1e-6, 0.9e-6], [1e-4, 1.01e-4, 0.99e-4]])


@pytest.mark.parametrize("make,needle", [
    (lambda p: _levels_table(p, -GOOD_G), "must lie within [1e-12, 1] S"),  # negative conductances
    (lambda p: _levels_table(p, GOOD_G * np.array([[0], [1]])), "g_s holds 0 S"),
    (lambda p: _levels_table(p, GOOD_G * 1e-294), "g_s holds 1e-300 S"),
    (lambda p: _levels_table(p, GOOD_G * 1e304), "g_s holds 1e+298 S"),
    (lambda p: _levels_table(p, GOOD_G, g_mean_s=np.array([np.nan, 1e-4])), "statistic g_mean_s holds NaN"),
    (lambda p: _levels_table(p, GOOD_G, attrs={"g_sa1_s": np.nan}), "attribute g_sa1_s=nan"),
    (lambda p: _levels_table(p, GOOD_G, attrs={"g_sa0_s": 1e300}), "attribute g_sa0_s=1e+300"),
    (lambda p: _levels_table(p, GOOD_G, attrs={"read_noise_rel": -0.1}), "read_noise_rel=-0.1"),
])
def test_every_loader_refuses_a_bad_level_table(files, tmp_path, capsys, make, needle):
    # issue 20: tables validate passed these; eval then showed a traceback, crossbar mvm printed nan%
    bad = make(tmp_path / "bad.h5")
    user_error(capsys, ["tables", "validate", bad], tmp_path, needle)
    setting = ["--set", f"levels.table_path={bad}", "--set", "crossbar.bits_per_cell=1"]
    user_error(capsys, ["crossbar", "mvm", "--rows", "32", "--cols", "32", *setting], tmp_path, needle)
    user_error(capsys, ["eval", "--model", files["model"], "--task", "sst2", "--glue-dir", files["glue"], "--out",
                        tmp_path / "r.csv", "--no-progress", "--trials", "1", "--set", "crossbar.tile_rows=32",
                        "--set", "crossbar.tile_cols=32", *setting], tmp_path, needle)


def test_a_huge_dataset_is_refused_by_its_shape_before_it_is_read(tmp_path, capsys):
    # a 5e7-sample level dataset compresses to a few kB: it cost 1.8 GB before it was refused
    import h5py

    p = _levels_table(tmp_path / "huge.h5", GOOD_G)
    with h5py.File(p, "a") as f:
        del f["g_s"]
        ds = f.create_dataset("g_s", shape=(2, 50_000_000), dtype="f8", chunks=(1, 1 << 20), compression="gzip",
                              fillvalue=1e-6)
        ds.attrs["units"] = "S"
        ds.dims[0].attach_scale(f["level"])
    assert p.stat().st_size < 1 << 20
    user_error(capsys, ["tables", "validate", p], tmp_path, "g_s holds 100000000 samples", "more than a level table")


def test_tables_validate_unknown_kind(tmp_path, capsys):
    g = np.array([[1e-6, 1.1e-6, 0.9e-6], [1e-4, 1.01e-4, 0.99e-4]])
    ok = _levels_table(tmp_path / "ok.h5", g)
    user_error(capsys, ["tables", "validate", ok, "--kind", "nosuch"], tmp_path, "unknown table kind 'nosuch'")


# --- the entry point's contract ----------------------------------------------------------------


def test_a_bug_is_not_a_user_error(monkeypatch, tmp_path, capsys):
    import cli.device as dcli

    def boom(args):
        raise ValueError("numpy said something")  # a plain ValueError is a bug, not bad input

    monkeypatch.setattr(dcli, "_cmd_faults", boom)
    with pytest.raises(ValueError, match="numpy said"):
        main(["device", "faults", "--rows", "4", "--cols", "4", "--rate", "0", "--out", str(tmp_path / "f.h5")])


def test_debug_shows_the_traceback_of_user_errors(tmp_path):
    argv = [sys.executable, "-m", "cli", "--debug", "device", "faults", "--rows", "4", "--cols", "4", "--rate", "2",
            "--out", str(tmp_path / "f.h5")]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "Traceback" in r.stderr and "ConfigError" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("error: rate=2.0 is invalid")
    r = subprocess.run(argv[:3] + argv[4:], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []


# --- configuration reachable from the command line -----------------------------------------------


def test_preset_names_in_help_come_from_the_registry(monkeypatch, capsys):
    import nn.sim

    monkeypatch.setitem(nn.sim.PRESETS, "zz_test_chip", nn.sim.PRESETS["ideal"])
    for argv in (["eval", "--help"], ["crossbar", "mvm", "--help"], ["finetune", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "zz_test_chip" in capsys.readouterr().out.replace("\n", " ").replace("  ", " "), argv
    capsys.readouterr()
    assert main(["crossbar", "mvm", "--preset", "zz_test_chip", "--show-config"]) == 0


def test_every_finetune_field_is_reachable_with_set(capsys, tmp_path, monkeypatch):
    import dataclasses
    import json

    from nn.finetune import FinetuneConfig

    values = {"task": "mrpc", "epochs": 2, "max_steps": 7, "batch_size": 4, "lr": 1e-4, "warmup_ratio": 0.06,
              "weight_decay": 0.0, "max_grad_norm": 0.5, "max_length": 64, "max_train_examples": 100, "eval_every": 3,
              "checkpoint_every": 0, "group_by_length": False, "seed": 5, "dva_sigma": 0.0,
              "dva_distribution": "lognormal", "dva_target": ["query"], "prune_rows_cols": 0.3, "prune_phase": 0.5,
              "prune_scope": "global", "dva_mode": "weight", "dva_quantize": True, "dva_noise_scale": 2.0,
              "qat_msb_copies": 1}
    monkeypatch.chdir(tmp_path)  # --out unused: nothing may appear here
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    # every field but sim (the chip: --preset / --set crossbar.* ...) is set; a field added later
    # goes through --set with its default value
    for f in dataclasses.fields(FinetuneConfig):
        if f.name not in values and f.name != "sim":
            values[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
    assert set(values) == fields - {"sim"}
    argv = ["finetune", "--task", "sst2", "--out", "unused", "--show-config"]
    for k, v in values.items():
        argv += ["--set", f"train.{k}={json.dumps(v)}"]
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    for k, v in values.items():
        assert shown[k] == v, k
    assert shown["sim"] is not None  # dva_quantize / qat_msb_copies need the chip: --preset default
    assert not Path("unused").exists()
    user_error(capsys, ["finetune", "--task", "sst2", "--out", "unused", "--set", "train.warmup=0.1", "--show-config"],
               tmp_path, "--set train.warmup", "unknown key 'warmup'")
    user_error(capsys, ["finetune", "--task", "sst2", "--out", "unused", "--set", "train.warmup_ratio=2", "--show-config"],
               tmp_path, "warmup_ratio=2")


def test_finetune_set_keeps_the_auto_defaults(capsys, tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    assert main(["finetune", "--task", "sst2", "--out", "unused", "--set", "train.dva_mode=crossbar", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dva_quantize"] is True and shown["sim"] is not None  # dva_quantize=None: on for crossbar
    assert main(["finetune", "--task", "sst2", "--out", "unused", "--show-config"]) == 0
    assert json.loads(capsys.readouterr().out)["dva_quantize"] is False and not Path("unused").exists()


def test_corrupt_finetune_record_is_a_user_error(tmp_path):
    from device.errors import UserError
    from nn.finetune import FINETUNE_JSON, read_finetune_info

    (tmp_path / FINETUNE_JSON).write_text('{"config": ')
    with pytest.raises(UserError, match="cannot be read as a fine-tuning record"):
        read_finetune_info(tmp_path)


@pytest.mark.parametrize("flags,needle", [(["--v-read-v", "nan"], "--v-read-v nan is invalid"),
                                          (["--g-max-s", "inf"], "--g-max-s, finite")])
def test_circuit_tile_numbers(tmp_path, capsys, flags, needle):
    user_error(capsys, ["circuit", "solve", "--rows", "4", "--cols", "4", *flags, "--out", tmp_path / "s.h5"], tmp_path, needle)


@pytest.mark.parametrize("argv,needle", [
    (["device", "pulse", "--v-set", "nan"], "--v-set nan is invalid"),
    (["device", "pulse", "--spacing", "inf"], "--spacing inf is invalid"),
    (["device", "iv", "--v-read", "inf"], "--v-read inf is invalid"),
])
def test_device_numbers_must_be_finite(tmp_path, capsys, argv, needle):
    user_error(capsys, argv + ["--devices", "1", "--out", tmp_path / "x.h5"], tmp_path, needle)


# --- calibration inputs (issue 20) ----------------------------------------------------------------


def _ramps_csv(path: Path, set_pulses: list, extra: str = "") -> Path:
    lines = ["ramp,direction,pulse,i_a"]
    lines += [f"s1,set,{k},{100e-6 + 1e-6 * float(k):.6g}" for k in set_pulses]
    lines += [f"r1,reset,{k},{200e-6 - 1e-6 * k:.6g}" for k in range(4)]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.mark.parametrize("pulses,needles", [
    ([0, 1, 2, -1], ["pulse number -1", "integers 0, 1, 2"]),  # was placed in the last column
    ([0, 1, 2, 4.5], ["pulse number 4.5", "integers"]),  # was read as pulse 4
    ([0, 1, 3], ["set ramp 's1' has no read for pulse(s) 2", "without gaps"]),
    ([0, 1, 2, 1e9], ["set ramp 's1' has no read for pulse(s) 3"]),  # a (1, 1e9 + 1) array before
    ([0, 1, 1, 2], ["set ramp 's1' reads pulse 1 twice"]),
])
def test_calibrate_pulses_refuses_bad_pulse_numbers(tmp_path, capsys, pulses, needles):
    src = _ramps_csv(tmp_path / "ramps.csv", pulses)
    user_error(capsys, ["device", "calibrate", "pulses", "--in", src, "--out", tmp_path / "p.json"], tmp_path, *needles)


def test_calibration_csv_not_utf8_or_not_gzip(tmp_path, capsys):
    latin = tmp_path / "levels.csv"
    latin.write_bytes("level,g_s,note\n0,1e-6,r\xe9sistance\n".encode("latin-1"))
    out = tmp_path / "l.h5"
    user_error(capsys, ["device", "calibrate", "levels", "--in", latin, "--out", out], tmp_path, "not UTF-8 text")
    fake = tmp_path / "levels.csv.gz"
    fake.write_bytes(b"level,g_s\n0,1e-6\n")
    user_error(capsys, ["device", "calibrate", "levels", "--in", fake, "--out", out], tmp_path, "not a readable gzip file")
    import gzip

    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(b"level,g_s\n" + b"0,1e-6\n" * 1000)[:60])
    user_error(capsys, ["device", "calibrate", "levels", "--in", cut, "--out", out], tmp_path, "not a readable gzip file")
    src = _ramps_csv(tmp_path / "ramps.csv.gz", [0, 1, 2])
    src.write_bytes(b"\x1f\x8b garbage")
    user_error(capsys, ["device", "calibrate", "pulses", "--in", src, "--out", tmp_path / "p.json"], tmp_path,
               "not a readable gzip file")


def test_calibrate_levels_with_a_label_per_row_is_refused_at_once(tmp_path, capsys):
    # 10^6 distinct labels ran for minutes (a count per label); the level count is checked first
    n = 200_000
    src = tmp_path / "levels.csv"
    g = 1e-6 * (1 + np.arange(n) % 7)
    src.write_text("level,g_s\n" + "".join(f"L{i},{v:.3g}\n" for i, v in enumerate(g)))
    user_error(capsys, ["device", "calibrate", "levels", "--in", src, "--out", tmp_path / "l.h5"], tmp_path,
               f"the data hold {n} level(s)", "2**bits of them")


# --- JSON configs, device parameters (issue 20) ----------------------------------------------------


def _study_spec(files, tmp_path: Path, **kw) -> Path:
    import json

    d = {"model": str(files["model"]), "glue_dir": str(files["glue"]), "preset": "default",
         "set": ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic"],
         "axes": {"faults.rate": [0.01]}, "tasks": ["sst2"], "trials": 1, "max_length": 32, "batch_size": 8}
    d.update(kw)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(d))
    return spec


@pytest.mark.parametrize("content,needle", [
    ('{"name": "caf\xe9"}'.encode("latin-1"), "is not UTF-8 text"),
    (b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than JSON can be read"),
    (b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}", "nests more than 32 levels deep"),
])
def test_json_files_latin1_or_deeply_nested(files, tmp_path, capsys, content, needle):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    out = tmp_path / "out"
    user_error(capsys, ["study", "--spec", bad, "--out", out, "--no-progress"], tmp_path, "study spec", needle)
    user_error(capsys, ["device", "iv", "--preset-file", bad, "--devices", "1", "--out", tmp_path / "iv.h5"], tmp_path,
               "preset file", needle)


def test_preset_alpha_overflow(tmp_path, capsys):
    p = tmp_path / "p.json"
    p.write_text('{"alpha": 1e308}')
    user_error(capsys, ["device", "iv", "--preset-file", p, "--devices", "1", "--out", tmp_path / "iv.h5"], tmp_path,
               "alpha=1e+308 is invalid", "(0, 20]")


def test_cluster_size_huge(tmp_path, capsys):
    user_error(capsys, ["device", "faults", "--rows", "8", "--cols", "8", "--rate", "0.1", "--pattern", "clustered",
                        "--cluster-size", "1e300", "--out", tmp_path / "f.h5"], tmp_path, "cluster_size=1e+300 is invalid")


def test_pickled_finetune_checkpoint_is_refused(files, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    with open(out / "checkpoint" / "state.pt", "wb") as f:
        pickle.dump({"payload": _Payload()}, f)
    err = user_error(capsys, ["finetune", "--task", "sst2", "--model", files["model"], "--glue-dir", files["glue"],
                              "--out", out, "--max-steps", "2", "--batch-size", "4", "--max-length", "16"],
                     tmp_path, "cannot be read as a fine-tuning checkpoint", "refused")
    assert "weights_only" not in err and "this ran while unpickling" not in capsys.readouterr().out


def test_unreachable_dask_address_fails_before_any_work(files, tmp_path, capsys):
    pytest.importorskip("distributed")
    spec = _study_spec(files, tmp_path)
    user_error(capsys, ["study", "--spec", spec, "--out", tmp_path / "out", "--executor", "dask", "--address",
                        "tcp://127.0.0.1:1", "--no-progress"], tmp_path, "cannot reach the Dask scheduler at tcp://127.0.0.1:1")
    user_error(capsys, eval_args(files["model"], files["glue"], tmp_path / "r.csv", "--executor", "dask", "--address",
                                 "tcp://127.0.0.1"), tmp_path, "is invalid")


def test_plot_file_name_too_long(tmp_path, capsys):
    user_error(capsys, ["device", "iv", "--devices", "1", "--out", tmp_path / "iv.h5", "--plot",
                        tmp_path / ("p" * 250 + ".png")], tmp_path, "its file name is 254 bytes long")


# --- unbounded work, late failures (issue 20) ------------------------------------------------------


def test_trials_beyond_the_bound(files, tmp_path, capsys):
    user_error(capsys, eval_args(files["model"], files["glue"], tmp_path / "r.csv", "--trials", str(10**12)), tmp_path,
               "--trials 1000000000000 is invalid")
    spec = _study_spec(files, tmp_path, trials=10**12)
    user_error(capsys, ["study", "--spec", spec, "--out", tmp_path / "out"], tmp_path, "trials=1000000000000 is invalid")
    spec = _study_spec(files, tmp_path, axes={"faults.rate": [0.01] * 1000, "faults.sa0_fraction": [0.5] * 2000})
    user_error(capsys, ["study", "--spec", spec, "--out", tmp_path / "out"], tmp_path, "sweeps 2000000 configurations")


def test_read_time_outside_the_relaxation_table_fails_before_any_row(files, tmp_path, capsys):
    setting = ["--set", "levels.source=table", "--set", "crossbar.read_time_s=1e8"]
    user_error(capsys, eval_args(files["model"], files["glue"], tmp_path / "r.csv", "--trials", "1", *setting),
               tmp_path, "time_s=1e+08 is outside the measured range")
    spec = _study_spec(files, tmp_path, set=["crossbar.tile_rows=32", "crossbar.tile_cols=32", "crossbar.read_time_s=1e8"])
    user_error(capsys, ["study", "--spec", spec, "--out", tmp_path / "out", "--no-progress"], tmp_path,
               "is outside the measured range")  # and no study.json, lock or directory left


@pytest.mark.parametrize("setting,needle", [
    # refused by the IR-drop table only where a tile is programmed: a size it does not tabulate,
    (["crossbar.ir_drop=table"], "covers square tiles of sizes"),
    # levels outside its conductance window,
    (["crossbar.ir_drop=table", "crossbar.tile_rows=64", "crossbar.tile_cols=64", "levels.g_on_s=1e-2"],
     "outside the IR-drop table's window"),
    # a circuit it does not describe;
    (["crossbar.ir_drop=table", "crossbar.tile_rows=64", "crossbar.tile_cols=64", "circuit.r_source_ohm=10"],
     "r_source_ohm=10"),
    # relaxation-aware programming of a table without a write-verify window (synthetic levels)
    (["crossbar.read_time_s=100", "crossbar.retention.reprogram_rounds=1", "relaxation.out_of_range=clamp"],
     "set retention.reverify_window_frac"),
])
def test_a_chip_refused_when_built_fails_before_the_digital_row(files, tmp_path, capsys, setting, needle):
    # the digital row was written first, then programming the first chip raised (exit 2, a file left)
    sets = [a for s in setting for a in ("--set", s)]
    user_error(capsys, eval_args(files["model"], files["glue"], tmp_path / "r.csv", "--trials", "1", *sets),
               tmp_path, needle)
    spec = _study_spec(files, tmp_path, set=["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic",
                                             *setting])
    user_error(capsys, ["study", "--spec", spec, "--out", tmp_path / "out", "--no-progress"], tmp_path, needle)


def test_target_modules_matching_nothing_fail_before_the_digital_row(files, tmp_path, capsys):
    # the patterns are the user's settings: one error line naming the model's modules, no row written
    setting = ["--set", "target_modules=[\"no_such_layer\"]"]
    user_error(capsys, eval_args(files["model"], files["glue"], tmp_path / "r.csv", "--trials", "1", *setting),
               tmp_path, "matches target_modules=['no_such_layer']", "the model's supported modules are")
    spec = _study_spec(files, tmp_path, set=["crossbar.tile_rows=32", "crossbar.tile_cols=32",
                                             'target_modules=["no_such_layer"]'])
    user_error(capsys, ["study", "--spec", spec, "--out", tmp_path / "out", "--no-progress"], tmp_path,
               "matches target_modules=['no_such_layer']")


# --- the output rule of --out (issue 20) ----------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["device", "faults", "--rows", "8", "--cols", "8", "--rate", "0.1"],
    ["device", "iv", "--devices", "1", "--points", "50"],
    ["circuit", "solve", "--rows", "4", "--cols", "4"],
    ["circuit", "netlist", "--rows", "4", "--cols", "4"],
])
def test_device_and_circuit_out_never_replace_a_foreign_file(tmp_path, capsys, argv):
    foreign = tmp_path / "mine.dat"
    foreign.write_text("a user's own file\n")
    user_error(capsys, argv + ["--out", foreign], tmp_path, "exists and is not", "left untouched")
    assert foreign.read_text() == "a user's own file\n"
    ours = tmp_path / "ours.out"
    assert main([str(a) for a in argv + ["--out", ours]]) == 0
    assert main([str(a) for a in argv + ["--out", ours]]) == 0  # its own output is replaced (a rerun)


def test_a_table_of_another_kind_is_not_replaced(tmp_path, capsys):
    table = tmp_path / "levels.h5"
    assert main(["device", "faults", "--rows", "8", "--cols", "8", "--rate", "0.1", "--out", str(table)]) == 0
    user_error(capsys, ["circuit", "solve", "--rows", "4", "--cols", "4", "--out", table], tmp_path,
               "holds a 'faults' table, not the 'circuit_solve' table")


def test_repairing_a_cut_short_results_file_through_a_symlink_keeps_the_link(files, tmp_path):
    out = tmp_path / "r.csv"
    assert main([str(a) for a in eval_args(files["model"], files["glue"], out)]) == 0
    real = tmp_path / "store" / "results.csv"
    real.parent.mkdir()
    real.write_bytes(out.read_bytes() + b"sst2,dev,baseline,simul")  # a writer killed mid-row
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    from nn.evaluate import ResultsFile

    ResultsFile(link)
    assert link.is_symlink() and real.read_bytes() == out.read_bytes()
