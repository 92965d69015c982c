"""OutputParser: one test per status, the tolerated notes, and property tests that parsing
never raises and that the Pydantic model and the JSON Schema validator always agree."""

from __future__ import annotations

import json
from functools import cache

import jsonschema
import pytest
from hypothesis import find, given, note
from hypothesis import strategies as st

from mcqa.eval.parsing import FAILURES, STATUSES, OutputParser, StrictValidator
from mcqa.eval.scoring import parser_for
from mcqa.prompting import serialize_target
from mcqa.registry import all_tasks, get_task
from mcqa.schema import task_schema

NAMES = [t.name for t in all_tasks()]


@cache
def parser(name: str) -> OutputParser:
    return parser_for(get_task(name))


@cache
def validator(name: str):
    return StrictValidator(task_schema(get_task(name)))


GOOD = '{"folder": "Work", "priority": 2}'


@pytest.fixture
def notif() -> OutputParser:
    return parser("notification")


@pytest.fixture
def mmlu() -> OutputParser:
    return parser("mmlu_pro")


@pytest.fixture
def recipe() -> OutputParser:
    return parser("recipe_mpr")


# --- one test per status --------------------------------------------------------------------


def test_ok(notif):
    p = notif.parse(GOOD)
    assert (p.status, p.value, p.notes, p.ok) == ("ok", {"folder": "Work", "priority": 2}, (), True)


def test_no_json(notif):
    p = notif.parse("I think this one is for work, fairly urgent.")
    assert (p.status, p.value) == ("no_json", None)
    assert not p.ok and p.error


def test_invalid_json(notif):
    p = notif.parse('{"folder": "Work", "priority": 2')
    assert (p.status, p.value) == ("invalid_json", None)
    assert notif.parse("{'folder': 'Work', 'priority': 2}").status == "invalid_json"  # Python, not JSON


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ('{"folder": "Work"}', "priority"),  # missing field
        ('{"folder": "Work", "priority": 2, "reason": "boss"}', "reason"),  # extra field
        ('{"folder": "Work", "priority": "2"}', "integer"),  # mistyped: a string
        ('{"folder": "Work", "priority": 2.0}', "integer"),  # mistyped: JSON Schema alone would call 2.0 an integer
        ('{"folder": "Work", "priority": true}', "integer"),  # mistyped: bool is not an int
        ('{"folder": ["Work"], "priority": 2}', "folder"),  # mistyped: a list
        ("{}", "required"),
    ],
)
def test_schema_error(notif, raw, why):
    p = notif.parse(raw)
    assert (p.status, p.value) == ("schema_error", None), p
    assert why in p.error


@pytest.mark.parametrize(
    "raw",
    [
        '{"folder": "Spam", "priority": 2}',
        '{"folder": "Work", "priority": 4}',
        '{"folder": "Work", "priority": 0}',
        '{"folder": "work", "priority": 2}',
    ],
)
def test_out_of_label_set(notif, raw):
    p = notif.parse(raw)
    assert (p.status, p.value) == ("out_of_label_set", None), p


def test_out_of_label_set_in_json_is_case_sensitive(mmlu):
    # A JSON value must be emitted exactly; only a bare label is matched case-insensitively.
    assert mmlu.parse('{"category": "Computer Science"}').status == "out_of_label_set"


def test_truncated(notif):
    p = notif.parse('{"folder": "Work", "prio', truncated=True)
    assert (p.status, p.value) == ("truncated", None)
    assert "token limit" in p.error
    assert notif.parse("Let me think about this notification", truncated=True).status == "truncated"
    assert notif.parse('{"folder": "Work"}', truncated=True).status == "truncated"
    # Output that is complete despite the flag is judged on its merits.
    assert notif.parse(GOOD, truncated=True).status == "ok"
    assert notif.parse('{"folder": "Spam", "priority": 2}', truncated=True).status == "out_of_label_set"


@pytest.mark.parametrize("raw", ["<think>work stuff</think>\n" + GOOD, "<think>\nhmm", GOOD + "</think>"])
def test_thinking_leak(notif, raw):
    p = notif.parse(raw)
    assert (p.status, p.value) == ("thinking_leak", None)


# --- tolerated, and noted -------------------------------------------------------------------


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "```JSON {} ```"])
def test_fenced(notif, fence):
    p = notif.parse(fence.replace("{}", GOOD))
    assert (p.status, p.value, p.notes) == ("ok", {"folder": "Work", "priority": 2}, ("fenced",))


def test_prose(notif):
    p = notif.parse(f"Sure! Here is the answer:\n{GOOD}\nHope that helps.")
    assert (p.status, p.notes) == ("ok", ("prose",))
    p = notif.parse(f"Here you go:\n```json\n{GOOD}\n```")
    assert (p.status, set(p.notes)) == ("ok", {"fenced", "prose"})


@pytest.mark.parametrize(
    "raw", ["Computer Science", "computer science", "COMPUTER SCIENCE.", '"computer science"', "**Computer Science**"]
)
def test_bare_label_mmlu_is_case_insensitive(mmlu, raw):
    p = mmlu.parse(raw)
    assert (p.status, p.value, p.notes) == ("ok", {"category": "computer science"}, ("bare_label",))


@pytest.mark.parametrize("raw", ["B", "b", " B.", "(B)", "`B`"])
def test_bare_label_recipe(recipe, raw):
    p = recipe.parse(raw)
    assert (p.status, p.value, p.notes) == ("ok", {"answer": "B"}, ("bare_label",))


