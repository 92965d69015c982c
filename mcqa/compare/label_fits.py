"""The label baselines and what every baseline shares: the examples with their cache tag
(Data), a fitted baseline (Fitted), the task's label fields and input text, and predictions in
the scorer's format. majority, logistic regression over TF-IDF or MiniLM embeddings, knn over
the embeddings, and MiniLM fine-tuned with a head per field (mcqa.compare.finetuned). The
registry and the runner are mcqa.compare.baselines; the multiple-choice baselines are
mcqa.compare.choice_fits."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import FeatureUnion
from threadpoolctl import threadpool_limits

from mcqa.compare.embeddings import embed
from mcqa.compare.finetuned import fit_heads
from mcqa.errors import McqaError
from mcqa.eval.metrics import encode
from mcqa.prompting import LETTERS, serialize_target
from mcqa.task import Example, LabelSpace, Task

C_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
DEFAULT_C = 10.0  # when there is no validation split to choose C on
K_GRID = (1, 3, 5, 10, 20, 50)  # neighbours tried on validation by the knn baseline
DEFAULT_K = 10  # when there is no validation split to choose k on
MAX_ITER = 3000


class BaselineNotApplicable(McqaError):
    """The baseline cannot run on this task (option similarity on a task without options)."""


@dataclass(frozen=True)
class Data:
    """Examples, with a tag saying where they come from ("task/protocol/split") for the
    embedding cache; None for an ad-hoc list."""

    examples: list[Example]
    tag: str | None = None


@dataclass
class Fitted:
    """A fitted baseline. predict(data) -> {field: (n, K) probabilities over the field's label
    space}; n_params counts the numbers learned from train (weights, frequencies, temperature)."""

    predict: Callable[[Data], dict[str, np.ndarray]]
    n_params: int
    info: dict[str, dict[str, Any]] = field(default_factory=dict)


# ---------------------------------------------------------------- fields, text, predictions


def label_fields(task: Task) -> dict[str, LabelSpace]:
    return {f: s for f, s in task.label_spaces.items() if s is not None}


def gold(task: Task, e: Example) -> dict[str, Any]:
    """The target as JSON values (an Enum member becomes its value), as the scorer sees it."""
    if e.target is None:
        raise McqaError(f"example '{e.id}' has no label; baselines are fitted on labeled examples")
    return task.output.model_validate(e.target).model_dump(mode="json")


def labels(task: Task, data: Data, f: str) -> list[Any]:
    return [gold(task, e)[f] for e in data.examples]


def input_text(task: Task, e: Example) -> str:
    """What a text baseline reads: the task's own user messages (the prompt minus the system
    instruction, which is the same for every example)."""
    return "\n\n".join(m["content"] for m in task.messages(e) if m["role"] == "user")


def mask_choices(task: Task, examples: list[Example], probs: dict[str, np.ndarray]) -> None:
    """Zero the letters past each example's last option and renormalize, in place."""
    f = task.choice_field
    if f is None or f not in probs:
        return
    letters = [str(v) for v in task.label_spaces[f].values]
    for i, e in enumerate(examples):
        options = e.input.get("options")
        if not isinstance(options, list):
            continue
        invalid = [j for j, lab in enumerate(letters) if lab in LETTERS and LETTERS.index(lab) >= len(options)]
        row = probs[f][i]
        row[invalid] = 0.0
        total = row.sum()
        if total > 0:
            row /= total
        else:  # all the mass was on impossible letters: spread it over the possible ones
            row[[j for j in range(len(letters)) if j not in invalid]] = 1.0 / (len(letters) - len(invalid))


def predictions(
    task: Task, examples: list[Example], probs: dict[str, np.ndarray], fill: dict[str, Any]
) -> dict[str, dict]:
    """Probabilities -> the scorer's predictions: the argmax label of each field (for dependent
    fields, the allowed combination with the highest product of probabilities), serialized by
    the one target serializer, with the full (per-field) distribution under "probs"."""
    spaces = label_fields(task)
    out = {}
    for i, e in enumerate(examples):
        value = dict(fill)
        for f, P in probs.items():
            value[f] = spaces[f].values[int(np.argmax(P[i]))]
        if task.allowed and all(
            f in probs for f in task.allowed[0]
        ):  # dependent fields: the likeliest allowed combination
            value |= max(
                task.allowed,
                key=lambda a: sum(
                    math.log(max(float(probs[f][i][spaces[f].values.index(v)]), 1e-300)) for f, v in a.items()
                ),
            )
        out[e.id] = {
            "id": e.id,
            "output": serialize_target(task.output, {f: value[f] for f in task.fields}),
            "probs": {f: {str(v): float(p) for v, p in zip(spaces[f].values, P[i])} for f, P in probs.items()},
        }
    return out


def free_field_fill(task: Task, train: Data) -> dict[str, Any]:
    """Placeholders for free fields (the train's most frequent value), so the output parses."""
    fill = {}
    for f, space in task.label_spaces.items():
        if space is None:
            values = labels(task, train, f)
            keys = [json.dumps(v, sort_keys=True) for v in values]  # values may be unhashable
            fill[f] = values[keys.index(Counter(keys).most_common(1)[0][0])]
    return fill


# ---------------------------------------------------------------- majority


def frequencies(space: LabelSpace, values: list[Any]) -> np.ndarray:
    counts = np.bincount(encode(values, space), minlength=len(space.values) + 1)[: len(space.values)]
    return counts / max(counts.sum(), 1)


