"""Report folders as users get them, for the page tests (test_html_report, test_browser): a
scored notification run with every kind of output in it (right, confidently wrong, each parse
failure, markup), a finished training run of `synth`, and a compare of both."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import cli_env, fake_run, gold_rows, load, run_cli, write_jsonl

from mcqa.compare.page import write_compare_html
from mcqa.compare.table import compare
from mcqa.eval.html import write_training_report
from mcqa.eval.scoring import score
from mcqa.prompting import serialize_target
from mcqa.registry import get_task

NEXT_FOLDER = {"Work": "Personal", "Personal": "Promotions", "Promotions": "Alerts", "Alerts": "Work"}
HOSTILE = "<script>alert('x')</script><img src=\"http://example.com/x.png\">"
MAX_REPORT_BYTES = 2 * 2**20


def notification_outputs() -> list[dict]:
    """The notification test split answered mostly right, every 9th folder confidently wrong, a
    few outputs of each parse failure (one of them markup), probabilities for the folder field."""
    rows = []
    for i, g in enumerate(gold_rows()):
        gold = json.loads(g["output"])
        folder = NEXT_FOLDER[gold["folder"]] if i % 9 == 0 else gold["folder"]
        output = json.dumps({"folder": folder, "priority": gold["priority"]})
        output = {
            3: HOSTILE,
            7: '{"folder": "Work", "priority":',
            11: json.dumps({"folder": "Spam", "priority": 1}),
        }.get(i % 41, output)
        sure = 0.5 + 0.05 * (i % 10)
        rows.append(
            {
                "id": g["id"],
                "output": output,
                "probs": {"folder": {lab: sure if lab == folder else (1 - sure) / 3 for lab in NEXT_FOLDER}},
            }
        )
    return rows


def score_run(root: Path) -> Path:
    """`mcqa score` of notification_outputs: a run folder as a user gets it."""
    preds = write_jsonl(root / "preds.jsonl", notification_outputs())
    out = root / "scored"
    done = run_cli(
        [
            "score",
            "--task",
            "notification",
            "--split",
            "test",
            "--predictions",
            preds,
            "--out",
            out,
            "--resamples",
            "200",
        ],
        root,
        cli_env(),
    )
    assert done.rc == 0, done.err[-2000:]
    return out


KEPT_STEP = 6  # the kept checkpoint: epoch 2 of 3, three optimizer steps per epoch


def training_run(root: Path) -> Path:
    """A finished head run of `synth` as training leaves it (config.yaml, run.json, the logs
    JsonlLog and validation write, test/ scored by the scorer), without the training: three
    epochs, the second kept."""
    task = get_task("synth")
    best = root / "run" / "checkpoints" / f"checkpoint-{KEPT_STEP}"
    run = fake_run(
        root / "run",
        config={"task": "synth", "protocol": "default", "mode": "head"},
        summary={
            "best_checkpoint": str(best),
            "best_metric": "joint",
            "best_value": 0.8,
            "epochs_run": 3.0,
            "train_examples": 240,
            "trainable_parameters": 33028,
            "train_seconds": 12.5,
        },
    )
    log, val = [], []
    for step in range(1, 10):
        log.append({"step": step, "epoch": step / 3, "loss": 1.4 / step, "grad_norm": 1.0, "learning_rate": 3e-3})
        if step % 3 == 0:
            scores = {"eval_joint": {3: 0.6, 6: 0.8, 9: 0.7}[step], "eval_parse_failure_rate": 0.0}
            scores["eval_label_accuracy"] = scores["eval_joint"]
            log.append({"step": step, "epoch": step / 3, **scores})
            val.append({"epoch": step / 3, "step": step, **scores})
    write_jsonl(run / "train_log.jsonl", log)
    write_jsonl(run / "val_metrics.jsonl", val)
    test = list(load("synth", "test", "default"))
    wrong = {"north": "south", "south": "east", "east": "west", "west": "north"}
    outputs = {
        e.id: {
            "id": e.id,
            "output": serialize_target(task.output, e.target if j % 4 else {"label": wrong[e.target["label"]]}),
            "probs": {
                "label": {
                    lab: 0.7 if lab == (e.target["label"] if j % 4 else wrong[e.target["label"]]) else 0.1
                    for lab in wrong
                }
            },
        }
        for j, e in enumerate(test)
    }
    score(
        task,
        test,
        outputs,
        {
            "task": "synth",
            "split": "test",
            "protocol": "default",
            "model": "tiny-qwen3",
            "mode": "head",
            "run": str(run),
        },
        folder=run / "test",
        resamples=200,
    )
    write_training_report(run)
    return run


def compare_folder(root: Path, run: Path) -> tuple[Path, dict]:
    """compare() of two baselines and the training run on synth, with compare.html beside it."""
    out = root / "cmp"
    result = compare(get_task("synth"), None, [run], ["majority", "tfidf"], out)
    write_compare_html(out, result)
    return out, result
