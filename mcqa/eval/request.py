"""What `mcqa score` and `mcqa predict` are asked to read, checked before a model loads or a
folder is made: the examples (a shipped split or the user's own file) and where predictions
come from (a file, or a model mcqa runs), and the run description metrics.json keeps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mcqa.errors import McqaError
from mcqa.examples import load_file, load_split, resolve_protocol
from mcqa.task import Example, Task


def score_split(
    split: str | None, data: Path | None, predictions: Path | None, runs_model: bool, limit: int | None
) -> str | None:
    """The split a score reads (test unless --data names a file), after the flags that cannot
    go together are refused in one line each."""
    if split is not None and data is not None:
        raise McqaError("give only one of --split S (a shipped split) or --data FILE.jsonl (your labeled examples)")
    if predictions is not None and runs_model:
        raise McqaError(
            "give either --predictions FILE.jsonl (outputs from anywhere), --model M / --adapter RUN (mcqa runs the "
            "model) or --endpoint URL --served-model NAME (a server runs it)"
        )
    if limit is not None and predictions is not None:
        raise McqaError(
            "--limit samples the examples a model is run on; with --predictions, score a part with --subset instead"
        )
    return "test" if data is None and split is None else split


def predict_split(split: str | None, data: Path | None) -> None:
    if (split is None) == (data is None):
        raise McqaError("give exactly one of --split S or --data FILE.jsonl (new examples, labeled or not)")


def examples_of(
    task: Task, split: str | None, data: Path | None, protocol: str | None
) -> tuple[list[Example], dict[str, Any]]:
    """The examples and what they are, as metrics.json says it: {"data": file} or {"split", "protocol"}."""
    if data is not None:
        return load_file(task, data), {"data": str(data)}
    protocol = resolve_protocol(task, protocol)
    return load_split(task, split, protocol), {"split": split, "protocol": protocol}


def scored_run(task: Task, source: dict[str, Any], info: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The run description of a score: the task, the examples' source, the predictor's summary
    (its flat values; nested ones such as a calibration fit are kept apart) and when."""
    return {
        "task": task.name,
        **source,
        **{k: v for k, v in info.items() if not isinstance(v, dict)},
        **extra,
        "scored_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
