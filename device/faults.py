"""Stuck-at faults of ReRAM cells: maps sampled from a generator, saved with the tables.

Convention (the one of the seed paper, Li et al. 2024, arXiv 2401.11664, and the ReRAM defect
literature it cites):

* **SA0** - the cell is stuck at its **high-resistance** state (HRS): low conductance, it reads as
  digit 0 whatever was written.
* **SA1** - the cell is stuck at its **low-resistance** state (LRS): high conductance, it reads as
  the largest digit.

Some tools use the opposite names (PytorX's "SA0" is a high-conductance cell). Where you compare
with them, swap ``sa0_fraction`` for ``1 - sa0_fraction``.

A fault map is an ``int8`` array whose values are :class:`Fault` codes; its last two dimensions
are the rows and columns of one crossbar array, leading dimensions index arrays (tiles). Faults are
sampled once, when a chip is made: they do not change from read to read.

Spatial patterns (``FaultConfig.pattern``)
    ``random``     every cell independently faulty with probability ``rate``.
    ``clustered``  faults come in blobs of ``cluster_size`` cells on average (the cells nearest
                   a Poisson-distributed seed); the expected fraction of faulty cells is ``rate``.
                   Models defect clusters from local process variation.
    ``rows``       whole word lines fail (all cells of a failed row stuck, the same kind along the
                   row); each row fails with probability ``rate``.
    ``cols``       the same for whole bit lines.
In every pattern a fault is SA0 with probability ``sa0_fraction`` (per cell, per cluster, per line).
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Literal

import numpy as np

from device.config import Config, ConfigError, check_choice, check_range, config
from device.errors import InputError

__all__ = [
    "Fault", "FaultConfig", "sample_fault_map", "sample_bytes", "fault_statistics", "save_fault_map", "load_fault_map",
]

FAULT_ENCODING = "0=no fault, 1=SA0 (stuck at HRS: low conductance), 2=SA1 (stuck at LRS: high conductance)"


class Fault(enum.IntEnum):
    """Fault codes stored in a fault map."""

    NONE = 0
    SA0 = 1  #: stuck at high resistance (HRS), low conductance, reads 0
    SA1 = 2  #: stuck at low resistance (LRS), high conductance, reads the largest digit


Pattern = Literal["random", "clustered", "rows", "cols"]


#: the largest mean cluster a FaultConfig accepts, cells
MAX_CLUSTER_CELLS = 1e8


@config
class FaultConfig(Config):
    """Stuck-at fault statistics of a chip."""

    #: expected fraction of faulty cells (random, clustered) or of failed lines (rows, cols), in [0, 1]
    rate: float = 0.0
    #: fraction of faults that are SA0 (stuck at HRS); the rest are SA1. Li et al. 2024 use 0.5-0.9
    sa0_fraction: float = 0.5
    #: spatial pattern, see the module docstring
    pattern: Pattern = "random"
    #: mean number of cells in one cluster (pattern "clustered" only), in [1, 1e8] (a blob of more
    #: than 1e8 cells is no cluster; numpy's Poisson draw refuses means near 1e19)
    cluster_size: float = 8.0

    def __post_init__(self) -> None:
        check_range("rate", self.rate, 0.0, 1.0)
        check_range("sa0_fraction", self.sa0_fraction, 0.0, 1.0)
        check_choice("pattern", self.pattern, ("random", "clustered", "rows", "cols"))
        if isinstance(self.cluster_size, (int, float)) and math.isinf(self.cluster_size):
            raise ConfigError(f"cluster_size={self.cluster_size!r} is invalid: must be finite and >= 1")
        check_range("cluster_size", self.cluster_size, 1.0, MAX_CLUSTER_CELLS)


def sample_fault_map(shape: tuple[int, ...], cfg: FaultConfig, rng: np.random.Generator) -> np.ndarray:
    """Sample a stuck-at fault map.

    Parameters
    ----------
    shape:
        ``(..., rows, cols)``; leading dimensions index independent arrays (tiles).
    cfg:
        Fault statistics.
    rng:
        The only source of randomness: the same generator state gives the same map.

    Returns
    -------
    ``np.ndarray`` of ``int8`` with :class:`Fault` codes, shape ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise InputError(f"fault map shape {shape} must be (..., rows, cols) with positive sizes")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator")
    out = np.zeros(shape, dtype=np.int8)
    if cfg.rate == 0.0:
        return out
    if cfg.pattern == "random":
        _random_cells(out.reshape(-1), cfg, rng)
    elif cfg.pattern == "rows":
        _lines(out, cfg, rng, axis=-2)
    elif cfg.pattern == "cols":
        _lines(out, cfg, rng, axis=-1)
    else:
        _clustered(out.reshape((-1,) + shape[-2:]), cfg, rng)
    return out


def _kinds(n: int, cfg: FaultConfig, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(n) < cfg.sa0_fraction, Fault.SA0, Fault.SA1).astype(np.int8)


def sample_bytes(shape: tuple[int, ...], cfg: FaultConfig) -> int:
    """Peak memory, bytes, that :func:`sample_fault_map` needs for ``shape`` (the int8 map plus
    its int64 position / float64 work arrays), so callers can refuse a map that cannot fit."""
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if cfg.rate == 0.0:
        return n
    if cfg.pattern == "random":
        k = cfg.rate * n
        # a choice of min(k, n - k) distinct positions (int64 each, plus numpy's set / permutation
        # work space, up to 8 bytes per cell for dense draws) and one int8 kind per fault
        return int(n + 8 * n * min(1.0, 2 * min(k, n - k) / max(n, 1)) + 16 * min(k, n - k) + k)
    if cfg.pattern in ("rows", "cols"):
        return int(3 * n)
    return int(2 * n)


