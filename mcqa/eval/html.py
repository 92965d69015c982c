"""report.html: a scored run or a training run as one self-contained page (inline CSS, charts as
base64 PNG, no script and no external URL, so it opens from a file with the network off);
compare.html is mcqa.compare.page, on the same templates and helpers. jinja2 renders the package's templates/ with
autoescaping on: a run folder's names and a model's raw outputs are text, never markup.

Every number on a page comes from the same dicts as report.md and compare.md (metrics.json,
compare.json), the per-example records, and for a training run its own logs (train_log.jsonl,
val_metrics.jsonl and run.json in the run folder, beside test/)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from mcqa.errors import McqaError
from mcqa.eval import charts
from mcqa.eval.metrics import ECE_BINS, FAILURE
from mcqa.eval.parsing import FAILURES
from mcqa.examples import load_file, load_split
from mcqa.io import atomic_write_text, read_json, read_jsonl
from mcqa.registry import get_task

REPORT, COMPARE = "report.html", "compare.html"
MAX_CLASSES = 40  # per-class and confusion rows on the page; the rest are summed into "other"
MISTAKES = 12  # most confident mistakes shown
FAILURE_EXAMPLES = 3  # examples shown per parse-failure kind
EXCERPT = 280  # characters of an input or a raw output shown in a table


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _diff(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    lo, hi = d["ci"]
    return f"{100 * d['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _p(d: dict[str, Any] | None) -> str:
    return "" if not d else "p<0.001" if d["p"] < 0.001 else f"p={d['p']:.3f}"


def excludes_zero(d: dict[str, Any] | None) -> bool:
    return bool(d) and (d["ci"][0] > 0 or d["ci"][1] < 0)


def _excerpt(text: Any, n: int = EXCERPT) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


ENV = Environment(
    loader=PackageLoader("mcqa.eval", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(pct=_pct, ci=_ci, diff=_diff, p=_p, excerpt=_excerpt)
ENV.tests["excluding_zero"] = excludes_zero


def command_line() -> str | None:
    """The mcqa command this process runs, when it is one (a library call from a script or a
    test has none to show)."""
    if Path(sys.argv[0]).name not in ("mcqa", "cli.py"):
        return None
    return shlex.join(["mcqa", *sys.argv[1:]])


# ---------------------------------------------------------------- report.html


def write_report_html(
    folder: str | Path,
    records: list[dict],
    metrics: dict[str, Any],
    training: dict[str, Any] | None = None,
    inputs: dict[str, str] | None = None,
) -> Path:
    """report.html in a scored run folder. `training`: a training run's history (training_history);
    `inputs`: each example's input text by id (default: read from the task's split or data file
    that metrics["run"] names, when it can be found)."""
    folder = Path(folder)
    if inputs is None:
        inputs = input_texts(metrics, {r["id"] for r in records if not r["joint"]})
    page = ENV.get_template("report.html.j2").render(**report_context(folder, records, metrics, training, inputs))
    atomic_write_text(folder / REPORT, page)
    return folder / REPORT


def write_training_report(run_dir: str | Path) -> Path:
    """A finished training run's test report again, now with its loss curve and validation per
    epoch (the kept epoch is known once run.json is written)."""
    run_dir = Path(run_dir)
    test = run_dir / "test"
    records = [rec for _, rec in read_jsonl(test / "predictions.jsonl")]
    return write_report_html(test, records, read_json(test / "metrics.json"), training=training_history(run_dir))


def input_texts(metrics: dict[str, Any], ids: set[str]) -> dict[str, str]:
    """The input of each example in `ids`, as one line of text, from what metrics["run"] says
    was scored (a split and its protocols, or a data file); none when that cannot be found (a
    task not installed here, a moved file): the page then shows outputs without inputs."""
    if not ids:
        return {}
    run = metrics.get("run") or {}
    try:
        task = get_task(metrics["task"])
        if run.get("data"):
            examples = load_file(task, run["data"])
        else:
            protocols = str(run.get("protocol") or task.default_protocol).split(",")
            examples = [e for p in protocols for e in load_split(task, run.get("split") or "test", p)]
    except (McqaError, OSError, KeyError):
        return {}
    return {e.id: _input_line(e.input) for e in examples if e.id in ids}


def _input_line(value: Any) -> str:
    if isinstance(value, dict):
        return " · ".join(f"{k}: {_input_line(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " | ".join(f"{chr(65 + i)}) {_input_line(v)}" if i < 26 else _input_line(v) for i, v in enumerate(value))
    return " ".join(str(value).split())


def report_context(
    folder: Path, records: list[dict], m: dict[str, Any], training: dict[str, Any] | None, inputs: dict[str, str]
) -> dict[str, Any]:
    run = dict(m.get("run") or {})
    command = command_line()
    intervals = []  # drawn by the template in CSS: crisp, and no figure to render per run
    for f, fm in m["fields"].items():
        intervals.append({"label": f"{f} accuracy", "value": fm["accuracy"], "ci": fm["ci"]["accuracy"]})
        if "macro_f1" in fm:
            intervals.append({"label": f"{f} macro-F1", "value": fm["macro_f1"], "ci": fm["ci"].get("macro_f1")})
    if len(m["fields"]) > 1:  # with one field, joint match is its accuracy
        intervals.append({"label": "joint exact match", "value": m["joint"]["accuracy"], "ci": m["joint"]["ci"]})
    return {
        "task": m["task"],
        "n": m["n"],
        "run": run,
        "command": command,
        "title": f"{m['task']} · {run.get('split') or run.get('data') or 'scored'}"
        + (f" · {run['model']}" if run.get("model") else ""),
        "joint": m["joint"],
        "parse_failure_rate": m["parse"]["failure_rate"],
        "cards": [{"name": f, "accuracy": fm["accuracy"], "ci": fm["ci"]["accuracy"]} for f, fm in m["fields"].items()],
        "intervals": intervals,
        "training": training_context(training) if training else None,
        "fields": [field_context(f, fm, records) for f, fm in m["fields"].items()],
        "positions": positions_context(m),
        # metrics.json from before per-field group intervals has no accuracy_ci
        "groups": [{"name": g, "accuracy_ci": {}, **s} for g, s in (m.get("groups") or {}).items()],
        "field_names": list(m["fields"]),
        "parse": parse_context(m, records),
        "mistakes": mistakes(records, m, inputs),
        "bootstrap": m.get("bootstrap"),
        "files": [name for name in ("report.md", "metrics.json", "predictions.jsonl") if (folder / name).is_file()],
    }


def field_context(f: str, fm: dict[str, Any], records: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f,
        "accuracy": fm["accuracy"],
        "ci": fm["ci"],
        "summary": [],
        "per_class": None,
        "confusion": None,
        "hidden_classes": 0,
        "reliability": None,
        "calibration": fm.get("calibration"),
    }
    for k, label in (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"), ("weighted_f1", "weighted-F1")):
        if k in fm:
            out["summary"].append((label, _pct(fm[k])))
    if "mae" in fm:
        out["summary"] += [("MAE", f"{fm['mae']:.3f}"), ("within-1", _pct(fm["within1"])), ("QWK", f"{fm['qwk']:.3f}")]
    if "calibration" in fm:
        c = fm["calibration"]
        out["summary"] += [("ECE", f"{c['ece']:.3f}"), ("Brier", f"{c['brier']:.3f}")]
        bins = reliability_bins(records, f, fm["confusion"]["gold"])
        if bins:
            out["reliability"] = charts.reliability(bins, c["ece"], f)
    if "per_class" in fm:
        classes = list(fm["per_class"].items())
        shown = (
            classes if len(classes) <= MAX_CLASSES else sorted(classes, key=lambda kv: -kv[1]["support"])[:MAX_CLASSES]
        )
        out["per_class"] = [{"name": c, **s} for c, s in shown]
        out["hidden_classes"] = len(classes) - len(shown)
        out["confusion"] = confusion_context(fm["confusion"], [c for c, _ in shown])
    return out


def confusion_context(cm: dict[str, Any], keep: list[str]) -> dict[str, Any]:
    """The confusion matrix as rows of (count, share of the gold row), the parse-failure column
    last; classes left out of `keep` are summed into an "other" column and dropped as rows."""
    gold, pred, matrix = cm["gold"], cm["pred"], cm["matrix"]
    kept = [j for j, p in enumerate(pred) if p in keep]
    other = [j for j, p in enumerate(pred) if p not in keep and p != FAILURE]
    failed = [j for j, p in enumerate(pred) if p == FAILURE]
    columns = [pred[j] for j in kept] + (["other"] if other else []) + ["parse failure"]
    rows = []
    for g, row in zip(gold, matrix):
        if g not in keep:
            continue
        counts = (
            [row[j] for j in kept] + ([sum(row[j] for j in other)] if other else []) + [sum(row[j] for j in failed)]
        )
        total = sum(counts)
        rows.append(
            {
                "gold": g,
                "total": total,
                "cells": [
                    {
                        "count": c,
                        "share": c / total if total else 0.0,
                        "diagonal": columns[k] == g,
                        "failure": k == len(counts) - 1,
                    }
                    for k, c in enumerate(counts)
                ],
            }
        )
    return {"columns": columns, "rows": rows}


def reliability_bins(records: list[dict], f: str, labels: list[str]) -> list[dict[str, float]]:
    """Equal-width bins of the top probability (as metrics.calibration bins them for ECE): each
    bin's mean confidence, accuracy and size."""
    bins: dict[int, list[tuple[float, bool]]] = {}
    for r in records:
        dist = (r.get("probs") or {}).get(f)
        if not isinstance(dist, dict):
            continue
        probs = [float(dist.get(lab, 0.0)) for lab in labels]
        top = max(probs)
        right = labels[probs.index(top)] == str(r["gold"][f])
        bins.setdefault(min(int(top * ECE_BINS), ECE_BINS - 1), []).append((top, right))
    return [
        {"confidence": sum(c for c, _ in b) / len(b), "accuracy": sum(ok for _, ok in b) / len(b), "count": len(b)}
        for _, b in sorted(bins.items())
    ]


