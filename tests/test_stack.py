"""Stacking rows into one (mcqa.compare.stack, `mcqa compare --stack`): the pooled distribution is the
weighted product of the members', the weights are fitted on validation examples only, and a
member that cannot be stacked is refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_user_error, fake_run, load, run_cli, synth_env

from mcqa.compare import stack as stack_module
from mcqa.compare.stack import Member, fit_weights, stack
from mcqa.compare.table import compare
from mcqa.errors import McqaError
from mcqa.eval.scoring import make_records
from mcqa.io import write_jsonl
from mcqa.prompting import serialize_target
from mcqa.registry import get_task

LABELS = ["north", "south", "east", "west"]
WRONG = {"north": "south", "south": "east", "east": "west", "west": "north"}


def records(task, examples, right_every: int, sure: float, shift: int = 0, unsure: float | None = None) -> list[dict]:
    """Scored records of a member wrong on every `right_every`-th example (offset by `shift`),
    giving its answer probability `sure` (`unsure` when wrong, if given), the rest spread evenly."""
    out = {}
    for j, e in enumerate(examples):
        right = bool((j + shift) % right_every)
        answer = e.target["label"] if right else WRONG[e.target["label"]]
        p = sure if right or unsure is None else unsure
        probs = {lab: p if lab == answer else (1 - p) / 3 for lab in LABELS}
        out[e.id] = {"id": e.id, "output": serialize_target(task.output, {"label": answer}), "probs": {"label": probs}}
    return make_records(task, examples, out, progress=False)


def members(task, folds, specs) -> list[Member]:
    """One Member per (name, right_every, sure, shift), on every fold's validation and test split."""
    out = []
    for name, every, sure, shift in specs:
        val = {p: records(task, list(load("synth", "validation", p)), every, sure, shift) for p in folds}
        test = [r for p in folds for r in records(task, list(load("synth", "test", p)), every, sure, shift)]
        out.append(Member(name, 10, val, test))
    return out


def test_the_pooled_distribution_is_the_normalised_weighted_product(synth_tasks):
    task = get_task("synth")
    a, b = members(task, ["cv3-0"], [("a", 2, 0.7, 0), ("b", 3, 0.5, 1)])
    fixed = np.array([2.0, 0.5])
    preds, info = stack(task, ["cv3-0"], [a, b], fit=lambda logps, gold, ids: fixed)
    assert info["weights"]["cv3-0"]["label"] == {"a": 2.0, "b": 0.5}
    assert info["parameters"] == 10 + 10 + 2
    for ra, rb in zip(a.test, b.test):
        raw = {lab: ra["probs"]["label"][lab] ** 2.0 * rb["probs"]["label"][lab] ** 0.5 for lab in LABELS}
        want = {lab: v / sum(raw.values()) for lab, v in raw.items()}
        got = preds[ra["id"]]["probs"]["label"]
        assert got == pytest.approx(want, rel=1e-9)
        assert json.loads(preds[ra["id"]]["output"])["label"] == max(want, key=want.get)


def test_the_fit_prefers_the_member_that_is_right_on_validation():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 400)
    answer = np.where(np.arange(400) % 5, gold, (gold + 1) % 4)  # right on four examples in five
    good = np.log(np.where(np.eye(4)[answer] > 0, 0.4, 0.2))
    noise = np.log(rng.dirichlet(np.ones(4), 400))
    w = fit_weights([good, noise], gold, [str(i) for i in range(400)])
    assert w[1] < 0.05 < 1.0 < w[0]  # the good member sharpened, the noise all but ignored

    def nll(x: float) -> float:
        logq = x * good - np.logaddexp.reduce(x * good, axis=1, keepdims=True)
        return float(-logq[np.arange(400), gold].mean())

    # the optimum of the good member's weight alone: the log-odds of being right, 4:1 over three
    # wrong labels at half its mass each, is x * log(0.4 / 0.2) = log(4 * 3 / 3) ... found numerically
    grid = np.linspace(0.5, 6, 2000)
    assert w[0] == pytest.approx(grid[np.argmin([nll(x) for x in grid])], abs=0.01)


def test_no_test_example_reaches_the_fit(synth_tasks, monkeypatch):
    """A spy in place of the fit sees each fold's validation examples, their ids and the members'
    log-probabilities on them, and nothing of the test split."""
    task = get_task("synth")
    folds = ["cv3-0", "cv3-1", "cv3-2"]
    ms = members(task, folds, [("a", 2, 0.7, 0), ("b", 3, 0.5, 1), ("c", 5, 0.9, 2)])
    seen = []

    def spy(logps, gold, ids):
        seen.append((logps, gold, ids))
        return fit_weights(logps, gold, ids)

    stack(task, folds, ms, fit=spy)
    assert len(seen) == len(folds)
    for (logps, gold, ids), fold in zip(seen, folds):
        val = list(load("synth", "validation", fold))
        # a fold's validation examples are another fold's test examples, never its own
        assert ids == [e.id for e in val] and not set(ids) & {e.id for e in load("synth", "test", fold)}
        assert list(gold) == [LABELS.index(e.target["label"]) for e in val]
        for m, lp in zip(ms, logps):
            by_id = {r["id"]: r for r in m.validation[fold]}
            want = [[np.log(by_id[i]["probs"]["label"][lab]) for lab in LABELS] for i in ids]
            assert lp == pytest.approx(np.array(want))


