"""Tabulated IR-drop model: the effective matrix ``M`` of whole tiles without solving circuits.

A linear crossbar with wire resistance computes ``i_out = v_in @ M`` with an input-independent
effective matrix ``M`` (exactly: :func:`crossbar.solver.effective_matrices`, ``~(rows cols)^1.5``
per tile). This module gives a cheap model of ``M`` (``O(rows cols)`` per tile, torch, CPU or
GPU) for huge sweeps, with its error measured on held-out tiles relative to the actual column
current.

The model ("homogenized lines")::

    M[i, j] = g[i, j] * L(g)[i, j] * B(rho)[i, j],     rho = r_wire * mean(g over the tile)

``L(g)`` (:func:`lines_attenuation`) treats every word line and every bit line as its own
resistive chain, exactly, with the tile's actual conductances: word line ``i`` driven by a unit
voltage with its cells shunted to ground gives the word-line voltage ``v_w[i, j]``; bit line ``j``
with every cell as a shunt gives (by reciprocity, one tridiagonal solve per line) the fraction
``T[i, j]`` of a current injected at row ``i`` that reaches the sense node; ``L = v_w T``. It
carries the position and the local load of every row and column, but not the coupling between
lines (sneak currents that flow from a raised bit line through other rows' cells into other
columns), which at 128x128 and 5 ohm makes ``M`` up to 8x the decoupled value.

``B`` is that coupling, tabulated exactly: ``B = M_hom / (g L)_hom`` of the *homogeneous* tile
(every cell at the tile's mean conductance), which depends on ``rho = r_wire * g`` alone (scaling
every conductance of the circuit by ``s`` scales ``M`` by ``s``). ``log B`` is stored per tile
size on a log grid of ``rho`` as rank-``k`` factors (``U V``, float32) and interpolated cubically
in ``log rho``.

Held-out error (``tabulate`` measures it, :func:`format_errors` prints it): RMS column-current
error over RMS actual column current, for tiles drawn from every shipped level table
(``data/levels_b1..4.h5``; uniform, LRS-heavy and structured codes, :data:`CODE_MIXES`) with
sparse (10 %), half and fully driven *signed* inputs; see ``data/README.md`` and
``BENCHMARKS.md`` for the figures. On signed inputs (what the engine drives: LayerNorm outputs)
the errors of a column's cells do not average down: the error is 0.07-0.12 x the wires'
coupling (:meth:`IRDropTable.coupling`), so the table refuses (:class:`ConfigError`, "use
ir_drop='exact'") every tile whose coupling exceeds :data:`MAX_COUPLING` (5 %): with 100 uS
cells, 64 x 64 tiles above about 1 ohm and 128 x 128 tiles above about 0.25 ohm.

When it is sampled: once, from the programmed conductances (an effect of the circuit, not of
time). Valid range (:meth:`IRDropTable.check_circuit`, :meth:`IRDropTable.effective_matrix`
raise outside it): the tabulated tile sizes, linear cells, equal row and column wire resistance
in ``(0, r_wire_max]``, ideal drivers (``r_source_ohm = 0``), ideal virtual-ground sensing
(``r_sense_ohm = 0``), one-side drive, every conductance inside the table's window
``g_range_s``, and the wire coupling at the tile's largest conductance at most
:data:`MAX_COUPLING`. Any other circuit: ``ir_drop="exact"``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.config import Config, ConfigError, check_int_range, check_positive, check_range, config
from device.data import data_dir
from device.errors import InputError

__all__ = [
    "TabulateConfig",
    "IRDropTable",
    "lines_attenuation",
    "first_order_predictor",
    "heldout_tiles",
    "heldout_inputs",
    "heldout_errors",
    "tabulate",
    "format_errors",
    "demo_figures",
    "CODE_MIXES",
    "MAX_COUPLING",
]

DATA = data_dir()  # the shipped tables (data/ of the repository; device.data)
#: largest wire coupling (:meth:`IRDropTable.coupling`, ``max |log B|`` of the homogeneous tile
#: at the tile's largest conductance) the table accepts. Measured (bench/bench_irdrop_signed.py,
#: BENCHMARKS.md): on signed inputs (real MiniLM LayerNorm outputs) and structured tiles (half
#: the rows or every other column at the top level, 100 of 128 rows used) the table's error is
#: 0.07-0.12 x the coupling at 64 and 128, so 5 % keeps it below ~0.6 % of the column current,
#: well inside the 1 % goal. It admits 64 x 64 tiles up to about 1 ohm and 128 x 128 up to about
#: 0.25 ohm with 100 uS cells; beyond, ``ir_drop="exact"``.
MAX_COUPLING = 0.05
#: code distributions of the held-out tiles: every digit equally likely; 70 % of cells at the
#: top (LRS) level and the rest uniform; structured tiles the engine makes: the first half of the
#: rows at the top level (the rest uniform), every other column at the top level, and only the
#: first 100 of every 128 rows used (the rest at level 0, as pruning leaves a tile)
CODE_MIXES = ("uniform", "lrs_heavy", "half_rows_high", "alt_cols_high", "rows_used_100of128")
_LRS_FRACTION = 0.7


@config
class TabulateConfig(Config):
    """How the IR-drop table is built and how its held-out error is measured."""

    #: Square tile sizes (rows = cols) to tabulate.
    sizes: tuple[int, ...] = (64, 128)
    #: Wire resistances per segment (rows and columns alike) of the held-out test, ohm; the
    #: largest is the table's upper limit (the model is continuous in r, no interpolation grid).
    r_wire_ohm: tuple[float, ...] = (0.5, 1.0, 2.5, 5.0)
    #: Lower end of the conductance window the table accepts, S (shipped levels: 9.4 uS up; the
    #: synthetic default levels: 1 uS up).
    g_min_s: float = 5e-7
    #: Upper end of the conductance window, S (shipped levels: up to 106 uS).
    g_max_s: float = 1.5e-4
    #: Ratio between neighbouring points of the ``rho = r_wire * mean(g)`` grid.
    rho_ratio: float = 1.25
    #: Rank of the stored factors of ``log B`` per grid point.
    rank: int = 8
    #: Level tables the held-out tiles are drawn from; empty = the shipped data/levels_b1..4.h5.
    levels_tables: tuple[str, ...] = ()
    #: Fractions of driven word lines in the held-out inputs (driven lines get U(-1, 1) V).
    input_densities: tuple[float, ...] = (0.1, 0.5, 1.0)
    #: Held-out tiles per (size, r_wire, level table, code mix).
    holdout: int = 2
    #: Input vectors per held-out tile and input density.
    inputs_per_tile: int = 16
    #: Seed of the held-out draws (numpy Generator, one spawned stream per combination).
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ConfigError("sizes must not be empty")
        for s in self.sizes:
            check_int_range("sizes", s, 2, 4096)
        if not self.r_wire_ohm:
            raise ConfigError("r_wire_ohm must not be empty")
        for r in self.r_wire_ohm:
            check_range("r_wire_ohm", r, 0.0, 1e3, lo_open=True)
        check_positive("g_min_s", self.g_min_s)
        check_positive("g_max_s", self.g_max_s)
        if self.g_max_s <= self.g_min_s:
            raise ConfigError(f"g_max_s={self.g_max_s!r} is invalid: must be > g_min_s={self.g_min_s!r}")
        check_range("rho_ratio", self.rho_ratio, 1.0, 4.0, lo_open=True)
        check_int_range("rank", self.rank, 1, 64)
        for d in self.input_densities:
            check_range("input_densities", d, 0.0, 1.0, lo_open=True)
        check_int_range("holdout", self.holdout, 1)
        check_int_range("inputs_per_tile", self.inputs_per_tile, 1)
        check_int_range("seed", self.seed, 0)

    def level_paths(self) -> tuple[Path, ...]:
        if self.levels_tables:
            return tuple(Path(p) for p in self.levels_tables)
        return tuple(DATA / f"levels_b{b}.h5" for b in (1, 2, 3, 4))


# ----------------------------------------------------------------------------- the line model


def _torch():
    import torch

    return torch


def lines_attenuation(g_s, r_wire_row_ohm: float, r_wire_col_ohm: float, *, r_source_ohm: float = 0.0,
                      r_sense_ohm: float = 0.0, both_sides: bool = False):
    """Attenuation ``L = v_w * T`` of every cell with each line solved as an isolated chain.

    ``g_s``: torch tensor ``(tiles, rows, cols)`` float64, S (any device). Word line ``i``
    (driver conductance ``1/(r_source + r_row)`` at column 0, and at column ``cols-1`` when
    ``both_sides``) with every cell shunted to ground, driven by 1 V: node voltages ``v_w[i, j]``
    from the backward elimination pivots ``dr`` (``v_j = v_{j-1} gw / dr_j``). Bit line ``j``
    with every cell as a shunt and ``1/(r_col + r_sense)`` to the sense node: the fraction of a
    current injected at row ``i`` that is sensed, ``T[i, j] = g_out (K_j^{-1})[R-1, i]``, from the
    forward pivots ``dl`` (``z_i = z_{i+1} gc / dl_i``). ``O(rows cols)``; wire resistances > 0.
    """
    torch = _torch()
    t, r, c = g_s.shape
    gw = 1.0 / r_wire_row_ohm
    gdrv = 1.0 / (r_source_ohm + r_wire_row_ohm)
    gc = 1.0 / r_wire_col_ohm
    gout = 1.0 / (r_wire_col_ohm + r_sense_ohm)

    def factors(d, reverse):
        """``q_k = 1 / (d_k - q_prev)``: the inverted elimination pivots of tridiagonal chains with
        diagonal ``d`` (in units of the wire conductance, off-diagonal -1) along the leading
        axis, forward or backward; ``q_k`` is also the voltage ratio of neighbouring nodes."""
        q = torch.empty_like(d)
        order = range(d.shape[0] - 1, -1, -1) if reverse else range(d.shape[0])
        prev = None
        for k in order:
            if prev is None:
                torch.reciprocal(d[k], out=q[k])
            else:
                torch.sub(d[k], prev, out=q[k]).reciprocal_()
            prev = q[k]
        return q

    def cumprod(q, reverse):
        """running products along the leading axis, in place (a loop over contiguous slices:
        ``torch.cumprod`` over the leading axis was ~10x slower per element)"""
        order = range(q.shape[0] - 1, -1, -1) if reverse else range(q.shape[0])
        prev = None
        for k in order:
            if prev is not None:
                q[k].mul_(prev)
            prev = q[k]
        return q

    # word lines, chain axis first: (cols, tiles, rows), conductances in units of gw
    d = g_s.permute(2, 0, 1).mul(1.0 / gw).add_(2.0)
    d[0] += (gdrv - gw) / gw
    d[-1] += ((gdrv if both_sides else 0.0) - gw) / gw
    q = factors(d, reverse=True)
    q[0] *= gdrv / gw
    v_w = cumprod(q, reverse=False)  # v_j = v_{j-1} gw / dr_j from 1 V at the driver
    if both_sides:
        q = factors(d, reverse=False)
        q[-1] *= gdrv / gw
        v_w += cumprod(q, reverse=True)
    # bit lines, chain axis first: (rows, tiles, cols), in units of gc
    e = g_s.permute(1, 0, 2).mul(1.0 / gc).add_(2.0)
    e[0] -= 1.0
    e[-1] += (gout - gc) / gc
    q = factors(e, reverse=False)
    q[-1] *= gout / gc
    tr = cumprod(q, reverse=True)  # z_i = z_{i+1} gc / dl_i from the sense end
    return v_w.permute(1, 2, 0) * tr.permute(1, 0, 2)


def first_order_predictor(g_s, r_wire_row_ohm: float, r_wire_col_ohm: float):
    """First-order IR-drop predictor ``x = r_row P_row + r_col P_col`` (same shape as ``g_s``).

    ``P_row[i, j] = sum_{k<=j} sum_{m>=k} g[i, m]`` (current through every word-line segment
    between the driver and cell ``j``), ``P_col[i, j] = sum_n g[n, j] (R - max(n, i))``; for small
    wire resistance ``M = g (1 - x) + O(r^2)``. numpy array or torch tensor ``(…, rows, cols)``.
    """
    if isinstance(g_s, np.ndarray):
        g = g_s
        rows = g.shape[-2]
        rsum = np.flip(np.cumsum(np.flip(g, -1), -1), -1)
        p_row = np.cumsum(rsum, -1)
        n = np.arange(rows, dtype=g.dtype)[:, None]
        tail = np.flip(np.cumsum(np.flip(g * (rows - n), -2), -2), -2)
        head = np.cumsum(g, -2) - g
    else:
        xp = _torch()
        g = g_s
        rows = g.shape[-2]
        rsum = xp.flip(xp.cumsum(xp.flip(g, (-1,)), -1), (-1,))
        p_row = xp.cumsum(rsum, -1)
        n = xp.arange(rows, dtype=g.dtype, device=g.device)[:, None]
        tail = xp.flip(xp.cumsum(xp.flip(g * (rows - n), (-2,)), -2), (-2,))
        head = xp.cumsum(g, -2) - g
    p_col = tail + (rows - n) * head
    return r_wire_row_ohm * p_row + r_wire_col_ohm * p_col


# ----------------------------------------------------------------------------- the table


@dataclass
class IRDropTable:
    """The homogenized-lines IR-drop model (see the module docstring) for square tiles.

    ``sizes``: tile sizes (rows = cols). ``log_rho``: the uniform grid of ``log(r_wire * g)``.
    ``u[size]`` ``(points, rows, rank)`` and ``v[size]`` ``(points, rank, cols)``: ``log B`` at
    each grid point is ``u @ v``. ``r_wire_max_ohm``: largest wire resistance accepted.
    ``g_range_s``: the conductance window accepted. ``r_wire_ohm``: the held-out test's wire
    resistances; ``rms_error_rel`` ``(sizes, r_wire)``: held-out RMS column-current error / RMS
    actual column current, pooled over level tables, code mixes and input densities;
    ``error_detail`` ``(sizes, r_wire, level tables, code mixes, densities)`` the same per
    combination; ``rms_error_fullscale`` the pooled error over ``rows * g_max_level * 1 V``
    (NaN / -1 where not measured).
    """

    sizes: tuple[int, ...]
    log_rho: np.ndarray
    u: dict[int, np.ndarray]
    v: dict[int, np.ndarray]
    r_wire_max_ohm: float
    g_range_s: tuple[float, float]
    r_wire_ohm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rms_error_rel: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    rms_error_fullscale: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    error_detail: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0, 0)))
    detail_axes: dict[str, list] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    model: str = "homogenized_lines"

    @property
    def rows(self) -> tuple[int, ...]:
        return self.sizes

    @property
    def cols(self) -> tuple[int, ...]:
        return self.sizes

    # ------------------------------------------------------------------ validation
    def check_circuit(self, circuit: Any) -> float:
        """Raise :class:`ConfigError` unless the table describes ``circuit``; return its wire
        resistance per segment. Accepts a :class:`crossbar.solver.CircuitConfig` (None = its
        defaults) or a float (equal row and column wires, otherwise ideal)."""
        from crossbar.nodal import CircuitConfig

        if circuit is None:
            circuit = CircuitConfig()
        elif isinstance(circuit, (int, float)) and not isinstance(circuit, bool):
            circuit = CircuitConfig(r_wire_row_ohm=float(circuit), r_wire_col_ohm=float(circuit))
        elif not isinstance(circuit, CircuitConfig):
            raise ConfigError(f"circuit must be a CircuitConfig or a wire resistance in ohm, got {type(circuit).__name__}")
        c = circuit
        why = []
        if c.r_wire_row_ohm != c.r_wire_col_ohm:
            why.append(f"unequal row/column wires (r_wire_row_ohm={c.r_wire_row_ohm:g}, r_wire_col_ohm={c.r_wire_col_ohm:g})")
        if c.r_source_ohm != 0:
            why.append(f"a driver resistance (r_source_ohm={c.r_source_ohm:g})")
        if c.r_sense_ohm != 0:
            why.append(f"a sense resistance (r_sense_ohm={c.r_sense_ohm:g})")
        if c.drive != "one_side":
            why.append(f"drive={c.drive!r}")
        if not c.linear:
            why.append(f"nonlinear cells (cell_v0_v={c.cell_v0_v:g})")
        r = float(c.r_wire_row_ohm)
        if not why and not (0.0 < r <= self.r_wire_max_ohm * (1 + 1e-12)):
            why.append(f"r_wire_ohm={r:g} outside the table's range (0, {self.r_wire_max_ohm:g}] ohm")
        if why:
            raise ConfigError(
                "the IR-drop table describes equal row/column wires in (0, "
                f"{self.r_wire_max_ohm:g}] ohm, ideal drivers and sensing, one-side drive and linear cells; "
                "this circuit has " + ", ".join(why) + " (use ir_drop='exact')"
            )
        return r

    def _check_tiles(self, g):
        torch = _torch()
        if g.ndim < 2 or g.shape[-1] != g.shape[-2] or g.shape[-1] not in self.sizes:
            raise ConfigError(
                f"IR-drop table covers square tiles of sizes {list(self.sizes)}; got shape {tuple(g.shape)} "
                "(use ir_drop='exact')"
            )
        if g.numel() == 0:
            return
        lo, hi = self.g_range_s
        gmin, gmax = float(torch.min(g)), float(torch.max(g))
        if not (math.isfinite(gmin) and math.isfinite(gmax)) or gmin < lo or gmax > hi:
            raise InputError(
                f"conductances span [{gmin:.3g}, {gmax:.3g}] S, outside the IR-drop table's window "
                f"[{lo:.3g}, {hi:.3g}] S (use ir_drop='exact' or tabulate a wider window)"
            )

    # ------------------------------------------------------------------ apply
    def _log_b(self, size: int, log_rho):
        """``log B`` ``(tiles, size, size)`` at ``log_rho`` ``(tiles,)`` by cubic (Catmull-Rom)
        interpolation over the grid; clamped at its ends (``B -> 1`` below the grid)."""
        torch = _torch()
        dev, dt = log_rho.device, log_rho.dtype
        u = torch.as_tensor(self.u[size], device=dev).to(dt)
        v = torch.as_tensor(self.v[size], device=dev).to(dt)
        p = u.shape[0]
        s0, ds = float(self.log_rho[0]), float(self.log_rho[1] - self.log_rho[0])
        x = ((log_rho - s0) / ds).clamp(0.0, p - 1.0)
        k = torch.floor(x).clamp(max=p - 2).to(torch.int64)
        f = (x - k.to(dt))[:, None, None]
        w = (  # Catmull-Rom weights of points k-1, k, k+1, k+2
            ((-f + 2) * f - 1) * f / 2,
            ((3 * f - 5) * f * f + 2) / 2,
            ((-3 * f + 4) * f + 1) * f / 2,
            (f - 1) * f * f / 2,
        )
        # one bmm over the four stencil points: [w0 U0, .., w3 U3] @ [V0; ..; V3]
        idx = [(k + o).clamp(0, p - 1) for o in (-1, 0, 1, 2)]
        uu = torch.cat([wo * u[i] for wo, i in zip(w, idx)], dim=-1)
        vv = torch.cat([v[i] for i in idx], dim=-2)
        return torch.bmm(uu, vv)

    def coupling(self, size: int, r_wire_ohm: float, g_max_s: float) -> float:
        """The wires' coupling of a ``size x size`` tile whose cells are at most ``g_max_s``:
        ``max |log B|`` of the homogeneous tile with every cell at ``g_max_s`` (``B`` grows with
        ``rho = r_wire g``, so this bounds the coupling of any tile of such cells). The table's
        error on signed inputs scales with it (:data:`MAX_COUPLING`)."""
        torch = _torch()
        lr = torch.tensor([math.log(r_wire_ohm * g_max_s)], dtype=torch.float64)
        return float(self._log_b(size, lr).abs().max())

    def check_accuracy(self, size: int, r_wire_ohm: float, g_max_s: float) -> None:
        """Raise :class:`ConfigError` where the table cannot hold 1 % of the column current on
        signed inputs: :meth:`coupling` above :data:`MAX_COUPLING`."""
        k = self.coupling(size, r_wire_ohm, g_max_s)
        if k > MAX_COUPLING:
            raise ConfigError(
                f"the IR-drop table is not accurate for {size}x{size} tiles at r_wire={r_wire_ohm:g} ohm with cells up "
                f"to {g_max_s * 1e6:.3g} uS: the wires couple the lines by up to {100 * k:.3g} % (max |log B|), above "
                f"the {100 * MAX_COUPLING:g} % where its error on signed inputs stays below 1 % of the column current; "
                "use ir_drop='exact' (or smaller tiles / lower-conductance levels)"
            )

    def effective_matrix(self, g_s, circuit: Any = None, *, accuracy_guard: bool = True):
        """Approximate effective matrices ``M`` with ``i_out = v_in @ M`` (see the module docstring).

        ``g_s``: torch tensor ``(tiles, rows, cols)`` float64 siemens on any device (the result
        has the same shape, dtype and device), or a numpy array ``(…, rows, cols)`` (numpy out).
        ``circuit``: :class:`crossbar.solver.CircuitConfig` or a wire resistance in ohm. Raises
        :class:`ConfigError` for circuits and tile sizes the table does not describe and, unless
        ``accuracy_guard`` is False (error studies only), where it cannot hold 1 %
        (:meth:`check_accuracy`), and :class:`InputError` for conductances outside ``g_range_s``.
        """
        torch = _torch()
        r = self.check_circuit(circuit)
        as_numpy = not isinstance(g_s, torch.Tensor)
        g = torch.from_numpy(np.asarray(g_s, dtype=np.float64)) if as_numpy else g_s
        if g.dtype != torch.float64:
            raise InputError(f"g_s must be float64, got {g.dtype}")
        self._check_tiles(g)
        if accuracy_guard and g.numel():
            self.check_accuracy(g.shape[-1], r, float(torch.max(g)))
        shape = g.shape
        g3 = g.reshape(-1, shape[-2], shape[-1])
        out = torch.empty_like(g3)
        size = shape[-1]
        step = max(1, (1 << 18) // (size * size))  # ~2 MiB of float64 per chunk: stays in cache (16 MiB: 3x slower)

        def run(t0: int) -> None:
            gt = g3[t0 : t0 + step]
            log_rho = torch.log(r * gt.mean(dim=(1, 2)))
            out[t0 : t0 + step] = self._log_b(size, log_rho).exp_().mul_(lines_attenuation(gt, r, r)).mul_(gt)

        from crossbar.effective import run_chunks

        run_chunks(run, range(0, g3.shape[0], step), g3.device)  # chunks per thread, one thread each
        out = out.reshape(shape)
        return out.numpy() if as_numpy else out

    def attenuation(self, g_s, circuit: Any = None):
        """``effective_matrix(g_s, circuit) / g_s`` (same types and shapes)."""
        return self.effective_matrix(g_s, circuit) / g_s

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> Path:
        from device import tables

        arrays: dict[str, tables.Array] = {
            "size": tables.Array(np.asarray(self.sizes, np.int64), "1", description="tile size (rows = cols)"),
            "log_rho": tables.Array(np.asarray(self.log_rho, float), "1",
                                    description="grid of log(rho / (1 ohm * 1 S)), rho = r_wire * mean tile conductance (dimensionless)"),
            "r_wire_ohm": tables.Array(np.asarray(self.r_wire_ohm, float), "ohm",
                                       description="wire resistances per segment of the held-out test"),
            "rms_error_rel": tables.Array(self.rms_error_rel, "1", ("size", "r_wire_ohm"),
                                          "held-out RMS column-current error / RMS actual column current (pooled)"),
            "rms_error_fullscale": tables.Array(self.rms_error_fullscale, "1", ("size", "r_wire_ohm"),
                                                "held-out RMS column-current error / (rows * top level * 1 V)"),
            "error_detail": tables.Array(self.error_detail, "1", ("size", "r_wire_ohm", "level_table", "code_mix", "density"),
                                         "held-out RMS error / RMS actual column current per combination"),
            "density": tables.Array(np.asarray(self.detail_axes.get("density", []), float), "1",
                                    description="fraction of driven word lines"),
        }
        for size in self.sizes:
            arrays[f"size{size}/u"] = tables.Array(self.u[size].astype(np.float32), "1", ("log_rho", "row", "rank"),
                                                   "left factor of log B (B: coupling factor of the homogeneous tile)")
            arrays[f"size{size}/v"] = tables.Array(self.v[size].astype(np.float32), "1", ("log_rho", "rank", "col"),
                                                   "right factor of log B")
        attrs = {"model": self.model, "g_min_s": self.g_range_s[0], "g_max_s": self.g_range_s[1],
                 "r_wire_max_ohm": self.r_wire_max_ohm,
                 "level_tables": ";".join(self.detail_axes.get("level_table", [])),
                 "code_mixes": ";".join(self.detail_axes.get("code_mix", []))}
        return tables.write_table(path, kind="irdrop", arrays=arrays, config=self.config, attrs=attrs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "IRDropTable":
        """Read an ``irdrop`` table (validated first). ``path`` is a file, or the name of a
        shipped table (``"irdrop_default"``; :func:`device.data.resolve_table`)."""
        from device import tables
        from device.data import resolve_table

        path = resolve_table(path)
        t = tables.read_table(path, kind="irdrop")
        arr = t.arrays
        model = str(t.attrs.get("model", ""))
        if model != "homogenized_lines" or "log_rho" not in arr:
            raise tables.TableError(
                f"{path} holds an IR-drop table of model {model!r} from an older version; rebuild it with "
                "`reram-cosim circuit tabulate` (bench/fit_irdrop_table.py)"
            )
        sizes = tuple(int(s) for s in np.asarray(arr["size"].data))
        u = {s: np.asarray(arr[f"size{s}/u"].data, np.float64) for s in sizes}
        v = {s: np.asarray(arr[f"size{s}/v"].data, np.float64) for s in sizes}
        axes = {"level_table": [x for x in str(t.attrs.get("level_tables", "")).split(";") if x],
                "code_mix": [x for x in str(t.attrs.get("code_mixes", "")).split(";") if x],
                "density": [float(x) for x in np.asarray(arr["density"].data)]}
        return cls(sizes=sizes, log_rho=np.asarray(arr["log_rho"].data, float), u=u, v=v,
                   r_wire_max_ohm=float(t.attrs["r_wire_max_ohm"]),
                   g_range_s=(float(t.attrs["g_min_s"]), float(t.attrs["g_max_s"])),
                   r_wire_ohm=np.asarray(arr["r_wire_ohm"].data, float),
                   rms_error_rel=np.asarray(arr["rms_error_rel"].data, float),
                   rms_error_fullscale=np.asarray(arr["rms_error_fullscale"].data, float),
                   error_detail=np.asarray(arr["error_detail"].data, float), detail_axes=axes,
                   config=dict(t.config or {}), model=model)


# ----------------------------------------------------------------------------- building


def _homogeneous_log_b(size: int, log_rho: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``log B`` of the homogeneous ``size x size`` tile at each ``rho`` (1 ohm wires, every
    cell ``rho`` S), as rank-``rank`` SVD factors ``(points, size, rank)``, ``(points, rank, size)``."""
    torch = _torch()
    from crossbar.effective import effective_matrices
    from crossbar.nodal import CircuitConfig

    c = CircuitConfig(r_wire_row_ohm=1.0, r_wire_col_ohm=1.0)
    g = torch.exp(torch.as_tensor(log_rho, dtype=torch.float64))[:, None, None].expand(-1, size, size).contiguous()
    m = effective_matrices(g, c)
    lb = torch.log(m / (g * lines_attenuation(g.clone(), 1.0, 1.0))).numpy()
    uu, ss, vt = np.linalg.svd(lb)
    k = min(rank, size)
    return uu[:, :, :k] * ss[:, None, :k], vt[:, :k, :]


