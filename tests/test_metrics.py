"""GLUE metrics against scikit-learn / scipy, hand-computed cases and degenerate inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nn import metrics as M

sk = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")


@pytest.fixture()
def rng():
    return np.random.default_rng(1234)


def test_against_sklearn_binary(rng):
    for _ in range(5):
        ref = rng.integers(0, 2, 200)
        pred = np.where(rng.random(200) < 0.7, ref, 1 - ref)
        assert M.accuracy(pred, ref) == pytest.approx(sk.accuracy_score(ref, pred), abs=1e-15)
        assert M.f1_binary(pred, ref) == pytest.approx(sk.f1_score(ref, pred), abs=1e-12)
        assert M.matthews_corrcoef(pred, ref) == pytest.approx(sk.matthews_corrcoef(ref, pred), abs=1e-12)


def test_mcc_multiclass_against_sklearn(rng):
    ref = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.6, ref, rng.integers(0, 3, 300))
    assert M.matthews_corrcoef(pred, ref) == pytest.approx(sk.matthews_corrcoef(ref, pred), abs=1e-12)


def test_correlations_against_scipy(rng):
    x = rng.normal(size=500)
    y = 0.6 * x + rng.normal(size=500)
    assert M.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    # ties (STS-B gold scores are on a 0.2 grid)
    xt = np.round(rng.uniform(0, 5, 300) * 5) / 5
    yt = np.round(xt + rng.normal(0, 1, 300))
    assert M.spearman(xt, yt) == pytest.approx(stats.spearmanr(xt, yt)[0], abs=1e-12)


def test_hand_computed():
    ref = np.array([1, 1, 1, 0, 0, 0])
    pred = np.array([1, 1, 0, 0, 0, 1])
    # TP=2, FP=1, FN=1, TN=2: acc 4/6, F1 = 4/6, MCC = (4-1)/sqrt(3*3*3*3) = 1/3
    assert M.accuracy(pred, ref) == pytest.approx(4 / 6)
    assert M.f1_binary(pred, ref) == pytest.approx(2 / 3)
    assert M.matthews_corrcoef(pred, ref) == pytest.approx(1 / 3)
    assert M.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1])
    assert M.spearman([1, 2, 3], [1, 10, 100]) == pytest.approx(1.0)
    assert M.matthews_corrcoef(ref, ref) == pytest.approx(1.0)
    assert M.matthews_corrcoef(1 - ref, ref) == pytest.approx(-1.0)


def test_degenerate_inputs_give_zero_without_warnings():
    ref = np.array([0, 1, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.matthews_corrcoef(np.ones(5, int), ref) == 0.0
        assert M.matthews_corrcoef(np.zeros(5, int), ref) == 0.0
        assert M.pearson(np.full(5, 2.5), ref.astype(float)) == 0.0
        assert M.spearman(np.full(5, 2.5), ref.astype(float)) == 0.0
        assert M.f1_binary(np.zeros(5, int), np.zeros(5, int)) == 0.0
    assert sk.matthews_corrcoef(ref, np.ones(5, int)) == 0.0  # same convention as sklearn


def test_shape_errors():
    with pytest.raises(ValueError):
        M.accuracy([1, 0], [1])
    with pytest.raises(ValueError):
        M.accuracy([], [])


def test_glue_score_per_task():
    ref = np.array([1, 0, 1, 1])
    pred = np.array([1, 0, 0, 1])
    r = M.glue_score("cola", pred, ref)
    assert set(r) == {"mcc", "score"} and r["score"] == r["mcc"]
    r = M.glue_score("MRPC", pred, ref)
    assert r["accuracy"] == 0.75 and r["f1"] == pytest.approx(0.8) and r["score"] == pytest.approx(0.775)
    assert set(M.glue_score("qqp", pred, ref)) == {"f1", "accuracy", "score"}
    for t in ("sst2", "qnli", "rte", "wnli", "mnli"):
        assert M.glue_score(t, pred, ref) == {"accuracy": 0.75, "score": 0.75}
    # logits: argmax
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.3, 0.2], [0.0, 1.0]])
    assert M.glue_score("sst2", logits, ref)["accuracy"] == 0.75
    y = np.array([0.0, 1.0, 2.5, 5.0])
    r = M.glue_score("stsb", (2 * y + 1)[:, None], y)
    assert r["pearson"] == pytest.approx(1.0) and r["spearman"] == pytest.approx(1.0) and r["score"] == pytest.approx(1.0)
    # every registry metric name is reported
    from nn.glue import TASKS

    for name, t in TASKS.items():
        lab = y if t.is_regression else ref
        assert set(t.metrics) | {"score"} == set(M.glue_score(name, lab, lab))


def test_glue_average_rule():
    res = {
        "cola": {"mcc": 0.5, "score": 0.5},
        "mrpc": {"f1": 0.9, "accuracy": 0.8, "score": 0.85},
        "mnli_m": {"accuracy": 0.8, "score": 0.8},
        "mnli-mm": {"accuracy": 0.7, "score": 0.7},
    }
    # MNLI m/mm averaged into one task: (0.5 + 0.85 + 0.75) / 3
    assert M.glue_average(res) == pytest.approx(0.7)
    # BERT-paper convention: m and mm as two entries: (0.5 + 0.85 + 0.8 + 0.7) / 4
    assert M.glue_average(res, mnli_separate=True) == pytest.approx(0.7125)
    with pytest.raises(ValueError):
        M.glue_average({})
    with pytest.raises(ValueError):
        M.glue_average({"squad": {"score": 1.0}})
    with pytest.raises(ValueError):
        M.glue_average({"cola": {"mcc": 1.0}})


def test_degenerate_f1_and_correlations_match_the_glue_convention():
    ref = np.zeros(6, int)
    pred = np.array([0, 1, 0, 1, 0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.f1_binary(pred, ref) == 0.0  # predicted positives, none true: F1 0 (no warning)
        assert M.f1_binary(ref, pred) == 0.0  # true positives never predicted
        assert M.pearson([1.0], [2.0]) == 0.0  # one example: no correlation defined
        assert M.spearman(np.arange(5.0), np.full(5, 3.0)) == 0.0
    assert M.glue_score("stsb", np.full(4, 2.0), np.array([0.0, 1.0, 4.0, 5.0]))["score"] == 0.0
    assert M.glue_score("qqp", pred, ref)["score"] == pytest.approx(0.5 * (0.0 + 4 / 6))
