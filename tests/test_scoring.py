"""What the README promises a user, each checked against a computation of its own: the
predictions-file format (`finish_reason: "length"`, integer ids), the `several_objects`
note, per-group results on imperfect predictions, recipe_mpr's multi-label groups, each
task's split fractions and stratification, head mode's initial heads, and rank's `full` score."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import REPO, load

from mcqa.model.encoding import IGNORE, end_of_turn, prompt_ids
from mcqa.modes.generate import encode_generative
from mcqa.modes.head import build_head_model
from mcqa.prompting import serialize_target
from mcqa.readouts import run_readout
from mcqa.registry import get_task
from mcqa.eval.scoring import compute_metrics, make_records, match_ids, parser_for, read_predictions
from mcqa.task import SPLITS, Example

pytestmark = pytest.mark.usefixtures("one_thread")
NOTIFICATION = get_task("notification")


def _example(i: int, folder: str = "Work", priority: int = 2, groups: tuple[str, ...] = ()) -> Example:
    return Example(f"x{i}", {"app": "a", "title": "t", "body": f"b{i}"}, {"folder": folder, "priority": priority}, groups)


# ------------------------------------------------------------ the predictions file


def test_finish_reason_length_counts_as_truncated():
    cut = '{"folder": "Wo'
    examples = [_example(0), _example(1), _example(2)]
    preds = {"x0": {"id": "x0", "output": cut, "finish_reason": "length"},
             "x1": {"id": "x1", "output": cut, "finish_reason": "stop"},
             "x2": {"id": "x2", "output": cut, "truncated": True}}
    records = make_records(NOTIFICATION, examples, preds)
    assert [r["status"] for r in records] == ["truncated", "invalid_json", "truncated"]
    assert compute_metrics(NOTIFICATION, records, resamples=20)["parse"]["counts"]["truncated"] == 2


def test_integer_ids_in_a_predictions_file_match_string_example_ids(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text('{"id": 7, "output": "{\\"folder\\": \\"Work\\", \\"priority\\": 2}"}\n{"id": "8", "output": "nope"}\n')
    preds = read_predictions(path)
    assert set(preds) == {"7", "8"}
    examples = [Example(i, {"app": "a", "title": "t", "body": "b"}, {"folder": "Work", "priority": 2}) for i in ("7", "8")]
    records = make_records(NOTIFICATION, match_ids(examples, preds, str(path)), preds)
    assert [r["joint"] for r in records] == [True, False]


def test_several_objects_take_the_first_and_are_noted():
    text = 'Maybe {"folder": "Work", "priority": 3} or {"folder": "Personal", "priority": 1}'
    parsed = parser_for(NOTIFICATION).parse(text)
    assert parsed.status == "ok" and parsed.value == {"folder": "Work", "priority": 3}
    assert "several_objects" in parsed.notes
    m = compute_metrics(NOTIFICATION, make_records(NOTIFICATION, [_example(0)], {"x0": {"id": "x0", "output": text}}), resamples=20)
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
            assert s["accuracy"][f] == pytest.approx(np.mean([p is not None and p[f] == e.target[f] for e, p in members]))
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


# ------------------------------------------------------------ splits


def _assert_fractions(counts: dict[str, int], fractions: tuple[float, float, float], slack: float) -> None:
    n = sum(counts.values())
    for s, f in zip(SPLITS, fractions):
        assert abs(counts[s] - f * n) <= slack, (counts, fractions)


@pytest.mark.parametrize("name,protocol,fractions,stratum", [
    ("notification", "seed", (0.6, 0.2, 0.2), lambda e: (e.target["folder"], e.target["priority"])),
    ("mmlu_pro", "seed", (0.6, 0.2, 0.2), lambda e: e.target["category"]),
    ("mmlu_pro", "full", (0.8, 0.1, 0.1), lambda e: e.target["category"]),
    ("recipe_mpr", "split", (0.8, 0.1, 0.1), None),
])
def test_split_fractions_and_stratification(name, protocol, fractions, stratum):
    splits = {s: load(name, s, protocol) for s in SPLITS}
    _assert_fractions({s: len(v) for s, v in splits.items()}, fractions, slack=1)
    if stratum is not None:  # each stratum is split in the same fractions (two rounding steps)
        by = {s: Counter(map(stratum, v)) for s, v in splits.items()}
        for key in set().union(*by.values()):
            _assert_fractions({s: by[s][key] for s in SPLITS}, fractions, slack=2)
    if (name, protocol) == ("notification", "seed"):
        assert [len(splits[s]) for s in SPLITS] == [720, 240, 240]


def test_recipe_mpr_folds_hold_a_fifth_each_and_a_tenth_of_the_rest_validates():
    for k in range(5):
        counts = {s: len(load("recipe_mpr", s, f"cv5-{k}")) for s in SPLITS}
        assert counts["test"] == 100
        assert counts["validation"] == 40 and counts["train"] == 360


# ------------------------------------------------------------ models


def _label_first_token(tok, task, field: str, value) -> int:
    """The first token of `value` where it sits in the serialized JSON target."""
    target = {f: s.values[0] for f, s in task.label_spaces.items()} | {field: value}
    text = serialize_target(task.output, target)
    at = text.index(f'"{field}":') + len(field) + 3 + isinstance(value, str)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [i for i, (a, _) in enumerate(enc["offset_mapping"]) if a == at]
    assert starts, f"no token starts where {value!r} does in {text}"
    return enc["input_ids"][starts[0]]


def test_heads_start_as_the_lm_heads_rows_of_each_labels_first_token(tiny):
    """At step 0, head mode ranks labels as the language model ranks their first tokens."""
    model, tok = tiny
    task = NOTIFICATION
    heads = build_head_model(model, tok, task)
    e = load("notification", "train", "seed")[0]
    ids = torch.tensor([prompt_ids(tok, task, e)])
    with torch.no_grad():
        head_logits = heads(input_ids=ids)["logits"]
        lm_logits = model(input_ids=ids).logits[0, -1]
    for f, logits in zip(task.fields, head_logits):
        rows = [_label_first_token(tok, task, f, v) for v in task.label_spaces[f].values]
        torch.testing.assert_close(logits[0], lm_logits[rows].float(), rtol=1e-4, atol=1e-4)


def test_rank_full_score_is_minus_the_training_loss_of_the_gold_target(tiny):
    model, tok = tiny
    task = NOTIFICATION
    examples = load("notification", "train", "seed")[:3]
    outputs = run_readout("rank", model, tok, task, examples, score="full")
    for e, o, row in zip(examples, outputs, encode_generative(tok, task, examples, end_of_turn(tok))):
        (group,) = o["scores"]
        gold = group["values"].index([e.target["folder"], e.target["priority"]])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(row["labels"][1:]), ignore_index=IGNORE, reduction="sum")
        assert group["loglik"][gold] == pytest.approx(-loss.item(), abs=1e-3)
