"""Scoring: examples + Predictions -> per-example Records -> metrics -> a run folder
(mcqa.records has the types). Records come first and carry everything (raw text, status,
parsed value, gold, correctness, groups, probabilities); every metric is computed from them.
`score` is the one path from predictions to a scored run, used by the CLI, training, compare
and the benches alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcqa import metrics as M
from mcqa.console import track
from mcqa.errors import DataError, McqaError
from mcqa.io import read_jsonl
from mcqa.parsing import FAILURES, STATUSES, OutputParser
from mcqa.prompting import LETTERS
from mcqa.records import Prediction, Record
from mcqa.report import write_run
from mcqa.schema import task_schema
from mcqa.task import Example, Task

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def parser_for(task: Task) -> OutputParser:
    return OutputParser(task.output, task_schema(task))


def read_predictions(path: str | Path) -> dict[str, Prediction]:
    """Predictions JSONL: {"id", "output"} per line, optionally "truncated" (or "finish_reason":
    "length") and "probs" ({field: {label: p}})."""
    preds: dict[str, dict] = {}
    lines: dict[str, int] = {}
    for lineno, rec in read_jsonl(path):
        pid = rec.get("id")
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = str(pid)
        if not isinstance(pid, str):
            raise DataError(f"{path}:{lineno}: missing string field 'id'")
        if "output" not in rec:
            raise DataError(f"{path}:{lineno}: missing field 'output' (the model's raw text)")
        if pid in lines:
            raise DataError(f"{path}:{lineno}: duplicated id '{pid}' (first on line {lines[pid]})")
        lines[pid] = lineno
        preds[pid] = rec
    return preds


def match_ids(examples: list[Example], preds: dict[str, Prediction], where: str, subset: bool = False) -> list[Example]:
    """Check the predictions cover the examples: unknown ids are an error, and so are missing
    ones unless `subset` (then only the predicted examples are scored, and the report says so)."""
    known = {e.id for e in examples}
    unknown = [i for i in preds if i not in known]
    if unknown:
        raise DataError(f"{where}: {len(unknown)} ids are not in the examples being scored (first: '{unknown[0]}'); check --split/--protocol or --data")
    missing = [e.id for e in examples if e.id not in preds]
    if missing and not subset:
        raise DataError(
            f"{where}: no prediction for {len(missing)} of {len(examples)} examples (first: '{missing[0]}'); "
            "pass --subset to score only the predicted ones"
        )
    return [e for e in examples if e.id in preds]


@dataclass
class Scored:
    records: list[Record]
    metrics: dict[str, Any]
    folder: Path | None  # the run folder written, if one was asked for


def score(task: Task, examples: list[Example], predictions: dict[str, Prediction] | list[Prediction], run: dict[str, Any],
          folder: str | Path | None = None, resamples: int = BOOTSTRAP_RESAMPLES, extra: dict[str, Any] | None = None) -> Scored:
    """Predictions (by id, or a list) of these examples -> records -> metrics, with `run` (what
    was scored: task, split, model, ...) and `extra` sections added to the metrics; written as a
    run folder (mcqa.report.write_run) when `folder` is given."""
    preds = predictions if isinstance(predictions, dict) else {p["id"]: p for p in predictions}
    return score_records(task, make_records(task, examples, preds), run, folder, resamples, extra)


def score_records(task: Task, records: list[Record], run: dict[str, Any], folder: str | Path | None = None,
                  resamples: int = BOOTSTRAP_RESAMPLES, extra: dict[str, Any] | None = None) -> Scored:
    """Records already made (say, pooled from the test folds of several runs) -> metrics -> folder."""
    metrics = compute_metrics(task, records, resamples=resamples)
    metrics["run"] = run
    metrics.update(extra or {})
    return Scored(records, metrics, write_run(folder, records, metrics) if folder is not None else None)


def make_records(task: Task, examples: list[Example], preds: dict[str, Prediction]) -> list[Record]:
    unlabeled = [e.id for e in examples if e.target is None]
    if unlabeled:
        raise DataError(f"{len(unlabeled)} examples have no gold label (first: '{unlabeled[0]}'); scoring needs labeled examples")
    parser = parser_for(task)
    fields = task.fields
    records = []
    for e in track(examples, "parsing outputs", total=len(examples)):
        p = preds[e.id]
        truncated = bool(p.get("truncated")) or p.get("finish_reason") == "length"
        parsed = parser.parse(p["output"], truncated=truncated)
        gold = parser.model.model_validate(e.target).model_dump(mode="json")
        value = parsed.value or {}
        correct = {f: parsed.ok and value.get(f) == gold[f] for f in fields}
        rec = {
            "id": e.id, "raw": p["output"], "status": parsed.status, "notes": list(parsed.notes),
            "error": parsed.error, "parsed": parsed.value, "gold": gold, "correct": correct,
            "joint": all(correct.values()), "groups": list(e.groups),
        }
        if isinstance(p.get("probs"), dict):
            rec["probs"] = p["probs"]
        if isinstance(p.get("order_choices"), list):
            rec["order_choices"] = p["order_choices"]
        records.append(rec)
    return records


def compute_metrics(task: Task, records: list[Record], resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """Every number of the report, from the records alone."""
    n = len(records)
    if n == 0:
        raise McqaError("nothing to score: no examples")
    spaces = task.label_spaces
    status_counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    notes = sorted({x for r in records for x in r["notes"]})
    out: dict[str, Any] = {
        "task": task.name,
        "n": n,
        "parse": {
            "counts": status_counts,
            "failure_rate": sum(status_counts[s] for s in FAILURES) / n,
            "notes": {x: sum(x in r["notes"] for r in records) for x in notes},
        },
        "fields": {},
    }
    idx = bootstrap_indices_for(n, resamples)
    for f in task.fields:
        gold = [r["gold"][f] for r in records]
        pred = [(r["parsed"] or {}).get(f) if r["status"] == "ok" else None for r in records]
        fm = M.field_metrics(gold, pred, spaces[f])
        correct = np.array([r["correct"][f] for r in records], dtype=float)
        fm["ci"] = {"accuracy": M.percentile_ci(correct[idx].mean(axis=1))}
        if spaces[f] is not None:
            g, p = M.encode(gold, spaces[f]), M.encode(pred, spaces[f])
            fm["ci"]["macro_f1"] = M.percentile_ci(M.macro_f1_batch(g[idx], p[idx], len(spaces[f].values)))
            with_probs = [r for r in records if isinstance((r.get("probs") or {}).get(f), dict)]
            if with_probs:
                fm["calibration"] = M.calibration([r["probs"][f] for r in with_probs], [r["gold"][f] for r in with_probs], spaces[f])
        out["fields"][f] = fm
    joint = np.array([r["joint"] for r in records], dtype=float)
    out["joint"] = {"accuracy": float(joint.mean()), "ci": M.percentile_ci(joint[idx].mean(axis=1))}
    out["groups"] = group_breakdown(task, records, resamples)
    if task.choice_field:
        f = task.choice_field
        letters = [str(v) for v in spaces[f].values] if spaces[f] else list(LETTERS)
        out["positions"] = M.position_histogram(
            [(r["parsed"] or {}).get(f) if r["status"] == "ok" else None for r in records], [r["gold"][f] for r in records], letters
        )
        orders = [r["order_choices"] for r in records if r.get("order_choices")]
        if orders:  # read out over several option orders: is the chosen option's text the same in all?
            out["consistency"] = {"rate": float(np.mean([len(set(c)) == 1 for c in orders])), "n": len(orders),
                                  "orders": max(len(c) for c in orders)}
    out["bootstrap"] = {"resamples": resamples, "seed": BOOTSTRAP_SEED, "interval": "percentile 95%"}
    return out


def bootstrap_indices_for(n: int, resamples: int) -> np.ndarray:
    return M.bootstrap_indices(n, resamples, BOOTSTRAP_SEED)


def group_breakdown(task: Task, records: list[Record], resamples: int) -> dict[str, Any]:
    groups = sorted({g for r in records for g in r["groups"]})
    out = {}
    for g in groups:
        members = [r for r in records if g in r["groups"]]
        joint = np.array([r["joint"] for r in members], dtype=float)
        idx = bootstrap_indices_for(len(members), resamples)
        out[g] = {
            "n": len(members),
            "joint_accuracy": float(joint.mean()),
            "joint_ci": M.percentile_ci(joint[idx].mean(axis=1)),
            "accuracy": {f: float(np.mean([r["correct"][f] for r in members])) for f in task.fields},
            "parse_failures": sum(r["status"] != "ok" for r in members),
        }
    return out
