"""Finding training runs on disk: the finished runs under a folder (runs/ by default), newest
first, and the damaged or unfinished ones beside them, each said in one line. Every folder is
read through mcqa.train.runs' readers (run folders are untrusted input); nothing here loads a model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.cells import cell_len
from rich.table import Table

from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.io import is_number, read_json
from mcqa.paths import RUNS
from mcqa.train.folder import CONFIG_FILE, RUN_MARKER, RunSummary, read_summary

DEFAULT_ROOT = RUNS


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
    return {str(k): float(v) for k, v in test.items() if is_number(v)}


def _read(folder: Path) -> FoundRun:
    marker = folder / RUN_MARKER
    if not marker.is_file():
        return FoundRun(
            folder, None, {}, f"unfinished: no {RUN_MARKER}; resume it with `mcqa train --resume {folder}`", 0.0
        )
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


def latest_run_to_score(task: str, root: str | Path = DEFAULT_ROOT) -> Path:
    """With nothing to score named: the newest finished run of the task, said in one line."""
    run = latest_run(task, root)
    if run is None:
        raise McqaError(
            f"nothing to score: no finished `mcqa train` run of task '{task}' under {root}/; "
            "pass --predictions FILE.jsonl (outputs from anywhere), --model M (zero-shot) or --adapter RUN"
        )
    console.print(
        f"scoring the most recent finished run of '{task}': {run} (pass --adapter RUN for another)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return run


def run_protocol(adapter: Path | None, task: str) -> str | None:
    """A trained run is read on its own protocol's split unless --protocol says otherwise (a cv
    fold's test split is not the default protocol's). A run of another task is left to the
    loader to refuse, with its own message."""
    if adapter is None:
        return None
    summary = read_summary(adapter)
    return summary.protocol if summary.task == task else None


# The one score the narrow listing shows: every field right at once, on the test split (for a
# task with one field, that field's accuracy). `--wide` shows every test metric.
MAIN_METRIC = "joint"
_GAP = 2  # spaces between the narrow listing's columns


def runs_table(found: list[FoundRun], root: str | Path, width: int = 80, wide: bool = False) -> Table:
    """The finished runs, newest first, one line each. Narrow (the default): task, protocol,
    model, mode, the main metric and when it finished, within `width` columns (a long model
    name is cut with an ellipsis). Wide: the run folder too and every test metric, at full width."""
    finished = [r for r in found if r.summary is not None]
    when = {r.folder: time.strftime("%Y-%m-%d %H:%M", time.localtime(r.finished_at)) for r in finished}
    metrics = [MAIN_METRIC]
    if wide:
        metrics += sorted({k for r in finished for k in r.test} - {MAIN_METRIC})
    rows = [
        [
            r.summary.task,
            r.summary.protocol,
            r.summary.model,
            r.summary.mode,
            *(f"{r.test[m]:.3f}" if m in r.test else "-" for m in metrics),
            when[r.folder],
        ]
        for r in finished
    ]
    headers = ["task", "protocol", "model", "mode", *metrics, "finished"]
    if wide:
        headers, rows = ["run folder", *headers], [[str(r.folder), *row] for r, row in zip(finished, rows)]
    hint = "" if wide else "; `mcqa runs --wide`: run folders, every test metric"
    table = Table(
        title=f"finished runs under {root}/, newest first",
        caption=f"{MAIN_METRIC}: on the test split{hint}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, _GAP // 2),
        collapse_padding=True,
        title_justify="left",
        caption_justify="left",
    )
    sizes = [max([cell_len(h), *(cell_len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    model = headers.index("model")
    room = width - sum(sizes) + sizes[model] - _GAP * (len(headers) - 1) - 1
    for i, h in enumerate(headers):
        cut = not wide and i == model
        table.add_column(
            h,
            no_wrap=True,
            overflow="ellipsis" if cut else "ignore",
            max_width=max(room, 8) if cut else None,
            justify="right" if h in metrics else "left",
        )
    for row in rows:
        table.add_row(*row)
    return table


def problem_lines(found: list[FoundRun]) -> list[str]:
    """Each damaged or unfinished folder as one line: "damaged FOLDER: why"."""
    lines = []
    for r in found:
        if r.problem is not None:
            kind, _, why = r.problem.partition(": ")
            lines.append(f"{kind} {r.folder}: {' '.join(why.split())}")
    return lines
