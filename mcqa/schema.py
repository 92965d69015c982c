"""A task's JSON Schema, generated from its Pydantic output model: the contract that the
scorer validates against and that constrained decoding (xgrammar) and serving follow.

Where a schema file lives: a built-in task's (tasks/ in this project) is committed under
schemas/ and must match its model. A task from anywhere else (an installed plugin, a folder on
$MCQA_TASKS_PATH) needs no file: its schema is generated from its model. If it ships one
anyway, as <task>.schema.json beside the module that defines its output model, that file must
match too. mcqa never writes into an installed package, its own or a plugin's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mcqa.errors import McqaError
from mcqa.io import write_json
from mcqa.registry import is_builtin
from mcqa.task import Task

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


def schema_file(task: Task) -> Path | None:
    """The schema file that must match the task's model: schemas/<task>.schema.json for a
    built-in task, the file a plugin ships beside its output model if it does, else None."""
    if is_builtin(task):
        return SCHEMAS_DIR / f"{task.name}.schema.json"
    module_file = getattr(sys.modules.get(task.output.__module__), "__file__", None)
    shipped = Path(module_file).parent / f"{task.name}.schema.json" if module_file else None
    return shipped if shipped is not None and shipped.is_file() else None


def schema_problem(task: Task) -> str | None:
    """Why the task's schema file disagrees with its model (one line that says what to do), or None."""
    path = schema_file(task)
    if path is None:
        return None
    if not path.is_file():
        return f"{path} is missing; run `mcqa schema --write`"
    try:
        on_disk = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        on_disk = e
    if on_disk == task.output.model_json_schema():
        return None
    if is_builtin(task):
        return f"{path} is out of date with the '{task.name}' output model; run `mcqa schema --write`"
    return (
        f"{path}, shipped by the plugin, is out of date with the '{task.name}' output model; regenerate it in the "
        f"plugin's source with `mcqa schema --task {task.name} > {path.name}`, or delete it (the model is the contract)"
    )


def task_schema(task: Task) -> dict:
    """The task's JSON Schema, generated from its model; a schema file that disagrees is refused."""
    problem = schema_problem(task)
    if problem:
        raise McqaError(problem)
    return task.output.model_json_schema()


def write_schema(task: Task) -> str:
    """Bring a built-in task's schemas/ file up to date; for any other task write nothing. Returns
    the line that says which."""
    generated = task.output.model_json_schema()
    if is_builtin(task):
        path = SCHEMAS_DIR / f"{task.name}.schema.json"
        if schema_problem(task) is None:
            return f"{task.name}: {path} is up to date"
        write_json(path, generated)
        return f"{task.name}: wrote {path}"
    problem = schema_problem(task)
    if problem:
        return f"{task.name}: nothing written; {problem}"
    where = f"checked {schema_file(task)}" if schema_file(task) else "generated from its Pydantic model"
    return f"{task.name}: not a built-in task ({task.source}); its schema is {where}, nothing written"