def heldout_tiles(levels, n: int, size: int, code_mix: str, rng: np.random.Generator) -> np.ndarray:
    """``(n, size, size)`` conductances, S: digits from ``code_mix`` (:data:`CODE_MIXES`), each
    cell resampled from its level's programmed samples in ``levels`` (a ``LevelTable``)."""
    nl = int(levels.levels)
    lv = rng.integers(0, nl, (n, size, size))
    if code_mix == "lrs_heavy":
        lv = np.where(rng.random((n, size, size)) < _LRS_FRACTION, nl - 1, lv)
    elif code_mix == "half_rows_high":
        lv[:, : size // 2] = nl - 1
    elif code_mix == "alt_cols_high":
        lv[:, :, ::2] = nl - 1
    elif code_mix == "rows_used_100of128":
        lv[:, (100 * size) // 128 :] = 0
    elif code_mix != "uniform":
        raise ConfigError(f"code_mix={code_mix!r} is invalid: must be one of {CODE_MIXES}")
    return np.asarray(levels.sample(lv, rng), dtype=np.float64)


def heldout_inputs(n: int, k: int, size: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """``(n, k, size)`` word-line voltages: each line driven with probability ``density``,
    U(-1, 1) V: signed, as the engine drives LayerNorm outputs (non-negative inputs let the
    errors of a column's cells average down and understated the table's error 2-4x)."""
    on = rng.random((n, k, size)) < density
    return np.where(on, rng.uniform(-1.0, 1.0, (n, k, size)), 0.0)


def heldout_errors(model, cfg: TabulateConfig, *, sizes=None, r_wire_ohm=None, progress: bool = False) -> dict[str, Any]:
    """Held-out error of ``model`` (a callable ``(g torch (T,R,C), r) -> M``) against the exact solver.

    Returns ``rel`` ``(sizes, r)`` (pooled RMS error / RMS actual column current),
    ``fullscale`` ``(sizes, r)`` and ``detail`` ``(sizes, r, tables, mixes, densities)``.
    """
    torch = _torch()
    from device.programming import LevelTable
    from crossbar.effective import effective_matrices
    from crossbar.nodal import CircuitConfig

    sizes = tuple(cfg.sizes if sizes is None else sizes)
    rs = tuple(cfg.r_wire_ohm if r_wire_ohm is None else r_wire_ohm)
    paths = cfg.level_paths()
    tabs = [LevelTable.load(p) for p in paths]
    dens = cfg.input_densities
    det = np.zeros((len(sizes), len(rs), len(tabs), len(CODE_MIXES), len(dens)))
    rel = np.zeros((len(sizes), len(rs)))
    fs = np.zeros((len(sizes), len(rs)))
    root = np.random.SeedSequence(cfg.seed)
    for si, size in enumerate(sizes):
        for ri, r in enumerate(rs):
            c = CircuitConfig(r_wire_row_ohm=r, r_wire_col_ohm=r)
            se = st = 0.0
            g_top = 0.0
            for li, lt in enumerate(tabs):
                g_top = max(g_top, float(np.max(lt.g_target_s)))
                for mi, mix in enumerate(CODE_MIXES):
                    rng = np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(size, ri, li, mi)))
                    g = heldout_tiles(lt, cfg.holdout, size, mix, rng)
                    gt = torch.from_numpy(g)
                    m = effective_matrices(gt, c).numpy()
                    ma = np.asarray(model(gt, r))
                    for di, d in enumerate(dens):
                        v = heldout_inputs(cfg.holdout, cfg.inputs_per_tile, size, d, rng)
                        i_true = np.einsum("tkr,trc->tkc", v, m)
                        i_mod = np.einsum("tkr,trc->tkc", v, ma)
                        e2, t2 = float(np.sum((i_mod - i_true) ** 2)), float(np.sum(i_true**2))
                        det[si, ri, li, mi, di] = math.sqrt(e2 / t2)
                        se, st = se + e2, st + t2
                    if progress:
                        print(f"  held out {size}x{size} {r:g} ohm {Path(paths[li]).name} {mix}: "
                              + " ".join(f"{100 * x:.2f}%" for x in det[si, ri, li, mi]), flush=True)
            n_el = len(tabs) * len(CODE_MIXES) * len(dens) * cfg.holdout * cfg.inputs_per_tile * size
            rel[si, ri] = math.sqrt(se / st)
            fs[si, ri] = math.sqrt(se / n_el) / (size * g_top * 1.0)
    return {"rel": rel, "fullscale": fs, "detail": det, "paths": [str(p) for p in paths]}


def build_table(cfg: TabulateConfig) -> IRDropTable:
    """Tabulate ``log B`` of the homogeneous tile (seconds); the held-out errors are left
    unmeasured (NaN, and -1 for ``rms_error_fullscale``): :func:`tabulate` measures them."""
    r_max = max(cfg.r_wire_ohm)
    # the grid spans rho for r in [r_max / 100, r_max] and mean conductances in the window, with
    # one extra point at each end for the cubic stencil; below it B is clamped (B -> 1)
    s_lo = math.log(r_max / 100 * cfg.g_min_s)
    s_hi = math.log(r_max * cfg.g_max_s)
    ds = math.log(cfg.rho_ratio)
    n = int(math.ceil((s_hi - s_lo) / ds)) + 3
    log_rho = s_lo - ds + ds * np.arange(n)
    u, v = {}, {}
    for size in cfg.sizes:
        u[size], v[size] = _homogeneous_log_b(size, log_rho, cfg.rank)
    shape = (len(cfg.sizes), len(cfg.r_wire_ohm))
    paths = cfg.level_paths()
    return IRDropTable(sizes=tuple(cfg.sizes), log_rho=log_rho, u=u, v=v, r_wire_max_ohm=float(r_max),
                       g_range_s=(cfg.g_min_s, cfg.g_max_s), r_wire_ohm=np.asarray(cfg.r_wire_ohm, float),
                       rms_error_rel=np.full(shape, np.nan), rms_error_fullscale=np.full(shape, -1.0),
                       error_detail=np.full(shape + (len(paths), len(CODE_MIXES), len(cfg.input_densities)), np.nan),
                       detail_axes={"level_table": [p.name for p in paths], "code_mix": list(CODE_MIXES),
                                    "density": list(cfg.input_densities)},
                       config=cfg.to_dict())


def tabulate(cfg: TabulateConfig, out: str | os.PathLike | None = None, *, progress: bool = True) -> IRDropTable:
    """Build the table, measure its held-out error (and that of ideal ``G``), save it to ``out``.

    The homogeneous tiles take seconds; the held-out measurement dominates (exact effective
    matrices of ``holdout`` tiles per (size, r, level table, code mix)).
    """
    if out is not None:
        from device.io import check_writable

        check_writable(out)
    table = build_table(cfg)
    h = heldout_errors(lambda g, r: table.effective_matrix(g, r, accuracy_guard=False), cfg, progress=progress)
    table.rms_error_rel, table.rms_error_fullscale, table.error_detail = h["rel"], h["fullscale"], h["detail"]
    table.detail_axes = {"level_table": [Path(p).name for p in h["paths"]], "code_mix": list(CODE_MIXES),
                         "density": list(cfg.input_densities)}
    if out is not None:
        table.save(out)
    return table


def format_errors(table: IRDropTable) -> str:
    """Text table of the held-out error (% of the RMS actual column current): pooled per size and
    r_wire, then the worst combination and the worst input density."""
    rs = table.r_wire_ohm
    lines = ["size  metric                 " + "  ".join(f"r={r:g}ohm".rjust(9) for r in rs)]
    dens = table.detail_axes.get("density", [])
    for si, s in enumerate(table.sizes):
        lines.append(f"{s:>4}  pooled                 " + "  ".join(f"{100 * x:8.2f}%" for x in table.rms_error_rel[si]))
        det = table.error_detail[si]
        if det.size:
            for di, d in enumerate(dens):
                worst = det[:, :, :, di].reshape(len(rs), -1).max(axis=1)
                lines.append(f"{s:>4}  worst, density {d:<4g}   " + "  ".join(f"{100 * x:8.2f}%" for x in worst))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- demo


def demo_figures(out_dir: str | os.PathLike, *, table_path: str | os.PathLike | None = None,
                 size: int = 64, r_wire_ohm: float = 1.0, seed: int = 0, n_inputs: int = 32) -> list[Path]:
    """IR-drop figures of one tile, and the printed error of the IR-drop models.

    The tile: ``size`` x ``size`` cells of uniformly random 2-bit levels drawn from the shipped
    write-verify table (``levels_b2``), ``r_wire_ohm`` per wire segment on word and bit lines,
    drivers at the left end of each word line, sense amplifiers (virtual ground) below the last
    row of each bit line. The defaults (64 x 64 at 1 ohm) are a tile the tabulated model accepts
    (:meth:`IRDropTable.check_accuracy`, kept on: a tile it refuses raises, as on a chip).
    ``irdrop_map.png``: the voltage lost along the lines and across each cell with every word
    line driven at the chip's read voltage (``CrossbarConfig.v_read_v``): the largest drop.
    ``irdrop_error_vs_position.png``: each column current's RMS error against the exact solver
    over ``n_inputs`` signed input vectors, U(-v_read, v_read) on every word line and on a random
    half of them (signed, as the engine drives LayerNorm outputs; :func:`heldout_inputs`: inputs
    of one sign let the errors of a column's cells add up alike and flatter the tabulated model),
    for three models (no wire resistance; each wire alone, no coupling between lines; the
    tabulated model, ``data/irdrop_default.h5`` unless ``table_path``), in % of the RMS exact
    column current; the printed numbers are the RMS over columns and inputs. Takes a few seconds.
    """
    torch = _torch()
    from crossbar import plots
    from crossbar.config import CrossbarConfig
    from crossbar.solver import CircuitConfig, effective_matrices, solve
    from device.programming import LevelTable

    out_dir = Path(out_dir)
    table = IRDropTable.load(Path(table_path) if table_path else DATA / "irdrop_default.h5")
    rng = np.random.default_rng(seed)
    g = heldout_tiles(LevelTable.load(DATA / "levels_b2.h5"), 1, size, "uniform", rng)
    circ = CircuitConfig(r_wire_row_ohm=r_wire_ohm, r_wire_col_ohm=r_wire_ohm)
    gt = torch.from_numpy(g)
    tabulated = table.effective_matrix(gt, circ)[0].numpy()  # before any file: raises where the table refuses the tile
    out_dir.mkdir(parents=True, exist_ok=True)
    v_read = CrossbarConfig().v_read_v
    v = np.full(size, v_read)
    sol = solve(g[0], v, circ, return_nodes=True)
    what = (f"{size}x{size} tile of uniformly random 2-bit levels (shipped write-verify table), "
            f"{r_wire_ohm:g} ohm per wire segment")
    files = [plots.plot_voltage_drop_map(
        sol.v_word_v, sol.v_bit_v, v, out_dir / "irdrop_map.png",
        title=f"IR drop in a {what}\nevery word line driven at the {v_read:g} V read voltage from its left end (the "
              "largest drop); each bit line sensed at virtual ground below its last row")]
    m = effective_matrices(gt, circ)[0].numpy()
    models = {
        "no wire resistance": g[0],
        "each wire alone (no coupling)": (gt * lines_attenuation(gt.clone(), r_wire_ohm, r_wire_ohm))[0].numpy(),
        "tabulated model (irdrop_default)": tabulated,
    }
    inputs = {f"signed inputs U(-{v_read:g}, {v_read:g}) V on every word line": 1.0,
              f"signed inputs U(-{v_read:g}, {v_read:g}) V on a random half of the word lines": 0.5}
    errors: dict[str, dict[str, np.ndarray]] = {}
    for inp, density in inputs.items():
        x = heldout_inputs(1, n_inputs, size, density, rng)[0] * v_read  # (n_inputs, size) volts
        i_true = x @ m
        scale = float(np.sqrt(np.mean(i_true**2)))
        errors[inp] = {name: 100.0 * np.sqrt(np.mean((x @ mm - i_true) ** 2, axis=0)) / scale
                       for name, mm in models.items()}
    files.append(plots.plot_column_error(
        errors, out_dir / "irdrop_error_vs_position.png",
        title=f"IR-drop models against the exact solver, RMS over {n_inputs} signed input vectors per panel\n{what}",
        ylabel="RMS column current error (% of RMS column current)"))
    for inp, by_model in errors.items():
        parts = [f"{name} {np.sqrt(np.mean(e**2)):.2f} %" for name, e in by_model.items()]
        print(f"IR-drop model error, {size}x{size} tile, {r_wire_ohm:g} ohm, {inp}, {n_inputs} vectors (RMS "
              "column-current error / RMS column current): " + ", ".join(parts))
    return files
