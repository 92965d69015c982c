"""Finds tasks: modules in a tasks/ folder (file name = task name) and objects exposed through
the "mcqa.tasks" entry-point group by installed packages. A wrong name gets "did you mean"."""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from mcqa.errors import TaskContractError, UnknownTaskError
from mcqa.names import Registry
from mcqa.task import Task, check_task

ENTRY_POINT_GROUP = "mcqa.tasks"
# The repository's own tasks/ folder; mcqa never imports it by name, only by file.
BUILTIN_TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"


def task_dirs() -> list[Path]:
    """Folders searched for task modules: $MCQA_TASKS_PATH entries, then the repository's tasks/."""
    extra = [Path(p) for p in os.environ.get("MCQA_TASKS_PATH", "").split(os.pathsep) if p]
    dirs = []
    for d in [*extra, BUILTIN_TASKS_DIR]:
        if d.is_dir() and d.resolve() not in dirs:
            dirs.append(d.resolve())
    return dirs


def _sources() -> Registry[Path | EntryPoint]:
    found: Registry[Path | EntryPoint] = Registry("task", UnknownTaskError)
    for d in task_dirs():
        for path in sorted(d.glob("*.py")):
            if path.name.startswith("_"):
                continue
            found.setdefault(path.stem, path)  # earlier folders win, so a user can override
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            other = found[ep.name]
            where = other if isinstance(other, Path) else other.value
            raise TaskContractError(
                f"task name '{ep.name}' is defined twice: by entry point {ep.value} and by {where}; rename one"
            )
        found[ep.name] = ep
    return found


def is_builtin(task: Task) -> bool:
    """A task defined by a file in this project's own tasks/ folder (its schema is committed
    under schemas/); a plugin or a task on $MCQA_TASKS_PATH is not."""
    return (
        bool(task.source)
        and not task.source.startswith("entry point")
        and Path(task.source).resolve().parent == BUILTIN_TASKS_DIR
    )


def task_names() -> list[str]:
    return sorted(_sources())


@lru_cache(maxsize=None)
def get_task(name: str) -> Task:
    src = _sources().resolve(name)
    if isinstance(src, Path):
        obj = getattr(_load_module(name, src), "TASK", None)
        where = str(src)
        if obj is None:
            raise TaskContractError(f"{where}: task module defines no TASK; add `TASK = Task(...)`")
    else:
        where = f"entry point {src.value}"
        try:
            obj = src.load()
        except Exception as e:
            raise TaskContractError(f"{where}: could not be imported ({type(e).__name__}: {e})") from e
        obj = getattr(obj, "TASK", obj)  # an entry point may name the module or the Task itself
    return check_task(obj, name, where)


def all_tasks() -> list[Task]:
    """Every task; the first one that fails to import or breaks the contract raises."""
    return [get_task(n) for n in task_names()]


def discover_tasks() -> tuple[list[Task], dict[str, str]]:
    """Every task that loads, and for each one that does not, the one-line reason: a listing
    shows the others (one broken plugin must not hide every task)."""
    tasks, broken = [], {}
    for name in task_names():
        try:
            tasks.append(get_task(name))
        except TaskContractError as e:
            broken[name] = str(e)
    return tasks, broken


def _load_module(name: str, path: Path):
    modname = f"mcqa_tasks_{name}"
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[modname]
        raise TaskContractError(f"{path}: task module failed to import ({type(e).__name__}: {e})") from e
    return module


def task_module(name: str):
    """The module of a file-based task, for a task that builds on another one's data
    (mmlu_pro_answer reuses mmlu_pro's questions and splits)."""
    src = _sources().get(name)
    if not isinstance(src, Path):
        raise UnknownTaskError(f"'{name}' is not a task module in {', '.join(map(str, task_dirs()))}")
    return sys.modules.get(f"mcqa_tasks_{name}") or _load_module(name, src)
