"""The Task contract: what a task module declares, and the label spaces read from its schema.

A task module (tasks/<name>.py, or a package exposed through the "mcqa.tasks" entry point)
defines `TASK = Task(...)`. Everything else in mcqa (prompting, training, decoding, scoring)
is driven by that one object.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal

import annotated_types
from pydantic import BaseModel

from mcqa.errors import TaskContractError
from mcqa.prompting import LETTERS, serialize_target

SPLITS = ("train", "validation", "test")
# An int field bounded to at most this many values is a label space (and ordinal);
# a wider one is a free number, left to the grammar engine.
MAX_ORDINAL_RANGE = 100


@dataclass(frozen=True)
class Example:
    """One labeled (or unlabeled) example.

    `input` holds what the prompt is built from; `target` is the gold output as a plain dict
    (None when unlabeled); `groups` are the breakdown groups it belongs to (can be several).
    """

    id: str
    input: dict[str, Any]
    target: dict[str, Any] | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSpace:
    """The allowed values of one output field, as JSON values (str, int or bool)."""

    field: str
    values: tuple[Any, ...]
    ordinal: bool = False


@dataclass(frozen=True)
class Task:
    """What a task declares. `load(split, protocol)` returns the examples of a split;
    `from_record(record)` turns one raw record (a line of the task's input format) into an
    Example, raising ValueError with a readable reason when the record is malformed;
    `messages(example)` phrases the prompt as chat messages and must not look at the target.

    A multiple-choice task also names its `choice_field` (the option letter) and declares
    `options(example)`: the option texts in display order, so that the letter at index i of
    LETTERS means options(example)[i]. With them the option-text readout and the choice mode
    score what an option says rather than its letter. `cloze(example)` optionally phrases the
    question without the lettered options (the "cloze" form small models answer better);
    without it those read the options against `messages`."""

    name: str
    output: type[BaseModel]
    load: Callable[[str, str], list[Example]]
    from_record: Callable[[dict], Example]
    messages: Callable[[Example], list[dict[str, str]]]
    description: str = ""
    protocols: tuple[str, ...] = ("default",)
    # For multiple choice: the field holding the option letter (enables the position histogram).
    choice_field: str | None = None
    options: Callable[[Example], list[str]] | None = None
    cloze: Callable[[Example], list[dict[str, str]]] | None = None
    # (example, order) -> the example with its options shown in that order (order[i] is the
    # index of the option now at position i), its gold letter following the gold option;
    # for permutation training and the permutation-averaged letter readout
    reorder: Callable[[Example, list[int]], Example] | None = None
    # Dependent fields: the combinations a target may take, each a dict over the same label
    # fields (combinations_from_mapping builds them from {parent value: [child values]});
    # constrained and rank produce only these, baselines predict one of them. None: any.
    allowed: tuple[dict[str, Any], ...] | None = field(default=None, compare=False)
    # Training settings this task trains best with, as `mcqa train` key=value settings (for
    # example {"mode": "head", "epochs": 2}); a config file and key=value overrides win over
    # them, and `mcqa train` says which it used.
    train_defaults: dict[str, Any] = field(default_factory=dict, compare=False)
    source: str = field(default="", compare=False)  # set by the registry: the file that defined it

    @property
    def default_protocol(self) -> str:
        return self.protocols[0]

    @property
    def label_spaces(self) -> dict[str, LabelSpace | None]:
        return label_spaces(self.output)

    @property
    def fields(self) -> list[str]:
        return list(self.output.model_fields)


def label_spaces(model: type[BaseModel]) -> dict[str, LabelSpace | None]:
    """Each field's label space, or None for a free field (text, unbounded number)."""
    return {name: _label_space(name, info.annotation, info.metadata) for name, info in model.model_fields.items()}


def _label_space(name: str, annotation: Any, metadata: list) -> LabelSpace | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        args = typing.get_args(annotation)
        return _label_space(name, args[0], list(metadata) + list(args[1:]))
    if origin is Literal:
        values = typing.get_args(annotation)
        ordinal = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        return LabelSpace(name, tuple(sorted(values) if ordinal else values), ordinal)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return LabelSpace(name, tuple(m.value for m in annotation))
    if annotation is bool:
        return LabelSpace(name, (False, True))
    if annotation is int:
        lo, hi = _int_bounds(metadata)
        if lo is not None and hi is not None and hi - lo + 1 <= MAX_ORDINAL_RANGE:
            return LabelSpace(name, tuple(range(lo, hi + 1)), ordinal=True)
    return None


def _int_bounds(metadata: list) -> tuple[int | None, int | None]:
    lo = hi = None
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Gt):
            lo = m.gt + 1
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif isinstance(m, annotated_types.Lt):
            hi = m.lt - 1
        elif isinstance(m, annotated_types.Interval):
            lo = m.ge if m.ge is not None else (m.gt + 1 if m.gt is not None else lo)
            hi = m.le if m.le is not None else (m.lt - 1 if m.lt is not None else hi)
    return lo, hi


