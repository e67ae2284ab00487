"""The preset flags every command that builds a config shares: ``--preset NAME``, ``--preset-file
FILE`` and repeatable ``--set KEY=VALUE``, one implementation for the device model (``device
iv/pulse/program``) and the sim config (``eval``, ``study``, ``crossbar mvm``, ``finetune``,
``cost``).

The config is built in one order everywhere (:func:`config_from_args`): the named preset, then the
fields of the preset file over it (all of them, as ``--show-config`` or ``device calibrate pulses``
writes them, or some; :func:`device.config.load_config_file`), then the ``--set`` overrides.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

__all__ = ["preset_args", "config_from_args"]


def preset_args(p: argparse.ArgumentParser, *, choices: Any, default: str | None, preset_help: str,
                set_help: str, file_help: str) -> None:
    """Add ``--preset``, ``--preset-file`` and ``--set`` (into ``args.overrides``) to ``p``."""
    p.add_argument("--preset", default=default, choices=choices, metavar="NAME", help=preset_help + "; one of %(choices)s")
    p.add_argument("--preset-file", default=None, metavar="FILE",
                   help=file_help + " (JSON: all or some fields, nested as --show-config prints them; "
                   "applied over --preset, before --set)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def config_from_args(args: argparse.Namespace, get_preset: Callable[[str], Any], default_preset: str,
                     extra_overrides: Sequence[str] = (), *, load_file: Callable[..., Any] | None = None) -> Any:
    """The config of ``args``: preset ``args.preset`` (``default_preset`` when None), the
    ``args.preset_file`` fields over it, then ``extra_overrides`` and ``args.overrides``.
    ``load_file(path, base)`` reads the preset file (default :func:`device.config.load_config_file`)."""
    from device.config import apply_overrides, load_config_file

    cfg = get_preset(args.preset or default_preset)
    path = getattr(args, "preset_file", None)
    if path:
        cfg = (load_file or load_config_file)(path, cfg)
    return apply_overrides(cfg, list(extra_overrides) + list(getattr(args, "overrides", []) or []))
