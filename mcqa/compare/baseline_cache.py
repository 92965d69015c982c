"""Baseline predictions cached on disk, so `mcqa compare` reuses what `mcqa baseline` (or an
earlier compare) already produced: the key is a digest of the baseline, the task, the protocol,
the data (train, validation and the predicted examples: ids, inputs, gold), mcqa's version and
the source of the file that defines the baseline.
A cache file is untrusted input like any file in runs/: one that does not read back whole is
ignored, with a line, and the baseline is fitted again."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from mcqa import __version__
from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.eval.scoring import check_prediction
from mcqa.io import read_json, write_json
from mcqa.paths import BASELINE_CACHE
from mcqa.task import Example, Task

DEFAULT_CACHE = BASELINE_CACHE


def code_digest(fn: Any) -> str:
    """A digest of the file that defines a baseline's fit: an edited baseline is fitted again."""
    try:
        return hashlib.sha256(Path(inspect.getsourcefile(fn) or "").read_bytes()).hexdigest()
    except (OSError, TypeError):
        return ""


def cache_key(baseline: str, task: Task, protocol: str, data: dict[str, list[Example]], code: str = "") -> str:
    h = hashlib.sha256(json.dumps([__version__, code, baseline, task.name, protocol], ensure_ascii=False).encode())
    for role in sorted(data):
        for e in data[role]:
            h.update(
                json.dumps([role, e.id, e.input, e.target], sort_keys=True, ensure_ascii=False, default=str).encode()
            )
    return h.hexdigest()[:32]


def load_cached(
    cache: Path | None, key: str, task: Task, ids: list[str], what: str = "baseline", redo: str = "fitting again"
) -> dict[str, Any] | None:
    """The cached result for `key` when its file reads back whole and predicts exactly `ids`, else None.
    `what` and `redo` say, when a file is ignored, whose cache it was and what happens instead."""
    if cache is None:
        return None
    path = cache / f"{key}.json"
    if not path.is_file():
        return None
    try:
        saved = read_json(path)
        if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("result"), dict):
            raise McqaError(f"not a {what} cache entry")
        result = saved["result"]
        preds = result.get("predictions")
        if not isinstance(preds, dict) or sorted(preds) != sorted(ids):
            raise McqaError("its predictions are not for these examples")
        for i, p in preds.items():
            if not isinstance(p, dict) or p.get("id") != i or not isinstance(p.get("output"), str):
                raise McqaError(f"prediction '{i}' is malformed")
        result["predictions"] = {i: check_prediction(p, f"{path}: '{i}'", task) for i, p in preds.items()}
    except McqaError as e:
        console.print(
            f"ignoring the {what} cache file {path} ({e}); {redo}",
            style="yellow",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return None
    return {**result, "cached": str(path)}


def store(cache: Path | None, key: str, result: dict[str, Any]) -> None:
    """Keep the result for next time (atomically); a cache that cannot be written is skipped."""
    if cache is None:
        return
    try:
        write_json(cache / f"{key}.json", {"key": key, "result": result})
    except McqaError as e:
        console.print(f"not cached: {e}", style="yellow", markup=False, highlight=False)
