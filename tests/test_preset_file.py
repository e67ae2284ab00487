"""--preset-file: one implementation (cli.presets, device.config.load_config_file) for the device
commands and for eval, study, crossbar mvm, finetune and cost: preset, then the file, then --set."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from device.config import ConfigError, load_config_file
from nn.sim import build_sim_config, get_preset


def _show(capsys, argv):
    assert main(argv + ["--show-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_saved_config_reproduces_itself_and_a_partial_one_goes_over_the_preset(tmp_path, capsys):
    eval_args = ["eval", "--model", "m", "--task", "sst2", "--out", str(tmp_path / "r.csv")]
    full = _show(capsys, eval_args + ["--preset", "paper2", "--set", "faults.rate=0.01", "--set", "crossbar.adc_bits=6"])
    saved = tmp_path / "chip.json"
    saved.write_text(json.dumps(full))
    # the saved chip over any preset is the saved chip
    assert _show(capsys, eval_args + ["--preset", "ideal", "--preset-file", str(saved)]) == full
    # partial: only its fields change; --set goes last
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"crossbar": {"adc_bits": 5}, "faults": {"rate": 0.002}}))
    got = _show(capsys, eval_args + ["--preset-file", str(part), "--set", "faults.rate=0.003"])
    want = build_sim_config("default", ["crossbar.adc_bits=5", "faults.rate=0.003"]).to_dict()
    assert got == want
    # the same file on crossbar mvm (its sim config, printed with --json) and finetune/cost parse it too
    assert main(["crossbar", "mvm", "--rows", "32", "--cols", "16", "--json", "--preset-file", str(part)]) == 0
    mvm = json.loads(capsys.readouterr().out)["sim_config"]
    assert mvm["crossbar"]["adc_bits"] == 5 and mvm["faults"]["rate"] == 0.002


def test_bad_preset_files_are_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"crossbar": {"adc_bitz": 6}}))
    assert main(["crossbar", "mvm", "--preset-file", str(bad)]) == 2
    assert "unknown key 'crossbar.adc_bitz'" in capsys.readouterr().err
    bad.write_text(json.dumps({"faults": {"rate": 2.0}}))
    assert main(["eval", "--model", "m", "--task", "sst2", "--out", str(tmp_path / "r.csv"), "--preset-file", str(bad),
                 "--show-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: preset file") and "rate" in err
    assert main(["crossbar", "mvm", "--preset-file", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        (tmp_path / "list.json").write_text("[1, 2]")
        load_config_file(tmp_path / "list.json", get_preset("default"))


def test_study_takes_the_preset_file_under_its_set_and_axes(tmp_path):
    from nn.study import StudySpec

    part = tmp_path / "part.json"
    part.write_text(json.dumps({"crossbar": {"adc_bits": 5, "bits_per_cell": 1}}))
    spec = StudySpec.from_dict({"preset_file": str(part), "set": ["crossbar.bits_per_cell=2"],
                                "axes": {"faults.rate": [0, 0.01]}, "tasks": ["sst2"]})
    base = spec.base("baseline")
    assert base.crossbar.adc_bits == 5 and base.crossbar.bits_per_cell == 2  # set goes over the file
    # `study --preset-file` replaces the spec's
    from cli.main import build_parser

    args = build_parser().parse_args(["study", "--spec", "s.json", "--out", "o", "--preset-file", str(part)])
    assert args.preset_file == str(part)
    assert spec.replace(preset_file=None).base("baseline").crossbar.adc_bits == get_preset("default").crossbar.adc_bits


def test_device_commands_share_it(tmp_path, capsys):
    part = tmp_path / "dev.json"
    part.write_text(json.dumps({"i0_a": 5e-4}))
    from cli.options import device_params
    from cli.main import build_parser

    args = build_parser().parse_args(["device", "iv", "--out", str(tmp_path / "iv.h5"), "--preset-file", str(part),
                                      "--set", "vel0_m_per_s=12"])
    p = device_params(args)
    assert p.i0_a == 5e-4 and p.vel0_m_per_s == 12
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"model": "other", "params": {"i0_a": 5e-4}}))
    assert main(["device", "iv", "--out", str(tmp_path / "iv.h5"), "--preset-file", str(wrapped)]) == 2
    assert "is for model 'other'" in capsys.readouterr().err
