"""Run ``examples/read_path_sst2.json`` chip 0 of every point first (6-bit ADCs, then 8-bit), then
the further chips, the digital rows of methods after the first last: a comparison across all
methods as early as possible on a slow machine. Rows are keyed by content, so
``reram-cosim study --spec examples/read_path_sst2.json --out DIR`` afterwards writes only what is
missing, and the same rows come out in any order.

    PYTHONPATH=. python examples/read_path_first_chips.py DIR [--workers 2] [--glue-dir ../shared/data/glue]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--spec", default=str(Path(__file__).with_name("read_path_sst2.json")))
    ap.add_argument("--glue-dir", default=None)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from device.io import atomic_write_text
    from nn.evaluate import ResultsFile
    from nn.executor import run_tasks
    from nn.study import load_spec, plan_study

    spec = load_spec(args.spec)
    tasks = plan_study(spec, glue_dir=args.glue_dir, num_threads=1)
    methods = list(spec.methods)
    bits = list(spec.axes["crossbar.adc_bits"])
    first_digital = next(t for t in tasks if t.mode == "digital")

    def order(t):
        if t is first_digital:
            return (-1, 0, 0)
        if t.mode == "digital":
            return (99, 0, methods.index(t.method))
        b = dict(t.point).get("crossbar.adc_bits")
        return (t.trial, bits.index(b), methods.index(t.method))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.json", json.dumps(spec.data, indent=2))
    res = ResultsFile(out / "results.csv")
    run_tasks(sorted(tasks, key=order), res, executor="dask" if args.workers > 1 else "serial",
              workers=args.workers if args.workers > 1 else None, address=None, progress=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
