"""compare.html: the compare table as one self-contained page, rendered from the dict compare()
writes as compare.json with the same templates and charts as report.html (mcqa.eval.html)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mcqa.eval import charts
from mcqa.eval.html import COMPARE, ENV, REPORT, command_line, excludes_zero
from mcqa.io import atomic_write_text


def write_compare_html(out: Path, result: dict[str, Any]) -> Path:
    """compare.html beside compare.md, from the dict compare() writes as compare.json: the table
    (each row linked to its own report.html when it has one), every row with its interval, and
    the paired differences, those whose interval excludes 0 marked."""
    out = Path(out)
    page = ENV.get_template("compare.html.j2").render(**compare_context(out, result))
    atomic_write_text(out / COMPARE, page)
    return out / COMPARE


def report_link(out: Path, folder: str | None) -> str | None:
    """A relative link from the compare folder to a row's report.html, when that file exists."""
    if not folder or not (Path(folder) / REPORT).is_file():
        return None
    rel = os.path.relpath(Path(folder).resolve() / REPORT, out.resolve())
    return quote(Path(rel).as_posix())


def compare_context(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    fields, rows = result["fields"], result["rows"]
    metrics = [(f, f"{f} accuracy") for f in fields] + ([("joint", "joint")] if len(fields) > 1 else [])
    names = [r["name"] for r in rows]

    def value(r: dict[str, Any], key: str) -> tuple[float, list[float] | None]:
        return (
            (r["joint"], r["joint_ci"])
            if key == "joint"
            else (r["fields"][key]["accuracy"], r["fields"][key]["accuracy_ci"])
        )

    def pair(r: dict[str, Any], key: str) -> dict[str, Any] | None:
        d = r.get("paired")
        return None if not d else d["joint"] if key == "joint" else d["fields"][key]

    shown = [
        {
            **r,
            "link": report_link(out, r.get("folder")),
            "marked": any(excludes_zero(pair(r, k)) for k, _ in metrics + [("joint", "joint")]),
        }
        for r in rows
    ]
    reference = result.get("reference")
    has_pairs = any(r.get("paired") for r in rows)
    best = result.get("best_two")
    return {
        "result": result,
        "fields": fields,
        "rows": shown,
        "reference": reference,
        "command": command_line(),
        "folds": result.get("folds") or [result["protocol"]],
        "n": rows[0]["n"] if rows else 0,
        "rows_chart": charts.compare_rows(names, [(title, [value(r, k) for r in rows]) for k, title in metrics])
        if rows
        else None,
        "paired_chart": charts.paired(names, reference, [(title, [pair(r, k) for r in rows]) for k, title in metrics])
        if has_pairs and reference
        else None,
        "best_two": best if best and reference not in best["rows"] else None,
    }
