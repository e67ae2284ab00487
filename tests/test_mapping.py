"""The mapping plan: tile accounting, free space, copies at zero crossbar cost, save/load."""

import numpy as np
import pytest
import torch

from crossbar.engine import POS, CrossbarConfig, program_matrix
from device.programming import LevelTable
from device.tables import TableError
from mapping.plan import LayerPlan, MappingError, MappingPlan


def ideal_levels(bits_per_cell: int) -> LevelTable:
    """Evenly spaced levels, no programming variation (the 'ideal devices' of the exact checks)."""
    return LevelTable.synthetic(bits_per_cell=bits_per_cell, g_on_s=100e-6, g_off_s=1e-6, sigma_rel=0.0,
                                rng=np.random.default_rng(0))


BERT_LAYER = {
    "attention.self.query": (768, 768),
    "attention.self.key": (768, 768),
    "attention.self.value": (768, 768),
    "attention.output.dense": (768, 768),
    "intermediate.dense": (3072, 768),
    "output.dense": (768, 3072),
}


def test_bert_plan_counts_tiles_and_cells():
    cfg = CrossbarConfig(tile_rows=128, tile_cols=128, weight_bits=8, bits_per_cell=2)  # 4 slices x 2 = 8 cells/weight
    plan = MappingPlan.from_shapes(BERT_LAYER, cfg)
    q = plan["attention.self.query"]
    assert (q.layout.n_row_blocks, q.layout.n_col_blocks) == (6, 48)  # 16 outputs per 128-column tile
    assert q.cells_per_weight() == 8.0 and q.utilization() == 1.0
    assert plan.crossbar_count() == 4 * 288 + 6 * 192 + 24 * 48
    s = plan.summary()
    assert "tiles" in s and "utilization" in s and "cells/weight" in s
    # offset mapping: 4 slices of 2 bits, 31 outputs + 4 reference columns per tile
    off = LayerPlan.build("x", 100, 200, cfg.replace(mapping="offset"))
    assert off.layout.n_col_blocks == 4 and off.free_cols()[-1].size == 128 - 4 - 7 * 4


def test_copies_use_free_space_only_and_never_add_crossbars():
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, weight_bits=8, bits_per_cell=2)
    keep_out = np.arange(10) != 3  # output 3 pruned -> 8 free columns in its block
    keep_in = np.ones(40, bool)
    keep_in[[5, 6]] = False  # 2 pruned inputs -> free rows
    base = MappingPlan(cfg, {"fc": LayerPlan.build("fc", 10, 40, cfg)})
    prot = MappingPlan(cfg, {"fc": LayerPlan.build("fc", 10, 40, cfg, keep_out=keep_out, keep_in=keep_in)})
    lp = prot["fc"]
    n_free = sum(f.size for f in lp.free_cols())
    msb = cfg.n_slices - 1
    placed = []
    for o in range(10):
        if o == 3:
            continue
        try:
            placed.append(lp.place_column_copy(o, msb, role=POS, tag="msb"))
        except MappingError as exc:
            assert "may not add a crossbar" in str(exc)
            break
    assert len(placed) == min(9, n_free)
    r = lp.place_row_copy(0, tag="dup")
    assert r.kind == "row"
    assert prot.crossbar_count() == base.crossbar_count()
    prot.check_no_extra_crossbars(base)
    # a full layer refuses copies instead of growing
    with pytest.raises(MappingError, match="no free column"):
        for _ in range(1000):
            lp.place_column_copy(0, msb)
    # the engine programs copies but the default read ignores them; pruned weights must be zero
    w = torch.randn(10, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w[3] = 0
    w[:, [5, 6]] = 0
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y0 = program_matrix(w, cfg, ideal_levels(2), None, np.random.default_rng(0), layout=base["fc"].layout,
                        dtype=torch.float64).matvec(x)
    pm = program_matrix(w, cfg, ideal_levels(2), None, np.random.default_rng(0), layout=lp.layout, dtype=torch.float64,
                        keep_conductances=True)
    torch.testing.assert_close(pm.matvec(x), y0, rtol=1e-12, atol=1e-12)
    c = placed[0]
    st = pm.tile_state()
    lay = lp.layout
    co, jo = np.argwhere((lay.col_out == c.source[0]) & (lay.col_slice == msb) & (lay.col_role == POS) & ~lay.col_copy)[0]
    # the copy holds the same digits as the original bit line (row block 0)
    assert np.array_equal(st.levels[lay.tile_index(0, c.block)][:, c.index], st.levels[lay.tile_index(0, co)][:, jo])
    w_bad = w.clone()
    w_bad[3, 0] = 1.0
    with pytest.raises(ValueError, match="leaves out output 3"):
        program_matrix(w_bad, cfg, ideal_levels(2), None, np.random.default_rng(0), layout=lp.layout)


def test_save_load_round_trip_and_bad_files(tmp_path):
    cfg = CrossbarConfig(tile_rows=32, tile_cols=32, mapping="offset", bits_per_cell=4)
    plan = MappingPlan.from_shapes({"a": (20, 50), "b.c": (7, 9)}, cfg)
    plan["a"].place_column_copy(2, 1, tag="msb")
    plan["a"].record_format(5)
    p = tmp_path / "plan.h5"
    plan.save(p)
    back = MappingPlan.load(p)
    assert back.cfg == cfg and list(back.layers) == ["a", "b.c"]
    for n in plan.layers:
        for f in ("row_in", "col_out", "col_slice", "col_role", "row_copy", "col_copy"):
            assert np.array_equal(getattr(back[n].layout, f), getattr(plan[n].layout, f))
    assert back["a"].copies == plan["a"].copies and back["a"].frac_bits == 5
    assert back.summary() == plan.summary()
    import h5py

    with h5py.File(p, "r+") as f:
        f.attrs["schema_version"] = "3.1"
    with pytest.raises(TableError, match="incompatible"):
        MappingPlan.load(p)
    with pytest.raises(MappingError, match="no layer 'zz'"):
        plan["zz"]
    with pytest.raises(MappingError, match="keep_in has an index"):
        LayerPlan.build("x", 4, 4, cfg, keep_in=[0, 9])
