"""`mcqa schema`: a task's JSON Schema on stdout, or --write every built-in task's schemas/ file."""

from __future__ import annotations

import json

from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.registry import all_tasks, get_task
from mcqa.schema import write_schema


def add_arguments(s) -> None:
    s.add_argument("--task")
    s.add_argument("--write", action="store_true")


def run(args) -> None:
    if args.write:
        for task in all_tasks():  # one line per task: what was written, or why nothing was
            console.print(write_schema(task), markup=False, highlight=False, soft_wrap=True)
        return
    if not args.task:
        raise McqaError("name a task with --task T, or pass --write to regenerate every schema file")
    print(json.dumps(get_task(args.task).output.model_json_schema(), indent=2, ensure_ascii=False))
