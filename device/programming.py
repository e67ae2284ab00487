"""Multi-level write-verify programming of ReRAM cells, level distributions and read-out errors.

:func:`program_levels` programs a population of simulated cells (the compact model of
:mod:`device.compact`, with device-to-device and cycle-to-cycle variation) into ``2**bits``
conductance levels between the LRS / HRS targets with incremental-step pulses and a read after
each pulse (bidirectional ISPP write-verify), and returns a :class:`LevelTable`: per-level
conductance samples, the normal and lognormal fits with their quality, the on/off ratio, the
pulses used and the read-out error rate between adjacent levels.

When each effect is sampled: programming variation (d2d, c2c, verify read noise) once, when a
cell is written; the samples stored in a :class:`LevelTable` are the *true* programmed
conductances at ``v_read_v`` (read noise of later reads is a separate effect of the reader).

Level indexing: level 0 is HRS (lowest conductance), level ``2**bits - 1`` is LRS.
A :class:`LevelTable` is the hand-off to the crossbar layer (``data/levels_b{1..4}.h5``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from device.compact import Waveform, integrate, set_limit_state
from device.config import (
    Config,
    ConfigError,
    check_choice,
    check_int_range,
    check_positive,
    check_range,
    config,
)

__all__ = [
    "ProgrammingConfig",
    "LevelTable",
    "LevelFit",
    "ProgrammingResult",
    "program_levels",
    "readout_error_rate",
    "cell_error_rate",
    "level_targets",
    "fit_levels",
    "ReadoutError",
    "empirical_readout_error",
    "clopper_pearson",
    "MAX_TABLE_BITS",
    "verify_half_window",
    "UnconvergedError",
]

#: largest bits per cell a level table may hold (measured tables: 32 levels of tech B = 5 bits);
#: the crossbar engine checks its own, smaller limit
MAX_TABLE_BITS = 8


@config
class ProgrammingConfig(Config):
    """Write-verify (ISPP) programming of multi-level cells, SI units."""

    #: bits stored per cell, 1..4 (2**bits levels)
    bits_per_cell: int = 2
    #: resistance target of the highest-conductance level (LRS), ohm
    r_lrs_ohm: float = 10e3
    #: resistance target of the lowest-conductance level (HRS), ohm; on/off = r_hrs / r_lrs
    #: (10 by default, the NeuroSim inference default on/off ratio)
    r_hrs_ohm: float = 100e3
    #: levels equally spaced in conductance (linear weights) or in resistance
    level_spacing: Literal["conductance", "resistance"] = "conductance"
    #: verify window: a cell is done when |g_read - g_target| <= tolerance_rel * g_target, and
    #: never wider than window_spacing_frac of the distance to the nearest other level
    tolerance_rel: float = 0.03
    #: verify half-window at most this fraction of the spacing to the nearest level (0.25: the
    #: windows of adjacent levels fill half the gap between them, leaving a margin of half the
    #: spacing; a window relative to the target alone touches its neighbour at 4 bits/cell)
    window_spacing_frac: float = 0.25
    #: reads averaged per verify (read noise falls as 1/sqrt(verify_reads)); 1 = one noisy read
    verify_reads: int = 4
    #: guard band: a verify accepts only inside the window shrunk by this many standard
    #: deviations of the averaged verify read (at most to half the window), so that a noisy read
    #: rarely accepts a cell that is really outside; 0 = none
    verify_guard_sigmas: float = 2.0
    #: state every cell starts from before write-verify: "lrs" (after a full SET) or "hrs"
    initial_state: Literal["lrs", "hrs"] = "lrs"
    #: amplitude of the first SET (positive) pulse of a run of SET pulses, V
    v_set_start_v: float = 1.05
    #: amplitude of the first RESET (negative) pulse of a run of RESET pulses, |V|
    v_reset_start_v: float = 1.0
    #: amplitude increment from one pulse to the next in the same direction, V (the first
    #: step; it halves at every change of direction, down to v_step_min_v)
    v_step_v: float = 0.01
    #: finest amplitude step, V: the resolution of the programming driver. A RESET of this
    #: model is self-limiting (it ends where the F_min gate closes, a state set by the
    #: amplitude alone), so a level is reached by RESET only if the amplitude can be set finely
    #: enough: about 1 mV moves a top-level cell by 2 %. Assumption: a 0.5 mV driver step
    v_step_min_v: float = 0.5e-3
    #: largest pulse amplitude, |V|
    v_max_v: float = 1.6
    #: flat-top duration of one pulse, s
    t_pulse_s: float = 100e-9
    #: rise and fall time of one pulse, s
    t_edge_s: float = 2e-9
    #: pulses allowed per cell before it is given up (reported as not converged)
    max_pulses: int = 300
    #: largest fraction of any level's cells that may end without converging (max_pulses
    #: reached) before the run is refused (UnconvergedError, exit 2, no table) unless the caller
    #: allows it (``allow_unconverged``, ``--allow-unconverged``). 2 %: the shipped 1-4 bit
    #: tables (512 cells a level) converge every cell; a level short of 2 % is a configuration
    #: that cannot reach it (a target outside what the series element lets a SET reach, too few
    #: pulses), not bad luck
    max_unconverged_fraction: float = 0.02
    #: verify / read-out voltage, V (0.1 V, Stanford-PKU / MemTorch read voltage); must not switch the cell
    v_read_v: float = 0.1
    #: duration of one read, s: a read must not move the gap by more than 0.001 nm over it
    t_read_s: float = 1e-6
    #: relative sigma of one read (read noise, normal, sampled at every read); an assumption
    #: (about 1 % is typical of HfOx read noise), not a published fit. The one read-noise setting
    #: of the device: it is stored in the level table (``LevelTable.read_noise_rel``) so that
    #: inference reads can use the same value as the verify reads did
    read_noise_rel: float = 0.01

    def __post_init__(self) -> None:
        check_int_range("bits_per_cell", self.bits_per_cell, 1, 4)
        check_positive("r_lrs_ohm", self.r_lrs_ohm)
        check_positive("r_hrs_ohm", self.r_hrs_ohm)
        if not self.r_hrs_ohm > self.r_lrs_ohm:
            raise ConfigError(
                f"r_hrs_ohm={self.r_hrs_ohm!r} is invalid: must be greater than r_lrs_ohm={self.r_lrs_ohm!r}"
            )
        check_choice("level_spacing", self.level_spacing, ("conductance", "resistance"))
        check_range("tolerance_rel", self.tolerance_rel, 0.0, 0.5, lo_open=True)
        check_range("window_spacing_frac", self.window_spacing_frac, 0.0, 0.5, lo_open=True)
        check_int_range("verify_reads", self.verify_reads, 1, 1024)
        check_range("verify_guard_sigmas", self.verify_guard_sigmas, 0.0, 10.0)
        check_choice("initial_state", self.initial_state, ("lrs", "hrs"))
        check_positive("v_set_start_v", self.v_set_start_v)
        check_positive("v_reset_start_v", self.v_reset_start_v)
        check_range("v_step_v", self.v_step_v, 0.0, 1.0, lo_open=True)
        check_range("v_step_min_v", self.v_step_min_v, 0.0, self.v_step_v, lo_open=True)
        check_range("v_max_v", self.v_max_v, max(self.v_set_start_v, self.v_reset_start_v), 10.0)
        check_positive("t_pulse_s", self.t_pulse_s)
        check_positive("t_edge_s", self.t_edge_s)
        check_int_range("max_pulses", self.max_pulses, 1, 100_000)
        check_range("max_unconverged_fraction", self.max_unconverged_fraction, 0.0, 1.0)
        check_positive("v_read_v", self.v_read_v)
        check_positive("t_read_s", self.t_read_s)
        check_range("read_noise_rel", self.read_noise_rel, 0.0, 0.5)

    @property
    def levels(self) -> int:
        return 2**self.bits_per_cell


def verify_half_window(targets: np.ndarray, cfg: ProgrammingConfig) -> np.ndarray:
    """(levels,) half-width of each level's verify window, S: ``tolerance_rel * target``, capped
    at ``window_spacing_frac`` times the distance to the nearest other level."""
    t = np.asarray(targets, float)
    gap = np.full(t.size, np.inf)
    if t.size > 1:
        d = np.diff(t)
        gap = np.minimum(np.concatenate([[np.inf], d]), np.concatenate([d, [np.inf]]))
    return np.minimum(cfg.tolerance_rel * t, cfg.window_spacing_frac * gap)


def level_targets(bits_per_cell: int, g_off_s: float, g_on_s: float, spacing: str = "conductance") -> np.ndarray:
    """(2**bits,) ascending target conductances, S, from ``g_off_s`` (level 0) to ``g_on_s``."""
    check_int_range("bits_per_cell", bits_per_cell, 1, 4)
    check_positive("g_off_s", g_off_s)
    check_positive("g_on_s", g_on_s)
    if not g_on_s > g_off_s:
        raise ConfigError(f"g_on_s={g_on_s!r} is invalid: must be greater than g_off_s={g_off_s!r}")
    n = 2**bits_per_cell
    if spacing == "conductance":
        return np.linspace(g_off_s, g_on_s, n)
    if spacing == "resistance":
        return np.sort(1.0 / np.linspace(1.0 / g_off_s, 1.0 / g_on_s, n))
    raise ConfigError(f"level_spacing={spacing!r} is invalid: must be one of 'conductance', 'resistance'")


@dataclasses.dataclass(frozen=True)
class LevelTable:
    """Conductance distributions of the ``2**bits_per_cell`` levels of a multi-level cell.

    ``g_target_s``: (levels,) ascending, level 0 = HRS. ``g_samples_s``: (levels, n_devices)
    conductances read at the read voltage after programming. ``g_sa0_s`` / ``g_sa1_s``: the
    conductance of a cell stuck at HRS / LRS (taken as the extreme level targets: a stuck cell
    reads as digit 0 / the largest digit). ``pulses``: (levels, n_devices) pulses used, or None.
    """

    bits_per_cell: int
    g_target_s: np.ndarray
    g_samples_s: np.ndarray
    g_sa0_s: float
    g_sa1_s: float
    source: str
    pulses: np.ndarray | None = None
    #: measured tables (:func:`device.calibrate.calibrate_levels`): the input file's label of each
    #: level, in level order (level 0 = lowest mean conductance); None for simulated tables
    labels: tuple[str, ...] | None = None
    #: measured tables: every measured conductance (S), flat, and its level index; the statistics
    #: (``g_mean_s``, ``g_std_s``, fits) and :meth:`sample` then use these exact samples, while
    #: ``g_samples_s`` holds each level's empirical quantile function on a common grid (what
    #: :meth:`sample_torch`, the engine's draw, resamples: the same distribution, interpolated)
    g_measured_s: np.ndarray | None = None
    measured_level: np.ndarray | None = None
    #: relative sigma of one read of these cells (the verify reads' setting; 0 = not known):
    #: the device's one read-noise figure, for inference reads too
    read_noise_rel: float = 0.0
    #: where ``read_noise_rel`` comes from (measured tables: "repeated reads ...", "given ..." or
    #: "none ..."; "" = not recorded)
    read_noise_source: str = ""
    #: the read voltage at which the conductances were verified and recorded, V (write-verify:
    #: ``ProgrammingConfig.v_read_v``, 0.1 V by default); None = not recorded (synthetic and
    #: measured tables without it): the engine then takes them as read at the chip's read voltage.
    #: With nonlinear (sinh) cells the chip's read sees another chord conductance
    #: (:func:`crossbar.pipeline.read_voltage_step` converts, the one place)
    v_read_v: float | None = None
    #: (levels,) half-width of each level's write-verify window, S (:func:`verify_half_window`);
    #: None where not known (measured tables). A re-verify after relaxation uses the same window
    verify_half_window_s: np.ndarray | None = None
    #: (levels, n_devices) True where write-verify converged (None: every sample counts, e.g.
    #: measured and synthetic tables). The fits use converged cells only; the samples the
    #: engine draws and the counted read-out errors keep every cell (the chip has them)
    converged: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_int_range("bits_per_cell", self.bits_per_cell, 1, MAX_TABLE_BITS)
        t = np.asarray(self.g_target_s, float)
        s = np.asarray(self.g_samples_s, float)
        object.__setattr__(self, "g_target_s", t)
        object.__setattr__(self, "g_samples_s", s)
        n = 2**self.bits_per_cell
        if t.shape != (n,) or s.ndim != 2 or s.shape[0] != n or s.shape[1] < 2:
            raise ValueError(
                f"a {self.bits_per_cell}-bit level table needs g_target_s ({n},) and g_samples_s ({n}, >=2); "
                f"got {t.shape} and {s.shape}"
            )
        if not (np.all(np.isfinite(s)) and np.all(s > 0) and np.all(t > 0)):
            raise ValueError("level conductances must be finite and > 0 (a resistance must be positive)")
        if np.any(np.diff(t) <= 0):
            raise ValueError("g_target_s must be strictly ascending (level 0 = HRS)")
        if not (self.g_sa0_s > 0 and self.g_sa1_s > 0):
            raise ValueError("g_sa0_s and g_sa1_s must be > 0")
        if self.v_read_v is not None:
            v = float(self.v_read_v)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"v_read_v={self.v_read_v!r} is invalid: must be a finite voltage > 0 (or None)")
            object.__setattr__(self, "v_read_v", v)
        if self.converged is not None:
            c = np.asarray(self.converged).astype(bool)
            if c.shape != s.shape:
                raise ValueError(f"converged must have the shape of g_samples_s {s.shape}, got {c.shape}")
            object.__setattr__(self, "converged", c)
        if self.labels is not None:
            lab = tuple(str(x) for x in self.labels)
            if len(lab) != n or len(set(lab)) != n:
                raise ValueError(f"labels must hold {n} distinct level labels, got {lab!r}")
            object.__setattr__(self, "labels", lab)
        if self.verify_half_window_s is not None:
            hw = np.asarray(self.verify_half_window_s, float)
            if hw.shape != (n,) or not (np.all(np.isfinite(hw)) and np.all(hw > 0)):
                raise ValueError(f"verify_half_window_s must hold {n} positive half-widths (S)")
            object.__setattr__(self, "verify_half_window_s", hw)
        if (self.g_measured_s is None) != (self.measured_level is None):
            raise ValueError("g_measured_s and measured_level go together")
        if self.g_measured_s is not None:
            gm = np.asarray(self.g_measured_s, float)
            ml = np.asarray(self.measured_level, np.int64)
            if gm.ndim != 1 or gm.shape != ml.shape:
                raise ValueError("g_measured_s and measured_level must be 1-d arrays of one length")
            if not (np.all(np.isfinite(gm)) and np.all(gm > 0)):
                raise ValueError("measured conductances must be finite and > 0")
            counts = np.bincount(ml, minlength=n) if ml.size and ml.min() >= 0 else np.zeros(0)
            if counts.size != n or np.any(counts < 2):
                raise ValueError(f"measured_level must index levels 0..{n - 1}, each with >= 2 samples")
            order = np.lexsort((gm, ml))
            object.__setattr__(self, "g_measured_s", gm[order])
            object.__setattr__(self, "measured_level", ml[order])

    # -- derived statistics -------------------------------------------------------------------
    @property
    def levels(self) -> int:
        return self.g_target_s.size

    @property
    def n_devices(self) -> int:
        return self.g_samples_s.shape[1]

    @property
    def is_measured(self) -> bool:
        """True for a table calibrated from measured conductances (exact samples kept)."""
        return self.g_measured_s is not None

    def level_samples(self, k: int) -> np.ndarray:
        """The samples of level ``k`` (S): the measured ones if kept, else ``g_samples_s[k]``."""
        if self.g_measured_s is None:
            return self.g_samples_s[k]
        return self.g_measured_s[self.measured_level == k]

    def fit_samples(self, k: int) -> np.ndarray:
        """The samples of level ``k`` the fits use (S): the converged cells where the table
        records convergence (unconverged ones would distort a parametric tail), else all."""
        if self.converged is None or self.g_measured_s is not None or self.converged[k].sum() < 2:
            return self.level_samples(k)  # (a level with < 2 converged cells cannot be fitted on them)
        return self.g_samples_s[k][self.converged[k]]

    @property
    def unconverged_per_level(self) -> np.ndarray:
        """(levels,) cells that did not converge (0 where the table records no convergence)."""
        if self.converged is None:
            return np.zeros(self.levels, np.int64)
        return (~self.converged).sum(axis=1)

    def _per_level(self, f) -> np.ndarray:
        if self.g_measured_s is None:
            return f(self.g_samples_s, axis=1)
        return np.array([f(self.level_samples(k)) for k in range(self.levels)])

    @property
    def n_per_level(self) -> np.ndarray:
        """(levels,) samples per level."""
        if self.g_measured_s is None:
            return np.full(self.levels, self.n_devices)
        return np.bincount(self.measured_level, minlength=self.levels)

    @property
    def g_mean_s(self) -> np.ndarray:
        return self._per_level(np.mean)

    @property
    def g_std_s(self) -> np.ndarray:
        return self._per_level(lambda x, axis=None: np.std(x, axis=axis, ddof=1))

    @property
    def ln_mu(self) -> np.ndarray:
        """(levels,) mean of ln(g / 1 S) of the fit samples (:meth:`fit_samples`)."""
        return np.array([np.mean(np.log(self.fit_samples(k))) for k in range(self.levels)])

    @property
    def ln_sigma(self) -> np.ndarray:
        """(levels,) standard deviation of ln(g) of the fit samples (:meth:`fit_samples`)."""
        return np.array([np.std(np.log(self.fit_samples(k)), ddof=1) for k in range(self.levels)])

    @property
    def fit_mean_s(self) -> np.ndarray:
        """(levels,) mean of the fit samples, S (converged cells)."""
        return np.array([np.mean(self.fit_samples(k)) for k in range(self.levels)])

    @property
    def fit_std_s(self) -> np.ndarray:
        """(levels,) standard deviation of the fit samples, S (converged cells)."""
        return np.array([np.std(self.fit_samples(k), ddof=1) for k in range(self.levels)])

    @property
    def on_off_ratio(self) -> float:
        """Mean conductance of the LRS level over that of the HRS level."""
        m = self.g_mean_s
        return float(m[-1] / m[0])

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, levels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Conductances (S) for integer level indices ``levels`` (any shape), each drawn by
        resampling the programmed samples of its level (uniformly, with replacement)."""
        lv = np.asarray(levels)
        if lv.dtype.kind not in "iu":
            raise ValueError(f"levels must be integers, got dtype {lv.dtype}")
        if lv.size and (lv.min() < 0 or lv.max() >= self.levels):
            raise ValueError(f"level indices must be in [0, {self.levels - 1}], got [{lv.min()}, {lv.max()}]")
        if self.g_measured_s is not None:
            counts = self.n_per_level
            start = np.concatenate([[0], np.cumsum(counts)[:-1]])
            idx = rng.integers(0, counts[lv], size=lv.shape)
            return self.g_measured_s[start[lv] + idx]
        idx = rng.integers(0, self.n_devices, size=lv.shape)
        return self.g_samples_s[lv, idx]

    def sample_torch(self, levels: "torch.Tensor", generator: Any, dtype: Any = None) -> "torch.Tensor":
        """:meth:`sample` as a tensor function (the engine's programming variation step):
        conductances (S) for the integer ``levels`` (any shape), each resampled uniformly with
        replacement from its level's programmed samples.

        ``generator``: a ``torch.Generator`` on ``levels``' device (GPU draws), or a
        ``numpy.random.Generator`` (CPU draws: numpy's PCG64 integers are ~2.5x faster than
        torch's CPU ``randint``). ``dtype``: float64 (default) or float32. Levels without spread
        (every sample of each level equal, e.g. the ideal tables) read their target and draw
        nothing."""
        import torch

        dtype = torch.float64 if dtype is None else dtype
        if levels.dtype.is_floating_point or levels.dtype == torch.bool:
            raise ValueError(f"levels must be integers, got dtype {levels.dtype}")
        if levels.numel() and (int(levels.min()) < 0 or int(levels.max()) >= self.levels):
            raise ValueError(f"level indices must be in [0, {self.levels - 1}], got [{int(levels.min())}, {int(levels.max())}]")
        g = np.ascontiguousarray(self.g_samples_s, dtype=np.float64 if dtype == torch.float64 else np.float32)
        if bool((g == g[:, :1]).all()):
            table = torch.as_tensor(g[:, 0], device=levels.device)
            return table.index_select(0, levels.reshape(-1).to(torch.int32)).view(levels.shape)
        n = self.n_devices
        if isinstance(generator, np.random.Generator):
            if levels.device.type != "cpu":
                raise ValueError("a numpy Generator draws on the CPU: pass a torch.Generator for tensors on a GPU")
            it = np.int32 if self.levels * n >= 2**15 else np.int16
            idx = generator.integers(0, n, levels.numel(), dtype=it)
            idx += levels.reshape(-1).numpy().astype(it) * it(n)
            return torch.from_numpy(np.take(g.reshape(-1), idx)).view(levels.shape)
        table = torch.as_tensor(g, device=levels.device)
        flat = levels.reshape(-1)
        idx = torch.randint(0, n, flat.shape, generator=generator, device=levels.device, dtype=torch.int32)
        idx.add_(flat.to(torch.int32) * n)
        return table.view(-1).index_select(0, idx).view(levels.shape)

    @classmethod
    def synthetic(
        cls,
        *,
        bits_per_cell: int,
        g_on_s: float,
        g_off_s: float,
        sigma_rel: float,
        distribution: Literal["lognormal", "normal"] = "lognormal",
        n_samples: int = 4096,
        rng: np.random.Generator,
        spacing: str = "conductance",
        v_read_v: float | None = None,
    ) -> "LevelTable":
        """An analytic level table: targets equally spaced (in conductance by default) from
        ``g_off_s`` to ``g_on_s``; each level's samples have mean = target and standard
        deviation ``sigma_rel * target`` (lognormal with ``sigma_ln = sqrt(ln(1 + sigma_rel^2))``
        and ``mu = ln(target) - sigma_ln^2 / 2``, or normal, clipped at 1e-6 of the target so
        conductances stay positive). For sigma and on/off sweeps. ``v_read_v``: the read voltage
        the conductances stand for (None: not stated)."""
        check_range("sigma_rel", sigma_rel, 0.0, 1.0)
        check_int_range("n_samples", n_samples, 2)
        check_choice("distribution", distribution, ("lognormal", "normal"))
        t = level_targets(bits_per_cell, g_off_s, g_on_s, spacing)
        z = rng.standard_normal((t.size, n_samples))
        if distribution == "lognormal":
            s = math.sqrt(math.log1p(sigma_rel**2))
            g = t[:, None] * np.exp(s * z - 0.5 * s * s)
        else:
            g = np.maximum(t[:, None] * (1.0 + sigma_rel * z), 1e-6 * t[:, None])
        return cls(
            bits_per_cell=bits_per_cell,
            g_target_s=t,
            g_samples_s=g,
            g_sa0_s=float(t[0]),
            g_sa1_s=float(t[-1]),
            source="synthetic",
            v_read_v=v_read_v,
        )

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | Path, *, config: Any = None, extra: dict[str, Any] | None = None, attrs: dict[str, Any] | None = None,
             ngspice_version: str | None = None, netlist: str | None = None) -> Path:
        """Write a ``levels`` table (see :mod:`device.tables`) atomically; return its path.
        ``ngspice_version`` / ``netlist``: provenance of a table programmed through ngspice."""
        from device import tables as T

        pulses = np.zeros(self.g_samples_s.shape, np.int32) if self.pulses is None else np.asarray(self.pulses, np.int32)
        fits = fit_levels(self)
        err = readout_error_rate(self)
        arrays = {
            "level": T.Array(np.arange(self.levels), "index"),
            "g_target_s": T.Array(self.g_target_s, "S", ("level",), "target conductance per level (0 = HRS)"),
            "g_s": T.Array(self.g_samples_s, "S", ("level", "device"), "programmed conductance read at v_read"),
            "r_ohm": T.Array(1.0 / self.g_samples_s, "ohm", ("level", "device"), "programmed resistance read at v_read"),
            "pulses": T.Array(pulses, "1", ("level", "device"), "write pulses used (0: not programmed, synthetic)"),
            "g_mean_s": T.Array(self.g_mean_s, "S", ("level",), "sample mean"),
            "g_std_s": T.Array(self.g_std_s, "S", ("level",), "sample standard deviation"),
            "ln_mu": T.Array(self.ln_mu, "1", ("level",), "mean of ln(g / 1 S) (lognormal fit, converged cells)"),
            "ln_sigma": T.Array(self.ln_sigma, "1", ("level",), "standard deviation of ln(g) (lognormal fit, converged cells)"),
            "ks_normal": T.Array(np.array([f.ks_normal for f in fits]), "1", ("level",), "Kolmogorov-Smirnov statistic of the normal fit"),
            "ks_lognormal": T.Array(np.array([f.ks_lognormal for f in fits]), "1", ("level",), "Kolmogorov-Smirnov statistic of the lognormal fit"),
            "boundary": T.Array(np.arange(self.levels - 1), "index"),
            "readout_error_rate": T.Array(err, "1", ("boundary",), "probability of reading a cell as its neighbour across boundary k|k+1 (lognormal fits of the converged cells, midpoint thresholds)"),
        }
        emp = empirical_readout_error(self)
        arrays.update({
            "readout_error_rate_lognormal": T.Array(readout_error_rate(self, "lognormal"), "1", ("boundary",), "readout_error_rate from the lognormal fits (extrapolated tails: indicative only)"),
            "threshold_s": T.Array(emp.threshold_s, "S", ("boundary",), "read-out threshold between levels k and k+1 used for the empirical error"),
            "readout_errors": T.Array(emp.errors, "1", ("boundary",), "samples of levels k and k+1 read on the wrong side of threshold k"),
            "readout_trials": T.Array(emp.trials, "1", ("boundary",), "samples of levels k and k+1"),
            "readout_error_empirical": T.Array(emp.rate, "1", ("boundary",), "readout_errors / readout_trials"),
            "readout_error_ci_low": T.Array(emp.ci_low, "1", ("boundary",), f"Clopper-Pearson {emp.confidence:g} lower bound"),
            "readout_error_ci_high": T.Array(emp.ci_high, "1", ("boundary",), f"Clopper-Pearson {emp.confidence:g} upper bound"),
            "n_samples": T.Array(self.n_per_level, "1", ("level",), "samples per level"),
            "g_mean_data_s": T.Array(self.g_mean_s, "S", ("level",), "mean of the level's samples (measured ones where kept)"),
        })
        if self.converged is not None:
            arrays["converged"] = T.Array(self.converged.astype(np.int8), "1", ("level", "device"), "1 if the verify window was reached")
            arrays["unconverged"] = T.Array(self.unconverged_per_level, "1", ("level",), "cells that did not converge (kept in g_s, left out of the fits)")
        if self.labels is not None:
            arrays["label"] = T.Array(np.array(self.labels, dtype=str), "text", ("level",), "the input file's label of each level")
        if self.verify_half_window_s is not None:
            arrays["verify_half_window_s"] = T.Array(self.verify_half_window_s, "S", ("level",), "half-width of the write-verify window")
        if self.g_measured_s is not None:
            arrays["g_measured_s"] = T.Array(self.g_measured_s, "S", ("sample",), "every measured conductance, sorted by level then value")
            arrays["measured_level"] = T.Array(self.measured_level.astype(np.int32), "index", ("sample",), "level of each measured conductance")
        for k, v in (extra or {}).items():
            arrays[k] = v
        a = {
            "bits_per_cell": self.bits_per_cell,
            "g_sa0_s": float(self.g_sa0_s),
            "g_sa1_s": float(self.g_sa1_s),
            "source": self.source,
            "on_off_ratio": self.on_off_ratio,
            "read_noise_rel": float(self.read_noise_rel),
        }
        if self.read_noise_source:
            a["read_noise_source"] = self.read_noise_source
        units = {"g_sa0_s": "S", "g_sa1_s": "S", "on_off_ratio": "1", "read_noise_rel": "1"}
        if self.v_read_v is not None:
            # the read voltage the conductances were verified at: the crossbar converts from it
            a["v_read_v"] = float(self.v_read_v)
            units["v_read_v"] = "V"
        a["attr_units"] = units
        a.update(attrs or {})
        return T.write_table(path, kind="levels", arrays=arrays, config=config, attrs=a, ngspice_version=ngspice_version,
                             netlist=netlist)

    @classmethod
    def load(cls, path: str | Path) -> "LevelTable":
        """Read a ``levels`` table written by :meth:`save` (validated first). ``path`` is a file,
        or the name of a shipped table (``"levels_b2"``; :func:`device.data.resolve_table`)."""
        from device import tables as T
        from device.data import resolve_table

        path = resolve_table(path)
        t = T.read_table(path, kind="levels")
        g = np.asarray(t["g_s"], float)
        bits = int(t.attrs.get("bits_per_cell", round(math.log2(g.shape[0]))))
        g_t = np.asarray(t["g_target_s"], float)
        return cls(
            bits_per_cell=bits,
            g_target_s=g_t,
            g_samples_s=g,
            g_sa0_s=float(t.attrs.get("g_sa0_s", g_t[0])),
            g_sa1_s=float(t.attrs.get("g_sa1_s", g_t[-1])),
            source=str(Path(path)),
            pulses=np.asarray(t["pulses"]),
            labels=tuple(str(x) for x in t["label"]) if "label" in t.arrays else None,
            g_measured_s=np.asarray(t["g_measured_s"], float) if "g_measured_s" in t.arrays else None,
            measured_level=np.asarray(t["measured_level"], np.int64) if "measured_level" in t.arrays else None,
            read_noise_rel=_table_read_noise(t),
            read_noise_source=str(t.attrs.get("read_noise_source", "")),
            v_read_v=_table_read_voltage(t),
            verify_half_window_s=_table_verify_window(t, g_t),
            converged=np.asarray(t["converged"]).astype(bool) if "converged" in t.arrays else None,
        )