def check_task(task: Any, name: str, source: str) -> Task:
    """Check the contract; raise TaskContractError naming the file on the first breach."""

    def fail(msg: str) -> TaskContractError:
        return TaskContractError(f"{source}: task '{name}' breaks the contract: {msg}")

    if not isinstance(task, Task):
        raise fail(f"TASK must be an mcqa.task.Task, got {type(task).__name__}")
    if task.name != name:
        raise fail(f"TASK.name is '{task.name}' but the task is registered as '{name}'; make them equal")
    if not (isinstance(task.output, type) and issubclass(task.output, BaseModel)):
        raise fail("output must be a Pydantic BaseModel class")
    if task.output.model_config.get("extra") != "forbid":
        raise fail('the output model must set model_config = ConfigDict(extra="forbid")')
    if not task.output.model_fields:
        raise fail("the output model has no fields")
    for attr in ("load", "from_record", "messages"):
        if not callable(getattr(task, attr)):
            raise fail(f"{attr} must be callable")
    if not task.protocols or len(set(task.protocols)) != len(task.protocols):
        raise fail("protocols must be a non-empty tuple of unique names")
    if task.choice_field is not None:
        space = label_spaces(task.output).get(task.choice_field)
        if space is None:
            raise fail(f"choice_field '{task.choice_field}' must be a field with a label space (option letters)")
    for attr in ("options", "cloze", "reorder"):
        value = getattr(task, attr)
        if value is not None and not callable(value):
            raise fail(f"{attr} must be callable")
        if value is not None and task.choice_field is None:
            raise fail(f"{attr} is for multiple choice: set choice_field to the field that holds the option letter")
    if not isinstance(task.train_defaults, dict) or not all(isinstance(k, str) for k in task.train_defaults):
        raise fail("train_defaults must be a dict of training settings, for example {'mode': 'head', 'epochs': 2}")
    if {"task", "output_dir"} & set(task.train_defaults):
        raise fail("train_defaults cannot set 'task' or 'output_dir'")
    if task.allowed is not None:
        problem = _allowed_problem(task)
        if problem:
            raise fail(problem)
    return replace(task, source=source)


def gold_json(task: Task, example: Example) -> str:
    """The example's gold target as the exact text a model is trained to emit (serialize_target)."""
    return serialize_target(task.output, example.target)


def combinations_from_mapping(parent: str, child: str, mapping: dict[Any, list[Any]]) -> tuple[dict[str, Any], ...]:
    """{"Work": [2, 3], "Personal": [1]} -> the allowed (parent, child) pairs, for Task.allowed."""
    return tuple({parent: p, child: c} for p, children in mapping.items() for c in children)


def consistent(task: Task, values: dict[str, Any]) -> bool:
    """Whether (a partial) target agrees with some allowed combination on the fields it sets."""
    if not task.allowed:
        return True
    keys = [k for k in task.allowed[0] if k in values]
    return any(all(a[k] == values[k] for k in keys) for a in task.allowed)


def completion(task: Task, values: dict[str, Any]) -> dict[str, Any]:
    """The first allowed combination that agrees with (a partial) target ({} when none is declared)."""
    keys = [k for k in (task.allowed[0] if task.allowed else {}) if k in values]
    return next((dict(a) for a in task.allowed or () if all(a[k] == values[k] for k in keys)), {})


def _allowed_problem(task: Task) -> str | None:
    allowed = task.allowed
    if not isinstance(allowed, tuple) or not allowed or not all(isinstance(a, dict) for a in allowed):
        return "allowed must be a non-empty tuple of dicts, one per valid combination (see combinations_from_mapping)"
    keys = set(allowed[0])
    spaces = label_spaces(task.output)
    for a in allowed:
        if set(a) != keys:
            return f"every allowed combination must name the same fields ({', '.join(sorted(keys))}), got {sorted(a)}"
        for k, v in a.items():
            if spaces.get(k) is None:
                return f"allowed names '{k}', which is not a field with a label space"
            if v not in spaces[k].values:
                return f"allowed gives {k}={v!r}, outside its label space ({', '.join(map(str, spaces[k].values))})"
    return None


def reorder_options(example: Example, order: list[int], choice_field: str, key: str = "options") -> Example:
    """For a task that keeps its option texts in `input[key]` and letters them A, B, C, ...
    (prompting.format_options): the example with them shown in `order`, the gold letter moved
    with the gold option (the usual Task.reorder)."""
    options = example.input[key]
    if sorted(order) != list(range(len(options))):
        raise ValueError(f"order {order} is not a permutation of the {len(options)} options")
    target = example.target
    if target is not None:
        gold = LETTERS.index(target[choice_field])
        target = {**target, choice_field: LETTERS[order.index(gold)]}
    return replace(example, input={**example.input, key: [options[i] for i in order]}, target=target)
