"""Getting a task's examples: a shipped split, or a user's own JSONL file in the task's input
format (the same from_record and validation as the shipped data)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from mcqa.errors import DataError, McqaError
from mcqa.io import read_jsonl
from mcqa.task import SPLITS, Example, Task


def resolve_protocol(task: Task, protocol: str | None) -> str:
    if protocol is None:
        return task.default_protocol
    if protocol not in task.protocols:
        raise McqaError(f"task '{task.name}' has no split protocol '{protocol}'; choose one of: {', '.join(task.protocols)}")
    return protocol


def load_split(task: Task, split: str, protocol: str | None = None) -> list[Example]:
    if split not in SPLITS:
        raise McqaError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    return task.load(split, resolve_protocol(task, protocol))


def load_file(task: Task, path: str | Path) -> list[Example]:
    """Examples from a user's JSONL file; a bad record or a repeated id names its line."""
    examples: list[Example] = []
    first_line: dict[str, int] = {}
    for lineno, record in read_jsonl(path):
        try:
            example = task.from_record(record)
            if example.target is not None:  # gold labels must be in the output contract too
                task.output.model_validate(example.target)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise DataError(f"{path}:{lineno}: not a valid '{task.name}' label: {problems}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}:{lineno}: not a valid '{task.name}' record: {e}") from None
        if example.id in first_line:
            raise DataError(f"{path}:{lineno}: id '{example.id}' repeats line {first_line[example.id]}; ids must be unique")
        first_line[example.id] = lineno
        examples.append(example)
    if not examples:
        raise DataError(f"{path}: no records; expected one JSON object per line")
    return examples