def _table_read_voltage(t: Any) -> float | None:
    """The table's read voltage: its ``v_read_v`` attribute, else the write-verify config that
    made it (tables written before the attribute existed), else None (not recorded)."""
    if "v_read_v" in t.attrs:
        return float(t.attrs["v_read_v"])
    prog = t.config.get("programming") if isinstance(t.config, dict) else None
    v = prog.get("v_read_v") if isinstance(prog, dict) else None
    return float(v) if v is not None else None


def _table_verify_window(t: Any, targets: np.ndarray) -> np.ndarray | None:
    """The stored write-verify half-windows, or those the table's recorded programming config
    implies (tables written before they were stored); None for measured tables."""
    if "verify_half_window_s" in t.arrays:
        return np.asarray(t["verify_half_window_s"], float)
    prog = t.config.get("programming") if isinstance(t.config, dict) else None
    if not isinstance(prog, dict):
        return None
    try:
        cfg = ProgrammingConfig.from_dict(prog)
    except ConfigError:
        return None
    return verify_half_window(targets, cfg)


def _table_read_noise(t: Any) -> float:
    if "read_noise_rel" in t.attrs:
        return float(t.attrs["read_noise_rel"])
    prog = t.config.get("programming") if isinstance(t.config, dict) else None
    return float(prog.get("read_noise_rel", 0.0)) if isinstance(prog, dict) else 0.0


