"""The package as installed from a wheel: the shipped tables (data/ at the top of the repository,
the package ``reram_cosim_data``) travel with it and load by name from any directory."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest

from device.data import data_dir, resolve_table, shipped_table, shipped_tables
from device.errors import UserError
from device.programming import LevelTable

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_list_is_every_code_package_plus_the_tables():
    from setuptools import find_namespace_packages

    st = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    code = find_namespace_packages(where=str(ROOT), include=["device*", "crossbar*", "mapping*", "nn*", "cli*"])
    assert sorted(st["packages"]) == sorted(code + ["reram_cosim_data"])
    assert st["package-dir"] == {"reram_cosim_data": "data"}


def test_tables_load_by_name_from_any_directory(tmp_path, monkeypatch):
    from crossbar.irdrop import IRDropTable
    from device.relaxation import RelaxationModel

    monkeypatch.chdir(tmp_path)
    assert {"levels_b1", "levels_b2", "levels_b3", "levels_b4", "relaxation_techB", "irdrop_default"} <= set(shipped_tables())
    by_name = LevelTable.load("levels_b2")
    by_path = LevelTable.load(ROOT / "data" / "levels_b2.h5")
    assert by_name.bits_per_cell == 2 and np.array_equal(by_name.g_samples_s, by_path.g_samples_s)
    assert np.array_equal(LevelTable.load("levels_b3.h5").g_target_s, LevelTable.load(data_dir() / "levels_b3.h5").g_target_s)
    assert RelaxationModel.load("relaxation_techB").time_s.size > 1
    assert IRDropTable.load("irdrop_default").sizes
    # a file in the working directory wins over the shipped table of the same name
    by_name.save(tmp_path / "levels_b2")
    assert resolve_table("levels_b2") == Path("levels_b2")
    with pytest.raises(UserError, match="no shipped table named 'levels_b9'.*levels_b2"):
        shipped_table("levels_b9")


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_loads_the_tables_by_name(tmp_path):
    """Build the wheel (pip, no build isolation: offline), install it without dependencies into a
    new venv outside the repository whose only other path is this interpreter's site-packages
    (numpy, h5py, torch; .pth files there, such as an editable install, are not run)."""
    pytest.importorskip("setuptools")
    whl = tmp_path / "whl"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", str(ROOT), "-w", str(whl)], check=True, cwd=tmp_path)
    (wheel,) = whl.glob("reram_cosim-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check",
                    "--target", str(site), str(wheel)], check=True)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = (
        "import device, numpy as np\n"
        "from device.programming import LevelTable\n"
        "from device.relaxation import RelaxationModel\n"
        "from crossbar.irdrop import IRDropTable\n"
        "t = LevelTable.load('levels_b2')\n"
        "print(device.__file__)\n"
        "print(t.source)\n"
        "print(t.bits_per_cell, RelaxationModel.load('relaxation_techB').time_s.size, IRDropTable.load('irdrop_default').sizes)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([str(py), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    dev_file, source, counts = run.stdout.strip().splitlines()
    assert dev_file.startswith(str(site)), dev_file  # the wheel's code, not this checkout
    assert source.startswith(str(site / "reram_cosim_data")), source
    assert counts.split()[0] == "2"
