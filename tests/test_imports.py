"""Importing the lower layers must stay light (STYLE 11): no torch, transformers or PySpice."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["device", "device.tables", "device.faults", "device.config", "cli.device", "cli.main"])
def test_import_is_light(module):
    code = (
        f"import sys, {module}\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'PySpice', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import {module} pulled in {out}"
