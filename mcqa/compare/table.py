"""Is the LLM worth it? Baselines and trained runs in one table, on the same split and scored by
the same scorer: per-field accuracy and macro-F1 with bootstrap intervals, joint match, parse
failures, speed, training time and parameters trained. Every number in the table is read from
a scorer run folder (metrics.json) written here or by `mcqa train`.

A cross-validated task is compared over all its folds at once: `--protocol cv5` names the family
cv5-0 .. cv5-4, each baseline and zero-shot model is run on every fold, each trained model must
bring one run per fold, and every row is scored on the pooled test predictions (each example is
in exactly one test fold), so its intervals cover the whole dataset rather than one fold.

Rows scored on the same examples are also compared example by example (mcqa.compare.paired): every row
against a reference row (the best baseline, or `against`) and the best row against the second,
each with a paired bootstrap interval and McNemar's exact p-value. A row that cannot be paired
(another task, other folds, other examples, such as a run tested on a sample) is refused before
anything is written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mcqa.compare.baselines import BASELINES
from mcqa.compare.page import write_compare_html
from mcqa.compare.paired import check_row_name, outcomes, pair_rows
from mcqa.compare.rows import (
    Row,
    baseline_rows,
    default_zero_shot_readouts,
    protocol_folds,
    row_from_metrics,
    sub_folder,
    zero_shot_name,
    zero_shot_rows,
)
from mcqa.compare.run_rows import run_rows
from mcqa.compare.stack import Member
from mcqa.compare.stack import stack as stack_predictions
from mcqa.compare.view import bar_chart, markdown
from mcqa.errors import McqaError
from mcqa.eval.report import write_run
from mcqa.eval.scoring import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, make_records, score_records
from mcqa.examples import load_split
from mcqa.io import atomic_write_bytes, atomic_write_text, safe_name, write_json
from mcqa.task import Task


def compare(
    task: Task,
    protocol: str | None,
    runs: list[Path],
    baselines: list[str] | None,
    out: Path,
    zero_shot: str | list[str] | None = None,
    zero_shot_readouts: tuple[str, ...] | None = None,
    trust_remote_code: bool = False,
    baseline_cache: Path | None = None,
    zero_shot_cache: Path | None = None,
    against: str | None = None,
    stack: list[str] | None = None,
) -> dict[str, Any]:
    """`zero_shot`: one base model or several, each read out with every zero-shot readout.
    `baseline_cache`, `zero_shot_cache`: folders of cached baseline predictions (mcqa.compare.baseline_cache)
    and zero-shot predictions (mcqa.compare.zero_shot_cache) to reuse and fill. `against`: the name of
    the row every other is paired with (default: the best baseline). `stack`: the names of the
    rows to stack into one more row (mcqa.compare.stack), or ["all"] for every row with probabilities."""
    folds = protocol_folds(task, protocol)
    names = list(BASELINES) if baselines is None else baselines
    for n in names:
        BASELINES.resolve(n)  # an unknown name fails here, with "did you mean"
    models = [zero_shot] if isinstance(zero_shot, str) else zero_shot or []
    specs = list(zero_shot_readouts or default_zero_shot_readouts(task))
    rows = run_rows([Path(r) for r in runs], task, folds, out)  # check runs first: fail before slow work
    coming = [r.shown["name"] for r in rows] + names + [zero_shot_name(m, s) for m in models for s in specs]
    if against is not None:  # and so does a typo; a baseline that turns out not to apply is caught when pairing
        check_row_name(against, coming)
    for member in stack if stack and stack != ["all"] else []:
        check_row_name(member, coming, "--stack")
    if stack is not None:
        for r in rows:  # a run without validation predictions is refused before the slow rows
            if (stack == ["all"] or r.shown["name"] in stack) and r.validation is None:
                raise McqaError(
                    f"stack member '{r.shown['name']}' has no validation predictions (no validation/ in its run "
                    "folder) to fit the stack on; train it again, or leave it out of --stack"
                )
    rows = baseline_rows(task, folds, names, out, baseline_cache, validation=stack is not None) + rows
    for model in models:
        rows += zero_shot_rows(
            task, folds, model, specs, out, trust_remote_code, zero_shot_cache, validation=stack is not None
        )
    if stack is not None:
        rows.append(stack_row(task, folds, rows, stack, out))
    paired = pair_rows(
        [outcomes(r.shown["name"], r.shown["kind"], task.name, folds, r.records, task.fields) for r in rows],
        against,
        BOOTSTRAP_RESAMPLES,
        BOOTSTRAP_SEED,
    )
    for r in rows:
        if r.metrics is not None:
            write_run(r.shown["folder"], r.records, r.metrics)
    shown = folds[0] if len(folds) == 1 else protocol
    result = {
        "task": task.name,
        "protocol": shown,
        "folds": folds,
        "split": "test",
        "fields": task.fields,
        "rows": [{**r.shown, "paired": p} for r, p in zip(rows, paired["rows"])],
        "reference": paired["reference"],
        "best_two": paired["best_two"],
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "interval": "percentile 95%, paired"},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", markdown(result))
    atomic_write_bytes(out / "compare.png", bar_chart(result))
    write_compare_html(out, result)
    return result


def stack_row(task: Task, folds: list[str], rows: list[Row], names: list[str], out: Path) -> Row:
    """The stack of the rows named (every row with probabilities for ["all"]), scored on the
    pooled test predictions like any other row. Its train time is its members' and its speed
    theirs run one after another."""
    if names == ["all"]:
        chosen = [
            r for r in rows if r.validation is not None and all(isinstance(x.get("probs"), dict) for x in r.records)
        ]
    else:
        chosen = [next(r for r in rows if r.shown["name"] == n) for n in names]
    members = [Member(r.shown["name"], r.shown.get("parameters"), r.validation, r.records) for r in chosen]
    preds, info = stack_predictions(task, folds, members)
    test = [e for p in folds for e in load_split(task, "test", p)]
    speeds = [r.shown["examples_per_second"] for r in chosen]
    trained = [r.shown["trained_parameters"] for r in chosen]
    extra = {
        "examples_per_second": None if any(not x for x in speeds) else 1 / sum(1 / x for x in speeds),
        "train_seconds": sum(r.shown["train_seconds"] or 0.0 for r in chosen),
        "trained_parameters": None if None in trained else sum(trained) + len(members) * len(task.label_spaces),
        "parameters": info["parameters"],
    }
    run = {"task": task.name, "split": "test", "protocol": ",".join(folds), "stack": info["members"]}
    scored = score_records(task, make_records(task, test, preds), run)
    folder = sub_folder(out, "stack", "-".join(safe_name(n.replace(" ", "-"))[:24] for n in info["members"])[:120])
    shown = row_from_metrics("stack: " + " + ".join(info["members"]), "stack", scored.metrics, folder, extra)
    return Row({**shown, "stack": info}, make_records(task, test, preds, progress=False), scored.metrics)
