"""Scoring a predictions file as the README describes it, each checked against a computation of
its own: the file's format (`finish_reason: "length"`, integer ids), the `several_objects` note,
per-group results on imperfect predictions, and recipe_mpr's multi-label groups."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from helpers import REPO, load

from mcqa.eval.scoring import compute_metrics, make_records, match_ids, parser_for, read_predictions
from mcqa.prompting import serialize_target
from mcqa.registry import get_task
from mcqa.task import SPLITS, Example

pytestmark = pytest.mark.usefixtures("one_thread")
NOTIFICATION = get_task("notification")


def _example(i: int, folder: str = "Work", priority: int = 2, groups: tuple[str, ...] = ()) -> Example:
    return Example(
        f"x{i}", {"app": "a", "title": "t", "body": f"b{i}"}, {"folder": folder, "priority": priority}, groups
    )


# ------------------------------------------------------------ the predictions file


def test_finish_reason_length_counts_as_truncated():
    cut = '{"folder": "Wo'
    examples = [_example(0), _example(1), _example(2)]
    preds = {
        "x0": {"id": "x0", "output": cut, "finish_reason": "length"},
        "x1": {"id": "x1", "output": cut, "finish_reason": "stop"},
        "x2": {"id": "x2", "output": cut, "truncated": True},
    }
    records = make_records(NOTIFICATION, examples, preds)
    assert [r["status"] for r in records] == ["truncated", "invalid_json", "truncated"]
    assert compute_metrics(NOTIFICATION, records, resamples=20)["parse"]["counts"]["truncated"] == 2


def test_integer_ids_in_a_predictions_file_match_string_example_ids(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(
        '{"id": 7, "output": "{\\"folder\\": \\"Work\\", \\"priority\\": 2}"}\n{"id": "8", "output": "nope"}\n'
    )
    preds = read_predictions(path)
    assert set(preds) == {"7", "8"}
    examples = [
        Example(i, {"app": "a", "title": "t", "body": "b"}, {"folder": "Work", "priority": 2}) for i in ("7", "8")
    ]
    records = make_records(NOTIFICATION, match_ids(examples, preds, str(path)), preds)
    assert [r["joint"] for r in records] == [True, False]


def test_several_objects_take_the_first_and_are_noted():
    text = 'Maybe {"folder": "Work", "priority": 3} or {"folder": "Personal", "priority": 1}'
    parsed = parser_for(NOTIFICATION).parse(text)
    assert parsed.status == "ok" and parsed.value == {"folder": "Work", "priority": 3}
    assert "several_objects" in parsed.notes
    m = compute_metrics(
        NOTIFICATION, make_records(NOTIFICATION, [_example(0)], {"x0": {"id": "x0", "output": text}}), resamples=20
    )
    assert m["parse"]["notes"]["several_objects"] == 1


# ------------------------------------------------------------ groups


def test_per_group_accuracy_and_intervals_on_imperfect_predictions():
    rng = np.random.default_rng(3)
    folders = ["Work", "Personal", "Promotions", "Alerts"]
    examples, preds, truth = [], {}, []
    for i in range(300):
        gold = {"folder": folders[rng.integers(4)], "priority": int(rng.integers(1, 4))}
        groups = ("odd",) if i % 2 else ("even",)
        groups += ("fizz",) if i % 3 == 0 else ()  # some examples sit in two groups
        e = Example(f"x{i}", {"app": "a", "title": "t", "body": "b"}, gold, groups)
        # how well each group does differs: "even" is right more often than "odd"
        roll = rng.random() * (0.7 if i % 2 == 0 else 1.0)
        pred = None if roll > 0.9 else gold if roll < 0.5 else {**gold, "priority": gold["priority"] % 3 + 1}
        examples.append(e)
        preds[e.id] = {"id": e.id, "output": json.dumps(pred) if pred else "no idea"}
        truth.append((groups, pred))
    m = compute_metrics(NOTIFICATION, make_records(NOTIFICATION, examples, preds), resamples=300)
    assert set(m["groups"]) == {"odd", "even", "fizz"}
    for g, s in m["groups"].items():
        members = [(e, p) for e, (groups, p) in zip(examples, truth) if g in groups]
        joint = np.mean([p == e.target for e, p in members])
        assert s["n"] == len(members)
        assert s["joint_accuracy"] == pytest.approx(joint)
        for f in ("folder", "priority"):
            assert s["accuracy"][f] == pytest.approx(
                np.mean([p is not None and p[f] == e.target[f] for e, p in members])
            )
        assert s["parse_failures"] == sum(p is None for _, p in members)
        lo, hi = s["joint_ci"]
        half = 1.96 * np.sqrt(joint * (1 - joint) / len(members))
        assert lo < joint < hi and hi - lo == pytest.approx(2 * half, rel=0.25), g
    assert m["groups"]["even"]["joint_accuracy"] > m["groups"]["odd"]["joint_accuracy"] + 0.1


def test_recipe_mpr_groups_are_the_query_type_flags_several_per_item():
    raw = json.loads((REPO / "data" / "recipe_mpr" / "500QA.json").read_text(encoding="utf-8"))
    flags = {f"rmpr-{i:03d}": {k for k, v in r["query_type"].items() if v} or {"none"} for i, r in enumerate(raw)}
    examples = [e for s in SPLITS for e in load("recipe_mpr", s, "split")]
    assert all(set(e.groups) == flags[e.id] for e in examples)
    assert sum(len(e.groups) > 1 for e in examples) > 50
    task = get_task("recipe_mpr")
    preds = {e.id: {"id": e.id, "output": serialize_target(task.output, e.target)} for e in examples}
    m = compute_metrics(task, make_records(task, examples, preds), resamples=20)
    assert {g: s["n"] for g, s in m["groups"].items()} == dict(Counter(g for f in flags.values() for g in f))
