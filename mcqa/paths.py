"""Where mcqa writes when a command names no folder: everything under runs/ in the working
directory, decided here once. Each default is new (a time stamp, made unique) so that no run
overwrites another; a folder the user names is checked by mcqa.io before anything is written."""

from __future__ import annotations

from pathlib import Path

from mcqa.io import unique_name

RUNS = Path("runs")
TRAIN = RUNS / "train"
BASELINE_CACHE = RUNS / "cache" / "baselines"
ZERO_SHOT_CACHE = RUNS / "cache" / "zero_shot"


def score_dir(task: str, split: str | None) -> Path:
    return RUNS / "score" / unique_name(f"{task}-{split or 'data'}")


def predictions_file(task: str, readout: str | None) -> Path:
    stem = unique_name(f"{task}-{readout or 'default'}")
    return RUNS / "predict" / f"{stem}.jsonl"


def baseline_file(task: str, baseline: str, protocol: str, split: str | None) -> Path:
    return RUNS / "baselines" / f"{task}-{baseline}-{protocol}-{split or 'data'}.jsonl"


def compare_dir(task: str) -> Path:
    return RUNS / "compare" / unique_name(task)


def train_dir(task: str, mode: str) -> Path:
    return TRAIN / unique_name(f"{task}-{mode}")
