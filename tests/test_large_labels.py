"""Large label spaces in the terminal and the confusion PNG: per-class rows capped (saying how
many were left out and where they all are), the group table with an interval for every field,
the confusion matrix coloured by row share."""

from __future__ import annotations

import json
from typing import Literal

import matplotlib.axes
import pytest
from pydantic import BaseModel, ConfigDict
from rich.console import Console

from mcqa.eval.report import TERMINAL_ROWS, confusion_png, markdown, row_normalised, tables
from mcqa.eval.scoring import compute_metrics, make_records
from mcqa.task import Example, Task

CLASSES = tuple(f"c{i:02d}" for i in range(30))


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Literal[CLASSES]  # type: ignore[valid-type]
    size: Literal["s", "l"]


TASK = Task(name="many", output=Output, load=lambda s, p: [], from_record=lambda r: None, messages=lambda e: [])


@pytest.fixture(scope="module")
def metrics():
    # c00 is the largest class (support 40); every 7th example is wrong in label, every 5th in size
    examples = [
        Example(
            f"e{i:03d}",
            {"text": str(i)},
            {"label": CLASSES[0 if i < 40 else i % 30], "size": "sl"[i % 2]},
            groups=(f"g{i % 3}",),
        )
        for i in range(300)
    ]
    preds = {}
    for i, e in enumerate(examples):
        label = CLASSES[(CLASSES.index(e.target["label"]) + 1) % 30] if i % 7 == 0 else e.target["label"]
        size = "ls"[i % 2] if i % 5 == 0 else e.target["size"]
        preds[e.id] = {"id": e.id, "output": json.dumps({"label": label, "size": size})}
    return compute_metrics(TASK, make_records(TASK, examples, preds, progress=False), resamples=50)


def rendered(m) -> str:
    console = Console(record=True, width=250, force_terminal=False)
    for t in tables(m):
        console.print(t)
    return console.export_text()


def test_per_class_rows_are_capped_in_the_terminal_and_say_where_the_rest_is(metrics):
    text = rendered(metrics)
    shown = [c for c in CLASSES if f"│ {c} " in text]
    assert len(shown) == TERMINAL_ROWS < len(CLASSES)
    assert "c00" in shown  # the largest class is among those shown
    assert f"{len(CLASSES) - TERMINAL_ROWS} more classes not shown (of {len(CLASSES)})" in text
    assert "report.md and metrics.json" in text
    report = markdown(metrics)
    assert all(f"| {c} |" in report for c in CLASSES)  # the report keeps every class
    assert len(metrics["fields"]["label"]["per_class"]) == len(CLASSES)


def test_group_table_shows_an_interval_for_every_field(metrics):
    text = rendered(metrics)
    assert "by group: accuracy [95% CI]" in text
    for g, s in metrics["groups"].items():
        assert set(s["accuracy_ci"]) == {"label", "size"}
        lo, hi = s["accuracy_ci"]["label"]
        assert lo <= s["accuracy"]["label"] <= hi and lo < hi
        (row,) = [line for line in text.splitlines() if f"│ {g} " in line]
        assert row.count("[") == 3, row  # joint, label and size each with an interval
    report = markdown(metrics)
    assert (
        report.count("| g0 |") == 1
        and "]" in next(x for x in report.splitlines() if x.startswith("| g0 |")).split("|")[5]
    )


def test_confusion_png_is_coloured_by_row_share(metrics, monkeypatch):
    seen = []
    real = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(
        matplotlib.axes.Axes, "imshow", lambda self, X, **kw: seen.append((X, kw)) or real(self, X, **kw)
    )
    cm = metrics["fields"]["label"]["confusion"]
    assert confusion_png("label", cm).startswith(b"\x89PNG")
    ((shares, kw),) = seen
    assert shares == row_normalised(cm["matrix"])
    assert kw.get("vmin") == 0 and kw.get("vmax") == 1
    assert all(abs(sum(row) - 1) < 1e-9 for row, counts in zip(shares, cm["matrix"]) if sum(counts))
    assert row_normalised([[3, 1], [0, 0]]) == [[0.75, 0.25], [0.0, 0.0]]
