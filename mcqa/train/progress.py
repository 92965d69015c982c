"""What `mcqa train` shows while it runs: a header that says what is about to happen (task,
protocol, model, mode, examples per split, steps, effective batch, run folder), a progress line
at each logging step (step, epoch, loss, learning rate, time so far and left), after each
epoch the validation scores so far as a small table, and a last line for the whole fit."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from mcqa.console import console


def optimizer_steps(train_rows: int, micro_batch: int, batch: int, epochs: float, world: int = 1) -> int:
    """Optimizer steps as Trainer counts them: batches per epoch, grouped by accumulation."""
    per_epoch = max(
        1, math.ceil(math.ceil(train_rows / (micro_batch * world)) / max(1, batch // (micro_batch * world)))
    )
    return math.ceil(per_epoch * epochs)


def header(
    task: str,
    protocol: str,
    model: str,
    mode: str,
    sizes: dict[str, str],
    steps: int,
    batch: int,
    micro_batch: int,
    epochs: float,
    run_dir: Path,
    resume: bool,
    max_steps: int | None = None,
    layers: str = "",
    sharing: str = "",
) -> Table:
    t = Table(title="mcqa train" + (" (resumed)" if resume else ""), show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    for what, value in (
        ("task", f"{task} (protocol {protocol})"),
        ("model", model + (f" ({layers})" if layers else "")),
        ("mode", mode),
        *((("shared", sharing),) if sharing else ()),
        ("examples", ", ".join(f"{k} {v}" for k, v in sizes.items())),
        (
            "steps",
            f"{steps} optimizer steps" + (f" (max_steps={max_steps})" if max_steps else f" over {epochs:g} epochs"),
        ),
        ("effective batch", f"{batch} (micro batch {micro_batch})"),
        ("run folder", str(run_dir)),
    ):
        t.add_row(what, value)
    return t


def validation_table(history: list[dict[str, float]], prefix: str, best: str, higher_is_better: bool) -> Table:
    """Every epoch's validation scores so far; the best epoch (by `best`) is marked."""
    names = [k for k in history[-1] if k.startswith(prefix)]
    key = best if best.startswith(prefix) else prefix + best
    values = [h.get(key) for h in history]
    pick = max if higher_is_better else min
    top = pick((v for v in values if v is not None), default=None)
    t = Table(title=f"validation after epoch {round(history[-1].get('epoch', 0), 2):g}")
    t.add_column("epoch", justify="right")
    for n in names:
        t.add_column(n[len(prefix) :], justify="right")
    for h, v in zip(history, values):
        mark = " *" if v is not None and v == top else ""
        t.add_row(f"{round(h.get('epoch', 0), 2):g}{mark}", *(f"{h[n]:.3f}" for n in names))
    t.caption = f"* best so far by {key[len(prefix) :]}"
    return t


def show(renderable) -> None:
    console.print(renderable)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def step_line(step: int, total: int, epoch: float, logs: dict[str, float], elapsed: float, done_before: int = 0) -> str:
    """'step 10/90 (epoch 0.22): loss 2.412, lr 2.9e-04, 1m40s, about 13m20s left'. Steps done
    before a resume (`done_before`) do not count towards the time per step."""
    parts = [f"loss {logs['loss']:.3f}"] if isinstance(logs.get("loss"), (int, float)) else []
    if isinstance(logs.get("learning_rate"), (int, float)):
        parts.append(f"lr {logs['learning_rate']:.1e}")
    parts.append(_duration(elapsed))
    ran = step - done_before
    if 0 < ran and step < total:
        parts.append(f"about {_duration(elapsed / ran * (total - step))} left")
    return f"step {step}/{total} (epoch {epoch:.2f}): " + ", ".join(parts)


def fit_line(steps: int, seconds: float, mean_loss: float | None) -> str:
    loss = f", mean training loss {mean_loss:.3f}" if mean_loss is not None else ""
    return f"trained {steps} optimizer steps in {_duration(seconds)}{loss}"


def say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)
