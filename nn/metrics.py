"""GLUE metrics through scikit-learn and scipy, with the GLUE task scores and the GLUE average.

Official metric per task (Wang et al., ICLR 2019, "GLUE: A Multi-Task Benchmark and Analysis
Platform for Natural Language Understanding", Table 1):

========  ==========================================  ==================================
task      metrics                                     task score
========  ==========================================  ==================================
CoLA      Matthews correlation (``mcc``)              mcc
SST-2     ``accuracy``                                accuracy
MRPC      ``f1`` (positive class 1), ``accuracy``     mean of f1 and accuracy
STS-B     ``pearson``, ``spearman``                   mean of pearson and spearman
QQP       ``f1`` (positive class 1), ``accuracy``     mean of f1 and accuracy
MNLI      ``accuracy`` on matched and mismatched      see :func:`glue_average`
QNLI      ``accuracy``                                accuracy
RTE       ``accuracy``                                accuracy
WNLI      ``accuracy``                                accuracy
========  ==========================================  ==================================

All values are fractions (0.91, not 91). The metrics themselves are scikit-learn's and scipy's;
this module adds the GLUE rules around them: which metrics a task reports, the task score (the
mean of F1 and accuracy for MRPC/QQP, of Pearson and Spearman for STS-B) and the degenerate cases:
constant predictions or constant labels give a correlation of 0.0, not NaN, and emit no warning (a
model that always answers the same scores nothing, and a NaN would poison the average).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from device.errors import InputError

__all__ = [
    "accuracy",
    "f1_binary",
    "matthews_corrcoef",
    "pearson",
    "spearman",
    "predictions_from_logits",
    "glue_score",
    "glue_average",
    "MNLI_KEYS",
]


def _check(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.ndim != 1 or pred.shape != ref.shape:
        raise InputError(f"predictions {pred.shape} and labels {ref.shape} must be 1-D and the same length")
    if pred.size == 0:
        raise InputError("cannot score zero examples")
    return pred, ref


def _constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def accuracy(pred, ref) -> float:
    """Fraction of ``pred == ref``; both ``(n,)`` (``sklearn.metrics.accuracy_score``)."""
    from sklearn.metrics import accuracy_score

    pred, ref = _check(pred, ref)
    return float(accuracy_score(ref, pred))


def f1_binary(pred, ref, positive: int = 1) -> float:
    """F1 of the ``positive`` class, 2 TP / (2 TP + FP + FN) (``sklearn.metrics.f1_score``); 0.0
    when there are no positives at all, in predictions or labels."""
    from sklearn.metrics import f1_score

    pred, ref = _check(pred, ref)
    if not np.any(pred == positive) and not np.any(ref == positive):
        return 0.0
    return float(f1_score(ref == positive, pred == positive, average="binary", zero_division=0.0))


def matthews_corrcoef(pred, ref) -> float:
    """Matthews correlation for any number of classes (``sklearn.metrics.matthews_corrcoef``,
    Gorodkin 2004); 0.0 when the predictions or the labels are all one class."""
    from sklearn.metrics import matthews_corrcoef as mcc

    pred, ref = _check(pred, ref)
    if _constant(pred) or _constant(ref):
        return 0.0
    return float(mcc(ref, pred))


def pearson(x, y) -> float:
    """Pearson correlation of ``(n,)`` arrays in float64 (``scipy.stats.pearsonr``); 0.0 if either
    is constant (or n < 2)."""
    from scipy.stats import pearsonr

    x, y = _check(x, y)
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    if x.size < 2 or _constant(x) or _constant(y):
        return 0.0
    return float(np.clip(pearsonr(x, y).statistic, -1.0, 1.0))


def spearman(x, y) -> float:
    """Spearman rank correlation, ties sharing their mean rank (``scipy.stats.spearmanr``); 0.0
    if either is constant (or n < 2)."""
    from scipy.stats import spearmanr

    x, y = _check(x, y)
    if x.size < 2 or _constant(x) or _constant(y):
        return 0.0
    return float(np.clip(spearmanr(x, y).statistic, -1.0, 1.0))


def predictions_from_logits(task: str, outputs) -> np.ndarray:
    """Class ids (argmax over the last axis) or, for STS-B, the scores, from ``(n, num_labels)`` outputs.

    1-D input is taken as already being predictions.
    """
    from nn.glue import get_task

    out = np.asarray(outputs)
    if out.ndim == 1:
        return out
    if out.ndim != 2:
        raise InputError(f"outputs must be (n,) or (n, num_labels), got shape {out.shape}")
    if get_task(task).is_regression:
        if out.shape[1] != 1:
            raise InputError(f"STS-B outputs must be (n, 1), got shape {out.shape}")
        return out[:, 0]
    return np.argmax(out, axis=1)


def glue_score(task: str, predictions, labels) -> dict[str, float]:
    """The official metric(s) of ``task`` plus ``score``, the task's number in the GLUE average.

    ``predictions``: class ids / STS-B scores ``(n,)``, or model outputs ``(n, num_labels)``
    (argmax is taken). ``labels``: ``(n,)`` as in :class:`nn.glue.GlueSplit`.
    """
    from nn.glue import get_task

    t = get_task(task)
    pred = predictions_from_logits(t.name, predictions)
    ref = np.asarray(labels)
    out: dict[str, float]
    if t.name == "cola":
        out = {"mcc": matthews_corrcoef(pred, ref)}
        out["score"] = out["mcc"]
    elif t.name == "stsb":
        out = {"pearson": pearson(pred, ref), "spearman": spearman(pred, ref)}
        out["score"] = 0.5 * (out["pearson"] + out["spearman"])
    elif t.name in ("mrpc", "qqp"):
        out = {"f1": f1_binary(pred, ref), "accuracy": accuracy(pred, ref)}
        out["score"] = 0.5 * (out["f1"] + out["accuracy"])
    else:
        out = {"accuracy": accuracy(pred, ref)}
        out["score"] = out["accuracy"]
    return out


# Keys glue_average accepts for the two MNLI dev sets.
MNLI_KEYS = {
    "mnli_m": "m", "mnli-m": "m", "mnli_matched": "m", "mnli-matched": "m",
    "mnli_mm": "mm", "mnli-mm": "mm", "mnli_mismatched": "mm", "mnli-mismatched": "mm",
}


def glue_average(results: Mapping[str, Mapping[str, float]], *, mnli_separate: bool = False) -> float:
    """Macro-average of the task scores in ``results`` (``{task: glue_score(...)}``).

    Rule (GLUE paper, Sec. 4): each task counts once; a task with two metrics contributes their
    unweighted mean (its ``score``). MNLI is given as two entries, ``mnli_m`` and ``mnli_mm``
    (also ``mnli-m``/``mnli_matched`` ...); by default they are averaged into one MNLI task score,
    so the nine tasks weigh equally. ``mnli_separate=True`` counts them as two entries instead, the
    convention of the BERT paper's "Average" column. A plain ``mnli`` key is taken as the already
    combined MNLI score. Only the tasks present are averaged, so a partial set gives a partial
    average; values are fractions.
    """
    if not results:
        raise InputError("glue_average needs at least one task result")
    from nn.glue import get_task

    scores: list[float] = []
    mnli: dict[str, float] = {}
    for key, res in results.items():
        if "score" not in res:
            raise InputError(f"result for {key!r} has no 'score' entry (use glue_score)")
        k = key.lower()
        if k in MNLI_KEYS:
            mnli[MNLI_KEYS[k]] = float(res["score"])
            continue
        get_task(key)  # unknown task names are an error
        scores.append(float(res["score"]))
    if mnli:
        if mnli_separate:
            scores.extend(mnli.values())
        else:
            scores.append(float(np.mean(list(mnli.values()))))
    return float(np.mean(scores))
