"""The run folder a scoring writes (predictions.jsonl, metrics.json, report.md, report.html,
one confusion-matrix PNG per field) and the rich tables shown in the terminal. Every file is
written atomically, metrics.json last, so a folder with metrics.json is complete."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from mcqa.eval.html import write_report_html
from mcqa.eval.parsing import STATUSES
from mcqa.io import atomic_write_bytes, atomic_write_text, write_json, write_jsonl


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(ci: list[float]) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def write_run(folder: str | Path, records: list[dict], metrics: dict[str, Any]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "predictions.jsonl", records)
    for field, fm in metrics["fields"].items():
        if "confusion" in fm:
            atomic_write_bytes(folder / f"confusion_{field}.png", confusion_png(field, fm["confusion"]))
    atomic_write_text(folder / "report.md", markdown(metrics))
    write_report_html(folder, records, metrics)
    write_json(folder / "metrics.json", metrics)
    return folder


def confusion_png(field: str, cm: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gold, pred, matrix = cm["gold"], cm["pred"], cm["matrix"]
    size = max(4.0, 0.45 * len(pred) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    # Coloured by each gold row's share: with many classes of unequal support, raw counts make
    # the big classes the only visible ones; the numbers printed stay counts.
    shares = row_normalised(matrix)
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(pred)), pred, rotation=60, ha="right")
    ax.set_yticks(range(len(gold)), gold)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"confusion: {field}")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v:
                ax.text(
                    j, i, str(v), ha="center", va="center", fontsize=8, color="white" if shares[i][j] > 0.5 else "black"
                )
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the gold row")
    return figure_png(fig)


def row_normalised(matrix: list[list[int]]) -> list[list[float]]:
    """Each row divided by its sum (a row with no examples stays 0)."""
    return [[v / sum(row) if sum(row) else 0.0 for v in row] for row in matrix]


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (then closed), for atomic writing."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def markdown(m: dict[str, Any]) -> str:
    run = m.get("run", {})
    lines = [f"# mcqa report: {m['task']}", ""]
    for k, v in run.items():
        lines.append(f"- {k}: `{v}`")
    lines += ["", f"{m['n']} examples. Parse failures count as wrong in every metric below.", ""]
    lines += ["## Headline (95% bootstrap intervals)", "", "| metric | value | 95% CI |", "|---|---|---|"]
    for f, fm in m["fields"].items():
        lines.append(f"| {f} accuracy | {_pct(fm['accuracy'])} | {_ci(fm['ci']['accuracy'])} |")
        if "macro_f1" in fm:
            lines.append(f"| {f} macro-F1 | {_pct(fm['macro_f1'])} | {_ci(fm['ci']['macro_f1'])} |")
    lines.append(f"| joint exact match | {_pct(m['joint']['accuracy'])} | {_ci(m['joint']['ci'])} |")
    p = m["parse"]
    lines += ["", "## Parse status", "", "| status | count |", "|---|---|"]
    lines += [f"| {s} | {p['counts'][s]} |" for s in STATUSES]
    lines.append(f"\nParse failure rate: {_pct(p['failure_rate'])}.")
    if p["notes"]:
        lines.append("Tolerated: " + ", ".join(f"{k} {v}" for k, v in p["notes"].items()) + ".")
    for f, fm in m["fields"].items():
        lines += ["", f"## Field `{f}`", ""]
        summary = [f"accuracy {_pct(fm['accuracy'])}"]
        for k in ("macro_f1", "micro_f1", "weighted_f1"):
            if k in fm:
                summary.append(f"{k.replace('_', '-')} {_pct(fm[k])}")
        if "mae" in fm:
            summary += [f"MAE {fm['mae']:.3f}", f"within-1 {_pct(fm['within1'])}", f"QWK {fm['qwk']:.3f}"]
            summary.append("(a parse failure counts as the label farthest from the gold)")
        if "calibration" in fm:
            c = fm["calibration"]
            summary.append(f"ECE {c['ece']:.3f}, Brier {c['brier']:.3f} over {c['n']} examples with probabilities")
        lines.append(", ".join(summary) + ".")
        if "per_class" in fm:
            lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            for c, s in fm["per_class"].items():
                lines.append(f"| {c} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |")
            cm = fm["confusion"]
            lines += ["", f"Confusion matrix (rows gold, columns predicted; `confusion_{f}.png`):", ""]
            lines.append("| gold \\ pred | " + " | ".join(cm["pred"]) + " |")
            lines.append("|---" * (len(cm["pred"]) + 1) + "|")
            lines += [f"| {g} | " + " | ".join(map(str, row)) + " |" for g, row in zip(cm["gold"], cm["matrix"])]
    if m.get("groups"):
        fields = list(m["fields"])
        lines += [
            "",
            "## By group (accuracy, 95% CI)",
            "",
            "| group | n | joint | 95% CI | " + " | ".join(fields) + " | parse failures |",
        ]
        lines.append("|---" * (len(fields) + 5) + "|")
        for g, s in m["groups"].items():
            accs = " | ".join(_group_acc(s, f) for f in fields)
            lines.append(
                f"| {g} | {s['n']} | {_pct(s['joint_accuracy'])} | "
                f"{_ci(s['joint_ci'])} | {accs} | {s['parse_failures']} |"
            )
    if "positions" in m:
        pos = m["positions"]
        lines += [
            "",
            "## Option positions",
            "",
            "| position | predicted | gold | accuracy when gold is here |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {x} | {p_} | {g} | {'-' if a is None else _pct(a)} |"
            for x, p_, g, a in zip(pos["positions"], pos["predicted"], pos["gold"], pos["accuracy_by_gold"])
        ]
        if "consistency" in m:
            c = m["consistency"]
            lines += [
                "",
                f"Consistency over option orders: the same option chosen in every order for {_pct(c['rate'])} "
                f"of {c['n']} examples ({c['orders']} orders each).",
            ]
        lines.append(f"| (failed) | {pos['failed']} | |")
    b = m["bootstrap"]
    lines += ["", f"Intervals: {b['interval']} bootstrap, {b['resamples']} resamples, seed {b['seed']}.", ""]
    return "\n".join(lines)


def _group_acc(s: dict, f: str) -> str:
    ci = s.get("accuracy_ci", {}).get(f)  # metrics.json from before per-field intervals has none
    return f"{_pct(s['accuracy'][f])} {_ci(ci)}" if ci else _pct(s["accuracy"][f])


# Rows of a per-class or group table shown in the terminal; report.md and metrics.json keep all.
TERMINAL_ROWS = 20


def _capped(rows: list, what: str) -> tuple[list, str | None]:
    """The first TERMINAL_ROWS rows, and a caption saying what was left out and where it is."""
    if len(rows) <= TERMINAL_ROWS:
        return rows, None
    return rows[:TERMINAL_ROWS], (
        f"{len(rows) - TERMINAL_ROWS} more {what} not shown (of {len(rows)}); "
        "report.md and metrics.json in the run folder have them all"
    )


def tables(m: dict[str, Any]) -> list[Table | Text]:
    """The terminal view: headline numbers, parse status, per-field class scores (the largest
    classes first, at most TERMINAL_ROWS) and the groups, each field with its interval."""
    head = Table(title=f"{m['task']}: {m['n']} examples (parse failures count as wrong)")
    for col in ("metric", "value", "95% CI"):
        head.add_column(col, justify="right" if col != "metric" else "left")
    for f, fm in m["fields"].items():
        head.add_row(f"{f} accuracy", _pct(fm["accuracy"]), _ci(fm["ci"]["accuracy"]))
        if "macro_f1" in fm:
            head.add_row(f"{f} macro-F1", _pct(fm["macro_f1"]), _ci(fm["ci"]["macro_f1"]))
        if "mae" in fm:
            head.add_row(f"{f} MAE / within-1 / QWK", f"{fm['mae']:.3f} / {_pct(fm['within1'])} / {fm['qwk']:.3f}", "")
        if "calibration" in fm:
            head.add_row(f"{f} ECE / Brier", f"{fm['calibration']['ece']:.3f} / {fm['calibration']['brier']:.3f}", "")
    head.add_row("joint exact match", _pct(m["joint"]["accuracy"]), _ci(m["joint"]["ci"]))
    head.add_row("parse failure rate", _pct(m["parse"]["failure_rate"]), "")
    status = Table(title="parse status")
    status.add_column("status")
    status.add_column("count", justify="right")
    for s in STATUSES:
        if m["parse"]["counts"][s]:
            status.add_row(s, str(m["parse"]["counts"][s]))
    out = [head, status]
    for f, fm in m["fields"].items():
        if "per_class" not in fm:
            continue
        classes = list(fm["per_class"].items())
        if len(classes) > TERMINAL_ROWS:  # too many to show: the largest classes first
            classes.sort(key=lambda kv: -kv[1]["support"])
        shown, caption = _capped(classes, "classes")
        t = Table(title=f"{f}: per class" + (" (largest first)" if caption else ""))
        for col in ("class", "precision", "recall", "F1", "support"):
            t.add_column(col, justify="left" if col == "class" else "right")
        for c, s in shown:
            t.add_row(c, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"]))
        out += [t, Text(f"{f}: {caption}")] if caption else [t]
    if m.get("groups"):
        shown, caption = _capped(list(m["groups"].items()), "groups")
        t = Table(title="by group: accuracy [95% CI]")
        for col in ("group", "n", "joint", *m["fields"], "parse failures"):
            t.add_column(col, justify="left" if col == "group" else "right")
        for g, s in shown:
            t.add_row(
                g,
                str(s["n"]),
                f"{_pct(s['joint_accuracy'])} {_ci(s['joint_ci'])}",
                *(_group_acc(s, f) for f in m["fields"]),
                str(s["parse_failures"]),
            )
        out += [t, Text(f"groups: {caption}")] if caption else [t]
    return out
