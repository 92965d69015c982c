"""Dependent fields: a task declares the combinations its target may take (Task.allowed);
constrained and rank produce only those, a baseline predicts one of them, the conformance
check holds the gold to them, and a declaration outside the label spaces is refused."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from mcqa.compare.baselines import run_baseline
from mcqa.errors import TaskContractError
from mcqa.readouts import run_readout
from mcqa.readouts.trie import LabelCandidates
from mcqa.task import Example, Task, check_task, combinations_from_mapping

pytestmark = pytest.mark.usefixtures("one_thread")

ALLOWED = combinations_from_mapping("folder", "priority", {"Work": [2, 3], "Personal": [1], "Alerts": [3]})
PAIRS = {(a["folder"], a["priority"]) for a in ALLOWED}


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folder: Literal["Work", "Personal", "Alerts"]
    priority: Literal[1, 2, 3]


# Train frequencies: folder Work 3/7 = Personal 3/7 (a tie, Work first), priority 1 3/7: taken field
# by field, a majority baseline would predict (Work, 1), which the task does not allow; the likeliest
# allowed pair is (Personal, 1) at 9/49, above (Work, 2) and (Work, 3) at 6/49.
TRAIN = [("Work", 2), ("Work", 3), ("Work", 2), ("Personal", 1), ("Personal", 1), ("Personal", 1), ("Alerts", 3)]
ROWS = {
    "train": TRAIN,
    "validation": [("Work", 3), ("Personal", 1)],
    "test": [("Alerts", 3), ("Work", 2), ("Personal", 1)],
}


def load(split, protocol):
    return [
        Example(f"{split}{i}", {"text": f"message {i} about {f.lower()}"}, {"folder": f, "priority": p})
        for i, (f, p) in enumerate(ROWS[split])
    ]


def messages(e):
    return [
        {"role": "system", "content": 'Reply with JSON {"folder": ..., "priority": 1-3}.'},
        {"role": "user", "content": e.input["text"]},
    ]


TASK = check_task(
    Task(name="pairs", output=Output, load=load, from_record=lambda r: None, messages=messages, allowed=ALLOWED),
    "pairs",
    "tests/test_dependent_fields.py",
)


def test_candidates_are_only_the_allowed_combinations(qwen_tokenizer):
    joint = LabelCandidates(qwen_tokenizer, TASK)
    assert {(c.values["folder"], c.values["priority"]) for c in joint.candidates({}, ["folder", "priority"])} == PAIRS
    per_field = LabelCandidates(qwen_tokenizer, TASK, joint_limit=1)  # one field at a time
    assert per_field.groups == [["folder"], ["priority"]]
    assert [c.values["priority"] for c in per_field.candidates({"folder": "Personal"}, ["priority"])] == [1]
    assert [c.values["priority"] for c in per_field.candidates({"folder": "Work"}, ["priority"])] == [2, 3]


@pytest.mark.parametrize(("readout", "options"), [("rank", {}), ("rank", {"joint_limit": 1}), ("constrained", {})])
def test_constrained_and_rank_produce_only_allowed_combinations(tiny, readout, options):
    """The pairs the (random) model picks when any pair is allowed are then forbidden: it must pick others."""
    model, tok = tiny
    examples = load("train", "default") + load("test", "default")

    def picked(task):
        return [
            tuple(json.loads(o["output"]).values()) for o in run_readout(readout, model, tok, task, examples, **options)
        ]

    free = check_task(
        Task(name="pairs", output=Output, load=load, from_record=lambda r: None, messages=messages), "pairs", "x"
    )
    unconstrained = set(picked(free))
    rest = [(f, p) for f in ("Work", "Personal", "Alerts") for p in (1, 2, 3) if (f, p) not in unconstrained]
    strict = check_task(
        Task(
            name="pairs",
            output=Output,
            load=load,
            from_record=lambda r: None,
            messages=messages,
            allowed=tuple({"folder": f, "priority": p} for f, p in rest),
        ),
        "pairs",
        "x",
    )
    got = picked(strict)
    assert set(got) <= set(rest), (got, unconstrained)


def test_a_baseline_predicts_an_allowed_combination():
    preds = run_baseline("majority", TASK)["predictions"]
    got = {tuple(json.loads(p["output"]).values()) for p in preds.values()}
    assert got == {("Personal", 1)}  # the likeliest allowed pair, not the field-by-field (Work, 1)


@pytest.mark.parametrize(
    ("allowed", "fragment"),
    [
        ((), "non-empty tuple of dicts"),
        (({"folder": "Work", "priority": 2}, {"folder": "Work"}), "same fields"),
        (({"folder": "Home", "priority": 2},), "folder='Home', outside its label space"),
        (({"colour": "red"},), "'colour', which is not a field with a label space"),
    ],
)
def test_an_allowed_declaration_outside_the_label_spaces_is_refused(allowed, fragment):
    with pytest.raises(TaskContractError) as e:
        check_task(
            Task(
                name="pairs", output=Output, load=load, from_record=lambda r: None, messages=messages, allowed=allowed
            ),
            "pairs",
            "tests/x.py",
        )
    assert fragment in str(e.value) and "tests/x.py" in str(e.value)


def test_conformance_holds_the_gold_to_the_allowed_combinations():
    from mcqa.conformance import check_rule

    assert check_rule(TASK, "gold_parses_back") is None
    strict = check_task(
        Task(
            name="pairs", output=Output, load=load, from_record=lambda r: None, messages=messages, allowed=ALLOWED[:-1]
        ),
        "pairs",
        "tests/x.py",
    )  # Alerts no longer allowed
    failure = check_rule(strict, "gold_parses_back")
    assert failure is not None and "not one of the task's allowed combinations" in str(failure)
