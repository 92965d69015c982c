"""Non-LLM baselines: the numbers a fine-tuned model has to beat, produced in exactly the
scorer's input format ({"id", "output": the serialized target JSON, "probs": {field: {label: p}}}).

Every baseline is generic over tasks: it reads the label spaces from the task's schema and its
text from the task's own prompt (the "user" messages), and it is fitted on the train split only;
the validation split is used only to choose hyperparameters (C, k, learning rate and epochs). Baselines:

- majority              the train's most frequent value per field (probs: the train frequencies)
- tfidf                 TF-IDF word 1-2 grams + char 2-5 grams -> logistic regression per field
- embedding             all-MiniLM-L6-v2 sentence embeddings -> logistic regression per field
- knn                   label fields only: cosine k-nearest neighbours over the embeddings
- finetuned             all-MiniLM-L6-v2 fine-tuned end to end: a head per label field, or for
                        multiple choice a bi-encoder with a softmax over each question's options
                        (mcqa.compare.finetuned); learning rate and epochs chosen on validation
- embedding_similarity  multiple choice only: cosine(question, option), softmax with a
                        temperature fitted on train; no classifier is trained

A free field (no label space) gets no baseline: it is filled with the train's most frequent
value so that the output still parses, and the result says it was skipped. For a multiple-choice
field, letters past an example's last option are impossible and get probability 0.

The fits are mcqa.compare.label_fits and mcqa.compare.choice_fits. Embeddings come from
mcqa.compare.embeddings, cached per (task, protocol, split, text kind); a baseline's
fit and predict times count a cache hit at its encoding cost, so the reported speed is the
baseline's, not the cache's. torch and transformers are imported only when an embedding
baseline runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcqa.compare import choice_fits, embeddings, finetuned, label_fits
from mcqa.compare.baseline_cache import cache_key, code_digest, load_cached, store
from mcqa.compare.choice_fits import fit_finetuned_options, fit_similarity
from mcqa.compare.embeddings import MINILM_PIP, minilm_dir, timed  # noqa: F401 (MINILM_PIP, minilm_dir: re-exported)
from mcqa.compare.label_fits import (
    BaselineNotApplicable,
    Data,
    Fitted,
    fit_embedding,
    fit_finetuned,
    fit_knn,
    fit_majority,
    fit_tfidf,
    free_field_fill,
    mask_choices,
    predictions,
)  # noqa: F401
from mcqa.console import console
from mcqa.examples import load_split, resolve_protocol
from mcqa.names import Registry
from mcqa.task import Example, Task


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    fit: Callable[[Task, Data, Data], Fitted]  # (task, train, validation)
    not_applicable: Callable[[Task], str | None] = lambda task: None  # why it cannot run, or None
    encoder: bool = False  # reads MiniLM embeddings: the encoder's parameters count at inference


def _multiple_choice(task: Task) -> str | None:
    return (
        (
            "it predicts a label from the nearest training inputs; a multiple-choice answer letter depends on the "
            "option order, not the input"
        )
        if task.choice_field
        else None
    )


def _finetuned(task: Task, train: Data, validation: Data) -> Fitted:
    """A head per label field, or for multiple choice the bi-encoder over the options."""
    return (fit_finetuned_options if task.choice_field else fit_finetuned)(task, train, validation)


# ---------------------------------------------------------------- registry and runner


def _not_multiple_choice(task: Task) -> str | None:
    return None if task.choice_field else "it compares a question with its options; the task has no choice_field"


BASELINES: Registry[Baseline] = Registry("baseline")
for _b in (
    Baseline("majority", "most frequent train value per field", fit_majority),
    Baseline("tfidf", "TF-IDF word 1-2 + char 2-5 grams, logistic regression per field", fit_tfidf),
    Baseline("embedding", "all-MiniLM-L6-v2 embeddings, logistic regression per field", fit_embedding, encoder=True),
    Baseline(
        "knn",
        "cosine k-nearest neighbours over all-MiniLM-L6-v2 embeddings, k chosen on validation",
        fit_knn,
        _multiple_choice,
        encoder=True,
    ),
    Baseline(
        "finetuned",
        "all-MiniLM-L6-v2 fine-tuned end to end: a linear head per field, or for multiple choice a "
        "bi-encoder with a softmax over the options; learning rate and epochs chosen on validation",
        _finetuned,
    ),
    Baseline(
        "embedding_similarity",
        "cosine(question, option) of MiniLM embeddings, fitted softmax temperature",
        fit_similarity,
        _not_multiple_choice,
        encoder=True,
    ),
):
    BASELINES.register(_b.name, _b)


# The code between the data and a baseline's predictions: an edit to any of it fits again.
_FIT_CODE = (label_fits, choice_fits, finetuned, embeddings)


def get_baseline(name: str) -> Baseline:
    return BASELINES.resolve(name)


def run_baseline(
    name: str,
    task: Task,
    protocol: str | None = None,
    eval_split: str = "test",
    examples: list[Example] | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Fit baseline `name` on the task's train split (C chosen on validation) and predict
    `examples`, or the `eval_split` examples when none are given. The same baseline, task,
    protocol and data asked again reuse the predictions cached under `cache` (None: no cache)."""
    baseline = get_baseline(name)
    why = baseline.not_applicable(task)
    if why:
        raise BaselineNotApplicable(f"baseline '{name}' does not apply to task '{task.name}': {why}")
    protocol = resolve_protocol(task, protocol)

    def split(s: str) -> Data:
        return Data(load_split(task, s, protocol), f"{task.name}/{protocol}/{s}")

    train, validation = split("train"), split("validation")
    target = Data(list(examples), None) if examples is not None else split(eval_split)
    key = cache_key(
        name,
        task,
        protocol,
        {"train": train.examples, "validation": validation.examples, "eval": target.examples},
        "".join(code_digest(m) for m in _FIT_CODE),
    )
    hit = load_cached(cache, key, task, [e.id for e in target.examples])
    if hit is not None:
        console.print(
            f"{name} on {task.name}/{protocol}: reusing its predictions from {hit['cached']} (same baseline, task, "
            "protocol and data)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return {**hit, "eval_split": eval_split if examples is None else None}
    fitted, fit_s = timed(lambda: baseline.fit(task, train, validation))

    def predict() -> dict[str, np.ndarray]:
        probs = fitted.predict(target)
        mask_choices(task, target.examples, probs)
        return probs

    probs, predict_s = timed(predict)
    fields: dict[str, dict[str, Any]] = {f: {"status": "fitted", **fitted.info.get(f, {})} for f in probs}
    for f, space in task.label_spaces.items():
        if space is None:
            fields[f] = {
                "status": "skipped",
                "reason": "free field (no label space): no baseline; "
                "filled with the train's most frequent value so the output parses",
            }
    console.print(
        f"{name} on {task.name}/{protocol}: fit {fit_s:.1f}s, "
        f"predict {predict_s:.1f}s for {len(target.examples)} examples"
    )
    result = {
        "baseline": name,
        "task": task.name,
        "protocol": protocol,
        "eval_split": eval_split if examples is None else None,
        "n_train": len(train.examples),
        "n_validation": len(validation.examples),
        "n_eval": len(target.examples),
        "fields": fields,
        "n_params": fitted.n_params,
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "examples_per_second": len(target.examples) / predict_s if predict_s > 0 else float("inf"),
        "predictions": predictions(task, target.examples, probs, free_field_fill(task, train)),
    }
    store(cache, key, result)
    return result
