"""The config base: strict JSON round trip, dotted overrides, clear errors."""

import pytest

from device.config import Config, ConfigError, apply_overrides, check_positive, check_range, config


@config
class _Inner(Config):
    r_wire_ohm: float = 1.0
    adc_bits: int = 8

    def __post_init__(self) -> None:
        check_positive("r_wire_ohm", self.r_wire_ohm)
        check_range("adc_bits", self.adc_bits, 1, 16)


@config
class _Outer(Config):
    inner: _Inner = _Inner()
    mode: str = "ideal"
    sizes: tuple[int, ...] = (64, 128)


def test_round_trip_json():
    cfg = _Outer(inner=_Inner(r_wire_ohm=2.5, adc_bits=6), mode="table", sizes=(32,))
    assert _Outer.from_json(cfg.to_json()) == cfg


def test_overrides_are_typed_and_revalidated():
    cfg = apply_overrides(_Outer(), ["inner.r_wire_ohm=3", "sizes=[16, 32]", "mode=exact"])
    assert cfg.inner.r_wire_ohm == 3.0 and isinstance(cfg.inner.r_wire_ohm, float)
    assert cfg.sizes == (16, 32)
    with pytest.raises(ConfigError, match=r"r_wire_ohm=-1.0 is invalid"):
        apply_overrides(_Outer(), ["inner.r_wire_ohm=-1"])
    with pytest.raises(ConfigError, match="expected an integer"):
        apply_overrides(_Outer(), ["inner.adc_bits=2.5"])


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match=r"unknown key 'r_wir_ohm' in inner; known: adc_bits, r_wire_ohm"):
        apply_overrides(_Outer(), ["inner.r_wir_ohm=1"])
    with pytest.raises(ConfigError, match="unknown key"):
        _Outer.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(_Outer(), ["mode"])


def test_frozen():
    with pytest.raises(AttributeError):
        _Inner().adc_bits = 3  # type: ignore[misc]
