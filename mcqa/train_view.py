"""What `mcqa train` shows while it runs: a header that says what is about to happen (task,
protocol, model, mode, examples per split, steps, effective batch, run folder) and, after each
epoch, the validation scores so far as a small table."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from mcqa.console import console


def optimizer_steps(train_rows: int, micro_batch: int, batch: int, epochs: float, world: int = 1) -> int:
    """Optimizer steps as Trainer counts them: batches per epoch, grouped by accumulation."""
    per_epoch = max(1, math.ceil(math.ceil(train_rows / (micro_batch * world)) / max(1, batch // (micro_batch * world))))
    return math.ceil(per_epoch * epochs)


def header(task: str, protocol: str, model: str, mode: str, sizes: dict[str, str], steps: int, batch: int,
           micro_batch: int, epochs: float, run_dir: Path, resume: bool) -> Table:
    t = Table(title="mcqa train" + (" (resumed)" if resume else ""), show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    for what, value in (("task", f"{task} (protocol {protocol})"), ("model", model), ("mode", mode),
                        ("examples", ", ".join(f"{k} {v}" for k, v in sizes.items())),
                        ("steps", f"{steps} optimizer steps over {epochs:g} epochs"),
                        ("effective batch", f"{batch} (micro batch {micro_batch})"), ("run folder", str(run_dir))):
        t.add_row(what, value)
    return t


def validation_table(history: list[dict[str, float]], prefix: str, best: str, higher_is_better: bool) -> Table:
    """Every epoch's validation scores so far; the best epoch (by `best`) is marked."""
    names = [k for k in history[-1] if k.startswith(prefix)]
    key = best if best.startswith(prefix) else prefix + best
    values = [h.get(key) for h in history]
    pick = max if higher_is_better else min
    top = pick((v for v in values if v is not None), default=None)
    t = Table(title=f"validation after epoch {history[-1].get('epoch', 0):g}")
    t.add_column("epoch", justify="right")
    for n in names:
        t.add_column(n[len(prefix):], justify="right")
    for h, v in zip(history, values):
        mark = " *" if v is not None and v == top else ""
        t.add_row(f"{h.get('epoch', 0):g}{mark}", *(f"{h[n]:.3f}" for n in names))
    t.caption = f"* best so far by {key[len(prefix):]}"
    return t


def show(renderable) -> None:
    console.print(renderable)
