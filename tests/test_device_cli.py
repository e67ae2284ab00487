"""`reram-cosim device ...`: outputs, summaries, reproducibility and bad input (one clear message,
exit status 2, no file left behind)."""

import argparse
import os

import h5py
import numpy as np
import pytest

from cli import device as cli
from device import tables


def _main(argv):
    """The entry point's contract (cli/main.py): ValueError -> 'error: ...' on stderr, exit 2."""
    parser = argparse.ArgumentParser(prog="reram-cosim")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        import sys

        print(f"error: {exc}", file=sys.stderr)
        return 2


def _datasets(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


IV = ["device", "iv", "--devices", "2", "--points", "101", "--sweep-rate", "100", "--seed", "3"]
PROG = ["device", "program", "--bits-per-cell", "1", "--devices", "8", "--seed", "4"]


def test_iv_pulse_program_faults_write_valid_tables(tmp_path, capsys):
    assert _main(IV + ["--out", str(tmp_path / "iv.h5"), "--plot", str(tmp_path / "iv.png")]) == 0
    assert "SET at" in capsys.readouterr().out
    assert tables.read_table(tmp_path / "iv.h5", kind="iv")["i_a"].shape == (101, 2)
    assert (tmp_path / "iv.png").stat().st_size > 1000
    assert _main(["device", "pulse", "--devices", "2", "--set-pulses", "2", "--reset-pulses", "2",
                  "--out", str(tmp_path / "p.h5"), "--plot", str(tmp_path / "p.png")]) == 0
    assert tables.read_table(tmp_path / "p.h5", kind="pulse")["r_read_ohm"].shape == (4, 2)
    assert _main(PROG + ["--out", str(tmp_path / "l.h5"), "--plot", str(tmp_path / "l.png")]) == 0
    out = capsys.readouterr().out
    assert "on/off" in out and "read-out error" in out
    t = tables.read_table(tmp_path / "l.h5", kind="levels")
    assert t["g_s"].shape == (2, 8) and t.config["programming"]["bits_per_cell"] == 1
    assert _main(["device", "faults", "--rows", "16", "--cols", "8", "--rate", "0.1", "--sa0-fraction", "0.7",
                  "--pattern", "rows", "--seed", "1", "--out", str(tmp_path / "f.h5")]) == 0
    assert tables.read_table(tmp_path / "f.h5", kind="faults")["fault_map"].shape == (16, 8)


def test_same_seed_gives_bit_identical_datasets(tmp_path):
    for name, argv in (("iv", IV), ("levels", PROG)):
        a, b = tmp_path / f"{name}_a.h5", tmp_path / f"{name}_b.h5"
        assert _main(argv + ["--out", str(a)]) == 0
        assert _main(argv + ["--out", str(b)]) == 0
        da, db = _datasets(a), _datasets(b)
        assert da.keys() == db.keys()
        for k in da:
            np.testing.assert_array_equal(da[k], db[k], err_msg=k)


@pytest.mark.parametrize(
    "argv,message",
    [
        (PROG[:3] + ["5"] + PROG[4:], "bits_per_cell=5 is invalid"),
        (PROG[:3] + ["0"] + PROG[4:], "bits_per_cell=0 is invalid"),
        (PROG + ["--r-lrs-ohm", "-5"], "r_lrs_ohm=-5.0 is invalid"),
        (PROG + ["--r-hrs-ohm", "0"], "r_hrs_ohm=0.0 is invalid"),
        (PROG + ["--v-read", "1.3"], "would switch the cell"),
        (IV + ["--v-read", "1.3"], "would switch the cell"),
        (IV + ["--set", "bogus_key=1"], "unknown key 'bogus_key'"),
        (IV + ["--set", "i0_a=-1"], "i0_a=-1.0 is invalid"),
        (PROG + ["--program-set", "nope=1"], "unknown key 'nope'"),
        (["device", "faults", "--rows", "4", "--cols", "4", "--rate", "1.5", "--seed", "0"], "rate=1.5 is invalid"),
        (["device", "faults", "--rows", "4", "--cols", "4", "--rate", "0.1", "--sa0-fraction", "-0.2"], "sa0_fraction=-0.2 is invalid"),
    ],
)
def test_bad_input_one_message_exit_2_no_file(tmp_path, capsys, argv, message):
    out = tmp_path / "x.h5"
    if "--out" not in argv:
        argv = argv + ["--out", str(out)]
    assert _main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []  # no partial or temporary file


def test_unwritable_output_and_unknown_preset(tmp_path, capsys):
    assert _main(IV + ["--out", str(tmp_path / "missing" / "iv.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # root can write anyway
            assert _main(PROG + ["--out", str(ro / "l.h5")]) == 2
            assert "cannot write" in capsys.readouterr().err
            assert os.listdir(ro) == []
    finally:
        ro.chmod(0o700)
    with pytest.raises(SystemExit) as e:
        _main(IV + ["--preset", "nonexistent", "--out", str(tmp_path / "iv.h5")])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_help_documents_units(capsys):
    with pytest.raises(SystemExit):
        _main(["device", "program", "--help"])
    text = capsys.readouterr().out
    assert "ohm" in text and "--bits-per-cell" in text


def test_unconverged_programming_is_an_error_unless_allowed(tmp_path, capsys):
    # the README's 1T1R example with the default targets: through 1 kOhm a full SET at 1.6 V ends
    # near 28 kOhm, so the 10 kOhm level never converges. Before: a table of cells at the wrong
    # conductance, exit 0, not a word
    argv = ["device", "program", "--bits-per-cell", "1", "--devices", "2", "--seed", "0", "--set", "r_series_ohm=1000",
            "--program-set", "max_pulses=40"]
    out = tmp_path / "l.h5"
    assert _main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did not converge" in err and "--allow-unconverged" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []
    assert _main(argv + ["--out", str(out), "--allow-unconverged"]) == 0
    cap = capsys.readouterr()
    assert "warning:" in cap.err and "--allow-unconverged" in cap.err and "WARNING" in cap.out
    t = tables.read_table(out, kind="levels")
    assert t.attrs["unconverged_allowed"] and t["unconverged"][1] == 2 and t["converged"][1].sum() == 0
