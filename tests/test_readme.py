"""The README's code runs as written: every ```python block, from a directory outside the
repository (the shipped tables load by name), and the cheap commands of its ```sh blocks, in
process through cli.main (``python -c`` lines executed), in block order in one working
directory per block. Commands that fine-tune, evaluate a model, run studies, install or start
a cluster are left out (their parts are tested elsewhere); blocks reading the shared measured
data skip where ../shared/data/devices is absent."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DEVICES = ROOT.parent / "shared" / "data" / "devices"
BLOCKS = [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w+)\n(.*?)^```", README, re.S | re.M)]
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang in ("sh", "bash")]
#: commands cheap enough to run here (seconds each); the rest of a shell block is not run
CHEAP = ("device iv", "device pulse", "device program", "device faults", "device calibrate", "circuit netlist",
         "circuit solve", "crossbar mvm", "tables inspect", "tables validate")


def _needs_shared(code: str) -> bool:
    return "techb_" in code or "cross_sim" in code or "/tmp/lv.csv" in code


def _localize(code: str, where: Path) -> str:
    return code.replace("/tmp/", f"{where}/")


def _cheap_lines(code: str) -> list[str]:
    """The lines of a shell block run here: ``python -c`` lines and the cheap commands."""
    out = []
    for raw in code.splitlines():
        line = raw.split("  #")[0].strip()
        if line.startswith("python -c ") or (line.startswith("reram-cosim ") and line.split(" ", 1)[1].startswith(CHEAP)):
            out.append(line)
    return out


def _run_shell(code: str, where: Path) -> list[str]:
    from cli.main import main

    ran = _cheap_lines(code)
    for line in ran:
        if line.startswith("python -c "):
            exec(compile(shlex.split(line)[2], "<README python -c>", "exec"), {})
        else:
            assert main(shlex.split(line)[1:]) == 0, line
    return ran


def test_the_readme_has_the_api_snippets():
    text = "\n".join(PYTHON)
    for needle in ('LevelTable.load("levels_b2")', "program_matrix(", "solve(", 'ir_drop="exact"',
                   'RelaxationModel.load("relaxation_techB")', "read_time_s=1000.0"):
        assert needle in text, needle


@pytest.mark.parametrize("i", range(len(PYTHON)))
def test_python_block_runs(i, tmp_path, monkeypatch):
    code = PYTHON[i]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if _needs_shared(code):
        if not DEVICES.is_dir():
            pytest.skip("shared measured data absent")
        # the shell block before it writes its CSV files
        (sh,) = [s for s in SHELL if "techb_levels_csv" in s]
        _run_shell(_localize(sh, tmp_path), tmp_path)
    exec(compile(_localize(code, tmp_path), f"<README python block {i}>", "exec"), {"__name__": "__readme__"})


#: the shell blocks with a cheap command (the others only make, fine-tune, run studies, start clusters)
CHEAP_SHELL = [i for i, code in enumerate(SHELL) if _cheap_lines(code)]


def test_the_readme_shell_blocks_have_cheap_commands():
    assert len(CHEAP_SHELL) >= 2, CHEAP_SHELL  # the quick tour and the calibration walk-through


@pytest.mark.parametrize("i", CHEAP_SHELL)
def test_shell_block_cheap_commands_run(i, tmp_path, monkeypatch):
    code = SHELL[i]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if _needs_shared(code) and not DEVICES.is_dir():
        pytest.skip("shared measured data absent")
    assert _run_shell(_localize(code, tmp_path), tmp_path)
