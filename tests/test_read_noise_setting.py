"""One read-noise setting for write-verify and inference: by default a chip is read with the
relative read noise its level table was verified with (LevelTable.read_noise_rel)."""

import dataclasses

import numpy as np
import torch

from nn.crossbar_linear import CrossbarLinear
from nn.sim import build_levels, build_sim_config, effective_crossbar


def _layer(sim):
    lin = torch.nn.Linear(64, 32)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(32, 64, generator=torch.Generator().manual_seed(0)) * 0.1)
    return CrossbarLinear.from_linear(lin, sim, "layer")


def test_the_level_tables_verify_read_noise_is_the_inference_read_noise():
    sim = build_sim_config("default", ["crossbar.tile_rows=32", "crossbar.tile_cols=32"])
    lv = build_levels(sim)
    assert lv.read_noise_rel > 0  # the shipped write-verify tables were verified with read noise
    assert effective_crossbar(sim, lv).read_noise_sigma_rel == lv.read_noise_rel
    pm = _layer(sim).program(np.random.default_rng(0), levels=lv)
    assert pm.cfg.read_noise_sigma_rel == lv.read_noise_rel
    # explicitly the crossbar's own setting
    own = build_sim_config("default", ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "read_noise=crossbar",
                                       "crossbar.read_noise_sigma_rel=0.05"])
    assert _layer(own).program(np.random.default_rng(0)).cfg.read_noise_sigma_rel == 0.05
    # synthetic tables are not verified with noise: none at inference either
    ideal = build_sim_config("ideal", ["crossbar.tile_rows=32", "crossbar.tile_cols=32"])
    assert effective_crossbar(ideal, build_levels(ideal)).read_noise_sigma_rel == 0.0


def test_a_table_verified_with_other_read_noise_sets_it():
    sim = build_sim_config("default", ["crossbar.tile_rows=32", "crossbar.tile_cols=32"])
    lv = dataclasses.replace(build_levels(sim), read_noise_rel=0.03)
    assert effective_crossbar(sim, lv).read_noise_sigma_rel == 0.03


def test_the_python_api_and_the_command_line_read_a_chip_alike():
    """program_matrix (the API) and CrossbarLinear (eval, study: the CLI) default to the same read
    noise, the level table's, and read the same chip bit-identically."""
    from crossbar.engine import program_matrix

    sim = build_sim_config("default", ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "faults.rate=0.01"])
    lv = build_levels(sim)
    layer = _layer(sim)
    layer.program(np.random.default_rng(7), levels=lv)
    layer.simulated = True
    rng = np.random.default_rng(7)
    gen_seed = int(rng.integers(2**63))  # CrossbarLinear.program draws its read generator's seed first
    pm = program_matrix(layer.weight.detach(), sim.crossbar, lv, sim.faults, rng)
    assert pm.cfg.read_noise_sigma_rel == lv.read_noise_rel == layer._programmed.cfg.read_noise_sigma_rel > 0
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y_cli = layer(x)
        y_api = pm(x, generator=torch.Generator().manual_seed(gen_seed))
        assert torch.equal(y_api + layer.bias, y_cli)
    # the noise is on: another read generator gives another read
    assert not torch.equal(y_api, pm(x, generator=torch.Generator().manual_seed(gen_seed + 1)))
    # and the API's read_noise="crossbar" takes the config's sigma as given
    assert program_matrix(layer.weight.detach(), sim.crossbar, lv, None, np.random.default_rng(0),
                          read_noise="crossbar").cfg.read_noise_sigma_rel == 0.0


def test_crossbar_mvm_reads_with_the_tables_read_noise_by_default(capsys):
    import json

    from cli.main import main

    assert main(["crossbar", "mvm", "--rows", "64", "--cols", "32", "--json", "--seed", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"][-1]["effects"] == "+ read noise (sigma 0.01)"
    assert main(["crossbar", "mvm", "--rows", "64", "--cols", "32", "--json", "--read-noise", "0.05"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"][-1]["effects"] == "+ read noise (sigma 0.05)"


def test_a_read_noise_set_in_the_crossbar_config_wins_over_the_tables_and_crossbar_mode_takes_zero():
    from crossbar.engine import chip_read_noise

    sim = build_sim_config("default", ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "crossbar.read_noise_sigma_rel=0.05"])
    lv = build_levels(sim)
    assert effective_crossbar(sim, lv).read_noise_sigma_rel == 0.05
    assert chip_read_noise(sim.crossbar.replace(read_noise_sigma_rel=0.0), lv, "crossbar").read_noise_sigma_rel == 0.0
    ideal = build_sim_config("ideal", ["crossbar.read_noise_sigma_rel=0.05"])
    assert effective_crossbar(ideal, build_levels(ideal)).read_noise_sigma_rel == 0.05
