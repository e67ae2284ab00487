"""GLUE metrics (numpy/scipy only) and the GLUE average.

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

All values are fractions (0.91, not 91). Degenerate inputs (constant predictions or constant
labels) give a correlation of 0.0, not NaN, and emit no warning: a model that always answers the
same scores nothing, and a NaN would poison the average.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

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
        raise ValueError(f"predictions {pred.shape} and labels {ref.shape} must be 1-D and the same length")
    if pred.size == 0:
        raise ValueError("cannot score zero examples")
    return pred, ref


def accuracy(pred, ref) -> float:
    """Fraction of ``pred == ref``; both ``(n,)``."""
    pred, ref = _check(pred, ref)
    return float(np.mean(pred == ref))


def f1_binary(pred, ref, positive: int = 1) -> float:
    """F1 of the ``positive`` class, 2 TP / (2 TP + FP + FN); 0.0 when there are no positives at all."""
    pred, ref = _check(pred, ref)
    p = pred == positive
    r = ref == positive
    tp = float(np.sum(p & r))
    denom = 2.0 * tp + float(np.sum(p & ~r)) + float(np.sum(~p & r))
    return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(pred, ref) -> float:
    """Matthews correlation for any number of classes (Gorodkin 2004, the form sklearn uses).

    With confusion matrix ``C`` (rows true, columns predicted), ``t = C.sum(1)``, ``p = C.sum(0)``,
    ``c = trace(C)``, ``s = C.sum()``:
    ``MCC = (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))``; 0.0 when either factor is 0.
    """
    pred, ref = _check(pred, ref)
    classes, inv = np.unique(np.concatenate([ref, pred]), return_inverse=True)
    k = classes.size
    n = ref.size
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (inv[:n], inv[n:]), 1.0)
    t = cm.sum(axis=1)
    p = cm.sum(axis=0)
    c = np.trace(cm)
    s = cm.sum()
    cov_tp = c * s - t @ p
    cov_pp = s * s - p @ p
    cov_tt = s * s - t @ t
    if cov_pp == 0.0 or cov_tt == 0.0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_pp * cov_tt))


def pearson(x, y) -> float:
    """Pearson correlation of ``(n,)`` arrays, computed in float64; 0.0 if either is constant."""
    x, y = _check(x, y)
    x = x.astype(np.float64) - np.mean(x, dtype=np.float64)
    y = y.astype(np.float64) - np.mean(y, dtype=np.float64)
    sxx = float(x @ x)
    syy = float(y @ y)
    if sxx == 0.0 or syy == 0.0:
        return 0.0
    r = float(x @ y) / np.sqrt(sxx * syy)
    return float(np.clip(r, -1.0, 1.0))


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson of the average ranks (ties share their mean rank)."""
    from scipy.stats import rankdata

    x, y = _check(x, y)
    return pearson(rankdata(x), rankdata(y))


def predictions_from_logits(task: str, outputs) -> np.ndarray:
    """Class ids (argmax over the last axis) or, for STS-B, the scores, from ``(n, num_labels)`` outputs.

    1-D input is taken as already being predictions.
    """
    from nn.glue import get_task

    out = np.asarray(outputs)
    if out.ndim == 1:
        return out
    if out.ndim != 2:
        raise ValueError(f"outputs must be (n,) or (n, num_labels), got shape {out.shape}")
    if get_task(task).is_regression:
        if out.shape[1] != 1:
            raise ValueError(f"STS-B outputs must be (n, 1), got shape {out.shape}")
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
        raise ValueError("glue_average needs at least one task result")
    from nn.glue import get_task

    scores: list[float] = []
    mnli: dict[str, float] = {}
    for key, res in results.items():
        if "score" not in res:
            raise ValueError(f"result for {key!r} has no 'score' entry (use glue_score)")
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
