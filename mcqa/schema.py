"""A task's JSON Schema, generated from its Pydantic output model: the contract that the
scorer validates against and that constrained decoding (xgrammar) and serving follow. A
built-in task's schema is committed under schemas/ and must match its model."""

from __future__ import annotations

import json
from pathlib import Path

from mcqa.errors import McqaError
from mcqa.task import Task

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


def schema_file(task: Task) -> Path:
    return SCHEMAS_DIR / f"{task.name}.schema.json"


def task_schema(task: Task) -> dict:
    """The task's JSON Schema: the committed file when there is one (it must match the model),
    else generated from the Pydantic model (a task from an installed package)."""
    generated = task.output.model_json_schema()
    path = schema_file(task)
    if path.is_file():
        on_disk = json.loads(path.read_text(encoding="utf-8"))
        if on_disk != generated:
            raise McqaError(f"{path} is out of date with the '{task.name}' output model; run `mcqa schema --write`")
        return on_disk
    return generated
