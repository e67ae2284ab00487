"""The column-ADC read with the chip's ADC circuits: this read against the read before, MiniLM
SST-2 dev sentences, ratios measured side by side in one process, outputs compared bit for bit.

    .venv/bin/python bench/bench_read_adc.py [--max-examples 32] [--methods sar,pipeline,ramp,cyclic,vector]
                                              [--adc-bits 8] [--repeat 1] [--before 937730f]
                                              [--glue-dir /work/shared/data/glue] [--skip-glue]

The chip is the one of ``examples/read_path_sst2.json`` (issue 26's accuracy study): scaled 8-bit
weights and inputs, 2 bits/cell, 128 x 128 tiles, calibrated column ADCs shared by 8 columns,
read noise from the level table; each method adds its ADC kind with its flaws (``vector``: the
ideal quantizer, no transfer function). Per method the model is patched, programmed (chip 0 of
seed 0) and calibrated once, then each repeat runs one dev pass with the new read and one with
the read of git revision ``--before`` (its ``crossbar/read.py`` and ``crossbar/readkeys.py``
loaded from git into modules of their own and swapped in: ``crossbar.engine.read_adc`` and
``ReadKeys.normal``), interleaved, and checks that the logits are the same bits.

It also times the conversion alone (``adc_convert``, before and now) on the currents of one
MiniLM layer shape (``(R, m, L)`` = (3, 512, 1536): a 384 -> 384 layer, 4 slices, a chunk of 512
tokens) for each kind, and the keyed read-noise draw (``ReadKeys.normal``) for the same read.

Times are CPU seconds of this process (one thread; the machine is shared, so wall time is also
printed but CPU time is the figure to compare).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import crossbar.engine as engine  # noqa: E402
from crossbar.readkeys import ReadKeys  # noqa: E402

BASE = ["crossbar.weight_format=scaled", "crossbar.input_format=scaled", "crossbar.adc_range=calibrated",
        "crossbar.adc_columns_per_adc=8"]
METHODS = {
    "vector": ["crossbar.input_granularity=vector"],
    "sar": ["crossbar.adc_kind=sar", "crossbar.adc_cap_sigma_rel=0.01", "crossbar.adc_comparator_sigma_rel=0.005"],
    "pipeline": ["crossbar.adc_kind=pipeline", "crossbar.adc_cap_sigma_rel=0.01", "crossbar.adc_comparator_sigma_rel=0.02",
                 "crossbar.adc_opamp_gain_db=60"],
    "ramp": ["crossbar.adc_kind=ramp", "crossbar.adc_columns_per_adc=64", "crossbar.adc_cap_sigma_rel=0.01",
             "crossbar.adc_comparator_sigma_rel=0.005"],
    "cyclic": ["crossbar.adc_kind=cyclic", "crossbar.adc_cap_sigma_rel=0.01", "crossbar.adc_comparator_sigma_rel=0.02",
               "crossbar.adc_opamp_gain_db=60"],
}


def module_before(rev: str, path_in_repo: str, name: str):
    """A module of this repository at git revision ``rev``."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path_in_repo}"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class Swap:
    """Swap the read of revision ``before`` in (``with Swap(read_b, keys_b):``)."""

    def __init__(self, read_b, keys_b):
        self.read_b, self.keys_b = read_b, keys_b

    def __enter__(self):
        self.saved = engine.read_adc, ReadKeys.normal
        engine.read_adc = self.read_b.read_adc
        ReadKeys.normal = self.keys_b.ReadKeys.normal
        return self

    def __exit__(self, *exc):
        engine.read_adc, ReadKeys.normal = self.saved