def test_a_member_that_cannot_be_stacked_is_refused_in_one_line(synth_tasks):
    task = get_task("synth")
    folds = ["cv3-0"]
    a, b = members(task, folds, [("a", 2, 0.7, 0), ("b", 3, 0.5, 1)])
    other = Member("short", 10, b.validation, b.test[:-1])
    with pytest.raises(McqaError, match=r"^stack member 'short' was scored on other test examples than 'a'"):
        stack(task, folds, [a, other])
    with pytest.raises(McqaError, match=r"^stack member 'b' has no validation predictions"):
        stack(task, folds, [a, Member("b", 10, None, b.test)])
    bare = Member(
        "bare", 10, {"cv3-0": [{k: v for k, v in r.items() if k != "probs"} for r in b.validation["cv3-0"]]}, b.test
    )
    with pytest.raises(McqaError, match=r"^stack member 'bare' has no probabilities for field 'label' on validation"):
        stack(task, folds, [a, bare])
    with pytest.raises(McqaError, match=r"^a stack needs at least two members"):
        stack(task, folds, [a])


def _run(folder: Path, task, fold: str, every: int, sure: float, shift: int, validation: bool = True) -> Path:
    """A fake run folder of a member sure when right and unsure (0.35) when wrong."""
    config = {"task": "synth", "protocol": fold, "model": "m", "mode": "head", "epochs": every}
    run = fake_run(
        folder, config=config, records=records(task, list(load("synth", "test", fold)), every, sure, shift, 0.35)
    )
    if validation:
        write_jsonl(
            run / "validation" / "predictions.jsonl",
            records(task, list(load("synth", "validation", fold)), every, sure, shift, 0.35),
        )
    return run


def test_compare_stacks_runs_and_a_baseline_per_fold(tmp_path, synth_tasks):
    """`--stack` adds a row scored like the others: pooled over the folds, paired with the
    reference, its weights and members in compare.json and compare.md."""
    task = get_task("synth")
    folds = ["cv3-0", "cv3-1", "cv3-2"]
    runs = [_run(tmp_path / f"a{k}", task, p, 2, 0.9, 0) for k, p in enumerate(folds)]
    runs += [_run(tmp_path / f"b{k}", task, p, 3, 0.9, 1) for k, p in enumerate(folds)]
    out = tmp_path / "cmp"
    cmp = ["compare", "--task", "synth", "--protocol", "cv3", "--baselines", "majority"]
    members = ["m head epochs=2 (3 folds)", "m head epochs=3 (3 folds)", "majority"]
    done = run_cli(cmp + ["--runs", *runs, "--stack", *members, "--out", out], tmp_path, synth_env())
    assert done.rc == 0, done.err[-2000:]
    result = json.loads((out / "compare.json").read_text())
    row = result["rows"][-1]
    assert row["kind"] == "stack" and row["name"] == "stack: " + " + ".join(members)
    assert row["stack"]["members"] == members and set(row["stack"]["weights"]) == set(folds)
    assert row["n"] == 400 and row["paired"]["against"] == "majority"
    # the two runs err on different examples (every 2nd and every 3rd, offset), each unsure when
    # wrong: pooled, the sure one wins, so the stack is right wherever either run is
    by_name = {r["name"]: r for r in result["rows"]}
    assert row["joint"] > max(by_name[m]["joint"] for m in members[:2]) + 0.1
    assert row["paired"]["joint"]["ci"][0] > 0
    table = (out / "compare.md").read_text()
    assert "## Stack" in table and "log-linear" in table
    page = (out / "compare.html").read_text()
    assert "<h2>Stack</h2>" in page and page.count('<td class="mono">cv3-') == 3  # a weight row per fold
    scored = [json.loads(line) for line in (Path(row["folder"]) / "predictions.jsonl").read_text().splitlines()]
    assert sum(r["joint"] for r in scored) / 400 == pytest.approx(row["joint"])

    # a run without validation predictions, a name that is no row: one line, nothing written
    bare = [_run(tmp_path / f"c{k}", task, p, 4, 0.6, 0, validation=False) for k, p in enumerate(folds)]
    refused = run_cli(
        cmp + ["--runs", *runs, *bare, "--stack", "all", "--out", tmp_path / "bad"], tmp_path, synth_env()
    )
    assert_user_error(refused, "stack member 'm head epochs=4 (3 folds)' has no validation predictions")
    typo = run_cli(
        cmp + ["--runs", *runs, "--stack", "majority", "majorty", "--out", tmp_path / "bad"], tmp_path, synth_env()
    )
    assert_user_error(typo, "--stack: no row 'majorty'; did you mean 'majority'?")
    assert not (tmp_path / "bad").exists()


def test_stack_all_takes_every_row_with_probabilities(tmp_path, synth_tasks):
    task = get_task("synth")
    runs = [_run(tmp_path / f"a{k}", task, p, 2, 0.6, 0) for k, p in enumerate(["cv3-0", "cv3-1", "cv3-2"])]
    result = compare(task, "cv3", runs, ["majority", "tfidf"], tmp_path / "cmp", stack=["all"])
    assert result["rows"][-1]["stack"]["members"] == ["majority", "tfidf", "m head (3 folds)"]
    assert stack_module.MAX_WEIGHT >= max(
        w for fold in result["rows"][-1]["stack"]["weights"].values() for w in fold["label"].values()
    )
