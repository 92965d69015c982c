"""What the terminal shows: `mcqa runs` one line per run within 80 columns (`--wide` for the
rest), and training failures that can only be found once a model or its examples are read,
each one line and exit 2, with no run folder left behind, so the same command works once the
cause is fixed."""

from __future__ import annotations

import os
import time

import pytest
from helpers import run_cli, synth_env
from rich.cells import cell_len
from test_first_use import fake_run

pytestmark = pytest.mark.usefixtures("synth_tasks")  # conftest: the `synth` task is discoverable

LONG_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct-with-a-longer-name"
METRICS = {"joint": 0.612, "label_accuracy": 0.734, "label_macro_f1": 0.558, "parse_failure_rate": 0.021}


@pytest.fixture
def listed(tmp_path):
    """Three finished runs (one on a long hub id), one unfinished, one damaged."""
    root = tmp_path / "runs" / "train"
    fake_run(root / "synth-generate-20260101-101500", finished_at=1_000_000, test={"joint": 0.5})
    fake_run(root / "synth-generate-20260102-101500", finished_at=2_000_000, test=METRICS)
    long = fake_run(root / "synth-generate-20260103-101500-with-a-long-output-dir-name", finished_at=3_000_000, test=METRICS)
    for name in ("run.json", "config.yaml"):
        (long / name).write_text((long / name).read_text().replace("tiny-qwen3", LONG_MODEL))
    os.utime(long / "run.json", (3_000_000, 3_000_000))
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.yaml").write_text("task: synth\n")
    fake_run(root / "damaged", finished_at=500_000)
    (root / "damaged" / "run.json").write_text("{")
    return tmp_path


def test_runs_fits_80_columns_with_one_line_per_run(listed):
    r = run_cli(["runs"], cwd=listed, env=synth_env(COLUMNS="80"))
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    assert all(cell_len(line) <= 80 for line in lines), "\n".join(line for line in lines if cell_len(line) > 80)
    rows = [line for line in lines if line.startswith("synth ")]
    assert len(rows) == 3, r.out  # one line per finished run, newest first
    assert [" ".join(row.split()[-2:]) for row in rows] == [time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
                                                            for t in (3_000_000, 2_000_000, 1_000_000)], rows
    assert all(row.split()[:2] == ["synth", "default"] and "generate" in row for row in rows)
    assert "HuggingFaceTB/SmolLM2" in rows[0] and LONG_MODEL not in rows[0] and "…" in rows[0]  # cut, not wrapped
    assert "0.612" in rows[0] and "0.500" in rows[2]  # the main metric: joint
    assert "0.734" not in r.out and "label_accuracy" not in r.out  # the other metrics: --wide
    assert "--wide" in r.out
    assert "unfinished" in r.out and "damaged" in r.out  # the others, after the table


def test_runs_wide_shows_every_folder_and_metric_on_one_line(listed):
    r = run_cli(["runs", "--wide"], cwd=listed, env=synth_env(COLUMNS="80"))
    assert r.rc == 0, r.err
    rows = [line for line in r.out.splitlines() if line.startswith("runs/train/")]
    assert len(rows) == 3, r.out
    assert "synth-generate-20260103-101500-with-a-long-output-dir-name" in rows[0] and LONG_MODEL in rows[0]
    assert all(f"{v:.3f}" in rows[0] for v in METRICS.values()), rows[0]
    assert all(name in r.out for name in METRICS)
    assert rows[2].split()[-3] == "-"  # a metric the oldest run lacks
    (damaged,) = [line for line in r.out.splitlines() if line.startswith("damaged")]
    assert "runs/train/damaged" in damaged and "run.json" in damaged


def test_runs_with_no_finished_run_says_so(tmp_path):
    (tmp_path / "runs" / "train" / "unfinished").mkdir(parents=True)
    (tmp_path / "runs" / "train" / "unfinished" / "config.yaml").write_text("task: synth\n")
    r = run_cli(["runs"], cwd=tmp_path, env=synth_env(COLUMNS="80"))
    assert r.rc == 0, r.err
    assert r.out.splitlines()[0] == "no finished runs under runs/" and "unfinished runs/train/unfinished" in r.out
