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

Embeddings come from mcqa.compare.embeddings, cached per (task, protocol, split, text kind); a baseline's
fit and predict times count a cache hit at its encoding cost, so the reported speed is the
baseline's, not the cache's. torch and transformers are imported only when an embedding
baseline runs.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import FeatureUnion
from threadpoolctl import threadpool_limits

from mcqa.compare.baseline_cache import cache_key, code_digest, load_cached, store
from mcqa.console import console
from mcqa.compare.embeddings import MINILM_PIP, embed, minilm_dir, timed  # noqa: F401 (MINILM_PIP, minilm_dir: re-exported)
from mcqa.errors import McqaError
from mcqa.examples import load_split, resolve_protocol
from mcqa.compare.finetuned import fit_heads, fit_options
from mcqa.eval.metrics import encode
from mcqa.names import Registry
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


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    fit: Callable[[Task, Data, Data], Fitted]  # (task, train, validation)
    not_applicable: Callable[[Task], str | None] = lambda task: None  # why it cannot run, or None
    encoder: bool = False  # reads MiniLM embeddings: the encoder's parameters count at inference


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


def predictions(task: Task, examples: list[Example], probs: dict[str, np.ndarray], fill: dict[str, Any]) -> dict[str, dict]:
    """Probabilities -> the scorer's predictions: the argmax label of each field (for dependent
    fields, the allowed combination with the highest product of probabilities), serialized by
    the one target serializer, with the full (per-field) distribution under "probs"."""
    spaces = label_fields(task)
    out = {}
    for i, e in enumerate(examples):
        value = dict(fill)
        for f, P in probs.items():
            value[f] = spaces[f].values[int(np.argmax(P[i]))]
        if task.allowed and all(f in probs for f in task.allowed[0]):  # dependent fields: the likeliest allowed combination
            value |= max(task.allowed, key=lambda a: sum(math.log(max(float(probs[f][i][spaces[f].values.index(v)]), 1e-300))
                                                          for f, v in a.items()))
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
    return FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
        # char n-grams within word boundaries catch morphology ("thermo", "-ase") that words miss
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
    ])


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
    """MiniLM fine-tuned (mcqa.compare.finetuned): a head per label field, or for a multiple-choice task a
    bi-encoder scoring each option against the question; learning rate and epochs chosen on
    validation."""
    if task.choice_field:
        return _fit_finetuned_options(task, train, validation)
    spaces = label_fields(task)
    predict_texts, n_params, info = fit_heads(
        [input_text(task, e) for e in train.examples], {f: encode(labels(task, train, f), s) for f, s in spaces.items()},
        {f: len(s.values) for f, s in spaces.items()}, [input_text(task, e) for e in validation.examples],
        {f: encode(labels(task, validation, f), s) for f, s in spaces.items()})
    return Fitted(lambda data: predict_texts([input_text(task, e) for e in data.examples]), n_params,
                  {f: dict(info) for f in spaces})


def _fit_finetuned_options(task: Task, train: Data, validation: Data) -> Fitted:
    f = task.choice_field
    columns, letters = letter_columns(task)

    def texts(data: Data) -> tuple[list[str], list[list[str]]]:
        return [question_text(e) for e in data.examples], [options_of(e) for e in data.examples]

    def answers(data: Data) -> np.ndarray:
        return np.array([LETTERS.index(str(gold(task, e)[f])) for e in data.examples])

    predict_options, n_params, info = fit_options(*texts(train), answers(train), *texts(validation), answers(validation))
    others = fit_majority(task, train, validation)  # any other label field: the train frequencies

    def predict(data: Data) -> dict[str, np.ndarray]:
        return {**others.predict(data), f: option_columns(data, predict_options(*texts(data)), columns, len(letters), f)}

    return Fitted(predict, n_params, {f: info, **{g: {**v, "note": "majority"} for g, v in others.info.items() if g != f}})


def letter_columns(task: Task) -> tuple[dict[int, int], list[str]]:
    """Option i is letter LETTERS[i]; its column in the choice field's label space (which need not
    list the letters in that order), and the label space's letters."""
    letters = [str(v) for v in task.label_spaces[task.choice_field].values]
    return {i: letters.index(x) for i, x in enumerate(LETTERS) if x in letters}, letters


def option_columns(data: Data, per_option: list[np.ndarray], columns: dict[int, int], width: int, field: str) -> np.ndarray:
    """Per-example option probabilities placed in the choice field's label columns."""
    P = np.zeros((len(data.examples), width))
    for i, p in enumerate(per_option):
        missing = [LETTERS[j] for j in range(len(p)) if j not in columns]
        if missing:
            raise McqaError(f"example '{data.examples[i].id}' has {len(p)} options but field '{field}' has no letter {missing[0]}")
        P[i, [columns[j] for j in range(len(p))]] = p
    return P


def _multiple_choice(task: Task) -> str | None:
    return ("it predicts a label from the nearest training inputs; a multiple-choice answer letter depends on the "
            "option order, not the input") if task.choice_field else None


