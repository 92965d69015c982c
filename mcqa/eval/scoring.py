"""Scoring: examples + Predictions -> per-example Records -> metrics -> a run folder
(mcqa.eval.records has the types). Records come first and carry everything (raw text, status,
parsed value, gold, correctness, groups, probabilities); every metric is computed from them.
`score` is the one path from predictions to a scored run, used by the CLI, training, compare
and the benches alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcqa.console import track
from mcqa.errors import DataError, McqaError
from mcqa.eval import metrics as M
from mcqa.eval.parsing import FAILURES, STATUSES, OutputParser
from mcqa.eval.records import Prediction, Record
from mcqa.eval.report import write_run
from mcqa.io import is_number, read_jsonl
from mcqa.prompting import LETTERS
from mcqa.schema import task_schema
from mcqa.task import Example, Task

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
PROB_TOLERANCE = 0.01  # a distribution summing within this of 1 is renormalised; further off is refused


def parser_for(task: Task) -> OutputParser:
    return OutputParser(task.output, task_schema(task))


def read_predictions(path: str | Path, task: Task | None = None) -> dict[str, Prediction]:
    """Predictions JSONL: {"id", "output"} per line, optionally "truncated" (or "finish_reason":
    "length") and "probs" ({field: {label: p}}), each checked here, where the file enters:
    the output is text, truncated a boolean, probs a distribution over the task's labels."""
    preds: dict[str, dict] = {}
    lines: dict[str, int] = {}
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        pid = rec.get("id")
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = str(pid)
        if not isinstance(pid, str):
            raise DataError(f"{where}: missing string field 'id'")
        if "output" not in rec:
            raise DataError(f"{where}: missing field 'output' (the model's raw text)")
        if pid in lines:
            raise DataError(f"{where}: duplicated id '{pid}' (first on line {lines[pid]})")
        preds[pid] = check_prediction(rec, where, task)
        lines[pid] = lineno
    if not preds:
        raise DataError(f'{path}: no predictions; expected one JSON object per line ({{"id": ..., "output": ...}})')
    return preds


def check_prediction(rec: dict, where: str, task: Task | None = None) -> dict:
    """One prediction record, validated; probabilities come back renormalised."""
    output = rec.get("output")
    if output is not None and not isinstance(output, str):
        raise DataError(
            f"{where}: 'output' must be the model's raw text (a string), got {type(output).__name__}; "
            "serialize a JSON answer to a string"
        )
    if rec.get("truncated") is not None and not isinstance(rec["truncated"], bool):
        raise DataError(f"{where}: 'truncated' must be true or false, got {rec['truncated']!r}")
    if rec.get("finish_reason") is not None and not isinstance(rec["finish_reason"], str):
        raise DataError(
            f'{where}: \'finish_reason\' must be a string such as "stop" or "length", got {rec["finish_reason"]!r}'
        )
    if rec.get("probs") is not None:
        rec = {**rec, "probs": check_probs(rec["probs"], where, task)}
    return rec


def check_probs(probs: Any, where: str, task: Task | None) -> dict[str, dict[str, float]]:
    """{field: {label: p}}: known fields and labels, finite non-negative numbers summing to 1."""
    if not isinstance(probs, dict):
        raise DataError(f"{where}: 'probs' must map each field to {{label: probability}}, got {type(probs).__name__}")
    spaces = task.label_spaces if task is not None else None
    out = {}
    for field, dist in probs.items():
        if spaces is not None and spaces.get(field) is None:
            known = [f for f, sp in spaces.items() if sp is not None]
            raise DataError(
                f"{where}: probs for '{field}', which is not a labelled "
                f"field of '{task.name}' (its fields: {', '.join(known)})"
            )
        if not isinstance(dist, dict):
            raise DataError(
                f"{where}: probs['{field}'] must map each label to a probability, got {type(dist).__name__}"
            )
        labels = [str(v) for v in spaces[field].values] if spaces is not None else None
        for label, p in dist.items():
            if labels is not None and label not in labels:
                raise DataError(f"{where}: probs['{field}'] has label '{label}', not one of {', '.join(labels)}")
            if not is_number(p) or p < 0:
                raise DataError(f"{where}: probs['{field}']['{label}'] must be a finite number >= 0, got {p!r}")
        total = sum(dist.values())
        if abs(total - 1) > PROB_TOLERANCE:
            raise DataError(
                f"{where}: probs['{field}'] sums to {total:g}, not 1 (tolerance {PROB_TOLERANCE}); "
                "give probabilities, not scores or logits"
            )
        out[field] = {label: p / total for label, p in dist.items()}
    return out


