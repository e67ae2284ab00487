"""Command-line options and their checks shared by the command groups that simulate cells
(``device ...``, ``device levels ...``): the device model (``--preset``, ``--preset-file``,
``--set``, ``--seed``) and the seeded generator. Light at import."""

from __future__ import annotations

import argparse

from device.errors import UserError
from device.presets import DEFAULT_PRESET, PRESETS

__all__ = ["model_options", "device_params", "seeded_rng", "check_count"]


def model_options(q: argparse.ArgumentParser) -> None:
    """The device-model options shared by the commands that simulate cells: ``--preset``,
    ``--preset-file``, ``--set`` (:func:`cli.presets.preset_args`) and ``--seed``."""
    from cli.presets import preset_args

    preset_args(q, choices=sorted(PRESETS), default=DEFAULT_PRESET, preset_help=f"device-model preset (default: {DEFAULT_PRESET})",
                set_help="override a model parameter of the preset, SI units in the key name "
                "(e.g. --set i0_a=5e-4 --set c2c_stochastic=false); repeatable",
                file_help="model parameters from a JSON file, e.g. from `device calibrate pulses`")
    q.add_argument("--seed", type=int, default=0, help="seed of the numpy generator (default: %(default)s)")


def device_params(args: argparse.Namespace):
    """The device model of :func:`model_options`' flags (preset, preset file, ``--set``)."""
    from cli.presets import config_from_args
    from device.presets import get_preset, load_preset_file

    return config_from_args(args, get_preset, DEFAULT_PRESET, load_file=load_preset_file)


def seeded_rng(seed: int):
    """``numpy.random.default_rng(seed)``; a negative seed is a user error."""
    import numpy as np

    if seed < 0:
        raise UserError(f"--seed {seed} is invalid: must be >= 0")
    return np.random.default_rng(seed)


def check_count(name: str, n: int, lo: int = 1) -> None:
    """Refuse a count below ``lo`` (``name`` is the flag)."""
    if n < lo:
        raise UserError(f"{name} {n} is invalid: must be >= {lo}")
