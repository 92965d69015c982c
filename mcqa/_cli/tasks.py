"""`mcqa tasks`: every task found (built-in, tasks/ folder, installed plugins), its fields and
label spaces, protocols and split sizes; a task whose loading fails is named, not fatal."""

from __future__ import annotations

from rich.table import Table

from mcqa.console import console, out
from mcqa.examples import load_split
from mcqa.registry import discover_tasks
from mcqa.task import SPLITS


def add_arguments(s) -> None:
    pass


def run(args) -> None:
    table = Table(title="mcqa tasks")
    for col in ("task", "fields and label spaces", "protocols", f"splits ({'/'.join(SPLITS)})", "description"):
        table.add_column(col, no_wrap=col == "task")  # the name a user must type is never cut
    tasks, broken = discover_tasks()
    for task in tasks:
        fields = []
        for f, space in task.label_spaces.items():
            if space is None:
                fields.append(f"{f}: free")
            else:
                kind = " (ordinal)" if space.ordinal else ""
                fields.append(f"{f}: {', '.join(map(str, space.values))}{kind}")
        try:
            sizes = "/".join(str(len(load_split(task, s))) for s in SPLITS)
        except Exception as e:  # a plugin's own loading code: one broken task must not hide the others
            reason = str(e).strip().splitlines()[:1]
            broken[task.name] = (
                f"{task.source}: loading its splits failed ({type(e).__name__}{': ' + reason[0] if reason else ''})"
            )
            continue
        table.add_row(
            task.name,
            "\n".join(fields),
            ", ".join(task.protocols),
            f"{sizes} ({task.default_protocol})",
            task.description,
        )
    out.print(table)
    for name, problem in broken.items():  # listed, not fatal: a command that names the task still refuses it
        problem = " ".join(problem.split())  # one line, whatever the plugin's exception said
        console.print(
            f"warning: task '{name}' is not listed: {problem}",
            style="yellow",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
