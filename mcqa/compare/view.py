"""What a compare shows: compare.md (the table of rows, the paired differences, the stack) and
compare.png (every row with its interval, a star where the paired interval excludes 0), both
made from the result dict that compare.json holds, so a page can be rebuilt from the JSON."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from mcqa.compare.stack import shown_weights
from mcqa.eval.report import figure_png


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _rate(x: float | None) -> str:
    # a constant predictor's rate is timer noise (millions per second); the digits would mislead
    return "-" if x is None else ">100k" if x > 1e5 else f"{x:.1f}"


def _count(n: int | None) -> str:
    """A parameter count: millions for a model, the number itself for a small classifier."""
    return "-" if n is None else f"{n / 1e6:,.1f}M" if n >= 1e5 else f"{n:,.0f}"


def _with_ci(value: float, ci: list[float] | None) -> str:
    return f"{_pct(value)} [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else _pct(value)


def markdown(result: dict[str, Any]) -> str:
    fields = result["fields"]
    head = ["model", "kind"] + [f"{f} acc [95% CI]" for f in fields] + [f"{f} macro-F1 [95% CI]" for f in fields]
    head += ["joint [95% CI]", "parse fail", "ex/s", "train s", "params trained", "params in all"]
    folds = result.get("folds") or [result["protocol"]]
    pooled = (
        (
            f" Cross-validated: test predictions of the {len(folds)} folds ({', '.join(folds)}) are pooled, so each "
            "example is scored once; ex/s, train s and params are means over the folds."
        )
        if len(folds) > 1
        else ""
    )
    lines = [
        f"# {result['task']} / {result['protocol']}: test split, scored by mcqa's scorer",
        "",
        "Accuracy, macro-F1 and joint exact match in %, with 95% bootstrap intervals; parse failures count as wrong."
        + pooled,
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in result["rows"]:
        cells = [r["name"], r["kind"]]
        cells += [_with_ci(r["fields"][f]["accuracy"], r["fields"][f]["accuracy_ci"]) for f in fields]
        cells += [
            _with_ci(r["fields"][f]["macro_f1"], r["fields"][f]["macro_f1_ci"])
            if r["fields"][f]["macro_f1"] is not None
            else "-"
            for f in fields
        ]
        cells += [
            _with_ci(r["joint"], r["joint_ci"]),
            _pct(r["parse_failure_rate"]),
            _rate(r["examples_per_second"]),
            "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}",
            "-" if r["trained_parameters"] is None else f"{r['trained_parameters']:,.0f}",
            _count(r.get("parameters")),
        ]
        lines.append("| " + " | ".join(map(_cell, cells)) + " |")
    return "\n".join(lines + _paired_table(result) + _stack_lines(result)) + "\n"


def _stack_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for r in result["rows"]:
        if r.get("stack"):
            info = r["stack"]
            lines += [
                "",
                "## Stack",
                "",
                f"'{_cell(r['name'])}': {info['pooling']}; weights {_cell(shown_weights(info))}. "
                "Params in all counts every member's parameters at inference and the stack's weights.",
            ]
    return lines


def _pairs(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(what, row name, pair) for each line of the paired table: every row against the
    reference, then the best two rows unless that pair is already a line (one is the reference)."""
    ref, best = result.get("reference"), result.get("best_two")
    out = [("vs reference", r["name"], r["paired"]) for r in result["rows"] if r.get("paired")]
    if best and ref not in best["rows"]:
        out.append(("best two", best["rows"][0], best))
    return out


def _diff(d: dict[str, Any]) -> str:
    """'+4.2 [+1.0, +7.5], p=0.012': points of accuracy, the paired interval, McNemar's p."""
    lo, hi = d["ci"]
    p = "p<0.001" if d["p"] < 0.001 else f"p={d['p']:.3f}"
    return f"{100 * d['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}], {p}"


def _paired_table(result: dict[str, Any]) -> list[str]:
    pairs = _pairs(result)
    if not pairs:
        return []
    fields = result["fields"]
    head = (
        ["pair", "model", "vs"] + [f"{f} diff [95% CI], McNemar p" for f in fields] + ["joint diff [95% CI], McNemar p"]
    )
    n = pairs[0][2]["n"]
    lines = [
        "",
        "## Paired differences",
        "",
        f"Accuracy of each model minus that of its 'vs' row, in points, on the same {n} examples: a paired bootstrap "
        "95% interval (the same resampled examples for both) and McNemar's exact two-sided p-value on the examples "
        "only one of the two gets right. The reference is "
        + (f"'{_cell(result['reference'])}'" if result.get("reference") else "none (no baseline row)")
        + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for what, name, d in pairs:
        cells = [what, name, d["against"]] + [_diff(d["fields"][f]) for f in fields] + [_diff(d["joint"])]
        lines.append("| " + " | ".join(map(_cell, cells)) + " |")
    return lines


def _cell(text: str) -> str:
    """A table cell from a name that may come from a run folder: no '|' or line break that would
    add cells or rows to the table."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", str(text)).replace("|", "\\|")


def bar_chart(result: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, fields = result["rows"], result["fields"]
    metrics = [(f, "accuracy") for f in fields] + ([("joint", "joint")] if len(fields) > 1 else [])
    x = np.arange(len(metrics))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(metrics) + 0.4 * len(rows)) + 3.5, 4.5))
    for i, r in enumerate(rows):
        vals, errs = [], [[], []]
        for f, kind in metrics:
            v, ci = (
                (r["joint"], r["joint_ci"])
                if kind == "joint"
                else (r["fields"][f]["accuracy"], r["fields"][f]["accuracy_ci"])
            )
            vals.append(100 * v)
            errs[0].append(100 * (v - ci[0]))
            errs[1].append(100 * (ci[1] - v))
        at = x + i * width - 0.4 + width / 2
        ax.bar(at, vals, width, yerr=errs, capsize=3, label=r["name"].replace("$", r"\$"))  # a '$' would start mathtext
        for k, (f, kind) in enumerate(metrics):
            if _excludes_zero(r.get("paired"), f, kind):
                ax.text(at[k], vals[k] + errs[1][k] + 1, "*", ha="center", fontsize=9)
    ax.set_xticks(x, [f if k != "joint" else "joint" for f, k in metrics])
    ax.set_ylabel("accuracy on test, % (95% CI)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{result['task']} / {result['protocol']}")
    if result.get("reference"):
        name = result["reference"].replace("$", r"\$")
        ax.set_xlabel(f"*: the paired 95% interval of the difference from {name} excludes 0", fontsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: inside, it hides bars
    return figure_png(fig)


def _excludes_zero(paired: dict[str, Any] | None, field: str, kind: str) -> bool:
    if not paired:
        return False
    lo, hi = (paired["joint"] if kind == "joint" else paired["fields"][field])["ci"]
    return lo > 0 or hi < 0
