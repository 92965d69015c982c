"""Run folders, read without loading anything: the completion marker and the files a run
writes, its config.yaml and run.json read back and checked. Loading a run's model is
mcqa.train.runs; starting a run (its name, the checks made before it exists, the lock) is
mcqa.train.start. Nothing here imports torch, so `mcqa runs` and `mcqa score` stay light.

A run folder may come from anyone (a colleague, a download), so everything read from it is
untrusted input and is validated here, in one place, before use: config.yaml through the typed
config and the registries, run.json field by field. Its values never turn on remote code (only
the user's own --trust-remote-code does) and are never used to build a path unchecked.
A run is complete only when run.json exists (written last, atomically).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcqa.errors import McqaError
from mcqa.io import is_number, read_json
from mcqa.registry import get_task
from mcqa.task import Task
from mcqa.train.config import TrainConfig, load_config

RUN_MARKER = "run.json"
CONFIG_FILE = "config.yaml"
LOCK_FILE = ".mcqa.lock"
# What a run writes before its first checkpoint: a folder holding only these kept no work.
STARTED = {
    CONFIG_FILE,
    "schema.json",
    "tokenizer",
    "train_log.jsonl",
    "val_metrics.jsonl",
    "checkpoints",
    ".adapter.tmp",
}
_REMOTE_CODE_FLAG = "--trust-remote-code"


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def read_config(run_dir: str | Path) -> TrainConfig:
    """A run's config.yaml, validated: known keys and types, a registered task, one of its protocols."""
    path = Path(run_dir) / CONFIG_FILE
    config = load_config(path)
    task = _task_of(path, config.task)
    if config.protocol is not None and config.protocol not in task.protocols:
        raise McqaError(
            f"{path}: protocol '{config.protocol}' is not one of task '{task.name}': {', '.join(task.protocols)}"
        )
    return config


def _task_of(where: Path, name: Any) -> Task:
    if not isinstance(name, str):
        raise McqaError(f"{where}: 'task' must be a task name, got {type(name).__name__}")
    try:
        return get_task(name)
    except McqaError as e:
        raise McqaError(f"{where}: {e}") from None


def _number(where: Path, summary: dict, key: str) -> float | None:
    v = summary.get(key)
    if v is None:
        return None
    if not is_number(v) or v < 0:
        raise McqaError(
            f"{where}: '{key}' must be a non-negative number, "
            f"got {v!r}; the file is damaged, retrain or re-copy the run"
        )
    return v


@dataclass(frozen=True)
class RunSummary:
    """What run.json says about a finished run, every value checked."""

    folder: Path
    task: str
    protocol: str
    model: str
    mode: str
    train_seconds: float | None
    trainable_parameters: float | None
    test_examples_per_second: float | None
    config: TrainConfig | None = None  # config.yaml, validated; None for a run folder without one


def read_summary(run_dir: str | Path) -> RunSummary:
    """A finished run's run.json: a JSON object whose task, protocol, mode and model are
    registered names (and agree with config.yaml when there is one)."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_MARKER
    if not path.is_file():
        raise McqaError(_unfinished(run_dir))
    s = read_json(path)
    if not isinstance(s, dict):
        raise McqaError(
            f"{path}: expected a JSON object, got {type(s).__name__}; the file is damaged, retrain or re-copy the run"
        )
    task = _task_of(path, s.get("task"))
    if s.get("protocol") not in task.protocols:
        raise McqaError(
            f"{path}: protocol {s.get('protocol')!r} is not one of task '{task.name}': {', '.join(task.protocols)}"
        )
    if not isinstance(s.get("mode"), str) or not re.fullmatch(r"[A-Za-z0-9_]+", s["mode"]):
        raise McqaError(f"{path}: 'mode' must be a training mode's name, got {s.get('mode')!r}")
    if not isinstance(s.get("model"), str) or not s["model"].strip() or not s["model"].isprintable():
        raise McqaError(f"{path}: 'model' must be a model name, got {s.get('model')!r}")
    config = read_config(run_dir) if (run_dir / CONFIG_FILE).is_file() else None
    if config is not None:
        for key in ("task", "mode", "model"):
            if s[key] != getattr(config, key):
                raise McqaError(
                    f"{path}: {key} '{s[key]}' disagrees with {CONFIG_FILE} "
                    f"('{getattr(config, key)}'); the run folder was edited"
                )
    return RunSummary(
        run_dir,
        task.name,
        s["protocol"],
        s["model"],
        s["mode"],
        _number(path, s, "train_seconds"),
        _number(path, s, "trainable_parameters"),
        _number(path, s, "test_examples_per_second"),
        config,
    )


def _unfinished(run_dir: Path) -> str:
    if (run_dir / CONFIG_FILE).is_file():
        return (
            f"{run_dir}: not a finished training run (no {RUN_MARKER}); finish it with `mcqa train --resume {run_dir}`"
        )
    return (
        f"{run_dir}: not a training run folder (no {RUN_MARKER}, no {CONFIG_FILE}); "
        "pass a folder written by `mcqa train`"
    )


def check_remote_code(config: TrainConfig, where: Path, trust_remote_code: bool) -> None:
    """A run folder never turns on remote code by itself: only the user's own flag does."""
    if config.trust_remote_code and not trust_remote_code:
        raise McqaError(
            f"{where / CONFIG_FILE}: this run's model '{config.model}' runs its own Python code "
            f"(trust_remote_code: true); mcqa runs it only if you pass {_REMOTE_CODE_FLAG} yourself, "
            "and only do so if you trust where the run came from"
        )