# ---------------------------------------------------------------- question-option similarity

def question_text(e: Example) -> str:
    """Every string in the input except the options: the question (or request) being asked."""
    return "\n".join(v for k, v in e.input.items() if k != "options" and isinstance(v, str))


def options_of(e: Example) -> list[str]:
    opts = e.input.get("options")
    if not (isinstance(opts, list) and opts and all(isinstance(o, str) for o in opts)):
        raise BaselineNotApplicable(f"example '{e.id}' has no input 'options' (a list of strings) to compare the question with")
    return opts


def similarities(data: Data) -> list[np.ndarray]:
    """Per example, the cosine similarity of the question to each option (embeddings are unit length)."""
    questions = embed([question_text(e) for e in data.examples], data.tag, "question")
    options = [options_of(e) for e in data.examples]
    flat = embed([o for opts in options for o in opts], data.tag, "options")
    out, start = [], 0
    for q, opts in zip(questions, options):
        out.append(flat[start: start + len(opts)] @ q)
        start += len(opts)
    return out


def fit_similarity(task: Task, train: Data, validation: Data) -> Fitted:
    f = task.choice_field
    columns, letters = letter_columns(task)
    sims = similarities(train)
    answers = [LETTERS.index(str(gold(task, e)[f])) for e in train.examples]

    def nll(log_t: float) -> float:
        return -sum(log_softmax(s / math.exp(log_t))[a] for s, a in zip(sims, answers))

    # the temperature only sharpens or flattens the distribution: it never changes the argmax
    temperature = math.exp(minimize_scalar(nll, bounds=(math.log(1e-3), math.log(10.0)), method="bounded").x)
    others = fit_majority(task, train, validation)  # any other label field: the train frequencies

    def predict(data: Data) -> dict[str, np.ndarray]:
        per_option = [softmax(s / temperature) for s in similarities(data)]
        return {**others.predict(data), f: option_columns(data, per_option, columns, len(letters), f)}

    info = {f: {"temperature": temperature}, **{g: {**v, "note": "majority"} for g, v in others.info.items() if g != f}}
    return Fitted(predict, n_params=1 + sum(len(label_fields(task)[g].values) for g in info if g != f), info=info)


# ---------------------------------------------------------------- registry and runner

def _not_multiple_choice(task: Task) -> str | None:
    return None if task.choice_field else "it compares a question with its options; the task has no choice_field"


BASELINES: Registry[Baseline] = Registry("baseline")
for _b in (
    Baseline("majority", "most frequent train value per field", fit_majority),
    Baseline("tfidf", "TF-IDF word 1-2 + char 2-5 grams, logistic regression per field", fit_tfidf),
    Baseline("embedding", "all-MiniLM-L6-v2 embeddings, logistic regression per field", fit_embedding, encoder=True),
    Baseline("knn", "cosine k-nearest neighbours over all-MiniLM-L6-v2 embeddings, k chosen on validation", fit_knn,
             _multiple_choice, encoder=True),
    Baseline("finetuned", "all-MiniLM-L6-v2 fine-tuned end to end: a linear head per field, or for multiple choice a "
             "bi-encoder with a softmax over the options; learning rate and epochs chosen on validation", fit_finetuned),
    Baseline("embedding_similarity", "cosine(question, option) of MiniLM embeddings, fitted softmax temperature",
             fit_similarity, _not_multiple_choice, encoder=True),
):
    BASELINES.register(_b.name, _b)


def get_baseline(name: str) -> Baseline:
    return BASELINES.resolve(name)


def run_baseline(name: str, task: Task, protocol: str | None = None, eval_split: str = "test",
                 examples: list[Example] | None = None, cache: Path | None = None) -> dict[str, Any]:
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
    key = cache_key(name, task, protocol, {"train": train.examples, "validation": validation.examples, "eval": target.examples},
                    code_digest(baseline.fit))
    hit = load_cached(cache, key, task, [e.id for e in target.examples])
    if hit is not None:
        console.print(f"{name} on {task.name}/{protocol}: reusing its predictions from {hit['cached']} (same baseline, task, "
                      "protocol and data)", markup=False, highlight=False, soft_wrap=True)
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
            fields[f] = {"status": "skipped", "reason": "free field (no label space): no baseline; "
                         "filled with the train's most frequent value so the output parses"}
    console.print(f"{name} on {task.name}/{protocol}: fit {fit_s:.1f}s, predict {predict_s:.1f}s for {len(target.examples)} examples")
    result = {
        "baseline": name, "task": task.name, "protocol": protocol,
        "eval_split": eval_split if examples is None else None,
        "n_train": len(train.examples), "n_validation": len(validation.examples), "n_eval": len(target.examples),
        "fields": fields,
        "n_params": fitted.n_params,
        "fit_seconds": fit_s, "predict_seconds": predict_s,
        "examples_per_second": len(target.examples) / predict_s if predict_s > 0 else float("inf"),
        "predictions": predictions(task, target.examples, probs, free_field_fill(task, train)),
    }
    store(cache, key, result)
    return result
