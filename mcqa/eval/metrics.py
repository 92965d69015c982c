"""Metrics over per-example records. Parse failures count as wrong everywhere: they are a
column of their own in the confusion matrix, lower recall, and for ordinal fields count as the
farthest label from the gold.

scikit-learn computes the metrics; the one thing written here by hand is a vectorised
macro-F1 for bootstrap resampling (a thousand sklearn calls per field is too slow), and a test
checks it against sklearn. No torch here.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mcqa.task import LabelSpace

FAILURE = "<parse failure>"
ECE_BINS = 15


def encode(values: Sequence[Any], space: LabelSpace) -> np.ndarray:
    """Label values -> indices 0..K-1; None (a parse failure) or an unknown value -> K."""
    index = {v: i for i, v in enumerate(space.values)}
    k = len(space.values)
    return np.array([index.get(v, k) if v is not None else k for v in values], dtype=np.int64)


def field_metrics(gold: Sequence[Any], pred: Sequence[Any], space: LabelSpace | None) -> dict[str, Any]:
    """Accuracy, F1s, per-class scores, confusion matrix and (ordinal) distance metrics of one field."""
    # sklearn takes seconds to import; a command that refuses its input first should not pay them.
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    if space is None:  # a free field: exact match is all that can be said
        return {"accuracy": float(np.mean([g == p and p is not None for g, p in zip(gold, pred)]))}
    g, p = encode(gold, space), encode(pred, space)
    k = len(space.values)
    labels = list(range(k))
    # Macro-F1 averages over the classes present in gold or predictions (sklearn's default): a
    # class absent from a small file is not scored as 0.
    present = sorted(set(g.tolist()) | set(p.tolist()) - {k})
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(g, p)),
        "macro_f1": float(f1_score(g, p, labels=present, average="macro", zero_division=0)) if present else 0.0,
        "micro_f1": float(f1_score(g, p, labels=labels, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(g, p, labels=labels, average="weighted", zero_division=0)),
    }
    prec, rec, f1, support = precision_recall_fscore_support(g, p, labels=labels, zero_division=0)
    out["per_class"] = {
        str(v): {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, v in enumerate(space.values)
    }
    cm = confusion_matrix(g, p, labels=labels + [k])[:k]  # gold is never a failure: drop that row
    out["confusion"] = {
        "gold": [str(v) for v in space.values],
        "pred": [str(v) for v in space.values] + [FAILURE],
        "matrix": cm.tolist(),
    }
    if space.ordinal:
        out.update(ordinal_metrics(g, p, k))
    return out


def ordinal_metrics(g: np.ndarray, p: np.ndarray, k: int) -> dict[str, float]:
    """MAE, within-1 accuracy and quadratic weighted kappa on label indices; a failure (index k)
    is scored as the label farthest from the gold."""
    from sklearn.metrics import cohen_kappa_score

    farthest = np.where(g < (k - 1) / 2, k - 1, 0)
    p = np.where(p == k, farthest, p)
    err = np.abs(g - p)
    # Kappa is undefined (0/0) when gold and predictions are one constant; perfect is still perfect.
    qwk = 1.0 if np.array_equal(g, p) else cohen_kappa_score(g, p, labels=list(range(k)), weights="quadratic")
    return {"mae": float(err.mean()), "within1": float((err <= 1).mean()), "qwk": float(np.nan_to_num(qwk))}


def macro_f1_batch(g: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 for each row of (B, n) index arrays, over the classes 0..k-1 present in that
    row's gold or predictions (as field_metrics and sklearn's default; k marks a failure)."""
    scores = np.zeros(g.shape[0])
    present = np.zeros(g.shape[0])
    for c in range(k):
        gc, pc = g == c, p == c
        tp = (gc & pc).sum(axis=1)
        denom = gc.sum(axis=1) + pc.sum(axis=1)
        scores += np.divide(2 * tp, denom, out=np.zeros_like(scores), where=denom > 0)
        present += denom > 0
    return np.divide(scores, present, out=np.zeros_like(scores), where=present > 0)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_ci(samples: np.ndarray) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def calibration(probs: Sequence[dict[str, float]], gold: Sequence[Any], space: LabelSpace) -> dict[str, float]:
    """ECE (equal-width bins on the top probability) and multi-class Brier score."""
    labels = [str(v) for v in space.values]
    P = np.array([[float(pr.get(lab, 0.0)) for lab in labels] for pr in probs])
    y = encode(gold, space)
    onehot = np.eye(len(labels))[y]
    conf, pred = P.max(axis=1), P.argmax(axis=1)
    correct = (pred == y).astype(float)
    bins = np.minimum((conf * ECE_BINS).astype(int), ECE_BINS - 1)
    ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    return {"ece": float(ece), "brier": float(((P - onehot) ** 2).sum(axis=1).mean()), "n": int(len(y))}


def position_histogram(pred: Sequence[Any], gold: Sequence[Any], letters: Sequence[str]) -> dict[str, Any]:
    """How often each option position is predicted, next to how often it is the gold: a model
    that always picks "A" (or a data file that always puts the gold first) shows up here."""
    right = [sum(p == g for p, g in zip(pred, gold) if g == x) for x in letters]
    n_gold = [sum(g == x for g in gold) for x in letters]
    return {
        "positions": list(letters),
        "predicted": [sum(p == x for p in pred) for x in letters],
        "gold": n_gold,
        "failed": sum(p is None for p in pred),
        # accuracy on the examples whose gold is at each position (None where none is): a letter
        # bias shows as high accuracy at the favoured position and low elsewhere
        "accuracy_by_gold": [r / n if n else None for r, n in zip(right, n_gold)],
    }