@dataclasses.dataclass(frozen=True)
class LevelFit:
    """Normal and lognormal fits of one level, with their Kolmogorov-Smirnov statistics and
    p-values (parameters estimated from the same samples, so the p-values are optimistic)."""

    level: int
    mean_s: float
    std_s: float
    ln_mu: float
    ln_sigma: float
    ks_normal: float
    p_normal: float
    ks_lognormal: float
    p_lognormal: float

    @property
    def better(self) -> str:
        return "lognormal" if self.ks_lognormal <= self.ks_normal else "normal"


def clopper_pearson(errors: np.ndarray, trials: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) two-sided binomial confidence interval of ``errors / trials``.

    Returns ``(low, high)`` arrays: ``low = Beta(a/2; k, n-k+1)``, ``high = Beta(1-a/2; k+1, n-k)``
    quantiles with ``a = 1 - confidence`` (0 when k = 0, 1 when k = n). Conservative: covers at
    least ``confidence`` for every true rate, which matters here because the rates of interest are
    near 0 (a normal-approximation interval collapses to [0, 0] when no error was seen)."""
    from scipy.stats import beta

    check_range("confidence", confidence, 0.0, 1.0, lo_open=True, hi_open=True)
    k = np.asarray(errors, float)
    n = np.asarray(trials, float)
    a = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, beta.ppf(a / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - a / 2, k + 1, n - k), 1.0)
    return np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=1.0)


@dataclasses.dataclass(frozen=True)
class ReadoutError:
    """Empirical read-out error between adjacent levels, counted on the samples.

    Entry ``k`` concerns boundary k|k+1: ``errors`` samples of level k read above ``threshold_s[k]``
    plus samples of level k+1 read below it, out of ``trials`` (the samples of both levels);
    ``rate = errors / trials`` with its Clopper-Pearson interval ``[ci_low, ci_high]``. No tail
    model is involved, so a rate of 0 means "below about 3 / trials" (the upper bound says how far
    below), never 1e-181."""

    threshold_s: np.ndarray
    errors: np.ndarray
    trials: np.ndarray
    rate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    confidence: float
    thresholds: str


def empirical_readout_error(
    table: "LevelTable",
    *,
    thresholds: Literal["midpoint", "optimal"] | np.ndarray = "midpoint",
    confidence: float = 0.95,
) -> ReadoutError:
    """Empirical adjacent-level read-out error of ``table`` with confidence intervals.

    ``thresholds``: ``"midpoint"`` (halfway between the adjacent levels' mean conductances; what
    a reference-cell sense amplifier with equally spaced references does), ``"optimal"`` (for each
    boundary, the threshold between the two levels' sorted samples that misreads the fewest of
    them: optimistic, since it is chosen on the same samples), or an explicit ``(levels-1,)`` array
    in S. Uses the measured samples where the table keeps them (:attr:`LevelTable.g_measured_s`).
    """
    n = table.levels
    means = table.g_mean_s
    if isinstance(thresholds, str):
        check_choice("thresholds", thresholds, ("midpoint", "optimal"))
        th = 0.5 * (means[:-1] + means[1:])
        if thresholds == "optimal":
            th = th.copy()
            for k in range(n - 1):
                lo, hi = np.sort(table.level_samples(k)), np.sort(table.level_samples(k + 1))
                cand = np.unique(np.concatenate([lo, hi]))
                cand = np.concatenate([[th[k]], 0.5 * (cand[:-1] + cand[1:])])
                cand = cand[(cand >= means[k]) & (cand <= means[k + 1])]
                if cand.size == 0:
                    continue
                err = (lo.size - np.searchsorted(lo, cand, side="right")) + np.searchsorted(hi, cand, side="left")
                th[k] = cand[int(np.argmin(err))]
        name = thresholds
    else:
        th = np.asarray(thresholds, float)
        if th.shape != (n - 1,) or np.any(np.diff(th) <= 0):
            raise ConfigError(f"thresholds must be {n - 1} ascending conductances, got shape {th.shape}")
        name = "given"
    errors = np.zeros(n - 1, np.int64)
    trials = np.zeros(n - 1, np.int64)
    for k in range(n - 1):
        lo, hi = table.level_samples(k), table.level_samples(k + 1)
        errors[k] = int((lo > th[k]).sum() + (hi < th[k]).sum())
        trials[k] = lo.size + hi.size
    lo_ci, hi_ci = clopper_pearson(errors, trials, confidence)
    return ReadoutError(th, errors, trials, errors / trials, lo_ci, hi_ci, float(confidence), name)


def fit_levels(table: LevelTable) -> list[LevelFit]:
    """Per-level normal and lognormal fits with KS goodness of fit, on the converged cells
    (:meth:`LevelTable.fit_samples`)."""
    from scipy import stats

    out = []
    for k in range(table.levels):
        g = table.fit_samples(k)
        m, s = float(g.mean()), float(g.std(ddof=1))
        lg = np.log(g)
        lm, ls = float(lg.mean()), float(lg.std(ddof=1))
        if s > 0:
            kn = stats.kstest(g, "norm", args=(m, s))
            kl = stats.kstest(lg, "norm", args=(lm, ls))
            ksn, pn, ksl, pl = float(kn.statistic), float(kn.pvalue), float(kl.statistic), float(kl.pvalue)
        else:
            ksn = ksl = 0.0
            pn = pl = 1.0
        out.append(LevelFit(k, m, s, lm, ls, ksn, pn, ksl, pl))
    return out


def _thresholds(table: LevelTable) -> np.ndarray:
    t = table.g_target_s
    return 0.5 * (t[:-1] + t[1:])


def readout_error_rate(table: LevelTable, method: Literal["lognormal", "normal", "empirical"] = "lognormal") -> np.ndarray:
    """(levels-1,) read-out error rate across each boundary between adjacent levels.

    Thresholds are the midpoints between adjacent target conductances. Entry ``k`` is the mean of
    P(a cell of level k reads above threshold k) and P(a cell of level k+1 reads below it): the
    probability that a cell programmed to one of the two levels (equally likely) is read as the
    other. ``method``: from the per-level lognormal (default) or normal fits of the converged
    cells (:meth:`LevelTable.fit_samples`), which resolve tails beyond the sample size, or
    counted on all the samples (``"empirical"``).
    """
    from scipy.special import ndtr

    th = _thresholds(table)
    if method == "empirical":
        up = np.array([(table.level_samples(k) > th[k]).mean() for k in range(table.levels - 1)])
        down = np.array([(table.level_samples(k + 1) < th[k]).mean() for k in range(table.levels - 1)])
    elif method == "lognormal":
        mu, sg = table.ln_mu, np.maximum(table.ln_sigma, 1e-300)
        lt = np.log(th)
        up = ndtr(-(lt - mu[:-1]) / sg[:-1])
        down = ndtr((lt - mu[1:]) / sg[1:])
    elif method == "normal":
        mu, sg = table.fit_mean_s, np.maximum(table.fit_std_s, 1e-300)
        up = ndtr(-(th - mu[:-1]) / sg[:-1])
        down = ndtr((th - mu[1:]) / sg[1:])
    else:
        raise ConfigError(f"method={method!r} is invalid: must be one of 'lognormal', 'normal', 'empirical'")
    return 0.5 * (up + down)


def cell_error_rate(table: LevelTable, method: Literal["lognormal", "normal", "empirical"] = "lognormal") -> float:
    """Probability that a cell holding a uniformly random level is read as another level
    (midpoint thresholds): the sum over boundaries of both crossing probabilities / levels."""
    return float(2.0 * readout_error_rate(table, method).sum() / table.levels)


@dataclasses.dataclass(frozen=True)
class ProgrammingResult:
    """Outcome of :func:`program_levels`."""

    table: LevelTable
    config: ProgrammingConfig
    fits: list[LevelFit]
    pulses: np.ndarray  #: (levels, n_devices) pulses applied per cell
    converged: np.ndarray  #: (levels, n_devices) True where the verify window was reached
    error_rate: np.ndarray  #: (levels-1,) readout error rate per boundary (lognormal fits)
    model_config: Any = None
    #: what applied the pulses and reads: "python" (the compact model) or "spice" (ngspice)
    engine: str = "python"
    #: the ngspice version of an ``engine="spice"`` run (None otherwise)
    ngspice_version: str | None = None
    #: a representative ngspice deck of such a run (one cell, one unit pulse), for provenance
    netlist: str | None = None
    #: True when the caller let the run through with more unconverged cells than
    #: ``config.max_unconverged_fraction`` allows (recorded in the saved table)
    unconverged_allowed: bool = False

    @property
    def on_off_ratio(self) -> float:
        return self.table.on_off_ratio

    @property
    def unconverged_fraction(self) -> np.ndarray:
        """(levels,) fraction of each level's cells that did not converge within max_pulses."""
        return 1.0 - self.converged.mean(axis=1)

    @property
    def outside_window_fraction(self) -> np.ndarray:
        """(levels,) fraction of the converged cells whose true conductance lies outside the
        verify window (a noisy verify read accepted them)."""
        hw = verify_half_window(self.table.g_target_s, self.config)
        out = np.abs(self.table.g_samples_s - self.table.g_target_s[:, None]) > hw[:, None]
        c = self.converged
        return (out & c).sum(axis=1) / np.maximum(c.sum(axis=1), 1)

    def save(self, path: str | Path, *, seed: int | None = None) -> Path:
        from device import tables as T

        cfg = {"programming": self.config.to_dict(), "seed": seed, "engine": self.engine}
        if self.model_config is not None:
            cfg["model"] = self.model_config.to_dict()
            cfg["model_name"] = self.model_config.model().name
        attrs = {
            "converged_fraction": float(self.converged.mean()),
            "unconverged_cells": int((~self.converged).sum()),
            "max_unconverged_fraction": float(self.config.max_unconverged_fraction),
            "unconverged_allowed": bool(self.unconverged_allowed),
            "engine": self.engine,
        }
        extra = {
            "outside_window_fraction": T.Array(self.outside_window_fraction, "1", ("level",),
                                               "converged cells whose conductance is outside the verify window"),
        }
        return self.table.save(path, config=cfg, extra=extra, attrs=attrs, ngspice_version=self.ngspice_version,
                               netlist=self.netlist)

    def summary(self) -> str:
        """A short human-readable table (kOhm, uS for display)."""
        t = self.table
        lines = [
            f"{t.bits_per_cell} bit(s)/cell, {t.levels} levels, {t.n_devices} devices per level ({self.engine} engine"
            + (f", ngspice {self.ngspice_version}" if self.ngspice_version else "") + f"); "
            f"on/off {t.on_off_ratio:.2f}; converged {100 * self.converged.mean():.1f} %; "
            f"pulses mean {self.pulses.mean():.1f}, max {self.pulses.max()}",
            f"{'level':>5} {'target uS':>10} {'mean uS':>9} {'std/mean':>9} {'ln_sigma':>9} {'KS norm':>8} "
            f"{'KS logn':>8} {'pulses':>7} {'unconv':>6} {'outside':>8} {'err to next [95 % CI], counted':>34}",
        ]
        emp = empirical_readout_error(t)
        outside = self.outside_window_fraction
        unconv = (~self.converged).sum(axis=1)
        for k, f in enumerate(self.fits):
            err = (f"{emp.rate[k]:.2e} [{emp.ci_low[k]:.1e}, {emp.ci_high[k]:.1e}] {emp.errors[k]}/{emp.trials[k]}"
                   if k < t.levels - 1 else "")
            lines.append(
                f"{k:>5} {t.g_target_s[k] * 1e6:>10.2f} {t.g_mean_s[k] * 1e6:>9.2f} {t.g_std_s[k] / t.g_mean_s[k]:>9.4f} "
                f"{f.ln_sigma:>9.4f} {f.ks_normal:>8.4f} {f.ks_lognormal:>8.4f} {self.pulses[k].mean():>7.1f} "
                f"{unconv[k]:>6d} {100 * outside[k]:>7.1f}% {err:>34}"
            )
        lines.append("mean, std/mean and the counted error: all cells; 'unconv': cells that did not converge within "
                     f"max_pulses={self.config.max_pulses} (kept in the table, left out of the fits); 'outside': converged "
                     "cells whose true conductance is outside the verify window; ln_sigma, KS and the cell read-out error "
                     f"from the lognormal fits of the converged cells (tails extrapolated, indicative only): {cell_error_rate(t):.3e}")
        if self.unconverged_allowed:
            lines.append(f"WARNING: {unconv.sum()} cells did not converge (up to {100 * self.unconverged_fraction.max():.1f} % of a "
                         f"level, more than max_unconverged_fraction={self.config.max_unconverged_fraction:g}); "
                         "the table was written because unconverged cells were allowed, and records it")
        return "\n".join(lines)


