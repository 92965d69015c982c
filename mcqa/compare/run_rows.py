"""The rows of trained runs in a compare: each run folder read back and checked (task, folds,
the whole test split), its raw outputs scored again against the task's own gold, and runs that
differ only in settings that do not change what is learned pooled over folds into one row."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mcqa.compare.rows import Row, model_parameters, pooled_row, row_from_metrics, sub_folder
from mcqa.errors import McqaError
from mcqa.eval.records import Record
from mcqa.eval.scoring import check_prediction, make_records, match_ids
from mcqa.examples import load_split
from mcqa.io import read_json, read_jsonl, safe_name
from mcqa.task import Example, Task
from mcqa.train.config import INCIDENTAL
from mcqa.train.folder import RunSummary, read_summary


def _read_run(run_dir: Path, task: Task, folds: list[str]) -> RunSummary:
    summary = read_summary(run_dir)  # validated: registered task, protocol and mode names
    if not (run_dir / "test" / "metrics.json").is_file():
        raise McqaError(f"{run_dir}: not a finished training run (no test/metrics.json)")
    if summary.task != task.name or summary.protocol not in folds:
        want = folds[0] if len(folds) == 1 else f"one of {', '.join(folds)}"
        raise McqaError(
            f"{run_dir}: trained on {summary.task}/{summary.protocol}, not {task.name}/{want}; "
            "compare runs on the same task and split protocol"
        )
    return summary


def _tested(
    task: Task, run_dir: Path, protocol: str, split: str = "test"
) -> tuple[list[Example], dict[str, dict[str, Any]]]:
    """A run's test (or validation) examples and its raw outputs, to be scored again against the
    task's own gold (make_records): a received run's records are never trusted for gold,
    correctness or probabilities. The run must cover the whole test split: rows are paired
    example by example (a stack checks its members' validation coverage itself)."""
    path = run_dir / split / "predictions.jsonl"
    preds = {}
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(rec.get("id"), str) or rec["id"] in preds:
            raise McqaError(f"{where}: a record needs a unique string 'id'; re-score the run")
        preds[rec["id"]] = check_prediction(
            {
                "id": rec["id"],
                "output": rec.get("raw"),
                "truncated": rec.get("status") == "truncated",
                "probs": rec.get("probs"),
            },
            where,
            task,
        )
    test = load_split(task, split, protocol)
    tested = match_ids(test, preds, str(path), subset=True)  # an unknown id is refused here
    if split == "test" and len(tested) < len(test):
        raise McqaError(
            f"{run_dir}: tested on {len(tested)} of the {len(test)} test examples of {protocol} "
            "(max_test_examples?); compare pairs rows example by example, so train the run "
            "on the whole test split"
        )
    return tested, preds


def _run_extra(summary: RunSummary) -> dict[str, Any]:
    base, trained = model_parameters(summary.model), summary.trainable_parameters
    return {
        "examples_per_second": summary.test_examples_per_second,
        "train_seconds": summary.train_seconds,
        "trained_parameters": trained,
        "parameters": None if base is None or trained is None else base + trained,
    }


def _validated(task: Task, run_dir: Path, protocol: str) -> list[Record] | None:
    """A run's records on its validation split (written by the test pass), or None without them."""
    if not (run_dir / "validation" / "predictions.jsonl").is_file():
        return None
    return make_records(task, *_tested(task, run_dir, protocol, "validation"), progress=False)


# Runs pool into one row when they differ only in settings that do not change what is learned
# (marked in mcqa.train.config) and in fold and folder; task, protocol and mode are the row's
# identity, checked on their own.
_INCIDENTAL = INCIDENTAL | {"task", "protocol", "mode"}


def _recipe(summary: RunSummary) -> dict[str, Any] | None:
    """A run's training settings from its config.yaml (validated), flattened (lora.r, ...), lists
    as sorted tuples, without the incidental ones; None for a run folder without a config."""
    if summary.config is None:
        return None
    flat: dict[str, Any] = {}
    for key, value in summary.config.model_dump(mode="json").items():
        if key in _INCIDENTAL:
            continue
        for sub, v in value.items() if isinstance(value, dict) else [(None, value)]:
            flat[key if sub is None else f"{key}.{sub}"] = tuple(sorted(map(str, v))) if isinstance(v, list) else v
    return flat


def _shown(value: Any) -> str:
    """A setting as it is written on the command line (epochs=2, lora.layers=null)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    return ",".join(value) if isinstance(value, tuple) else str(value)


RecipeKey = tuple[str, str, tuple | None]  # (model as named, mode, sorted recipe items or None)


def _recipe_names(keys: list[RecipeKey]) -> dict[RecipeKey, str]:
    """Each (model, mode, recipe) named by the settings in which it differs from the other
    recipes of its model and mode, and by its permutations when it trains on reordered options;
    a run without a config is "(settings unknown)"."""
    names = {}
    for key in keys:
        model, mode, items = key
        base = [Path(model).name, mode]
        if items is None:
            names[key] = " ".join(base + ["(settings unknown)"])
            continue
        recipe = {"model": model, **dict(items)}  # org1/x and org2/x are both shown as x, unless told apart
        siblings = [
            {"model": k[0], **dict(k[2])}
            for k in keys
            if k[2] is not None and Path(k[0]).name == base[0] and k[1] == mode
        ]
        differ = sorted({s for r in siblings for s in r if len({repr(x.get(s)) for x in siblings}) > 1})
        if recipe.get("permutations") and "permutations" not in differ:
            differ.append("permutations")
        names[key] = " ".join(base + [f"{s}={_shown(recipe.get(s, '-'))}" for s in differ])
    return names


def _row_folder(out: Path, name: str, key: RecipeKey) -> Path:
    """A pooled row's scorer folder: its name, cut short, and a digest of its recipe, so two
    recipes whose names agree in the first characters never share a folder."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
    return sub_folder(out, "runs", f"{safe_name(name.replace(' ', '-'))[:80]}-{digest}")


def run_rows(run_dirs: list[Path], task: Task, folds: list[str], out: Path) -> list[Row]:
    """Finished `mcqa train` runs. On one protocol each run is a row, read from its own test report;
    on a fold family the runs of one model, mode and training recipe are pooled, one run per fold
    (a row's name shows the settings that tell it from the other rows of its model and mode)."""
    summaries = [_read_run(r, task, folds) for r in run_dirs]
    tested = {r: _tested(task, r, s.protocol) for r, s in zip(run_dirs, summaries)}  # all checked before any is parsed
    if len(folds) == 1:
        return [
            Row(
                row_from_metrics(
                    f"{Path(s.model).name} {s.mode} ({r.name})",
                    "trained",
                    read_json(r / "test" / "metrics.json"),
                    r / "test",
                    _run_extra(s),
                ),
                make_records(task, *tested[r], progress=False),
                validation=_fold_records({s.protocol: _validated(task, r, s.protocol)}),
            )
            for r, s in zip(run_dirs, summaries)
        ]
    recipes = [_recipe(s) for s in summaries]
    keys: list[RecipeKey] = [
        (s.model, s.mode, None if c is None else tuple(sorted(c.items()))) for s, c in zip(summaries, recipes)
    ]
    groups: dict[RecipeKey, dict[str, tuple[Path, RunSummary]]] = {k: {} for k in keys}
    names = _recipe_names(list(groups))
    for r, s, key in zip(run_dirs, summaries, keys):
        by_fold = groups[key]
        if s.protocol in by_fold:
            raise McqaError(
                f"{r}: a second {names[key]} run on fold {s.protocol} (the first is {by_fold[s.protocol][0]}); "
                "pass one run per fold"
            )
        by_fold[s.protocol] = (r, s)
    rows = []
    for key, by_fold in groups.items():
        missing = [p for p in folds if p not in by_fold]
        if missing:
            raise McqaError(
                f"{names[key]}: no run on fold{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                f"train one per fold (mcqa train --protocol {missing[0]} ...) "
                "with the same settings and pass them all to --runs"
            )
        fold_runs = [by_fold[p] for p in folds]
        records = [rec for r, _ in fold_runs for rec in make_records(task, *tested[r], progress=False)]
        per_fold = [_run_extra(s) for _, s in fold_runs]
        run = {"task": task.name, "split": "test", "protocol": ",".join(folds), "runs": [str(r) for r, _ in fold_runs]}
        rows.append(
            pooled_row(
                task,
                f"{names[key]} ({len(folds)} folds)",
                "trained",
                records,
                run,
                _row_folder(out, names[key], key),
                per_fold,
            )
        )
        rows[-1].validation = _fold_records({s.protocol: _validated(task, r, s.protocol) for r, s in fold_runs})
    return rows


def _fold_records(by_fold: dict[str, list[Record] | None]) -> dict[str, list[Record]] | None:
    return None if any(v is None for v in by_fold.values()) else by_fold  # type: ignore[return-value]
