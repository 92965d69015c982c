"""Finding training runs on disk: the finished runs under a folder (runs/ by default), newest
first, and the damaged or unfinished ones beside them, each said in one line. Every folder is
read through mcqa.runs' readers (run folders are untrusted input); nothing here loads a model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from mcqa.errors import McqaError
from mcqa.io import read_json
from mcqa.runs import CONFIG_FILE, RUN_MARKER, RunSummary, read_summary

DEFAULT_ROOT = Path("runs")


@dataclass(frozen=True)
class FoundRun:
    """One run folder: its checked summary and test scores when finished and whole, else why not."""

    folder: Path
    summary: RunSummary | None
    test: dict[str, float]
    problem: str | None  # "damaged: ..." or "unfinished: ..."
    finished_at: float  # run.json's modification time (0 when there is none)


def _candidates(root: Path) -> list[Path]:
    """Folders at most two levels below root (runs/train/<run>) that hold a run.json or config.yaml."""
    if not root.is_dir():
        return []
    levels = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]
    levels += [c for p in levels[1:] for c in sorted(p.iterdir()) if c.is_dir() and not c.is_symlink()]
    return [p for p in levels if (p / RUN_MARKER).is_file() or (p / CONFIG_FILE).is_file()]


def _test_scores(folder: Path) -> dict[str, float]:
    summary = read_json(folder / RUN_MARKER)
    test = summary.get("test") if isinstance(summary, dict) else None
    if not isinstance(test, dict):
        return {}
    return {str(k): float(v) for k, v in test.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _read(folder: Path) -> FoundRun:
    marker = folder / RUN_MARKER
    if not marker.is_file():
        return FoundRun(folder, None, {}, f"unfinished: no {RUN_MARKER}; resume it with `mcqa train --resume {folder}`", 0.0)
    finished_at = marker.stat().st_mtime
    try:
        summary = read_summary(folder)
        test = _test_scores(folder)
    except McqaError as e:
        return FoundRun(folder, None, {}, f"damaged: {e}", finished_at)
    return FoundRun(folder, summary, test, None, finished_at)


def find_runs(root: str | Path = DEFAULT_ROOT) -> list[FoundRun]:
    """Every run folder under root, finished ones newest first, then the others."""
    found = [_read(p) for p in _candidates(Path(root))]
    return sorted(found, key=lambda r: (r.problem is not None, -r.finished_at, str(r.folder)))


def latest_run(task: str, root: str | Path = DEFAULT_ROOT) -> Path | None:
    """The most recently finished, undamaged run of `task` under root, or None."""
    for r in find_runs(root):
        if r.summary is not None and r.summary.task == task:
            return r.folder
    return None


def runs_table(found: list[FoundRun], root: str | Path) -> Table:
    """The finished runs, newest first: folder, task and protocol, model and mode, test scores."""
    table = Table(title=f"finished runs under {root}/ (newest first)")
    for col in ("run folder", "task / protocol", "model / mode", "test scores"):
        table.add_column(col, overflow="fold")
    for r in found:
        if r.summary is not None:
            scores = "\n".join(f"{k} {v:.3f}" for k, v in r.test.items()) or "-"
            table.add_row(str(r.folder), f"{r.summary.task}\n{r.summary.protocol}", f"{r.summary.model}\n{r.summary.mode}", scores)
    return table


def problem_lines(found: list[FoundRun]) -> list[str]:
    """Each damaged or unfinished folder as one line: "damaged FOLDER: why"."""
    lines = []
    for r in found:
        if r.problem is not None:
            kind, _, why = r.problem.partition(": ")
            lines.append(f"{kind} {r.folder}: {' '.join(why.split())}")
    return lines