def test_bare_label_outside_the_label_set(recipe, mmlu):
    p = recipe.parse("F")
    assert (p.status, p.notes) == ("out_of_label_set", ("bare_label",))
    assert mmlu.parse("astrology").status == "out_of_label_set"


def test_no_bare_label_for_a_two_field_task(notif):
    # "Work" alone cannot fill {"folder", "priority"}: it is not a bare-label answer.
    assert notif.parse("Work").status == "no_json"


def test_non_string_output_is_a_failure_not_an_exception(notif):
    assert notif.parse(None).status == "no_json"
    assert notif.parse(42).status == "no_json"


def test_parse_never_raises_on_a_huge_integer(notif):
    p = notif.parse('{"folder": "Work", "priority": ' + "9" * 5000 + "}")
    assert p.status in FAILURES


# --- properties -----------------------------------------------------------------------------


def _check(p):
    assert p.status in STATUSES
    assert (p.value is not None) == (p.status == "ok")
    assert p.ok == (p.status == "ok")
    assert isinstance(p.notes, tuple)


@pytest.mark.parametrize("name", ["notification", "mmlu_pro", "recipe_mpr"])
@given(raw=st.text(), truncated=st.booleans())
def test_parse_never_raises_on_any_text(name, raw, truncated):
    p = parser(name).parse(raw, truncated=truncated)
    _check(p)
    if truncated:
        assert p.status not in ("no_json", "invalid_json", "schema_error")


FRAGMENTS = [
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    '"',
    " ",
    "\n",
    "```",
    "```json\n",
    "<think>",
    "</think>",
    "\\",
    "\\u00e9",
    "\\ud800",
    '"folder"',
    '"priority"',
    '"category"',
    '"answer"',
    '"Work"',
    '"Alerts"',
    '"math"',
    '"computer science"',
    '"B"',
    "1",
    "2",
    "3",
    "2.0",
    "-1",
    "1e400",
    "true",
    "false",
    "null",
    "NaN",
    "Infinity",
    "B",
    "Work",
    "Computer Science",
    "Here is the answer:",
    "é",
    "\x00",
]


@pytest.mark.parametrize("name", ["notification", "mmlu_pro", "recipe_mpr"])
@given(raw=st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join), truncated=st.booleans())
def test_parse_never_raises_on_json_fragments(name, raw, truncated):
    _check(parser(name).parse(raw, truncated=truncated))


def _valid_value(task):
    """A strategy for valid outputs of `task` (every field drawn from its label space)."""
    return st.fixed_dictionaries({f: st.sampled_from(space.values) for f, space in task.label_spaces.items()})


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_any_valid_output_parses_back_even_wrapped(name, data):
    task = get_task(name)
    value = data.draw(_valid_value(task))
    text = serialize_target(task.output, value)
    wrapped = data.draw(
        st.sampled_from([text, f"```json\n{text}\n```", f"Answer: {text} (done)", json.dumps(value, indent=2)])
    )
    p = parser(name).parse(wrapped)
    assert (p.status, p.value) == ("ok", value), wrapped


def _json_like_dicts(task):
    """Dicts near the task's output: its fields (some missing) plus random keys, with values
    that are labels, ints, floats such as 2.0, bools, strings, None or lists."""
    labels = [v for s in task.label_spaces.values() if s is not None for v in s.values]
    scalar = st.one_of(
        st.sampled_from(labels) if labels else st.nothing(),
        st.integers(-3, 12),
        st.integers(),
        st.sampled_from([1.0, 2.0, 3.0, 2.5, -0.0]),
        st.floats(allow_nan=False),
        st.booleans(),
        st.text(max_size=8),
        st.sampled_from([str(x).upper() for x in labels] or ["x"]),
        st.none(),
    )
    value = st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(st.text(max_size=3), scalar, max_size=2))

    @st.composite
    def build(draw):
        obj = {}
        for f, space in task.label_spaces.items():
            choice = draw(st.integers(0, 9))
            if choice == 0:
                continue  # a missing field
            own = space.values if space is not None else ()
            obj[f] = draw(st.sampled_from(own)) if own and choice > 3 else draw(value)
        extra = draw(st.dictionaries(st.one_of(st.sampled_from(task.fields), st.text(max_size=6)), value, max_size=2))
        if draw(st.integers(0, 3)) == 0:
            obj.update(extra)
        return obj

    return build()


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_pydantic_and_json_schema_agree(name, data):
    task = get_task(name)
    obj = data.draw(_json_like_dicts(task))
    note(json.dumps(obj))
    schema_ok = validator(name).is_valid(obj)
    try:
        task.output.model_validate_json(json.dumps(obj), strict=True)
        pydantic_ok = True
    except ValueError:  # pydantic.ValidationError
        pydantic_ok = False
    assert schema_ok == pydantic_ok, f"JSON Schema says {schema_ok}, Pydantic says {pydantic_ok} for {obj!r}"


def test_strict_validator_is_stricter_than_plain_json_schema():
    # The reason StrictValidator exists: plain Draft 2020-12 accepts 2.0 as an integer.
    schema = task_schema(get_task("notification"))
    obj = {"folder": "Work", "priority": 2.0}
    assert jsonschema.Draft202012Validator(schema).is_valid(obj)
    assert not StrictValidator(schema).is_valid(obj)


@pytest.mark.parametrize("name", NAMES)
def test_agreement_strategy_reaches_both_verdicts(name):
    # Guards the agreement test against drawing only invalid objects (which would agree trivially).
    task, v = get_task(name), validator(name)
    assert v.is_valid(find(_json_like_dicts(task), v.is_valid))
    assert not v.is_valid(find(_json_like_dicts(task), lambda o: not v.is_valid(o)))
