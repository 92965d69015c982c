"""Getting a task's examples: a shipped split, or a user's own JSONL file in the task's input
format (the same from_record and validation as the shipped data)."""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import ValidationError

from mcqa.errors import DataError, McqaError
from mcqa.eval.parsing import OutputParser
from mcqa.io import read_jsonl, validation_problems
from mcqa.task import SPLITS, Example, Task


def resolve_protocol(task: Task, protocol: str | None) -> str:
    if protocol is None:
        return task.default_protocol
    if protocol not in task.protocols:
        raise McqaError(
            f"task '{task.name}' has no split protocol '{protocol}'; choose one of: {', '.join(task.protocols)}"
        )
    return protocol


def load_split(task: Task, split: str, protocol: str | None = None) -> list[Example]:
    if split not in SPLITS:
        raise McqaError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    return task.load(split, resolve_protocol(task, protocol))


def load_file(task: Task, path: str | Path) -> list[Example]:
    """Examples from a user's JSONL file; a bad record or a repeated id names its line. Gold
    labels are held to the output contract exactly as a model's output is ("3" is not 3)."""
    examples: list[Example] = []
    first_line: dict[str, int] = {}
    parser = OutputParser(task.output)
    for lineno, record in read_jsonl(path):
        try:
            example = task.from_record(record)
        except ValidationError as e:
            raise DataError(f"{path}:{lineno}: not a valid '{task.name}' record: {validation_problems(e)}") from None
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            IndexError,
        ) as e:  # what a task's from_record raises on a bad record
            raise DataError(f"{path}:{lineno}: not a valid '{task.name}' record: {e}") from None
        if example.target is not None:  # gold labels must be in the output contract too
            gold = parser.validate(example.target)
            if not gold.ok:
                raise DataError(f"{path}:{lineno}: not a valid '{task.name}' label: {gold.error}")
        if not isinstance(example.id, str):
            raise DataError(f"{path}:{lineno}: the record's id must be a string")
        if example.id in first_line:
            raise DataError(
                f"{path}:{lineno}: id '{example.id}' repeats line {first_line[example.id]}; ids must be unique"
            )
        first_line[example.id] = lineno
        examples.append(example)
    if not examples:
        raise DataError(f"{path}: no records; expected one JSON object per line")
    return examples


def sample_examples(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A seeded sample of n examples in id order (all of them when n is None or not smaller);
    a sample, not the first n: split files may be ordered by class."""
    if n is None or n >= len(examples):
        return examples
    return sorted(random.Random(seed).sample(examples, n), key=lambda e: e.id)
