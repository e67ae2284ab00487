"""HDF5 tables: round trip, self-description, and refusal of foreign, truncated or wrong files."""

import json

import h5py
import numpy as np
import pytest

from device import tables
from device.tables import Array, TableError


def _levels_arrays(n=50, seed=0):
    rng = np.random.default_rng(seed)
    g = np.sort(rng.random((4, n)) * 1e-4, axis=0)
    return {
        "level": Array(np.arange(4), "index"),
        "g_target_s": Array(g.mean(axis=1), "S", ("level",)),
        "g_s": Array(g, "S", ("level", "device")),
        "r_ohm": Array(1.0 / g, "ohm", ("level", "device")),
        "pulses": Array(rng.integers(1, 20, (4, n)), "1", ("level", "device")),
    }


def test_round_trip_and_self_description(tmp_path):
    arrays = _levels_arrays()
    p = tables.write_table(tmp_path / "t.h5", kind="levels", arrays=arrays, config={"bits_per_cell": 2})
    t = tables.read_table(p, kind="levels")
    assert t.kind == "levels" and t.config == {"bits_per_cell": 2}
    for name, a in arrays.items():
        np.testing.assert_array_equal(t[name], a.data)
        assert t.arrays[name].units == a.units
    assert t.arrays["g_s"].dims == ("level", "device")
    with h5py.File(p) as f:
        for key in ("schema_version", "software", "software_version", "created", "config_json"):
            assert key in f.attrs
        # every axis is its own dataset, attached as a dimension scale
        assert f["g_s"].dims[0][0].name == "/level"
        assert f["g_s"].dims[1][0].name == "/device"
        assert all("units" in ds.attrs for ds in f.values())
    assert "kind 'levels'" in tables.inspect(p)


def test_spice_provenance_and_groups(tmp_path):
    arrays = {f"bits2/{k}": v for k, v in _levels_arrays().items()}
    netlist = "* tile\nR1 a 0 1k\n.op\n.end\n"
    p = tables.write_table(
        tmp_path / "b.h5", kind="bundle", arrays=arrays, group_kinds={"bits2": "levels"},
        netlist=netlist, ngspice_version="39",
    )
    t = tables.read_table(p, kind="levels")  # a bundle holding a levels group answers for it
    assert t.netlist == netlist and t.attrs["ngspice_version"] == "39"
    assert set(t.group("bits2")) >= {"g_s", "level"}


def test_same_inputs_give_identical_datasets(tmp_path):
    a = tables.write_table(tmp_path / "a.h5", kind="levels", arrays=_levels_arrays(5000))
    b = tables.write_table(tmp_path / "b.h5", kind="levels", arrays=_levels_arrays(5000))
    ta, tb = tables.read_table(a), tables.read_table(b)
    for k in ta.arrays:
        assert ta[k].tobytes() == tb[k].tobytes()


def test_missing_required_array_is_refused_before_writing(tmp_path):
    arrays = _levels_arrays()
    del arrays["pulses"]
    with pytest.raises(TableError, match="needs array"):
        tables.write_table(tmp_path / "x.h5", kind="levels", arrays=arrays)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_previous_file_intact(tmp_path):
    p = tables.write_table(tmp_path / "t.h5", kind="levels", arrays=_levels_arrays())
    before = p.read_bytes()
    bad = _levels_arrays()
    bad["g_s"] = Array(np.ones((3, 50)), "S", ("level", "device"))  # level axis has 4 entries
    with pytest.raises(TableError, match="axis"):
        tables.write_table(p, kind="levels", arrays=bad)
    assert p.read_bytes() == before
    assert [x.name for x in tmp_path.iterdir()] == ["t.h5"]


@pytest.mark.parametrize("case", ["truncated", "foreign_hdf5", "not_hdf5", "wrong_major", "no_units", "missing_array", "wrong_kind"])
def test_validate_refuses(tmp_path, case):
    p = tables.write_table(tmp_path / "t.h5", kind="levels", arrays=_levels_arrays(5000))
    kind = None
    if case == "truncated":
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif case == "foreign_hdf5":
        with h5py.File(p, "w") as f:
            f["x"] = np.arange(3)
    elif case == "not_hdf5":
        p.write_text("level,g\n0,1e-6\n")
    elif case == "wrong_major":
        with h5py.File(p, "a") as f:
            f.attrs["schema_version"] = "2.0"
    elif case == "no_units":
        with h5py.File(p, "a") as f:
            del f["g_s"].attrs["units"]
    elif case == "missing_array":
        with h5py.File(p, "a") as f:
            del f["pulses"]
    elif case == "wrong_kind":
        kind = "faults"
    with pytest.raises(TableError) as info:
        tables.validate(p, kind=kind)
    assert str(p) in str(info.value)


def test_config_json_is_the_full_config(tmp_path):
    from device.faults import FaultConfig

    cfg = FaultConfig(rate=0.02, sa0_fraction=0.9)
    p = tables.write_table(tmp_path / "f.h5", kind="faults", arrays={"fault_map": Array(np.zeros((2, 2), np.int8), "index", ("row", "col"))}, config=cfg)
    with h5py.File(p) as f:
        assert FaultConfig.from_dict(json.loads(f.attrs["config_json"])) == cfg


def test_every_schema_declares_units_and_finiteness_of_its_required_arrays():
    # validate() checks the units and finiteness the schema declares: every required array of
    # every kind must be declared (a new kind without its specs would go unchecked)
    for kind, required in tables.SCHEMAS.items():
        assert set(required) <= set(tables.ARRAY_SPECS.get(kind, {})), kind
