"""`reram-cosim cost` on the tiny BERT, the breakdown plot, and accuracy against energy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _tiny_bert import write_glue, write_tiny_classifier

CHIP = ["--set", "crossbar.tile_rows=32", "--set", "crossbar.tile_cols=32", "--set", "levels.source=synthetic"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cost")
    return {"model": write_tiny_classifier(root / "m"), "glue": write_glue(root / "glue", n_dev=12)}


def _run(files, *extra):
    from cli.main import main

    return main(["cost", "--model", str(files["model"]), "--glue-dir", str(files["glue"]), "--seq-len", "16",
                 "--sentences", "4", *CHIP, *extra])


def test_cli_cost_json_is_the_library_report(files, capsys, one_thread):
    """--json prints the report of nn.cost.cost_from_dir for the same chip, seed and sentences
    (bit for bit), with the totals at the top and one layer per crossbar matrix."""
    from mapping.technology import get_tech
    from nn.cost import cost_from_dir
    from nn.sim import build_sim_config

    assert _run(files, "--json", "--set", "crossbar.adc_bits=5") == 0
    d = json.loads(capsys.readouterr().out)
    for k in ("energy_j", "latency_s", "area_m2", "tops_per_w", "layers", "components"):
        assert k in d
    assert d["energy_j"] == pytest.approx(sum(d["components"]["energy_j"].values()), rel=1e-12)
    assert d["area_m2"] == pytest.approx(sum(d["components"]["area_m2"].values()), rel=1e-12)
    # 2 encoder layers x 6 matrices (the default chip keeps the pooler and classifier digital);
    # one MVM per padded token
    assert len(d["layers"]) == 12 and all(l["mvms"] == 16 for l in d["layers"])
    sim = build_sim_config("default", CHIP[1::2] + ["crossbar.adc_bits=5"])
    rep = cost_from_dir(files["model"], sim, get_tech("neurosim_22nm"), glue_dir=files["glue"], seq_len=16,
                        n_sentences=4)
    assert d["energy_j"] == rep.energy_j and d["area_m2"] == rep.area_m2 and d["latency_s"] == rep.latency_s
    assert d["meta"]["method"] == "unprotected" and d["meta"]["tech_name"] == "neurosim_22nm"


def test_cli_cost_options_change_what_they_should(files, tmp_path, capsys, one_thread):
    """The technology override reaches the price (Walden ADC energy = FOM 2^bits per conversion);
    random weights of the same config keep the area; the table, --out and --plot are written."""
    out, plot = tmp_path / "c.json", tmp_path / "c.png"
    assert _run(files, "--set", "crossbar.adc_bits=6", "--tech-set", "adc_model=walden", "--tech-set",
                "adc_fom_j=1e-14", "--out", str(out), "--plot", str(plot)) == 0
    text = capsys.readouterr().out
    assert "TOPS/W" in text and "adc" in text and f"wrote {plot}" in text
    d = json.loads(out.read_text())
    conv = sum(l["conversions"] for l in d["layers"])
    assert d["components"]["energy_j"]["adc"] == pytest.approx(conv * 1e-14 * 2**6, rel=1e-9)
    assert plot.stat().st_size > 1000
    assert _run(files, "--json", "--set", "crossbar.adc_bits=6", "--tech-set", "adc_model=walden", "--random-init",
                "--seed", "3") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["area_m2"] == pytest.approx(d["area_m2"], rel=1e-12)  # same shapes, same tiles
    assert r["energy_j"] != d["energy_j"]  # other weights and activations
    assert r["meta"]["random_init"] is True


@pytest.mark.parametrize("extra, word", [
    (["--tech-set", "vdd_vv=1"], "vdd_vv"),
    (["--tech-set", "vdd_v=-1"], "vdd_v"),
    (["--seq-len", "4"], "--seq-len"),
    (["--seq-len", "100"], "positions"),
    (["--plot", "x.txt"], "suffix"),
    (["--protection-set", "n_copie=2"], "n_copie"),
])
def test_cli_cost_bad_input_one_error_line(files, tmp_path, capsys, monkeypatch, extra, word):
    monkeypatch.chdir(tmp_path)
    assert _run(files, "--out", "o.json", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and word in err and err.count("\n") == 1
    assert not (tmp_path / "o.json").exists()


def test_cli_cost_missing_model(files, tmp_path, capsys):
    from cli.main import main

    assert main(["cost", "--model", str(tmp_path / "none"), "--glue-dir", str(files["glue"])]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_accuracy_vs_energy_joins_rows_and_costs(files, tmp_path, one_thread):
    """Points are the mean and spread of the simulated rows at each axis value, at that value's
    energy; the plot is written."""
    from mapping.cost_plots import plot_accuracy_energy
    from mapping.technology import get_tech
    from nn.cost import accuracy_vs_energy, cost_from_dir
    from nn.evaluate import evaluate_glue, read_results
    from nn.sim import build_sim_config

    csv = tmp_path / "r.csv"
    energies = {}
    for bits in (3, 6):
        sim = build_sim_config("default", CHIP[1::2] + [f"crossbar.adc_bits={bits}"])
        evaluate_glue(files["model"], "sst2", files["glue"], sim, 2, 0, csv, batch_size=12, max_length=16,
                      progress=False, verbose=False)
        energies[bits] = cost_from_dir(files["model"], sim, get_tech("neurosim_22nm"), glue_dir=files["glue"],
                                       seq_len=16, n_sentences=4).energy_j
    assert energies[6] > energies[3]  # more ADC bits, more energy per conversion
    points, digital = accuracy_vs_energy(csv, "crossbar.adc_bits", energies)
    rows = [r for r in read_results(csv) if r["mode"] == "simulated"]
    assert len(points) == 2 and digital is not None
    for p in points:
        xs = [r["score"] for r in rows if json.loads(r["sim_config"])["crossbar"]["adc_bits"] == p["value"]]
        assert p["n"] == 2 and p["mean"] == pytest.approx(np.mean(xs)) and p["energy_j"] == energies[p["value"]]
    path = plot_accuracy_energy(points, tmp_path / "ae.png", axis="crossbar.adc_bits", digital=digital)
    assert path.stat().st_size > 1000
    # the command line costs each point on the chip its rows ran (their sim_config): the same energies
    from cli.main import main

    out, plot = tmp_path / "ae.json", tmp_path / "ae2.png"
    assert main(["cost", "--model", str(files["model"]), "--glue-dir", str(files["glue"]), "--seq-len", "16",
                 "--sentences", "4", "--accuracy-csv", str(csv), "--axis", "crossbar.adc_bits", "--out", str(out),
                 "--plot", str(plot)]) == 0
    d = json.loads(out.read_text())
    assert {p["value"]: p["energy_j"] for p in d["points"]} == energies and d["digital"] == digital
    assert plot.stat().st_size > 1000
    assert main(["cost", "--model", str(files["model"]), "--accuracy-csv", str(csv)]) == 2  # --axis missing
