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
