"""The task contract as rules any task can be checked against: `mcqa check --task T`, or from
a plugin's own tests `assert_conforms(task)` (mcqa's tests/test_conformance.py uses the same
rules). Each rule returns its problems; a failed rule is one readable line.

The rules: the gold of every shipped example parses back to itself; gold scored against itself
is perfect on every protocol's test split; the prompt does not depend on the gold and (for
tasks that are not multiple choice) never shows its serialisation, except as the reply format
shown in every prompt; a multiple-choice task's
options, letters, cloze and reorder agree; every protocol's splits are non-empty,
deterministic, disjoint by id and by input text; the schema file, where there is one, is current.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any, Callable

from mcqa.eval.scoring import compute_metrics, make_records, parser_for
from mcqa.prompting import LETTERS, render_prompt
from mcqa.schema import schema_problem
from mcqa.task import SPLITS, Example, Task, consistent, gold_json

SHOWN = 3  # problems quoted per failed rule; the rest are counted


@dataclass(frozen=True)
class Failure:
    rule: str
    problems: tuple[str, ...]

    def __str__(self) -> str:
        more = f"; and {len(self.problems) - SHOWN} more" if len(self.problems) > SHOWN else ""
        return f"{self.rule}: {'; '.join(self.problems[:SHOWN])}{more}"


class Context:
    """One check's task, its splits (each loaded once, unless a rule asks for a fresh load) and
    the tokenizer whose chat template renders prompts (None: the message texts are checked)."""

    def __init__(self, task: Task, tokenizer=None, load: Callable[[str, str], Any] | None = None):
        self.task, self.tokenizer = task, tokenizer
        self._load = load or task.load
        self._cache: dict[tuple[str, str], list[Example]] = {}

    def split(self, split: str, protocol: str) -> list[Example]:
        if (split, protocol) not in self._cache:
            self._cache[split, protocol] = list(self._load(split, protocol))
        return self._cache[split, protocol]

    def default_examples(self) -> list[Example]:
        return [e for s in SPLITS for e in self.split(s, self.task.default_protocol)]

    def prompt_text(self, e: Example) -> str:
        messages = self.task.messages(e)
        if self.tokenizer is not None:
            return render_prompt(self.tokenizer, messages)
        return "\n".join(str(m.get("content", "")) for m in messages)


def _gold_parses_back(c: Context) -> list[str]:
    parser, out = parser_for(c.task), []
    for e in c.default_examples():
        if e.target is None:
            out.append(f"{e.id} is unlabeled (a shipped split needs gold)")
            continue
        if not consistent(c.task, e.target):
            out.append(f"{e.id}: gold {e.target} is not one of the task's allowed combinations")
        text = gold_json(c.task, e)
        parsed = parser.parse(text)
        if parsed.status != "ok" or parsed.value != e.target or parsed.notes:
            out.append(
                f"{e.id}: gold {text} parses as {parsed.status} {parsed.value!r} {list(parsed.notes) or ''}".rstrip()
            )
    return out


def _gold_scores_perfect(c: Context) -> list[str]:
    out = []
    for protocol in c.task.protocols:
        examples = [e for e in c.split("test", protocol) if e.target is not None]
        preds = {e.id: {"id": e.id, "output": gold_json(c.task, e)} for e in examples}
        m = compute_metrics(c.task, make_records(c.task, examples, preds, progress=False), resamples=20)
        where = f"protocol {protocol}, test split"
        if m["n"] != len(examples) or m["parse"]["failure_rate"] != 0:
            out.append(f"{where}: {m['parse']['failure_rate']:.3f} of gold answers fail to parse")
        if m["joint"]["accuracy"] != 1.0:
            out.append(f"{where}: gold against itself scores joint accuracy {m['joint']['accuracy']:.3f}, not 1.0")
        for f, fm in m["fields"].items():
            bad = [
                k
                for k in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "qwk", "within1")
                if k in fm and abs(fm[k] - 1.0) > 1e-9
            ]
            if fm.get("mae", 0) != 0:
                bad.append("mae")
            if bad:
                out.append(f"{where}: field '{f}' scores {', '.join(f'{k} {fm[k]:.3f}' for k in bad)} on gold")
        if c.task.choice_field and m["positions"]["predicted"] != m["positions"]["gold"]:
            out.append(f"{where}: predicted option positions differ from the gold's on gold")
    return out


def other_target(task: Task, target: dict) -> dict:
    """A valid target that differs from `target` in every field with a label space."""
    out = dict(target)
    for f, space in task.label_spaces.items():
        if space is not None:
            values = list(space.values)
            out[f] = values[(values.index(target[f]) + 1) % len(values)] if target[f] in values else values[0]
        elif isinstance(target[f], str):
            out[f] = target[f] + " (other)"
        elif isinstance(target[f], int) and not isinstance(target[f], bool):
            out[f] = target[f] + 1
    return out


def _prompt_ignores_gold(c: Context) -> list[str]:
    out = []
    for e in c.default_examples():
        shown = c.task.messages(e)
        if not shown:
            out.append(f"{e.id}: messages() returned no messages")
        elif e.target is not None and (
            c.task.messages(replace(e, target=None)) != shown
            or c.task.messages(replace(e, target=other_target(c.task, e.target))) != shown
        ):
            out.append(f"{e.id}: the prompt changes with the gold (messages() must not read example.target)")
    return out


def _prompt_hides_gold(c: Context) -> list[str]:
    if c.task.choice_field is not None:
        return []  # a multiple-choice prompt may show the reply format with a letter in it
    labeled = [e for e in c.default_examples() if e.target is not None]
    prompts = [c.prompt_text(e) for e in labeled]
    # A serialisation in every prompt is the reply format shown to all ('Reply {"sentiment": "pos"} or ...'),
    # not a leak.
    everywhere: dict[str, bool] = {}
    out = []
    for e, prompt in zip(labeled, prompts):
        for answer in (gold_json(c.task, e), json.dumps(e.target, ensure_ascii=False)):
            if answer in prompt:
                if answer not in everywhere:
                    everywhere[answer] = all(answer in p for p in prompts)
                if not everywhere[answer]:
                    out.append(f"{e.id}: the prompt contains the gold answer {answer}")
                    break
    return out


def _options_consistent(c: Context) -> list[str]:
    task = c.task
    if task.choice_field is None:
        return []
    if task.options is None:
        return [f"choice_field '{task.choice_field}' is set but options(example) is not: declare the option texts"]
    letters = tuple(task.label_spaces[task.choice_field].values)
    if letters != tuple(LETTERS[: len(letters)]):
        return [
            f"choice_field '{task.choice_field}' takes {', '.join(map(str, letters))}; "
            "it must take the letters A, B, C, ... in order"
        ]
    out = []
    for e in c.default_examples():
        options = task.options(e)
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            out.append(f"{e.id}: options() must return a non-empty list of strings")
            continue
        if len(options) > len(letters):
            out.append(
                f"{e.id}: {len(options)} options but choice_field '{task.choice_field}' has only {len(letters)} letters"
            )
        if e.target is not None and LETTERS.index(e.target[task.choice_field]) >= len(options):
            out.append(f"{e.id}: gold letter {e.target[task.choice_field]} points past its {len(options)} options")
        if task.cloze is not None and not task.cloze(e):
            out.append(f"{e.id}: cloze() returned no messages")
        if task.reorder is not None and e.target is not None:
            order = list(reversed(range(len(options))))
            moved = task.reorder(e, order)
            gold_text = options[LETTERS.index(e.target[task.choice_field])]
            if (
                task.options(moved) != [options[i] for i in order]
                or task.options(moved)[LETTERS.index(moved.target[task.choice_field])] != gold_text
            ):
                out.append(
                    f"{e.id}: reorder() does not show the options in the order "
                    "asked with the gold letter following the gold option"
                )
    return out


def _leak_text(e: Example) -> str:
    """The text two splits must never share: the question/query/body, else every string input."""
    for key in ("question", "query", "body"):
        if isinstance(e.input.get(key), str):
            return re.sub(r"\s+", " ", e.input[key]).strip().lower()
    return re.sub(r"\s+", " ", " ".join(v for v in e.input.values() if isinstance(v, str))).strip().lower()


def _splits_sound(c: Context) -> list[str]:
    out = []
    for protocol in c.task.protocols:
        ids = {s: [e.id for e in c.split(s, protocol)] for s in SPLITS}
        for s in SPLITS:
            if not ids[s]:
                out.append(f"protocol {protocol}: split {s} is empty")
            if len(set(ids[s])) != len(ids[s]):
                out.append(f"protocol {protocol}: split {s} repeats ids")
            if [e.id for e in c.task.load(s, protocol)] != ids[s]:
                out.append(f"protocol {protocol}: split {s} changes between loads (seed every shuffle)")
        texts = {s: {_leak_text(e) for e in c.split(s, protocol)} for s in SPLITS}
        for a, b in combinations(SPLITS, 2):
            if set(ids[a]) & set(ids[b]):
                out.append(f"protocol {protocol}: {len(set(ids[a]) & set(ids[b]))} ids in both {a} and {b}")
            shared = texts[a] & texts[b]
            if shared:
                out.append(
                    f"protocol {protocol}: {len(shared)} input texts in "
                    f"both {a} and {b}, e.g. {sorted(shared)[0][:60]!r}"
                )
    return out


def _schema_up_to_date(c: Context) -> list[str]:
    problem = schema_problem(c.task)
    return [problem] if problem else []


RULES: dict[str, tuple[str, Callable[[Context], list[str]]]] = {
    "gold_parses_back": (
        "the gold of every shipped example serialises and parses back to itself, with no notes, "
        "and is an allowed combination",
        _gold_parses_back,
    ),
    "gold_scores_perfect": (
        "gold scored against itself is perfect on every protocol's test split",
        _gold_scores_perfect,
    ),
    "prompt_ignores_gold": ("messages() gives the same prompt with the gold removed or changed", _prompt_ignores_gold),
    "prompt_hides_gold": (
        "the rendered prompt never contains the gold serialisation, unless every prompt shows it as the "
        "reply format (not multiple choice)",
        _prompt_hides_gold,
    ),
    "options_consistent": (
        "multiple choice: letters A.. in order, options fit the letters, gold points at an option, "
        "cloze and reorder agree",
        _options_consistent,
    ),
    "splits_sound": (
        "every protocol's splits are non-empty, deterministic, disjoint by id and by input text",
        _splits_sound,
    ),
    "schema_up_to_date": ("the task's schema file, where there is one, matches its Pydantic model", _schema_up_to_date),
}


def check_rule(task: Task, rule: str, tokenizer=None, load=None, context: Context | None = None) -> Failure | None:
    """One rule on one task: its Failure, or None when it holds."""
    c = context or Context(task, tokenizer, load)
    try:
        problems = RULES[rule][1](c)
    except Exception as e:  # the task's own code (load, messages, options) raised: that is a failure too
        text = str(e).strip().splitlines()[:1]
        problems = [f"the task's code raised {type(e).__name__}{': ' + text[0] if text else ''}"]
    return Failure(rule, tuple(problems)) if problems else None


def check(task: Task, tokenizer=None, rules: list[str] | None = None, load=None) -> list[Failure]:
    """Every rule (or those named) on one task; the failed ones, in RULES order."""
    c = Context(task, tokenizer, load)
    return [f for r in (rules or RULES) if (f := check_rule(task, r, context=c)) is not None]


def rule_lines(task: Task, tokenizer=None) -> tuple[list[str], list[str]]:
    """One line per rule ("ok   rule: what it checks" or "FAIL rule: what is wrong"), and the failed rules."""
    c, lines, failed = Context(task, tokenizer), [], []
    for rule, (description, _) in RULES.items():
        failure = check_rule(task, rule, context=c)
        failed += [rule] if failure else []
        lines.append(f"FAIL {failure}" if failure else f"ok   {rule}: {description}")
    return lines, failed


def assert_conforms(task: Task, tokenizer=None) -> None:
    """For a plugin's own tests: raise AssertionError listing every failed rule, one per line."""
    failures = check(task, tokenizer)
    assert not failures, f"task '{task.name}' breaks {len(failures)} conformance rule(s):\n" + "\n".join(
        map(str, failures)
    )