def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def conversion_only(read_b, keys_b, bits: int, repeat: int) -> None:
    """``adc_convert`` and ``ReadKeys.normal`` alone, on one chunk of a 384 -> 384 layer."""
    from crossbar.config import CrossbarConfig
    from crossbar.read import adc_convert
    from device.config import apply_overrides

    w = torch.randn(384, 384, generator=torch.Generator().manual_seed(0)) * 0.05
    R, m = 3, 512
    print(f"\nconversion alone: currents (R, m, L) = ({R}, {m}, 1536), {bits}-bit ADCs, CPU ms per call "
          f"(median of {repeat * 5})")
    print(f"{'kind':>9} {'before':>8} {'now':>8} {'ratio':>6}  grid (shift, climbs) / identity")
    for kind in ("sar", "pipeline", "ramp", "cyclic"):
        sets = [s.split(".", 1)[1] for s in BASE + METHODS[kind]]
        cfg = apply_overrides(CrossbarConfig(adc_bits=bits, tile_rows=128, tile_cols=128), sets)
        for flawed in (True, False):
            c = cfg if flawed else cfg.replace(adc_cap_sigma_rel=0.0, adc_comparator_sigma_rel=0.0, adc_opamp_gain_db=None)
            tr = engine.program_matrix(w, c, None, None, np.random.default_rng(0)).adc_transfer
            L = tr.table.shape[1]
            cur = torch.randn(R, m, L, generator=torch.Generator().manual_seed(1)) * 2 ** (bits - 2)
            ts = {"before": [], "now": []}
            for _ in range(repeat * 5):
                for name, fn in (("before", read_b.adc_convert), ("now", adc_convert)):
                    x = cur.clone()
                    out, cpu, _ = timed(lambda: fn(x, c, True, tr))
                    ts[name].append(cpu)
                    if name == "before":
                        ref = out
                    else:
                        assert torch.equal(out, ref), f"{kind}: conversion differs"
            b, n = np.median(ts["before"]) * 1e3, np.median(ts["now"]) * 1e3
            ix = tr.index
            how = "identity" if ix.identity else f"({ix.shift}, {ix.climbs})"
            print(f"{kind + ('' if flawed else '*'):>9} {b:8.1f} {n:8.1f} {b / n:6.1f}  {how}")
    print("(* flawless)")
    keys = ReadKeys(seed=7, rows=torch.cat([torch.arange(n, dtype=torch.int64) + (e << 20)
                                            for e, n in enumerate([23, 17, 31, 9] * 5)]), block=8)
    kb = keys_b.ReadKeys(seed=7, rows=keys.rows, block=8)
    tb, tn = [], []
    for _ in range(repeat * 5):
        zb, cpu_b, _ = timed(lambda: kb.normal((3, 1), (1536,), torch.float32, "cpu").reshape(3, -1, 1536))
        zn, cpu_n, _ = timed(lambda: keys.normal((3, 1), (1536,), torch.float32, "cpu").reshape(3, -1, 1536))
        assert torch.equal(zb, zn)
        tb.append(cpu_b)
        tn.append(cpu_n)
    b, n = np.median(tb) * 1e3, np.median(tn) * 1e3
    print(f"read noise, {len(keys)} tokens x (3, 1, 1536), laid out for the read: {b:.1f} ms before, "
          f"{n:.1f} ms now ({b / n:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-examples", type=int, default=32)
    ap.add_argument("--methods", default="sar,pipeline,ramp,cyclic,vector")
    ap.add_argument("--adc-bits", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--before", default="937730f", help="git revision of the read before")
    ap.add_argument("--glue-dir", default=None, help="GLUE directory (default: nn.glue.default_glue_dir())")
    ap.add_argument("--skip-glue", action="store_true", help="only the conversion and noise timings")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    read_b = module_before(args.before, "crossbar/read.py", "read_before")
    keys_b = module_before(args.before, "crossbar/readkeys.py", "readkeys_before")
    import os

    print(f"before = {args.before}; torch {torch.__version__}, 1 thread, load {os.getloadavg()[0]:.1f}")
    conversion_only(read_b, keys_b, args.adc_bits, args.repeat)
    if args.skip_glue:
        return 0
    from nn.crossbar_linear import calibrate_model, patch_model, program_model, set_simulated, unpatch_model
    from nn.evaluate import CALIBRATION_EXAMPLES, EvalSession
    from nn.glue import default_glue_dir
    from nn.models import finetuned_model_dir
    from nn.sim import build_sim_config

    sess = EvalSession.open(str(finetuned_model_dir("minilm-sst2")), "sst2", args.glue_dir or default_glue_dir(),
                            max_examples=args.max_examples, max_length=64, batch_size=64)
    print(f"\nMiniLM SST-2 dev, {sess.n_examples} sentences, {args.adc_bits}-bit ADCs: CPU s per pass "
          f"(sum of {args.repeat}), wall s in brackets")
    print(f"| method | before (s) | now (s) | ratio | logits |\n|---|---:|---:|---:|---|")
    tot_b = tot_n = 0.0
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        cfg = build_sim_config("default", BASE + [f"crossbar.adc_bits={args.adc_bits}"] + METHODS[method])
        patch_model(sess.model, cfg)
        try:
            program_model(sess.model, np.random.default_rng([0, 0]))
            set_simulated(sess.model, True)
            idx = np.arange(min(CALIBRATION_EXAMPLES, sess.n_examples))
            b = sess.encoded.batch(idx)
            b.pop("labels")
            calibrate_model(sess.model, b, example_ids=idx)
            cpu = {"before": 0.0, "now": 0.0}
            wall = {"before": 0.0, "now": 0.0}
            same = True
            for _ in range(args.repeat):
                with Swap(read_b, keys_b):
                    yb, c, w = timed(sess.predict)
                cpu["before"] += c
                wall["before"] += w
                yn, c, w = timed(sess.predict)
                cpu["now"] += c
                wall["now"] += w
                same &= bool(np.array_equal(yb, yn))
        finally:
            unpatch_model(sess.model)
        tot_b += cpu["before"]
        tot_n += cpu["now"]
        print(f"| {method} | {cpu['before']:.1f} [{wall['before']:.0f}] | {cpu['now']:.1f} [{wall['now']:.0f}] | "
              f"{cpu['before'] / cpu['now']:.2f} | {'same bits' if same else 'DIFFER'} |", flush=True)
        if not same:
            return 1
    print(f"| all | {tot_b:.1f} | {tot_n:.1f} | {tot_b / tot_n:.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
