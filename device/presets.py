"""One registry of device-model presets: ``PRESETS[name]()`` returns a parameter config.

Each factory cites its source. The CLI takes ``--preset NAME --set key=value`` (type-checked by
:func:`device.config.apply_overrides`). A second compact model adds its own entries here.

Not included: the "Stanford NEEDS" set (I0 = 61.4 uA, g0 = 0.275 nm, V0 = 0.43 V, v0 = 150 m/s,
...) that circulates in course material: its provenance is uncertain (docs/REFERENCES.md).
"""

from __future__ import annotations

from typing import Callable

from device.compact import StanfordPKUParams
from device.config import Config, ConfigError, read_json_file

__all__ = ["PRESETS", "DEFAULT_PRESET", "get_preset", "default_params", "load_preset_file", "preset_foreign_reason"]


def preset_foreign_reason(path) -> str | None:
    """Why the existing file ``path`` may not be replaced by a preset file (None: it is one, a
    JSON object with ``model`` and ``params`` as ``device calibrate pulses`` writes): the output
    rule of ``--out``."""
    import json

    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 20).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return "is not a preset file written by reram-cosim (not a JSON object)"
    if isinstance(data, dict) and isinstance(data.get("model"), str) and isinstance(data.get("params"), dict):
        return None
    return "is not a preset file written by reram-cosim (no model and params)"


def stanford_pku() -> StanfordPKUParams:
    """Stanford-PKU filament-gap model with its published parameters (Guan, Yu, Wong, IEEE EDL
    33(10), 1405, 2012, doi:10.1109/LED.2012.2210856; values as in MemTorch ``Stanford_PKU``,
    whose gap range 0.2-1.7 nm pairs with R_on = 542 ohm / R_off = 218.6 kohm at 0.1 V), the
    cycle-to-cycle gap term on (its per-travel form and size are an *assumption*: see
    ``delta_g0_m``), plus device-to-device spreads that are *assumptions* of this
    toolkit (no published values for this parameter set): 5 % lognormal in I0 (read current),
    20 % lognormal in v0 (switching speed), 1 % normal in gamma0 (switching threshold)."""
    return StanfordPKUParams(d2d_sigma_ln_i0=0.05, d2d_sigma_ln_vel0=0.2, d2d_sigma_rel_gamma0=0.01)


def stanford_pku_ideal() -> StanfordPKUParams:
    """The same published Stanford-PKU parameters (Guan, Yu, Wong 2012; MemTorch) with every
    variation off: no device-to-device spread, deterministic gap dynamics (the mode of the SPICE
    cross-check)."""
    return StanfordPKUParams(c2c_stochastic=False)


PRESETS: dict[str, Callable[[], Config]] = {
    "stanford_pku": stanford_pku,
    "stanford_pku_ideal": stanford_pku_ideal,
}
DEFAULT_PRESET = "stanford_pku"


def get_preset(name: str) -> Config:
    """``PRESETS[name]()``, or a :class:`ConfigError` naming the known presets."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def default_params() -> Config:
    return PRESETS[DEFAULT_PRESET]()


def load_preset_file(path: str, base: StanfordPKUParams | None = None) -> StanfordPKUParams:
    """A preset JSON file over ``base`` (default: the default preset): the parameters themselves
    (``StanfordPKUParams.to_dict()``, all or some) or a file written by ``reram-cosim device
    calibrate pulses`` (its ``params`` object); :func:`device.config.load_config_file`, the one
    ``--preset-file`` of every command. Unknown or invalid parameters are a :class:`ConfigError`."""
    from pathlib import Path

    from device.config import load_config_file

    p = Path(path)
    data = read_json_file(p, "preset file")
    if isinstance(data, dict) and "params" in data and data.get("model", "stanford_pku") != "stanford_pku":
        raise ConfigError(f"preset file {p} is for model {data.get('model')!r}; known: 'stanford_pku'")
    return load_config_file(p, default_params() if base is None else base)
