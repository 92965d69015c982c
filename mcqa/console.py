"""The terminal: one rich console on stderr for progress and messages, so stdout stays clean
for what a command prints (schemas, tables a user may pipe)."""

from __future__ import annotations

import logging
import sys
import time
import warnings
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
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        yield from progress.track(items, total=total, description=description)


def _plain(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    started = last = time.monotonic()
    step = (total // 10 if total >= 20 else total) if total else None  # a short loop: its start and end
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
            console.print(
                f"{description}: {done}{of} ({now - started:.0f}s{left})", markup=False, highlight=False, soft_wrap=True
            )
    if not total:
        console.print(
            f"{description}: {done} done ({time.monotonic() - started:.0f}s)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


# Libraries whose deprecation notices (past_key_values, is_gradient_checkpointing, ...) are
# for mcqa's maintainers, not for someone training a model: they are hidden, mcqa's own are not.
FOREIGN = frozenset(
    {"transformers", "peft", "torch", "accelerate", "datasets", "huggingface_hub", "sklearn", "xgrammar"}
)
_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _raised_by(frame) -> str:
    """The top-level package of the code that called warnings.warn (not the one it blames)."""
    while frame is not None and frame.f_globals.get("__name__") in ("warnings", __name__):
        frame = frame.f_back
    return (frame.f_globals.get("__name__") or "").split(".")[0] if frame is not None else ""


def quiet_foreign_deprecations() -> None:
    """Hide deprecation warnings raised inside FOREIGN libraries. They pass a stacklevel that
    blames their caller (often mcqa), so the filter looks at who raised them."""
    shown = warnings.showwarning
    if getattr(shown, "_mcqa_quiet", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, _DEPRECATIONS) and _raised_by(sys._getframe(1)) in FOREIGN:
            return
        shown(message, category, filename, lineno, file, line)

    showwarning._mcqa_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
    quiet_foreign_log_deprecations()


# transformers' log lines that say nothing a user of mcqa can act on: deprecations; the note
# that a layer runs its reference PyTorch kernel (Qwen3.5's linear attention, LFM2's
# convolutions without their CUDA kernels: correct, and all a CPU has); and the tokenizer's
# note that a text is longer than its model_max_length, since mcqa measures every training
# example against max_length itself and says how many it drops (or that none is left).
_NOT_FOR_USERS = ("deprecat", "reference pytorch implementation", "token indices sequence length is longer than")


class _NoDeprecations(logging.Filter):
    """Drops the _NOT_FOR_USERS lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().lower()
        return not any(note in text for note in _NOT_FOR_USERS)


def quiet_foreign_log_deprecations() -> None:
    """transformers also logs its deprecations ("`past_key_values` ... are deprecated") through
    the handler it puts on its "transformers" logger once imported; that handler drops them.
    Call again after transformers is imported (it is idempotent)."""
    for handler in logging.getLogger("transformers").handlers:
        if not any(isinstance(f, _NoDeprecations) for f in handler.filters):
            handler.addFilter(_NoDeprecations())
