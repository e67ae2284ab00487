"""Time per SST-2 dev pass of MiniLM, digital against simulated crossbars, ratios in one run.

    .venv/bin/python bench/bench_bert.py [--model DIR] [--glue-dir D] [--max-examples N]
                                         [--batch-size 64] [--max-length 64] [--threads 1]
                                         [--modes digital,table,bitserial]

Modes, all timed in the same process on the same tokenized dev set and batch size:

* ``digital``: the fine-tuned model as loaded (float32 ``nn.Linear``);
* ``table``: the 36 encoder Linear layers on crossbars: 8-bit DFP weights and inputs, 2 bits/cell,
  differential, 128x128 tiles, multi-bit DAC, ideal ADC, tabulated IR drop (shipped
  ``data/irdrop_default.h5``, 1 ohm per wire segment), lognormal programming variation 5 % and
  1 % stuck-at faults (the folded one-matmul read);
* ``bitserial``: the same chip read one input bit per cycle with an 8-bit ADC on every slice
  column in every cycle (8 cycles x 4 slices of conversions);
* ``aihwkit``: when ``aihwkit_lightning`` (IBM's light-weight inference simulator, pure Python,
  pip-installable) is importable: the same 36 Linear layers converted with its
  ``convert_to_analog`` (``TorchInferenceRPUConfig``: tiles of at most 128 inputs, no input or
  output quantization, no noise: the cost of its tiled forward). The full ``aihwkit`` needs a C++/CUDA source
  build and is not compared (BENCHMARKS.md says why).

Programming time (quantize + draw + fold, once per chip) is printed separately: it is paid once per
trial, not per pass. Each pass is timed once after one warm-up batch; the machine's other load
shows in the absolute times, less in the ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nn.crossbar_linear import patch_model, program_model, set_simulated, unpatch_model  # noqa: E402
from nn.evaluate import EvalSession  # noqa: E402
from nn.metrics import glue_score  # noqa: E402
from nn.sim import build_sim_config  # noqa: E402

CHIP = ["levels.source=synthetic", "levels.sigma_rel=0.05", "faults.rate=0.01", "crossbar.ir_drop=table",
        "circuit.r_wire_row_ohm=1.0", "circuit.r_wire_col_ohm=1.0"]
MODES = {
    "table": CHIP,
    "bitserial": CHIP + ["crossbar.dac=bit_serial", "crossbar.adc_bits=8", "crossbar.adc_scope=column"],
}


def _aihwkit_pass(sess, warm):
    """Convert a copy of the model with aihwkit_lightning and time one dev pass."""
    import copy

    from aihwkit_lightning.nn.conversion import convert_to_analog
    from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig

    rpu = TorchInferenceRPUConfig()
    rpu.mapping.max_input_size = 128
    # no input/output quantization or noise: its output quantization needs an out_bound fitted to
    # the data (assertion "Out quant. without a bound."), which this timing run does not attempt
    digital = sess.model
    t0 = time.perf_counter()
    analog = convert_to_analog(
        copy.deepcopy(digital), rpu,
        exclude_modules=[n for n, m in digital.named_modules() if isinstance(m, torch.nn.Linear)
                         and not any(k in n for k in ("attention", "intermediate", "output.dense")) or "pooler" in n],
    ).eval()
    t_conv = time.perf_counter() - t0
    sess.model = analog
    try:
        with torch.no_grad():
            analog(**warm)
        t0 = time.perf_counter()
        acc = glue_score("sst2", sess.predict(), sess.encoded.labels)["accuracy"]
        t = time.perf_counter() - t0
    finally:
        sess.model = digital
    return t_conv, t, acc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="fine-tuned SST-2 classifier (default: the cached minilm-sst2)")
    ap.add_argument("--glue-dir", default=None)
    ap.add_argument("--max-examples", type=int, default=None, help="dev subset (default: all 872)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="digital,table,bitserial,aihwkit",
                    help="comma-separated; aihwkit is skipped when aihwkit_lightning is not importable")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from nn.glue import default_glue_dir
    from nn.models import finetuned_model_dir

    model = args.model or str(finetuned_model_dir("minilm-sst2"))
    glue_dir = args.glue_dir or default_glue_dir()
    sess = EvalSession.open(model, "sst2", glue_dir, max_examples=args.max_examples, max_length=args.max_length,
                            batch_size=args.batch_size)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "aihwkit" in modes:
        try:
            import aihwkit_lightning  # noqa: F401
        except ImportError:
            print("aihwkit_lightning is not installed: its mode is skipped (see BENCHMARKS.md)")
            modes.remove("aihwkit")
    print(f"MiniLM SST-2 dev: {sess.n_examples} examples, batch {args.batch_size}, max_length {args.max_length}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    warm = {k: v for k, v in sess.encoded.batch(np.arange(min(8, sess.n_examples))).items() if k != "labels"}
    res: dict[str, float] = {}
    for mode in modes:
        if mode == "digital":
            with torch.no_grad():
                sess.model(**warm)
            t0 = time.perf_counter()
            acc = glue_score("sst2", sess.predict(), sess.encoded.labels)["accuracy"]
            res[mode] = time.perf_counter() - t0
            print(f"{mode:>10}: pass {res[mode]:7.2f} s  accuracy {acc:.4f}", flush=True)
            continue
        if mode == "aihwkit":
            t_conv, t, acc = _aihwkit_pass(sess, warm)
            res[mode] = t
            print(f"{mode:>10}: pass {t:7.2f} s  accuracy {acc:.4f}  (conversion {t_conv:.1f} s)", flush=True)
            continue
        cfg = build_sim_config("default", MODES[mode])
        patch_model(sess.model, cfg)
        try:
            t0 = time.perf_counter()
            program_model(sess.model, np.random.default_rng(0))
            t_prog = time.perf_counter() - t0
            set_simulated(sess.model, True)
            with torch.no_grad():
                sess.model(**warm)
            t0 = time.perf_counter()
            acc = glue_score("sst2", sess.predict(), sess.encoded.labels)["accuracy"]
            res[mode] = time.perf_counter() - t0
        finally:
            unpatch_model(sess.model)
        print(f"{mode:>10}: pass {res[mode]:7.2f} s  accuracy {acc:.4f}  (programming {t_prog:.1f} s)", flush=True)
    if "digital" in res:
        print("\n| mode | dev pass (s) | x digital |\n|---|---:|---:|")
        for m, t in res.items():
            print(f"| {m} | {t:.2f} | {t / res['digital']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
