"""Calibration to measured data: level distributions from tidy CSV files, and converters for the
shared tech-B relaxation measurements.

Input files are *tidy CSV*: one measurement a row, a header line, units in the column names,
other columns ignored (see the README section "Calibrating to your own device"):

``levels`` (:func:`calibrate_levels_csv`)
    ``level`` (the programmed state's label: any text or number) and ``g_s`` (read conductance, S)
    or ``r_ohm`` (read resistance, ohm). If both are present ``g_s`` is used.
``relaxation`` (:func:`device.relaxation.RelaxationModel.fit_csv`)
    ``cell`` (a cell identifier), ``time_s`` (time since programming, s), ``g_s`` or ``r_ohm``,
    optional ``g0_s`` (the programmed conductance; else the cell's earliest read).

:func:`calibrate_levels` turns (label, conductance) pairs into a
:class:`device.programming.LevelTable` that the crossbar engine uses like the shipped ones
(``--set levels.table_path=...``): levels ordered by increasing mean conductance (digit 0 =
lowest), the input's labels recorded in that order, every measured sample kept (the engine draws
each digit from its own level's measured conductances, so unequal spacing between levels shows
up in a bit-sliced sum instead of being assumed away), each level's empirical quantile function on
a common grid (``g_samples_s``; Hazen plotting positions), normal and lognormal fits with their
Kolmogorov-Smirnov statistics, the on/off ratio and the empirical adjacent-level read-out error
with Clopper-Pearson intervals at the thresholds chosen.

When it is sampled: once, at programming (the table is programming variation, measured).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import math
import operator
import zlib
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from device.errors import UserError
from device.programming import MAX_TABLE_BITS, LevelTable, empirical_readout_error

__all__ = [
    "CalibrationError",
    "read_tidy_csv",
    "conductance_column",
    "calibrate_levels",
    "calibrate_levels_csv",
    "ReadNoiseEstimate",
    "estimate_read_noise",
    "levels_summary",
    "techb_dir",
    "read_techb",
    "techb_levels_csv",
    "techb_relaxation_csv",
    "plot_level_table",
]


class CalibrationError(UserError):
    """Measured input that cannot be calibrated: a missing column, a bad value, too few samples."""


# -- tidy CSV ---------------------------------------------------------------------------------
def read_tidy_csv(path: str | Path, *, text_columns: Sequence[str] = (), float_columns: Sequence[str] = (),
                  bad_numbers: Literal["raise", "nan"] = "raise") -> dict[str, np.ndarray]:
    """Read the named columns of a tidy CSV file (header line; other columns ignored).

    ``text_columns`` come back as arrays of str, ``float_columns`` as float64 (a column named in
    ``float_columns`` that the file lacks is simply absent from the result; the caller decides
    which are required). Raises :class:`CalibrationError` naming the line for an empty or
    non-numeric value (``bad_numbers="nan"``: such a value reads as NaN, for callers that drop
    invalid rows themselves), for a missing text column, and for a file that is not UTF-8 text, not
    a readable gzip file (``.gz``) or not CSV. Vectorized: a million rows take about a second."""
    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"{p}: no such file")
    with _csv_reader(p) as reader:
        return _read_tidy(p, reader, text_columns, float_columns, bad_numbers)


@contextlib.contextmanager
def _csv_reader(p: Path) -> Iterator[Any]:
    """A ``csv.reader`` over ``p`` (gzip for ``.gz``, UTF-8 with or without BOM); a file that is
    not UTF-8, not gzip, cut short or not CSV raises one :class:`CalibrationError`."""
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", newline="", encoding="utf-8-sig") as fh:
            yield csv.reader(fh)
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"{p}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as UTF-8 CSV") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CalibrationError(f"{p}: not a readable gzip file ({exc or type(exc).__name__})") from None
    except csv.Error as exc:
        raise CalibrationError(f"{p}: not readable as CSV ({exc})") from None
    except OSError as exc:
        raise CalibrationError(f"{p}: cannot be read ({exc.strerror or exc})") from None


def _read_tidy(p: Path, reader: Any, text_columns: Sequence[str], float_columns: Sequence[str],
               bad_numbers: str = "raise") -> dict[str, np.ndarray]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CalibrationError(f"{p}: empty file (a header line is needed)") from None
    cols = {h: i for i, h in enumerate(header)}
    for c in text_columns:
        if c not in cols:
            raise CalibrationError(f"{p}: column {c!r} is missing (header: {', '.join(header)})")
    want_f = [c for c in float_columns if c in cols]
    need = max([cols[c] for c in (*text_columns, *want_f)], default=-1)
    rows = list(reader)  # the C reader; the columns are then cut and converted as arrays
    lens = np.fromiter(map(len, rows), np.int64, count=len(rows))
    if rows and not (lens > need).all():  # short or blank rows: keep the non-blank ones, padded
        keep = [(i, r + [""] * (need + 1 - len(r))) for i, r in enumerate(rows) if r and any(x.strip() for x in r)]
        lines = [i + 2 for i, _ in keep]
        rows = [r for _, r in keep]
    else:
        lines = None  # one line a row: row i is line i + 2
    text = {c: list(map(operator.itemgetter(cols[c]), rows)) for c in text_columns}
    num = {c: list(map(operator.itemgetter(cols[c]), rows)) for c in want_f}
    if lines is None:
        lines = range(2, len(rows) + 2)
    out: dict[str, np.ndarray] = {}
    for c, v in text.items():
        a = np.array(list(map(str.strip, v)), dtype=str)
        empty = np.flatnonzero(a == "")
        if empty.size:
            raise CalibrationError(f"{p} line {lines[int(empty[0])]}: column {c!r} is empty")
        out[c] = a
    for c, v in num.items():
        try:
            out[c] = np.fromiter(map(float, v), float, count=len(v))  # C loop; on failure name the first bad value
        except ValueError:
            vals = []
            for j, x in enumerate(v):
                try:
                    vals.append(float(x))
                except ValueError:
                    if bad_numbers == "nan":
                        vals.append(math.nan)
                        continue
                    raise CalibrationError(f"{p} line {lines[j]}: column {c!r} holds {x.strip()!r}, not a number") from None
            out[c] = np.array(vals, dtype=float)
    return out


def conductance_column(data: dict[str, np.ndarray], where: str, name: str = "g", *, check: bool = True) -> np.ndarray:
    """``g_s`` from ``data`` (or ``1 / r_ohm``), checked finite and > 0 (``check=False``: returned
    as read, for callers that drop invalid rows themselves). ``name="g0"`` reads ``g0_s`` /
    ``r0_ohm``."""
    gk, rk = f"{name}_s", ("r_ohm" if name == "g" else f"r{name[1:]}_ohm")
    if gk in data:
        g = np.asarray(data[gk], float)
        col = gk
    elif rk in data:
        with np.errstate(divide="ignore", invalid="ignore"):
            g = 1.0 / np.asarray(data[rk], float)
        col = rk
    else:
        raise CalibrationError(f"{where}: needs a column {gk!r} (S) or {rk!r} (ohm)")
    if not check:
        return g
    bad = ~(np.isfinite(g) & (g > 0))
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise CalibrationError(f"{where}: column {col!r} row {i + 1} is not a positive finite value")
    return g


# -- levels -------------------------------------------------------------------------------------
def _label_key(s: str) -> tuple:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


@dataclasses.dataclass(frozen=True)
class ReadNoiseEstimate:
    """Relative read noise from repeated reads of the same cells: the pooled within-cell spread
    ``sigma_rel = sqrt(sum_ij ((g_ij - m_i) / m_i)^2 / sum_i (n_i - 1))`` over the cells ``i`` read
    ``n_i >= 2`` times (``m_i`` their mean read), with a ``confidence`` chi-square interval
    (``dof = sum_i (n_i - 1)`` degrees of freedom; reads taken as independent)."""

    sigma_rel: float
    ci_low: float
    ci_high: float
    confidence: float
    n_cells: int
    n_reads: int
    dof: int

    def describe(self) -> str:
        return (f"repeated reads: {self.n_reads} reads of {self.n_cells} cells, sigma/mean {self.sigma_rel:.3g} "
                f"[{self.confidence:g} CI {self.ci_low:.3g}, {self.ci_high:.3g}]")


def estimate_read_noise(cells: Sequence, g_s: np.ndarray, *, confidence: float = 0.95) -> ReadNoiseEstimate | None:
    """:class:`ReadNoiseEstimate` from reads ``g_s`` (S) of the cells named by ``cells``; None when
    no cell is read twice (the data then say nothing about read noise)."""
    from scipy import stats

    cell = np.asarray([str(c).strip() for c in cells], dtype=str)
    g = np.asarray(g_s, float)
    if cell.shape != g.shape:
        raise CalibrationError(f"cells and g_s must be of one length, got {cell.shape} and {g.shape}")
    _, inv, counts = np.unique(cell, return_inverse=True, return_counts=True)
    rep = counts >= 2
    if not rep.any():
        return None
    mean = np.bincount(inv, weights=g) / counts
    keep = rep[inv]
    dev = (g[keep] - mean[inv][keep]) / mean[inv][keep]
    dof = int((counts[rep] - 1).sum())
    ss = float(np.sum(dev**2))
    sigma = math.sqrt(ss / dof)
    a = 1.0 - confidence
    lo = math.sqrt(ss / stats.chi2.ppf(1 - a / 2, dof))
    hi = math.sqrt(ss / stats.chi2.ppf(a / 2, dof))
    return ReadNoiseEstimate(sigma, lo, hi, confidence, int(rep.sum()), int(counts[rep].sum()), dof)


def calibrate_levels(
    labels: Sequence,
    g_s: np.ndarray,
    *,
    select: Sequence | None = None,
    bits_per_cell: int | None = None,
    source: str = "measured",
    v_read_v: float | None = None,
    cells: Sequence | None = None,
    read_noise_rel: float | None = None,
) -> LevelTable:
    """A :class:`LevelTable` from measured conductances ``g_s`` (S) and their level ``labels``.

    Levels are ordered by increasing mean conductance (digit 0 = lowest); ``table.labels`` holds
    each level's input label in that order. ``select``: use only these labels (e.g. 8 of 32
    programmed states for a 3-bit table). The number of levels must be a power of two, ``2**bits``
    (``bits_per_cell``, if given, must agree); every level needs at least 2 samples.
    ``g_target_s`` = the level means; ``g_sa0_s`` / ``g_sa1_s`` (a stuck cell) = the lowest /
    highest level's mean; ``g_samples_s`` = each level's empirical quantile function at ``n``
    Hazen positions ``(j + 0.5) / n`` (``n`` = the largest level's sample count, so that level's
    row is its sorted samples exactly). ``v_read_v``: the voltage the conductances were read at
    (recorded in the table; None = not known, the engine then takes the chip's read voltage).

    Read noise (``table.read_noise_rel``, what the engine draws on every read, and
    ``table.read_noise_source``, which says where it came from): ``read_noise_rel`` when given;
    else, when ``cells`` names the cell of each read and some cell is read more than once, the
    pooled relative spread of those repeated reads (:func:`estimate_read_noise`), and each cell then
    counts once in its level's distribution, at its mean read (the programmed conductance; the
    engine adds the read noise on top); else 0 (the data cannot tell read noise from programming
    spread: the spread between cells is all taken as programming variation).
    """
    lab = np.array([str(x).strip() for x in labels], dtype=str)
    g = np.asarray(g_s, float)
    if lab.shape != g.shape or g.ndim != 1:
        raise CalibrationError(f"labels and g_s must be 1-d and of one length, got {lab.shape} and {g.shape}")
    if not (np.all(np.isfinite(g)) and np.all(g > 0)):
        raise CalibrationError("conductances must be finite and > 0")
    if read_noise_rel is not None and not (0.0 <= float(read_noise_rel) <= 0.5):
        raise CalibrationError(f"read_noise_rel={read_noise_rel!r} is invalid: must be in [0, 0.5]")
    noise = None
    if cells is not None:
        cell = np.asarray([str(c).strip() for c in cells], dtype=str)
        if cell.shape != g.shape:
            raise CalibrationError(f"cells and g_s must be of one length, got {cell.shape} and {g.shape}")
        pairs = np.char.add(np.char.add(lab, "\x00"), cell)  # a cell of one level (names may restart per level)
        noise = estimate_read_noise(pairs, g)
        if noise is not None:  # one sample per cell: its mean read
            _, first, inv, counts = np.unique(pairs, return_index=True, return_inverse=True, return_counts=True)
            g = np.bincount(inv, weights=g) / counts
            lab = lab[first]
    if read_noise_rel is not None:
        sigma = float(read_noise_rel)
        how = f"given: {sigma:g}" + (f" (the data's {noise.describe()})" if noise is not None else "")
    elif noise is not None:
        sigma, how = noise.sigma_rel, noise.describe()
    else:
        sigma = 0.0
        how = ("none: no cell is read twice in the data and no read noise was given, so reads are noiseless "
               "and the spread between cells is all programming variation")
    if select is not None:
        sel = np.char.strip(np.asarray([str(x) for x in select]).astype(str))
        missing = sorted(set(sel.tolist()) - set(np.unique(lab).tolist()), key=_label_key)
        if missing:
            raise CalibrationError(f"selected level label(s) {', '.join(missing)} are not in the data")
        keep = np.isin(lab, sel)
        lab, g = lab[keep], g[keep]
    # vectorized over samples (np.unique, bincount): a million rows or labels cost seconds
    uniq, inv, cnt = np.unique(lab, return_inverse=True, return_counts=True)
    n = int(uniq.size)
    bits = int(round(math.log2(n))) if n >= 2 else 0
    if n < 2 or 2**bits != n or bits > MAX_TABLE_BITS:
        shown = sorted(uniq[:64].tolist(), key=_label_key)[:8]
        raise CalibrationError(
            f"the data hold {n} level(s) ({', '.join(shown)}{', ...' if n > 8 else ''}); a level table needs "
            f"2**bits of them (2, 4, ..., {2**MAX_TABLE_BITS}): choose a subset with select= / --levels"
        )
    few = sorted((u for u, c in zip(uniq.tolist(), cnt.tolist()) if c < 2), key=_label_key)
    if few:
        raise CalibrationError(f"level(s) {', '.join(few)} have fewer than 2 samples")
    if bits_per_cell is not None and bits_per_cell != bits:
        raise CalibrationError(f"bits_per_cell={bits_per_cell} but the data hold {n} levels ({bits} bits)")
    mean_u = np.bincount(inv, weights=g, minlength=n) / cnt
    by_mean = np.argsort(mean_u, kind="stable")
    m = mean_u[by_mean]
    if np.any(np.diff(m) <= 0):
        raise CalibrationError("two levels have the same mean conductance; they cannot be ordered")
    rank = np.empty(n, np.int64)
    rank[by_mean] = np.arange(n)
    level = rank[inv.reshape(-1)]
    order = tuple(uniq[by_mean].tolist())
    nq = int(cnt.max())
    grid = np.empty((n, nq))
    by_level = np.argsort(level, kind="stable")
    starts = np.concatenate([[0], np.cumsum(cnt[by_mean])])
    for k in range(n):
        x = np.sort(g[by_level[starts[k] : starts[k + 1]]])
        c = x.size
        # Hazen quantiles at (j + 0.5) / nq: 0-based position c (j + 0.5) / nq - 0.5, clamped (as
        # numpy's method="hazen", without its O(n * nq) partition); exactly x[j] when c == nq
        grid[k] = np.interp((np.arange(nq) + 0.5) * c / nq - 0.5, np.arange(c), x)
    return LevelTable(
        bits_per_cell=bits,
        g_target_s=m,
        g_samples_s=grid,
        g_sa0_s=float(m[0]),
        g_sa1_s=float(m[-1]),
        source=source,
        labels=order,
        g_measured_s=g,
        measured_level=level,
        read_noise_rel=sigma,
        read_noise_source=how,
        v_read_v=v_read_v,
    )


def calibrate_levels_csv(path: str | Path, *, select: Sequence | None = None, bits_per_cell: int | None = None,
                         read_noise_rel: float | None = None) -> LevelTable:
    """:func:`calibrate_levels` on a tidy CSV file with columns ``level`` and ``g_s`` or ``r_ohm``,
    and optionally ``cell`` (which cell each read is of: repeated reads of a cell give the read
    noise)."""
    has_cell = "cell" in _csv_header(path)
    d = read_tidy_csv(path, text_columns=("level", "cell") if has_cell else ("level",), float_columns=("g_s", "r_ohm"))
    g = conductance_column(d, str(path))
    return calibrate_levels(d["level"], g, select=select, bits_per_cell=bits_per_cell, source=str(path),
                            cells=d.get("cell"), read_noise_rel=read_noise_rel)


def _csv_header(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"{p}: no such file")
    with _csv_reader(p) as reader:
        return [h.strip() for h in next(reader, [])]


def levels_summary(table: LevelTable, *, thresholds: Literal["midpoint", "optimal"] = "midpoint", confidence: float = 0.95) -> str:
    """A printable per-level table (uS for display): label, n, mean, std, fits, error to next."""
    from device.programming import fit_levels

    fits = fit_levels(table)
    emp = empirical_readout_error(table, thresholds=thresholds, confidence=confidence)
    labels = table.labels or tuple(str(k) for k in range(table.levels))
    lines = [
        f"{table.levels} levels ({table.bits_per_cell} bit(s)/cell), {int(table.n_per_level.sum())} samples; "
        f"on/off {table.on_off_ratio:.3g}; thresholds: {emp.thresholds}",
        f"read noise (relative sigma per read, stored as read_noise_rel) {table.read_noise_rel:.3g}: "
        f"{table.read_noise_source or 'source not recorded'}",
        f"{'digit':>5} {'label':>8} {'n':>6} {'mean uS':>9} {'std uS':>8} {'KS norm':>8} {'KS logn':>8} "
        f"{'thr uS':>8} {'err to next [' + format(confidence, 'g') + ' CI]':>30}",
    ]
    for k, f in enumerate(fits):
        tail = ""
        if k < table.levels - 1:
            tail = (f"{emp.threshold_s[k] * 1e6:>8.3f} {emp.rate[k]:>9.2e} [{emp.ci_low[k]:.1e}, {emp.ci_high[k]:.1e}]"
                    f" {emp.errors[k]}/{emp.trials[k]}")
        lines.append(f"{k:>5} {labels[k]:>8} {table.n_per_level[k]:>6} {f.mean_s * 1e6:>9.3f} {f.std_s * 1e6:>8.3f} "
                     f"{f.ks_normal:>8.4f} {f.ks_lognormal:>8.4f} {tail}")
    return "\n".join(lines)


# -- the shared tech-B measurements ---------------------------------------------------------------
#: tech-B's plotting full scale (settings.json ``gmax``), S: the level index is about g0 / gmax * 32
TECHB_GMAX_S = 128e-6
#: tech-B's nominal read times after programming, s
TECHB_TIMES_S = (0.0, 0.01, 0.1, 1.0, 100.0, 1000.0, 10000.0)


def techb_dir() -> Path:
    """Where the shared tech-B data live: ``../shared/data/devices/relaxation_techB`` next to the
    repository root (the layout of this project's checkouts and of CI)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "devices" / "relaxation_techB"


def read_techb(src: str | Path | None = None) -> dict[str, np.ndarray]:
    """The tech-B relaxation file (``relaxdata_10k.min.tsv.gz``) as arrays: ``cell`` (int),
    ``time_s`` (nominal time since programming), ``g_s``, ``g0_s`` (the read at time 0), ``range``
    (the programmed level index). Source: github.com/akashlevy/RRAM-Relaxation-Master-Model
    (MIT), ``data/techB``."""
    d = Path(src) if src is not None else techb_dir()
    f = d / "relaxdata_10k.min.tsv.gz" if d.is_dir() else d
    if not f.is_file():
        raise CalibrationError(f"{f}: no such file (the shared tech-B data live in ../shared/data/devices/)")
    a = np.loadtxt(f, delimiter="\t", ndmin=2)
    if a.shape[1] != 7:
        raise CalibrationError(f"{f}: expected 7 tab-separated columns, got {a.shape[1]}")
    return {"cell": a[:, 0].astype(np.int64), "time_s": a[:, 6], "g_s": a[:, 3], "g0_s": a[:, 4], "range": a[:, 5].astype(np.int64)}


def _write_csv(out: str | Path, header: Sequence[str], columns: Sequence[np.ndarray], fmts: Sequence[str]) -> Path:
    from device.io import atomic_path

    rows = zip(*columns)
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as fh:
            fh.write(",".join(header) + "\n")
            line = ",".join(fmts) + "\n"
            for r in rows:
                fh.write(line % tuple(r))
    return Path(out)


def techb_levels_csv(
    out: str | Path,
    *,
    time_s: float = 0.0,
    ranges: Sequence[int] | None = None,
    cells: np.ndarray | None = None,
    src: str | Path | None = None,
) -> Path:
    """Write a tidy ``levels`` CSV (``level,g_s``) from tech-B: the reads at nominal time
    ``time_s`` after programming, labelled by the programmed level index (``range``, 0..31 by
    default; the rare indices above 31 are left out). ``cells``: only these cell ids (a split)."""
    d = read_techb(src)
    if time_s not in TECHB_TIMES_S:
        raise CalibrationError(f"time_s={time_s!r} is invalid: tech-B was read at {TECHB_TIMES_S} s")
    r = np.arange(32) if ranges is None else np.asarray(ranges, np.int64)
    keep = (d["time_s"] == time_s) & np.isin(d["range"], r)
    if cells is not None:
        keep &= np.isin(d["cell"], np.asarray(cells))
    return _write_csv(out, ("level", "g_s", "cell"), (d["range"][keep], d["g_s"][keep], d["cell"][keep]), ("%d", "%.10g", "%d"))


def techb_relaxation_csv(out: str | Path, *, cells: np.ndarray | None = None, src: str | Path | None = None) -> Path:
    """Write a tidy ``relaxation`` CSV (``cell,time_s,g_s,g0_s``) from tech-B, all reads of the
    given ``cells`` (all cells by default)."""
    d = read_techb(src)
    keep = np.ones(d["cell"].size, bool) if cells is None else np.isin(d["cell"], np.asarray(cells))
    cols = (d["cell"][keep], d["time_s"][keep], d["g_s"][keep], d["g0_s"][keep])
    return _write_csv(out, ("cell", "time_s", "g_s", "g0_s"), cols, ("%d", "%.6g", "%.10g", "%.10g"))


def plot_level_table(table: LevelTable, path: str | Path, *, thresholds: Literal["midpoint", "optimal"] = "midpoint") -> Path:
    """Histogram of every level's samples (uS) with its normal and lognormal fit and the
    read-out thresholds (:func:`device.plots.draw_level_histograms`, the convention of every
    level plot), and the worst read-out error with its interval. PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from device.plots import draw_level_histograms, readout_error_text, save_figure

    emp = empirical_readout_error(table, thresholds=thresholds)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    draw_level_histograms(ax, table, emp.threshold_s)
    ax.set_title(f"{table.levels} levels from {Path(table.source).name}: on/off {table.on_off_ratio:.3g}\n"
                 f"worst adjacent read-out error ({emp.thresholds} thresholds) {readout_error_text(emp)}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)[0]
