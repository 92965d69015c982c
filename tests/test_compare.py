"""`mcqa compare` end to end on tiny data, offline: baselines and a trained tiny-qwen3 run in one
table, and every number in it traced back to a scorer metrics.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYNTH = ROOT / "tests" / "synthetic_tasks"


def test_compare_runs_end_to_end_and_every_number_comes_from_the_scorer(tmp_path):
    env = {**os.environ, "MCQA_TASKS_PATH": str(SYNTH), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, str(ROOT / "cli.py")]
    run = tmp_path / "run"
    trained = subprocess.run(cli + ["train", "--task", "synth", "--model", "tiny-qwen3", "--mode", "head", "epochs=1",
                                    "micro_batch_size=16", f"output_dir={run}"], env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = tmp_path / "cmp"
    done = subprocess.run(cli + ["compare", "--task", "synth", "--baselines", "majority,tfidf", "--runs", str(run),
                                 "--zero-shot", "tiny-qwen3", "--out", str(out)],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "compare.json").read_text())
    assert [r["kind"] for r in result["rows"]] == ["baseline", "baseline", "trained", "zero-shot", "zero-shot"]
    assert [r["name"].split()[0] for r in result["rows"]] == ["majority", "tfidf", "tiny-qwen3", "tiny-qwen3", "tiny-qwen3"]
    assert result["rows"][3]["parse_failure_rate"] == result["rows"][4]["parse_failure_rate"] == 0  # constrained, rank
    assert (out / "compare.png").stat().st_size > 1000
    table = (out / "compare.md").read_text()
    for row in result["rows"]:
        metrics = json.loads((Path(row["folder"]) / "metrics.json").read_text())  # the scorer's own output
        assert metrics["n"] == row["n"] == 80
        assert row["joint"] == metrics["joint"]["accuracy"] and row["joint_ci"] == metrics["joint"]["ci"]
        assert row["parse_failure_rate"] == metrics["parse"]["failure_rate"]
        fm = metrics["fields"]["label"]
        assert row["fields"]["label"]["accuracy"] == fm["accuracy"]
        assert row["fields"]["label"]["macro_f1"] == fm["macro_f1"]
        assert f"{100 * fm['accuracy']:.1f} [{100 * fm['ci']['accuracy'][0]:.1f}, {100 * fm['ci']['accuracy'][1]:.1f}]" in table
        # and the scorer's numbers agree with its own per-example records
        records = [json.loads(line) for line in (Path(row["folder"]) / "predictions.jsonl").read_text().splitlines()]
        assert fm["accuracy"] == pytest.approx(sum(r["correct"]["label"] for r in records) / len(records))
    majority, tfidf = result["rows"][0], result["rows"][1]
    assert majority["fields"]["label"]["accuracy"] < 0.5 < tfidf["fields"]["label"]["accuracy"]


def test_compare_refuses_a_run_of_another_task(tmp_path):
    run = tmp_path / "run"
    (run / "test").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"task": "notification", "protocol": "seed", "model": "m", "mode": "head"}))
    (run / "test" / "metrics.json").write_text("{}")
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "compare", "--task", "recipe_mpr", "--runs", str(run)],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "notification/seed" in r.stderr and "Traceback" not in r.stderr
