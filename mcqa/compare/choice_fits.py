"""The multiple-choice baselines: MiniLM question-option similarity with a fitted softmax
temperature, and MiniLM fine-tuned as a bi-encoder with a softmax over each question's options
(mcqa.compare.finetuned). Option i is letter LETTERS[i]; its probability goes to that letter's
column of the choice field, and any other label field gets the train frequencies."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from mcqa.compare.embeddings import embed
from mcqa.compare.finetuned import fit_options
from mcqa.compare.label_fits import BaselineNotApplicable, Data, Fitted, fit_majority, gold, label_fields
from mcqa.errors import McqaError
from mcqa.prompting import LETTERS
from mcqa.task import Example, Task


def letter_columns(task: Task) -> tuple[dict[int, int], list[str]]:
    """Option i is letter LETTERS[i]; its column in the choice field's label space (which need not
    list the letters in that order), and the label space's letters."""
    letters = [str(v) for v in task.label_spaces[task.choice_field].values]
    return {i: letters.index(x) for i, x in enumerate(LETTERS) if x in letters}, letters


def option_columns(
    data: Data, per_option: list[np.ndarray], columns: dict[int, int], width: int, field: str
) -> np.ndarray:
    """Per-example option probabilities placed in the choice field's label columns."""
    P = np.zeros((len(data.examples), width))
    for i, p in enumerate(per_option):
        missing = [LETTERS[j] for j in range(len(p)) if j not in columns]
        if missing:
            raise McqaError(
                f"example '{data.examples[i].id}' has {len(p)} options but field '{field}' has no letter {missing[0]}"
            )
        P[i, [columns[j] for j in range(len(p))]] = p
    return P


def question_text(e: Example) -> str:
    """Every string in the input except the options: the question (or request) being asked."""
    return "\n".join(v for k, v in e.input.items() if k != "options" and isinstance(v, str))


def options_of(e: Example) -> list[str]:
    opts = e.input.get("options")
    if not (isinstance(opts, list) and opts and all(isinstance(o, str) for o in opts)):
        raise BaselineNotApplicable(
            f"example '{e.id}' has no input 'options' (a list of strings) to compare the question with"
        )
    return opts


def similarities(data: Data) -> list[np.ndarray]:
    """Per example, the cosine similarity of the question to each option (embeddings are unit length)."""
    questions = embed([question_text(e) for e in data.examples], data.tag, "question")
    options = [options_of(e) for e in data.examples]
    flat = embed([o for opts in options for o in opts], data.tag, "options")
    out, start = [], 0
    for q, opts in zip(questions, options):
        out.append(flat[start : start + len(opts)] @ q)
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


def fit_finetuned_options(task: Task, train: Data, validation: Data) -> Fitted:
    f = task.choice_field
    columns, letters = letter_columns(task)

    def texts(data: Data) -> tuple[list[str], list[list[str]]]:
        return [question_text(e) for e in data.examples], [options_of(e) for e in data.examples]

    def answers(data: Data) -> np.ndarray:
        return np.array([LETTERS.index(str(gold(task, e)[f])) for e in data.examples])

    predict_options, n_params, info = fit_options(
        *texts(train), answers(train), *texts(validation), answers(validation)
    )
    others = fit_majority(task, train, validation)  # any other label field: the train frequencies

    def predict(data: Data) -> dict[str, np.ndarray]:
        return {
            **others.predict(data),
            f: option_columns(data, predict_options(*texts(data)), columns, len(letters), f),
        }

    return Fitted(
        predict, n_params, {f: info, **{g: {**v, "note": "majority"} for g, v in others.info.items() if g != f}}
    )
