"""Test-only stand-ins for interfaces other engineers are still writing (never used by library code).

``level_table_cls()`` returns ``device.programming.LevelTable`` when that module exists, else a
minimal stand-in with the same constructor, ``sample`` and ``synthetic`` signatures.
"""

from __future__ import annotations

import dataclasses
import sys
import types

import numpy as np


@dataclasses.dataclass(frozen=True)
class StandInLevelTable:
    bits_per_cell: int
    g_target_s: np.ndarray
    g_samples_s: np.ndarray
    g_sa0_s: float
    g_sa1_s: float
    source: str = "test stand-in"

    @property
    def g_mean_s(self) -> np.ndarray:
        return self.g_samples_s.mean(axis=1)

    @property
    def g_std_s(self) -> np.ndarray:
        return self.g_samples_s.std(axis=1)

    def sample(self, levels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        idx = rng.integers(self.g_samples_s.shape[1], size=np.shape(levels))
        return self.g_samples_s[np.asarray(levels, np.int64), idx]

    @classmethod
    def synthetic(cls, *, bits_per_cell, g_on_s, g_off_s, sigma_rel, distribution="lognormal", n_samples=4096, rng):
        n = 2**bits_per_cell
        t = np.linspace(g_off_s, g_on_s, n)
        z = rng.standard_normal((n, n_samples))
        s = t[:, None] * np.exp(sigma_rel * z - sigma_rel**2 / 2) if distribution == "lognormal" else t[:, None] * (1 + sigma_rel * z)
        return cls(bits_per_cell, t, s, float(g_off_s), float(g_on_s))


def level_table_cls():
    try:
        from device.programming import LevelTable

        return LevelTable
    except ImportError:
        return StandInLevelTable


def install_programming_module(monkeypatch) -> None:
    """Make ``device.programming`` importable (with the stand-in) when it does not exist yet."""
    try:
        import device.programming  # noqa: F401
    except ImportError:
        mod = types.ModuleType("device.programming")
        mod.LevelTable = StandInLevelTable
        monkeypatch.setitem(sys.modules, "device.programming", mod)


def ideal_levels(bits_per_cell: int, g_on_s: float = 100e-6, g_off_s: float = 1e-6):
    """Evenly spaced levels, no programming variation (the 'ideal devices' of the exact checks)."""
    lt = level_table_cls().synthetic(
        bits_per_cell=bits_per_cell, g_on_s=g_on_s, g_off_s=g_off_s, sigma_rel=0.0, rng=np.random.default_rng(0)
    )
    return lt