def _random_cells(flat: np.ndarray, cfg: FaultConfig, rng: np.random.Generator) -> None:
    # A Binomial(n, rate) count k, then k distinct positions uniformly at random: every cell is
    # faulty independently with probability rate (iid Bernoulli marginals), and cheap for the
    # hundreds of millions of cells of a BERT-sized model at small rates. Above half the cells
    # the n - k healthy positions are drawn instead (the same law, fewer draws); the count k is
    # never redrawn, which would bias the realised rate low (0.4929 at rate 0.5 before).
    n = flat.size
    k = int(rng.binomial(n, cfg.rate))
    if k == 0:
        return
    if k > n // 2:
        healthy = np.zeros(n, dtype=bool)
        healthy[rng.choice(n, size=n - k, replace=False)] = True
        idx = np.flatnonzero(~healthy)
    else:
        idx = rng.choice(n, size=k, replace=False)
    flat[idx] = _kinds(k, cfg, rng)


def _lines(out: np.ndarray, cfg: FaultConfig, rng: np.random.Generator, axis: int) -> None:
    moved = np.moveaxis(out, axis, -1)  # (..., other, line) view: a failed line is moved[..., j]
    line_shape = moved.shape[:-2] + (moved.shape[-1],)
    failed = rng.random(line_shape) < cfg.rate
    kinds = np.where(rng.random(line_shape) < cfg.sa0_fraction, Fault.SA0, Fault.SA1).astype(np.int8)
    codes = np.where(failed, kinds, np.int8(0)).astype(np.int8)
    moved[...] = codes[..., None, :]


def _clustered(arrays: np.ndarray, cfg: FaultConfig, rng: np.random.Generator) -> None:
    """Blobs of mean ``cluster_size`` cells around Poisson seeds, sized to give ``rate`` on average.

    A blob holds ``1 + Poisson(cluster_size - 1)`` cells: those nearest its seed (a rounded disc).
    Overlapping blobs merge, which would lower the realised rate, so the seed density follows the
    Poisson coverage relation ``rate = 1 - exp(-density * cluster_size)``. Seeds fall on the array
    padded by three blob radii and blob cells outside the array are dropped, so edge cells are
    covered as often as interior ones.
    """
    n_arr, rows, cols = arrays.shape
    if cfg.rate >= 1.0:
        arrays[...] = _kinds(n_arr, cfg, rng)[:, None, None]
        return
    density = -np.log1p(-cfg.rate) / cfg.cluster_size  # seeds per cell
    pad = 3.0 * np.sqrt(cfg.cluster_size / np.pi)
    n_seeds = rng.poisson(density * (rows + 2 * pad) * (cols + 2 * pad), size=n_arr)
    for a in np.flatnonzero(n_seeds):
        k = int(n_seeds[a])
        cy = rng.random(k) * (rows + 2 * pad) - pad
        cx = rng.random(k) * (cols + 2 * pad) - pad
        size = 1 + rng.poisson(cfg.cluster_size - 1.0, size=k)
        kinds = _kinds(k, cfg, rng)
        for j in range(k):
            h = int(np.ceil(np.sqrt(size[j] / np.pi))) + 1
            y0, x0 = int(np.floor(cy[j])) - h, int(np.floor(cx[j])) - h
            wy, wx = np.mgrid[y0 : y0 + 2 * h + 1, x0 : x0 + 2 * h + 1]
            d2 = ((wy + 0.5 - cy[j]) ** 2 + (wx + 0.5 - cx[j]) ** 2).ravel()
            near = np.argsort(d2, kind="stable")[: size[j]]
            ys, xs = wy.ravel()[near], wx.ravel()[near]
            inside = (ys >= 0) & (ys < rows) & (xs >= 0) & (xs < cols)
            ys, xs = ys[inside], xs[inside]
            free = arrays[a, ys, xs] == 0
            arrays[a, ys[free], xs[free]] = kinds[j]


def fault_statistics(fault_map: np.ndarray) -> dict[str, float]:
    """Realised fractions of SA0, SA1 and faulty cells in a map."""
    n = fault_map.size
    sa0 = int(np.count_nonzero(fault_map == Fault.SA0))
    sa1 = int(np.count_nonzero(fault_map == Fault.SA1))
    return {
        "cells": float(n),
        "sa0_rate": sa0 / n,
        "sa1_rate": sa1 / n,
        "fault_rate": (sa0 + sa1) / n,
        "sa0_fraction_of_faults": sa0 / (sa0 + sa1) if sa0 + sa1 else float("nan"),
    }


def save_fault_map(path: str | Path, fault_map: np.ndarray, cfg: FaultConfig, *, seed: int | None = None) -> Path:
    """Write a fault map as a self-describing ``faults`` table (see :mod:`device.tables`)."""
    from device import tables

    fm = np.asarray(fault_map, dtype=np.int8)
    dims = tuple(f"array{i}" for i in range(fm.ndim - 2)) + ("row", "col")
    stats = fault_statistics(fm)
    return tables.write_table(
        path,
        kind="faults",
        arrays={"fault_map": tables.Array(fm, "index", dims, "stuck-at fault code per cell: " + FAULT_ENCODING)},
        config={"faults": cfg.to_dict(), "seed": seed, "shape": list(fm.shape)},
        attrs={"fault_encoding": FAULT_ENCODING, **{k: v for k, v in stats.items() if k != "cells"}},
    )


def load_fault_map(path: str | Path) -> tuple[np.ndarray, FaultConfig]:
    """Read a fault map and the config that sampled it."""
    from device import tables

    t = tables.read_table(path, kind="faults")
    return np.asarray(t["fault_map"], dtype=np.int8), FaultConfig.from_dict(t.config["faults"])