class UnconvergedError(ConfigError):
    """Write-verify left more cells unconverged than ``max_unconverged_fraction`` allows: the
    table would describe cells stuck wherever the pulse budget ran out. ``result`` holds the
    run (its table is not written unless the caller allows unconverged cells)."""

    def __init__(self, message: str, result: "ProgrammingResult"):
        super().__init__(message)
        self.result = result


def program_levels(
    cfg: ProgrammingConfig,
    model_params: Config | None = None,
    *,
    n_devices: int,
    rng: np.random.Generator,
    progress: bool = False,
    engine: Any = None,
    allow_unconverged: bool = False,
    initial_g_s: np.ndarray | None = None,
) -> ProgrammingResult:
    """Program ``n_devices`` fresh cells per level by bidirectional ISPP write-verify.

    ``engine``: what applies a pulse and reads a cell; None = the Python model
    (:func:`device.compact.integrate`); :class:`device.spice.program.SpiceEngine` runs each pulse
    and each read as an ngspice transient of the cell (same loop, same decisions).

    Every cell (``levels * n_devices`` of them, each with its own device-to-device draw) starts
    at ``cfg.initial_state`` and loops: read (with read noise); stop when inside the verify
    window; else apply a SET pulse (read conductance too low) or a RESET pulse (too high).
    Consecutive pulses of one direction grow by the cell's step (``v_step_v`` at first) from
    ``v_set_start_v`` / ``v_reset_start_v`` up to ``v_max_v``. At every change of direction the
    step halves (down to ``v_step_min_v``) and the new direction resumes one (new) step *below*
    the amplitude it last used: the pulse that overshot was too strong, and its threshold is
    known to be near. Near a level this is a bisection on the amplitude: this model's RESET ends
    where the F_min gate closes, a state set by the amplitude alone, and its SET moves the gap by
    at least ~13 % of the conductance once the gate opens, so a level is reached by the RESET
    amplitude that lands in the window. (Before: the new direction resumed *at* the amplitude it
    last used, so a cell whose two amplitudes straddled the window repeated the same SET and
    RESET overshoots until ``max_pulses``; a deterministic cell never left that cycle, which is
    what made the Python and ngspice pulse counts diverge on the lowest level.)
    All cells are integrated together (:func:`device.compact.integrate`).

    The initial state is one the cell's own pulses reach: ``"hrs"`` is the largest gap (RESET is
    not current-limited); ``"lrs"`` is where a full SET at ``v_max_v`` ends, which through a 1T1R
    series element (``r_series_ohm``, ``i_compliance_a``) is the self-limited state
    (:func:`device.compact.set_limit_state`), not the model's smallest gap.
    ``initial_g_s``: ``(levels, n_devices)`` read conductances (S) the cells start from instead of
    ``cfg.initial_state`` (re-programming a cell from where relaxation took it: the cost of
    relaxation-aware programming and refresh); each cell's gap is set to read that conductance
    (:func:`device.compact.state_for_read_conductance`).

    Raises :class:`ConfigError` when the read voltage would switch the cell or a target lies
    outside the device's resistance range, and :class:`UnconvergedError` when more than
    ``cfg.max_unconverged_fraction`` of any level's cells end without converging, unless
    ``allow_unconverged`` (the result then records that it was allowed).
    """
    from device.presets import default_params
    from device.simulate import check_read_voltage

    check_int_range("n_devices", n_devices, 2)
    params = default_params() if model_params is None else model_params
    model = params.model()
    check_read_voltage(params, cfg.v_read_v, t_read_s=cfg.t_read_s)
    lo, hi = model.state_bounds(params)
    r_on = float(params.resistance_ohm(lo, cfg.v_read_v))
    r_off = float(params.resistance_ohm(hi, cfg.v_read_v))
    for name, r in (("r_lrs_ohm", cfg.r_lrs_ohm), ("r_hrs_ohm", cfg.r_hrs_ohm)):
        if not (r_on <= r <= r_off):
            raise ConfigError(
                f"{name}={r!r} is invalid: the device reads between {r_on:.4g} and {r_off:.4g} ohm at {cfg.v_read_v} V"
            )
    targets = level_targets(cfg.bits_per_cell, 1.0 / cfg.r_hrs_ohm, 1.0 / cfg.r_lrs_ohm, cfg.level_spacing)
    L = targets.size
    n = L * n_devices
    pop = model.per_device(params, n, rng)
    g_t = np.repeat(targets, n_devices)
    half_w = np.repeat(verify_half_window(targets, cfg), n_devices)
    guard = cfg.verify_guard_sigmas * cfg.read_noise_rel / math.sqrt(cfg.verify_reads) * g_t
    accept_w = np.maximum(half_w - guard, 0.5 * half_w)
    if initial_g_s is not None:
        from device.compact import state_for_read_conductance

        g_init = np.asarray(initial_g_s, float)
        if g_init.shape != (L, n_devices) or not (np.all(np.isfinite(g_init)) and np.all(g_init > 0)):
            raise ConfigError(f"initial_g_s must be ({L}, {n_devices}) positive conductances, got shape {g_init.shape}")
        state = state_for_read_conductance(model, pop, g_init.ravel(), cfg.v_read_v)
    elif cfg.initial_state == "lrs":
        state = np.broadcast_to(set_limit_state(model, pop, cfg.v_max_v), (n,)).astype(float)
    else:
        state = model.initial_state(pop, cfg.initial_state).astype(float)
    pulses = np.zeros(n, np.int32)
    done = np.zeros(n, bool)
    reached = np.zeros(n, bool)
    # the last amplitude used in each direction (NaN: none yet), and the last direction
    last_set = np.full(n, np.nan)
    last_reset = np.full(n, np.nan)
    last_dir = np.zeros(n, np.int8)  # +1 SET, -1 RESET, 0 none yet
    step = np.full(n, cfg.v_step_v)  # each cell's present amplitude step
    wave = Waveform(
        np.array([0.0, cfg.t_edge_s, cfg.t_edge_s + cfg.t_pulse_s, 2 * cfg.t_edge_s + cfg.t_pulse_s]),
        np.array([0.0, 1.0, 1.0, 0.0]),
    )
    t_end = np.array([wave.t_s[-1]])
    it = range(cfg.max_pulses + 1)
    if progress:
        from device.progress import progress_bar

        it = progress_bar(it, desc=f"write-verify {cfg.bits_per_cell} bit", unit="pulse", leave=False)
    for _ in it:
        act = np.nonzero(~done)[0]
        if act.size == 0:
            break
        pa = pop.subset(act)
        if engine is None:
            g_read = model.current(cfg.v_read_v, state[act], pa) / cfg.v_read_v
        else:
            g_read = engine.read(pa, state[act], cfg.v_read_v, cfg.t_read_s)
        if cfg.read_noise_rel > 0:
            # the mean of verify_reads noisy reads (one read: the same draws as before)
            z = rng.standard_normal((cfg.verify_reads, act.size)).mean(axis=0)
            g_read = g_read * (1.0 + cfg.read_noise_rel * z)
        err = g_read - g_t[act]
        ok = np.abs(err) <= accept_w[act]
        out_of_pulses = pulses[act] >= cfg.max_pulses
        done[act[ok | out_of_pulses]] = True
        reached[act[ok]] = True
        keep = ~(ok | out_of_pulses)
        act, err = act[keep], err[keep]
        if act.size == 0:
            break
        direction = np.where(err < 0, 1, -1).astype(np.int8)  # conductance too low -> SET
        turned = (last_dir[act] != 0) & (direction != last_dir[act])
        # amplitude of this pulse: the start amplitude for a direction's first pulse, one step
        # more within a run; after a turn the step halves and the pulse is one step below the
        # direction's last amplitude
        st = np.where(turned, np.maximum(0.5 * step[act], cfg.v_step_min_v), step[act])
        step[act] = st
        prev = np.where(direction > 0, last_set[act], last_reset[act])
        start = np.where(direction > 0, cfg.v_set_start_v, cfg.v_reset_start_v)
        amp = np.where(np.isnan(prev), start, np.where(turned, prev - st, prev + st))
        amp = np.clip(amp, start, cfg.v_max_v)
        v_amp = np.where(direction > 0, amp, -amp)
        if engine is None:
            new_state = integrate(model, pop.subset(act), state[act], wave, t_end, v_scale=v_amp, rng=rng)[0]
        else:
            new_state = engine.pulse(pop.subset(act), state[act], wave, v_amp)
        state[act] = new_state
        pulses[act] += 1
        last_set[act] = np.where(direction > 0, amp, last_set[act])
        last_reset[act] = np.where(direction < 0, amp, last_reset[act])
        last_dir[act] = direction
    g_true = model.current(cfg.v_read_v, state, pop) / cfg.v_read_v
    # converged: a verify read (read noise included) fell inside the window within max_pulses
    converged = reached.reshape(L, n_devices)
    frac = 1.0 - converged.mean(axis=1)
    over = frac > cfg.max_unconverged_fraction
    table = LevelTable(
        bits_per_cell=cfg.bits_per_cell,
        g_target_s=targets,
        g_samples_s=g_true.reshape(L, n_devices),
        g_sa0_s=float(targets[0]),
        g_sa1_s=float(targets[-1]),
        source="write-verify",
        pulses=pulses.reshape(L, n_devices),
        read_noise_rel=cfg.read_noise_rel,
        v_read_v=cfg.v_read_v,
        verify_half_window_s=verify_half_window(targets, cfg),
        converged=converged,
    )
    result = ProgrammingResult(
        table=table,
        config=cfg,
        fits=fit_levels(table),
        pulses=pulses.reshape(L, n_devices),
        converged=converged,
        error_rate=empirical_readout_error(table).rate,
        model_config=params,
        engine="python" if engine is None else str(getattr(engine, "name", type(engine).__name__)),
        ngspice_version=None if engine is None else getattr(engine, "ngspice_version", None),
        netlist=None if engine is None else getattr(engine, "netlist", None),
        unconverged_allowed=bool(over.any() and allow_unconverged),
    )
    if over.any() and not allow_unconverged:
        worst = int(np.argmax(frac))
        raise UnconvergedError(
            f"write-verify did not converge for {int((~converged).sum())} of {converged.size} cells within "
            f"max_pulses={cfg.max_pulses}: {100 * frac[worst]:.1f} % of level {worst} ({targets[worst] * 1e6:.4g} uS) and "
            f"{int(over.sum())} level(s) above max_unconverged_fraction={cfg.max_unconverged_fraction:g}; no table written "
            "(check that the targets are reachable with these pulses and series element, raise max_pulses or "
            "max_unconverged_fraction, or allow unconverged cells: --allow-unconverged)",
            result,
        )
    return result