def match_ids(examples: list[Example], preds: dict[str, Prediction], where: str, subset: bool = False) -> list[Example]:
    """Check the predictions cover the examples: unknown ids are an error, and so are missing
    ones unless `subset` (then only the predicted examples are scored, and the report says so)."""
    known = {e.id for e in examples}
    unknown = [i for i in preds if i not in known]
    if unknown:
        raise DataError(
            f"{where}: {len(unknown)} ids are not in the examples being scored (first: "
            f"'{unknown[0]}'); check --split/--protocol or --data"
        )
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


def score(
    task: Task,
    examples: list[Example],
    predictions: dict[str, Prediction] | list[Prediction],
    run: dict[str, Any],
    folder: str | Path | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    extra: dict[str, Any] | None = None,
) -> Scored:
    """Predictions (by id, or a list) of these examples -> records -> metrics, with `run` (what
    was scored: task, split, model, ...) and `extra` sections added to the metrics; written as a
    run folder (mcqa.eval.report.write_run) when `folder` is given."""
    preds = predictions if isinstance(predictions, dict) else {p["id"]: p for p in predictions}
    return score_records(task, make_records(task, examples, preds), run, folder, resamples, extra)


def score_records(
    task: Task,
    records: list[Record],
    run: dict[str, Any],
    folder: str | Path | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    extra: dict[str, Any] | None = None,
) -> Scored:
    """Records already made (say, pooled from the test folds of several runs) -> metrics -> folder."""
    metrics = compute_metrics(task, records, resamples=resamples)
    metrics["run"] = run
    metrics.update(extra or {})
    return Scored(records, metrics, write_run(folder, records, metrics) if folder is not None else None)


def make_records(
    task: Task, examples: list[Example], preds: dict[str, Prediction], progress: bool = True
) -> list[Record]:
    unlabeled = [e.id for e in examples if e.target is None]
    if unlabeled:
        raise DataError(
            f"{len(unlabeled)} examples have no gold label (first: '{unlabeled[0]}'); scoring needs labeled examples"
        )
    parser = parser_for(task)
    fields = task.fields
    records = []
    for e in track(examples, "parsing outputs", total=len(examples)) if progress else examples:
        p = preds[e.id]
        truncated = p.get("truncated") is True or p.get("finish_reason") == "length"
        parsed = parser.parse(p["output"], truncated=truncated)
        gold = parser.model.model_validate(e.target).model_dump(mode="json")
        value = parsed.value or {}
        correct = {f: parsed.ok and value.get(f) == gold[f] for f in fields}
        rec = {
            "id": e.id,
            "raw": p["output"],
            "status": parsed.status,
            "notes": list(parsed.notes),
            "error": parsed.error,
            "parsed": parsed.value,
            "gold": gold,
            "correct": correct,
            "joint": all(correct.values()),
            "groups": list(e.groups),
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
                fm["calibration"] = M.calibration(
                    [r["probs"][f] for r in with_probs], [r["gold"][f] for r in with_probs], spaces[f]
                )
        out["fields"][f] = fm
    joint = np.array([r["joint"] for r in records], dtype=float)
    out["joint"] = {"accuracy": float(joint.mean()), "ci": M.percentile_ci(joint[idx].mean(axis=1))}
    out["groups"] = group_breakdown(task, records, resamples)
    if task.choice_field:
        f = task.choice_field
        letters = [str(v) for v in spaces[f].values] if spaces[f] else list(LETTERS)
        out["positions"] = M.position_histogram(
            [(r["parsed"] or {}).get(f) if r["status"] == "ok" else None for r in records],
            [r["gold"][f] for r in records],
            letters,
        )
        orders = [r["order_choices"] for r in records if r.get("order_choices")]
        if orders:  # read out over several option orders: is the chosen option's text the same in all?
            out["consistency"] = {
                "rate": float(np.mean([len(set(c)) == 1 for c in orders])),
                "n": len(orders),
                "orders": max(len(c) for c in orders),
            }
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
        correct = {f: np.array([r["correct"][f] for r in members], dtype=float) for f in task.fields}
        out[g] = {
            "n": len(members),
            "joint_accuracy": float(joint.mean()),
            "joint_ci": M.percentile_ci(joint[idx].mean(axis=1)),
            "accuracy": {f: float(c.mean()) for f, c in correct.items()},
            "accuracy_ci": {f: M.percentile_ci(c[idx].mean(axis=1)) for f, c in correct.items()},
            "parse_failures": sum(r["status"] != "ok" for r in members),
        }
    return out
