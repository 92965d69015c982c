"""The terminal: one rich console on stderr for progress and messages, so stdout stays clean
for what a command prints (schemas, tables a user may pipe)."""

from __future__ import annotations

import time
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
console = Console(stderr=True)
out = Console()
# Not a terminal (a log file, CI, nohup): a plain line at about every tenth of the way, or this
# often, whichever comes first; rich's live bar would print only once, at the end.
PLAIN_EVERY_S = 30.0


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    """Iterate with a progress bar (elapsed and remaining time) on stderr; plain lines when
    stderr is not a terminal."""
    if not console.is_terminal:
        yield from _plain(items, description, total)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )
    with progress:
        yield from progress.track(items, total=total, description=description)


def _plain(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    started = last = time.monotonic()
    step = max(1, total // 10) if total else None
    of = f"/{total}" if total else ""
    console.print(f"{description}: 0{of}", markup=False, highlight=False, soft_wrap=True)
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if done == total or (step and done % step == 0) or now - last >= PLAIN_EVERY_S:
            last = now
            left = f", about {(now - started) / done * (total - done):.0f}s left" if total and done < total else ""
            console.print(f"{description}: {done}{of} ({now - started:.0f}s{left})", markup=False, highlight=False, soft_wrap=True)
    if not total:
        console.print(f"{description}: {done} done ({time.monotonic() - started:.0f}s)", markup=False, highlight=False, soft_wrap=True)
