"""Is the LLM worth it? Baselines and trained runs in one table, on the same split and scored by
the same scorer: per-field accuracy and macro-F1 with bootstrap intervals, joint match, parse
failures, speed, training time and parameters trained. Every number in the table is read from
a scorer run folder (metrics.json) written here or by `mcqa train`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mcqa.baselines import BASELINES, BaselineNotApplicable, run_baseline
from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.examples import load_split, resolve_protocol
from mcqa.io import atomic_write_bytes, atomic_write_text, write_json
from mcqa.report import figure_png, write_run
from mcqa.scoring import compute_metrics, make_records
from mcqa.task import Task


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _with_ci(value: float, ci: list[float] | None) -> str:
    return f"{_pct(value)} [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else _pct(value)


def row_from_metrics(name: str, kind: str, metrics: dict[str, Any], folder: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """One table row, every score taken from a scorer's metrics.json."""
    fields = {}
    for f, fm in metrics["fields"].items():
        fields[f] = {"accuracy": fm["accuracy"], "accuracy_ci": fm["ci"]["accuracy"],
                     "macro_f1": fm.get("macro_f1"), "macro_f1_ci": fm["ci"].get("macro_f1")}
    return {"name": name, "kind": kind, "folder": str(folder), "n": metrics["n"], "fields": fields,
            "joint": metrics["joint"]["accuracy"], "joint_ci": metrics["joint"]["ci"],
            "parse_failure_rate": metrics["parse"]["failure_rate"], **extra}


def baseline_rows(task: Task, protocol: str, names: list[str], out: Path) -> list[dict[str, Any]]:
    test = load_split(task, "test", protocol)
    rows = []
    for name in names:
        try:
            result = run_baseline(name, task, protocol, examples=test)
        except BaselineNotApplicable as e:
            console.print(f"[dim]skipped {name}: {e}[/]")
            continue
        records = make_records(task, test, result["predictions"])
        metrics = compute_metrics(task, records)
        metrics["run"] = {"task": task.name, "split": "test", "protocol": protocol, "baseline": name}
        folder = write_run(out / "baselines" / name, records, metrics)
        rows.append(row_from_metrics(name, "baseline", metrics, folder, {
            "examples_per_second": result["examples_per_second"], "train_seconds": result["fit_seconds"],
            "trained_parameters": result["n_params"]}))
    return rows


def zero_shot_rows(task: Task, protocol: str, model: str, readouts: list[str], out: Path) -> list[dict[str, Any]]:
    """The base LLM with no adapter, read out through the scorer like everything else."""
    from mcqa.predicting import load_predictor, predict

    loaded = load_predictor(task, model, None)
    test = load_split(task, "test", protocol)
    rows = []
    for readout in readouts:
        outputs, info = predict(task, loaded, test, readout, protocol)
        records = make_records(task, test, {o["id"]: o for o in outputs})
        metrics = compute_metrics(task, records)
        metrics["run"] = {"task": task.name, "split": "test", "protocol": protocol, "model": model, "readout": readout}
        folder = write_run(out / "zero_shot" / f"{Path(model).name}-{readout}", records, metrics)
        rows.append(row_from_metrics(f"{Path(model).name} zero-shot {readout}", "zero-shot", metrics, folder, {
            "examples_per_second": info["examples_per_second"], "train_seconds": 0.0, "trained_parameters": 0}))
    return rows


def run_row(run_dir: Path, task: Task, protocol: str) -> dict[str, Any]:
    """A finished `mcqa train` run: its test report must be on this task and protocol."""
    summary_file, metrics_file = run_dir / "run.json", run_dir / "test" / "metrics.json"
    if not summary_file.is_file() or not metrics_file.is_file():
        raise McqaError(f"{run_dir}: not a finished training run (no run.json or test/metrics.json)")
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    if summary["task"] != task.name or summary["protocol"] != protocol:
        raise McqaError(f"{run_dir}: trained on {summary['task']}/{summary['protocol']}, not {task.name}/{protocol}; "
                        "compare runs on the same task and split protocol")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    name = f"{Path(str(summary['model'])).name} {summary['mode']} ({run_dir.name})"
    return row_from_metrics(name, "trained", metrics, run_dir / "test", {
        "examples_per_second": summary.get("test_examples_per_second"), "train_seconds": summary.get("train_seconds"),
        "trained_parameters": summary.get("trainable_parameters")})


def compare(task: Task, protocol: str | None, runs: list[Path], baselines: list[str] | None, out: Path,
            zero_shot: str | None = None, zero_shot_readouts: tuple[str, ...] = ("constrained", "rank")) -> dict[str, Any]:
    protocol = resolve_protocol(task, protocol)
    names = list(BASELINES) if baselines is None else baselines
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise McqaError(f"unknown baseline '{unknown[0]}'; choose from: {', '.join(BASELINES)}")
    rows = [run_row(Path(r), task, protocol) for r in runs]  # check runs first: fail before slow work
    rows = baseline_rows(task, protocol, names, out) + rows
    if zero_shot:
        rows += zero_shot_rows(task, protocol, zero_shot, list(zero_shot_readouts), out)
    result = {"task": task.name, "protocol": protocol, "split": "test", "fields": task.fields, "rows": rows,
              "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", markdown(result))
    atomic_write_bytes(out / "compare.png", bar_chart(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    fields = result["fields"]
    head = ["model", "kind"] + [f"{f} acc [95% CI]" for f in fields] + [f"{f} macro-F1 [95% CI]" for f in fields]
    head += ["joint [95% CI]", "parse fail", "ex/s", "train s", "params trained"]
    lines = [f"# {result['task']} / {result['protocol']}: test split, scored by mcqa's scorer", "",
             "Accuracy, macro-F1 and joint exact match in %, with 95% bootstrap intervals; parse failures count as wrong.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["name"], r["kind"]]
        cells += [_with_ci(r["fields"][f]["accuracy"], r["fields"][f]["accuracy_ci"]) for f in fields]
        cells += [_with_ci(r["fields"][f]["macro_f1"], r["fields"][f]["macro_f1_ci"]) if r["fields"][f]["macro_f1"] is not None else "-" for f in fields]
        cells += [_with_ci(r["joint"], r["joint_ci"]), _pct(r["parse_failure_rate"]),
                  "-" if r["examples_per_second"] is None else f"{r['examples_per_second']:.1f}",
                  "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}",
                  "-" if r["trained_parameters"] is None else f"{r['trained_parameters']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(result: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, fields = result["rows"], result["fields"]
    metrics = [(f, "accuracy") for f in fields] + ([("joint", "joint")] if len(fields) > 1 else [])
    x = np.arange(len(metrics))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(metrics) + 0.4 * len(rows)), 4.5))
    for i, r in enumerate(rows):
        vals, errs = [], [[], []]
        for f, kind in metrics:
            v, ci = (r["joint"], r["joint_ci"]) if kind == "joint" else (r["fields"][f]["accuracy"], r["fields"][f]["accuracy_ci"])
            vals.append(100 * v)
            errs[0].append(100 * (v - ci[0]))
            errs[1].append(100 * (ci[1] - v))
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, yerr=errs, capsize=3, label=r["name"])
    ax.set_xticks(x, [f if k != "joint" else "joint" for f, k in metrics])
    ax.set_ylabel("accuracy on test, % (95% CI)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{result['task']} / {result['protocol']}")
    ax.legend(fontsize=7, loc="lower right")
    return figure_png(fig)
