"""Accuracy versus time since programming, per configuration, from study CSVs: the RESULTS.md
tables of the relaxation remedies (issue 25).

    python examples/retention_table.py --points 4 \\
        unmitigated=results/retention/b1/results.csv#unmitigated \\
        placement=results/retention/b1/results.csv#placement \\
        --refresh placement=100,1000

Per configuration and read time (``crossbar.read_time_s``): the mean score over the chips +- the
standard deviation, and in parentheses the change against the configuration's own t = 0 chip.
Then the time until the model loses 1 point against its own t = 0 chip: the first measured time
whose mean is more than 0.01 below, with an estimate interpolated linearly in log t between the
two measured times that bracket it (">10^4 s" when it never does). ``--refresh LABEL=P1,P2``
adds rows for that configuration refreshed every P seconds: a read at t is taken at the worst
phase, ``min(t, P)`` after the last write, which is bit for bit the chip read at ``min(t, P)``
(``crossbar.retention.refresh_period_s``; ``tests/test_retention.py``), so those rows are the
measured rows at ``min(t, P)``. ``--points`` checks that every point holds that many chips.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict

import numpy as np

from nn.evaluate import read_results

AXIS = "crossbar.read_time_s"


def _load(path: str, method: str | None) -> tuple[dict[float, list[float]], float]:
    import json

    rows = read_results(path)
    by: dict[float, list[float]] = defaultdict(list)
    digital = math.nan
    methods = {r["method"] for r in rows}
    if method is None:
        if len(methods) != 1:
            raise SystemExit(f"error: {path} holds methods {sorted(methods)}; name one with #method")
        method = next(iter(methods))
    for r in rows:
        if r["method"] != method:
            continue
        if r["mode"] == "digital":
            digital = float(r["score"])
            continue
        t = float(json.loads(r["sim_config"])["crossbar"]["read_time_s"])
        by[t].append(float(r["score"]))
    if not by:
        raise SystemExit(f"error: {path} has no simulated rows of method {method!r}")
    return dict(by), digital


def time_to_lose(times: list[float], means: list[float], points: float = 0.01) -> tuple[str, float]:
    """(bracket text, log-t interpolated estimate in s) of the first time the mean falls more
    than ``points`` below the t = 0 mean (``times[0] == 0``); (">LAST", inf) if never."""
    ref = means[0]
    prev_t, prev_m = None, ref
    for t, m in zip(times[1:], means[1:]):
        if m < ref - points:
            if prev_t is None:  # lost already at the first measured time after programming
                return f"<{t:g} s", t
            x0, x1 = math.log10(prev_t), math.log10(t)
            f = (prev_m - (ref - points)) / (prev_m - m) if prev_m != m else 1.0
            return f"{prev_t:g}-{t:g} s", 10 ** (x0 + f * (x1 - x0))
        prev_t, prev_m = t, m
    return f">{times[-1]:g} s", math.inf


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="+", help="LABEL=path/to/results.csv[#method]")
    ap.add_argument("--refresh", action="append", default=[], help="LABEL=P1,P2: that configuration refreshed every P s")
    ap.add_argument("--points", type=int, default=None, help="chips every point must hold")
    args = ap.parse_args(argv)
    data = {}
    for item in args.configs:
        label, sep, rest = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {item!r} is not LABEL=path[#method]")
        path, _, method = rest.partition("#")
        data[label] = _load(path, method or None)
    times = sorted({t for by, _ in data.values() for t in by})
    for item in args.refresh:
        label, _, ps = item.partition("=")
        by, dig = data[label]
        for p in (float(x) for x in ps.split(",")):
            if p not in by:
                raise SystemExit(f"error: {label} has no rows at {p:g} s to refresh from")
            data[f"{label}, refresh every {p:g} s"] = ({t: by[min(t, p)] for t in by}, dig)
    head = "| configuration | digital | " + " | ".join(f"{t:g} s" for t in times) + " | loses 1 point |"
    print(head)
    print("|" + "---|" * (len(times) + 3))
    for label, (by, dig) in data.items():
        if args.points is not None:
            bad = [t for t, v in by.items() if len(v) != args.points]
            if bad:
                raise SystemExit(f"error: {label} has {[len(by[t]) for t in bad]} chips at {bad} s, not {args.points}")
        cells, means = [], []
        for t in times:
            v = by.get(t)
            if not v:
                cells.append("")
                means.append(math.nan)
                continue
            m = float(np.mean(v))
            means.append(m)
            sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
            d = "" if t == times[0] else f" ({m - float(np.mean(by[times[0]])):+.4f})"
            cells.append(f"{m:.4f} +- {sd:.4f}{d}")
        lose = time_to_lose(times, means) if times[0] == 0 and not math.isnan(means[0]) else ("", math.nan)
        est = "" if not math.isfinite(lose[1]) or lose[0].startswith("<") else f", about {lose[1]:.3g} s"
        print(f"| {label} | {dig:.4f} | " + " | ".join(cells) + f" | {lose[0]}{est} |")


if __name__ == "__main__":
    main()