def positions_context(m: dict[str, Any]) -> dict[str, Any] | None:
    pos = m.get("positions")
    if not pos:
        return None
    rows = [
        {"position": x, "predicted": p, "gold": g, "accuracy": a}
        for x, p, g, a in zip(pos["positions"], pos["predicted"], pos["gold"], pos["accuracy_by_gold"])
    ]
    return {
        "rows": rows,
        "failed": pos["failed"],
        "consistency": m.get("consistency"),
        "chart": charts.positions(pos["positions"], pos["gold"], pos["predicted"], pos["failed"]),
    }


def parse_context(m: dict[str, Any], records: list[dict]) -> dict[str, Any]:
    p = m["parse"]
    kinds = []
    for s in FAILURES:
        if p["counts"].get(s):
            examples = [r for r in records if r["status"] == s][:FAILURE_EXAMPLES]
            kinds.append({"status": s, "count": p["counts"][s], "examples": examples})
    return {
        "counts": p["counts"],
        "failed": sum(p["counts"].get(s, 0) for s in FAILURES),
        "failure_rate": p["failure_rate"],
        "notes": p.get("notes") or {},
        "kinds": kinds,
    }


def mistakes(records: list[dict], m: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    """Parsed answers that are wrong, the most confident first: an answer's confidence is the
    probability it gave the value it answered in its wrong fields (the highest of them)."""
    wrong = []
    for r in records:
        if r["status"] != "ok" or r["joint"]:
            continue
        fields = [f for f in m["fields"] if not r["correct"].get(f)]
        probs = [(r.get("probs") or {}).get(f, {}).get(str((r["parsed"] or {}).get(f))) for f in fields]
        known = [p for p in probs if isinstance(p, (int, float))]
        wrong.append(
            {
                "id": r["id"],
                "input": inputs.get(r["id"]),
                "raw": r["raw"],
                "parsed": r["parsed"],
                "gold": r["gold"],
                "fields": fields,
                "probability": max(known) if known else None,
            }
        )
    with_probs = any(w["probability"] is not None for w in wrong)
    wrong.sort(key=lambda w: -w["probability"] if w["probability"] is not None else 1.0)
    return {
        "rows": wrong[:MISTAKES],
        "total": len(wrong),
        "with_probs": with_probs,
        "fields": list(m["fields"]),
        "inputs": bool(inputs),
    }


# ---------------------------------------------------------------- training history


def training_history(run_dir: Path) -> dict[str, Any] | None:
    """A training run's loss at each logging step, its validation scores per epoch and which
    epoch was kept, from the files training writes beside test/; None when it has none."""
    log, val = run_dir / "train_log.jsonl", run_dir / "val_metrics.jsonl"
    if not log.is_file() and not val.is_file():
        return None
    losses = (
        [
            (rec["epoch"], rec["loss"])
            for _, rec in read_jsonl(log)
            if isinstance(rec.get("loss"), (int, float)) and isinstance(rec.get("epoch"), (int, float))
        ]
        if log.is_file()
        else []
    )
    epochs = [rec for _, rec in read_jsonl(val)] if val.is_file() else []
    summary = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    best = summary.get("best_metric") or "joint"
    kept = None
    step = re.search(r"checkpoint-(\d+)$", str(summary.get("best_checkpoint") or ""))
    if step:
        kept = next((e.get("epoch") for e in epochs if e.get("step") == int(step.group(1))), None)
    return {"losses": losses, "epochs": epochs, "best_metric": best, "kept_epoch": kept, "summary": summary}


def training_context(t: dict[str, Any]) -> dict[str, Any]:
    epochs = t["epochs"]
    names = [k for k in (epochs[-1] if epochs else {}) if k.startswith("eval_")]
    series = {k[len("eval_") :]: [e.get(k) for e in epochs] for k in names}
    s = t["summary"]
    facts = [
        (label, value)
        for label, value in (
            ("train examples", s.get("train_examples")),
            ("epochs run", s.get("epochs_run")),
            ("train seconds", s.get("train_seconds")),
            ("trainable parameters", f"{s['trainable_parameters']:,}" if s.get("trainable_parameters") else None),
            (
                "kept by",
                f"validation {t['best_metric']}"
                + (f" = {s['best_value']:.3f}" if isinstance(s.get("best_value"), (int, float)) else ""),
            ),
        )
        if value is not None
    ]
    return {
        "loss_chart": charts.loss_curve(t["losses"], t["kept_epoch"]) if t["losses"] else None,
        "validation_chart": charts.validation_curve(
            [e.get("epoch") for e in epochs], series, t["best_metric"], t["kept_epoch"]
        )
        if epochs
        else None,
        "columns": list(series),
        "rows": [
            {
                "epoch": e.get("epoch"),
                "step": e.get("step"),
                "kept": e.get("epoch") == t["kept_epoch"],
                "values": [e.get(f"eval_{c}") for c in series],
            }
            for e in epochs
        ],
        "kept_epoch": t["kept_epoch"],
        "best_metric": t["best_metric"],
        "facts": facts,
    }
