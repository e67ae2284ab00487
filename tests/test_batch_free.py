"""Scores that do not depend on the batch size (issue 20, "silent wrong numbers" 1).

An evaluation's numbers must be the same whatever ``--batch-size`` is: the read noise of a token
is keyed by its example, its position, the chip, the layer and the read (not drawn in batch
order), and calibrated ranges (``adc_range=calibrated``, ``input_granularity=layer/tile``) are
set on a fixed calibration set, not on the first batch. Checked on the tiny BERT with read
noise, a calibrated column ADC and per-layer DAC steps, over several chips: the rows of batch
sizes 1, 7, 32 and 64 are identical, and so are the logits, bit for bit (also digital, with an
ideal ADC, and with bit-serial DACs and per-row-block DAC steps), so the row key needs no batch
size (:mod:`nn.batching`).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from nn.evaluate import EvalSession, evaluate_glue, read_results  # noqa: E402
from nn.sim import build_sim_config  # noqa: E402
from _tiny_bert import write_glue, write_tiny_classifier  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

BATCH_SIZES = (1, 7, 32, 64)
#: read noise, a calibrated 6-bit column ADC and one DAC step per layer, on small tiles
NOISY = ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic", "levels.sigma_rel=0.05",
         "read_noise=crossbar", "crossbar.read_noise_sigma_rel=0.1", "crossbar.adc_bits=6",
         "crossbar.adc_range=calibrated", "crossbar.input_granularity=layer", "faults.rate=0.01"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("batchfree")
    return {"model": write_tiny_classifier(root / "model"), "glue": write_glue(root / "glue", n_dev=70)}


def test_rows_do_not_depend_on_the_batch_size(files, tmp_path):
    sim = build_sim_config("default", NOISY)
    rows = {}
    for bs in BATCH_SIZES:
        out = tmp_path / f"r{bs}.csv"
        evaluate_glue(files["model"], "sst2", files["glue"], sim, 2, 0, out, batch_size=bs, progress=False,
                      max_length=32, verbose=False)
        rows[bs] = [{k: r[k] for k in ("mode", "trial", "config_hash", "accuracy", "score")} for r in read_results(out)]
    for bs in BATCH_SIZES[1:]:
        assert rows[bs] == rows[BATCH_SIZES[0]], f"batch size {bs} gives other rows"


@pytest.mark.parametrize("extra", [["crossbar.adc_bits=null", "crossbar.adc_range=full_scale"],
                                   ["crossbar.dac=bit_serial", "crossbar.input_granularity=tile"]])
def test_logits_do_not_depend_on_the_batch_size(files, extra):
    sim = build_sim_config("default", NOISY + extra)
    sess = EvalSession.open(files["model"], "sst2", files["glue"], max_length=32, batch_size=64)
    seen, predict = [], sess.predict
    sess.predict = lambda: seen.append(predict()) or seen[-1]  # keep the logits the metrics came from
    logits = {}
    for bs in BATCH_SIZES:
        sess.batch_size = bs
        sess.simulated_metrics(sim, trial=1, seed=0)  # programs, calibrates, predicts
        logits[bs] = seen[-1]
    if "crossbar.dac=bit_serial" in extra:
        return
    sess.digital_metrics()
    digital = seen[-1]
    for bs in BATCH_SIZES[:-1]:
        sess.batch_size = bs
        sess.digital_metrics()
        assert np.array_equal(seen[-1], digital), f"digital, batch size {bs}"
    ref = logits[BATCH_SIZES[0]]
    assert np.isfinite(ref).all()
    for bs in BATCH_SIZES[1:]:
        assert np.array_equal(logits[bs], ref), f"batch size {bs}: max |diff| {np.abs(logits[bs] - ref).max()}"
