"""Stacking: one row from the per-label probabilities of several rows (trained runs, zero-shot
readouts, baselines) scored on the same task and folds.

Log-linear pooling: p(y) is proportional to the product over members m of p_m(y) ** w_m, with
one non-negative weight per member and field, fitted by maximum likelihood on each fold's
validation split only, then applied to that fold's test examples; the test split never reaches
the fit. Pooling is chosen over a multinomial logistic regression on the members'
log-probabilities because validation splits are small (40 questions per recipe_mpr fold): a
handful of weights per field rather than a coefficient per member, label and class.

A member needs probabilities for every labelled field of every example of both splits (rank,
options, head, choice and the baselines give them; generate does not), on exactly the examples
of the others; anything else is refused in one line naming the member and what differs.
scipy's L-BFGS-B does the fit (bounded weights, analytic gradient)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from mcqa.compare.label_fits import Data, free_field_fill, gold, label_fields, mask_choices, predictions
from mcqa.errors import McqaError
from mcqa.eval.records import Prediction, Record
from mcqa.examples import load_split
from mcqa.task import Example, Task

FLOOR = 1e-6  # a label a member gives no mass: log(0) would let one member veto a label alone
MAX_WEIGHT = 20.0  # a validation split one member separates perfectly would push its weight to infinity


@dataclass
class Member:
    """A row taking part in a stack: its records on each fold's validation split and its pooled
    test records (what the stack predicts from), and its parameter count at inference."""

    name: str
    parameters: int | None
    validation: dict[str, list[Record]] | None  # fold -> records; None: the row has none
    test: list[Record]


Fit = Callable[[list[np.ndarray], np.ndarray, list[str]], np.ndarray]


def fit_weights(logps: list[np.ndarray], gold: np.ndarray, ids: list[str]) -> np.ndarray:
    """One weight per member maximising the validation likelihood of the pooled distribution.
    `logps`: per member, an (examples x labels) array of log-probabilities; `gold`: the label
    index per example; `ids`: the examples' ids (what a test checks never include a test id)."""
    L = np.stack(logps)  # members x examples x labels
    rows = np.arange(L.shape[1])

    def nll(w: np.ndarray) -> tuple[float, np.ndarray]:
        logq = log_softmax(np.tensordot(w, L, axes=1), axis=-1)
        q = np.exp(logq)
        # d/dw_m of -log q(gold) = -(L_m[gold] - E_q[L_m])
        grad = -(L[:, rows, gold] - np.einsum("mnk,nk->mn", L, q)).mean(axis=1)
        return float(-logq[rows, gold].mean()), grad

    start = np.full(len(logps), 1.0 / len(logps))
    return minimize(nll, start, jac=True, method="L-BFGS-B", bounds=[(0.0, MAX_WEIGHT)] * len(logps)).x


def log_probs(
    task: Task, field: str, records: dict[str, Record], examples: list[Example], member: str, split: str
) -> np.ndarray:
    """A member's log-probabilities for `field` on `examples`, in the field's label order."""
    labels = [str(v) for v in label_fields(task)[field].values]
    out = np.empty((len(examples), len(labels)))
    for i, e in enumerate(examples):
        probs = records[e.id].get("probs") or {}
        dist = probs.get(field)
        if not isinstance(dist, dict):
            raise McqaError(
                f"stack member '{member}' has no probabilities for field '{field}' on {split} example '{e.id}'; "
                "stack rows whose readout gives probabilities (rank, options, head, choice, a baseline)"
            )
        p = np.array([float(dist.get(lab, 0.0)) for lab in labels])
        total = p.sum()
        p = p / total if total > 0 else np.full(len(labels), 1.0 / len(labels))
        out[i] = np.log(np.maximum(p, FLOOR))
    return out


def check_members(task: Task, folds: list[str], members: list[Member]) -> None:
    if len(members) < 2:
        raise McqaError(f"a stack needs at least two members with probabilities; got {len(members)}")
    if not label_fields(task):
        raise McqaError(f"task '{task.name}' has no labelled field: there are no probabilities to stack")
    test_ids = sorted(r["id"] for r in members[0].test)
    for m in members:
        if sorted(r["id"] for r in m.test) != test_ids:
            raise McqaError(
                f"stack member '{m.name}' was scored on other test examples than '{members[0].name}'; "
                "stack rows scored on the same examples"
            )
        if m.validation is None:
            raise McqaError(
                f"stack member '{m.name}' has no validation predictions to fit the stack on; "
                "a run trained before runs scored their validation split cannot be stacked: train it again"
            )
        for fold in folds:
            want = sorted(e.id for e in load_split(task, "validation", fold))
            got = sorted(r["id"] for r in m.validation.get(fold, []))
            if got != want:
                raise McqaError(
                    f"stack member '{m.name}' has {len(got)} validation predictions on {fold}, not the "
                    f"{len(want)} of its validation split; stack rows scored on the whole validation split"
                )


def stack(
    task: Task, folds: list[str], members: list[Member], fit: Fit = fit_weights
) -> tuple[dict[str, Prediction], dict[str, Any]]:
    """The stack's test predictions (the scorer's input format, with probabilities) and its
    weights per fold and field. Each fold is fitted on that fold's validation split alone."""
    check_members(task, folds, members)
    fields = label_fields(task)
    out: dict[str, Prediction] = {}
    weights: dict[str, dict[str, dict[str, float]]] = {}
    test_records = [{r["id"]: r for r in m.test} for m in members]
    for fold in folds:
        val_ex, test_ex = load_split(task, "validation", fold), load_split(task, "test", fold)
        fill = free_field_fill(task, Data(load_split(task, "train", fold)))
        val_records = [{r["id"]: r for r in m.validation[fold]} for m in members]
        probs, weights[fold] = {}, {}
        for f, space in fields.items():
            labels = [str(v) for v in space.values]
            answers = np.array([labels.index(str(gold(task, e)[f])) for e in val_ex])
            w = fit(
                [log_probs(task, f, recs, val_ex, m.name, "validation") for m, recs in zip(members, val_records)],
                answers,
                [e.id for e in val_ex],
            )
            weights[fold][f] = {m.name: float(x) for m, x in zip(members, w)}
            pooled = sum(
                x * log_probs(task, f, recs, test_ex, m.name, "test") for m, recs, x in zip(members, test_records, w)
            )
            probs[f] = np.exp(log_softmax(pooled, axis=-1))
        mask_choices(task, test_ex, probs)
        out |= predictions(task, test_ex, probs, fill)
    counts = [m.parameters for m in members]
    info = {
        "members": [m.name for m in members],
        "weights": weights,
        "pooling": "log-linear, one weight per member and field, fitted on each fold's validation split",
        "parameters": None if any(c is None for c in counts) else sum(counts) + len(members) * len(fields),
    }
    return out, info


def shown_weights(info: dict[str, Any]) -> str:
    """'a 0.62, b 1.30' per field, averaged over folds: what the table says of a stack."""
    folds = list(info["weights"].values())
    parts = []
    for f in folds[0]:
        mean = {m: sum(fw[f][m] for fw in folds) / len(folds) for m in folds[0][f]}
        parts.append((f"{f}: " if len(folds[0]) > 1 else "") + ", ".join(f"{m} {w:.2f}" for m, w in mean.items()))
    return "; ".join(parts) + (f" (mean of {len(folds)} folds)" if len(folds) > 1 else "")