def fit_majority(task: Task, train: Data, validation: Data) -> Fitted:
    priors = {f: frequencies(s, labels(task, train, f)) for f, s in label_fields(task).items()}

    def predict(data: Data) -> dict[str, np.ndarray]:
        return {f: np.tile(p, (len(data.examples), 1)) for f, p in priors.items()}

    info = {f: {"value": label_fields(task)[f].values[int(np.argmax(p))]} for f, p in priors.items()}
    return Fitted(predict, n_params=sum(len(p) for p in priors.values()), info=info)


# ---------------------------------------------------------------- logistic regression per field


def fit_logreg(task: Task, X_train, train: Data, X_val, validation: Data) -> Fitted:
    """One multinomial logistic regression per label field on fixed features; C chosen on
    validation accuracy (ties go to the smaller C, the stronger regularization)."""
    models: dict[str, Any] = {}
    info: dict[str, dict[str, Any]] = {}
    for f, space in label_fields(task).items():
        y = encode(labels(task, train, f), space)
        if len(np.unique(y)) < 2:  # one class in train: nothing to learn, predict it
            models[f] = frequencies(space, labels(task, train, f))
            info[f] = {"C": None, "note": "one class in train"}
            continue
        y_val = encode(labels(task, validation, f), space) if validation.examples else None
        best = None
        for C in C_GRID if y_val is not None else (DEFAULT_C,):
            # L-BFGS makes many small BLAS calls; threading them is 3-10x slower here, not faster
            with threadpool_limits(1, user_api="blas"):
                m = LogisticRegression(C=C, max_iter=MAX_ITER).fit(X_train, y)
            acc = float((m.predict(X_val) == y_val).mean()) if y_val is not None else float("nan")
            if best is None or acc > best[0]:
                best = (acc, C, m)
        models[f] = best[2]
        info[f] = {"C": best[1], "validation_accuracy": best[0]}

    def predict(X) -> dict[str, np.ndarray]:
        out = {}
        for f, m in models.items():
            P = np.zeros((X.shape[0], len(label_fields(task)[f].values)))
            if isinstance(m, np.ndarray):
                P[:] = m
            else:
                P[:, m.classes_] = m.predict_proba(X)
            out[f] = P
        return out

    n_params = sum(m.coef_.size + m.intercept_.size for m in models.values() if not isinstance(m, np.ndarray))
    return Fitted(predict, n_params=n_params, info=info)


def tfidf_features() -> FeatureUnion:
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
            # char n-grams within word boundaries catch morphology ("thermo", "-ase") that words miss
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
        ]
    )


def fit_tfidf(task: Task, train: Data, validation: Data) -> Fitted:
    features = tfidf_features().fit([input_text(task, e) for e in train.examples])

    def featurize(data: Data):
        return features.transform([input_text(task, e) for e in data.examples])

    inner = fit_logreg(task, featurize(train), train, featurize(validation), validation)
    for f in inner.info:
        inner.info[f]["n_features"] = len(features.get_feature_names_out())
    return Fitted(lambda data: inner.predict(featurize(data)), inner.n_params, inner.info)


# ---------------------------------------------------------------- sentence embeddings (mcqa.compare.embeddings)


def fit_embedding(task: Task, train: Data, validation: Data) -> Fitted:
    def featurize(data: Data) -> np.ndarray:
        return embed([input_text(task, e) for e in data.examples], data.tag, "input")

    inner = fit_logreg(task, featurize(train), train, featurize(validation), validation)
    return Fitted(lambda data: inner.predict(featurize(data)), inner.n_params, inner.info)


def fit_knn(task: Task, train: Data, validation: Data) -> Fitted:
    """Cosine k-nearest neighbours over the same MiniLM embeddings, votes weighted by similarity;
    k per field chosen on validation accuracy (ties go to the larger k, the smoother vote)."""

    def featurize(data: Data) -> np.ndarray:
        return embed([input_text(task, e) for e in data.examples], data.tag, "input")

    X, X_val = featurize(train), featurize(validation) if validation.examples else None
    models: dict[str, Any] = {}
    info: dict[str, dict[str, Any]] = {}
    for f, space in label_fields(task).items():
        y = encode(labels(task, train, f), space)
        y_val = encode(labels(task, validation, f), space) if X_val is not None else None
        best = None
        for k in [k for k in K_GRID if k <= len(y)] if y_val is not None else (min(DEFAULT_K, len(y)),):
            m = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance").fit(X, y)
            acc = float((m.predict(X_val) == y_val).mean()) if y_val is not None else float("nan")
            if best is None or acc >= best[0]:
                best = (acc, k, m)
        models[f] = best[2]
        info[f] = {"k": best[1], "validation_accuracy": best[0]}

    def predict(data: Data) -> dict[str, np.ndarray]:
        Xd = featurize(data)
        out = {}
        for f, m in models.items():
            P = np.zeros((len(data.examples), len(label_fields(task)[f].values)))
            P[:, m.classes_] = m.predict_proba(Xd)
            out[f] = P
        return out

    # What it keeps from train: every embedding and its label.
    return Fitted(predict, n_params=int(X.size + len(models) * len(X)), info=info)


def fit_finetuned(task: Task, train: Data, validation: Data) -> Fitted:
    """MiniLM fine-tuned (mcqa.compare.finetuned) with a head per label field; learning rate and
    epochs chosen on validation. A multiple-choice task's is mcqa.compare.choice_fits."""
    spaces = label_fields(task)
    predict_texts, n_params, info = fit_heads(
        [input_text(task, e) for e in train.examples],
        {f: encode(labels(task, train, f), s) for f, s in spaces.items()},
        {f: len(s.values) for f, s in spaces.items()},
        [input_text(task, e) for e in validation.examples],
        {f: encode(labels(task, validation, f), s) for f, s in spaces.items()},
    )
    return Fitted(
        lambda data: predict_texts([input_text(task, e) for e in data.examples]),
        n_params,
        {f: dict(info) for f in spaces},
    )
