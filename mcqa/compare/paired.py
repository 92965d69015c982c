"""Paired differences between rows scored on the same examples: is one row really better?

A marginal bootstrap interval per row is no test when two rows are scored on the same examples:
their errors are correlated, so intervals that overlap can still hide a clear difference. Here
each example's right/wrong is compared across two rows: the difference in accuracy (per field
and joint) with a paired bootstrap interval (the same resampled examples for both rows) and
McNemar's exact test on the examples only one of the two gets right.

numpy and the standard library only: the exact binomial tail is summed in Python integers, so
neither scipy (seconds to import) nor torch is needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mcqa.errors import McqaError, did_you_mean
from mcqa.eval import metrics as M
from mcqa.eval.records import Record


@dataclass(frozen=True)
class Outcomes:
    """One row's per-example right/wrong, in the order of `ids`: what pairing reads."""

    name: str
    kind: str  # "baseline", "trained", "zero-shot": the default reference is the best baseline
    task: str
    folds: tuple[str, ...]
    ids: tuple[str, ...]
    fields: dict[str, np.ndarray]  # field -> bool per example
    joint: np.ndarray  # every field right

    def aligned(self, ids: Sequence[str]) -> Outcomes:
        """The same outcomes in another order of the same examples (pooled folds and a run's own
        test file need not list them alike)."""
        at = {i: k for k, i in enumerate(self.ids)}
        order = np.array([at[i] for i in ids], dtype=np.int64)
        return Outcomes(
            self.name,
            self.kind,
            self.task,
            self.folds,
            tuple(ids),
            {f: v[order] for f, v in self.fields.items()},
            self.joint[order],
        )


def outcomes(
    name: str, kind: str, task: str, folds: Sequence[str], records: Sequence[Record], fields: Sequence[str]
) -> Outcomes:
    return Outcomes(
        name,
        kind,
        task,
        tuple(folds),
        tuple(r["id"] for r in records),
        {f: np.array([r["correct"][f] for r in records], dtype=bool) for f in fields},
        np.array([r["joint"] for r in records], dtype=bool),
    )


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value. If both rows are equally good, each of the b + c examples
    only one of them gets right is a fair coin flip between them, so min(b, c) is
    Binomial(b + c, 1/2) and p = min(1, 2 * P(X <= min(b, c)))."""
    n, k = b + c, min(b, c)
    term = tail = 1  # C(n, 0); each next term from the last, in exact integers
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def paired_difference(row: np.ndarray, ref: np.ndarray, idx: np.ndarray) -> dict[str, Any]:
    """Accuracy of `row` minus `ref` (booleans per example, same order), its percentile interval
    over the bootstrap index rows `idx` (each resample draws the same examples for both), and
    McNemar on b (only `row` right) and c (only `ref` right)."""
    b, c = int(np.sum(row & ~ref)), int(np.sum(~row & ref))
    diff = row.astype(float) - ref
    return {
        "difference": float(diff.mean()),
        "ci": M.percentile_ci(diff[idx].mean(axis=1)),
        "b": b,
        "c": c,
        "p": mcnemar_exact(b, c),
    }


def check_pairable(row: Outcomes, ref: Outcomes) -> None:
    """Two rows pair only when scored on the same task, folds and examples; else one line naming
    the row and what differs."""
    what = f"cannot pair '{row.name}' with '{ref.name}'"
    if row.task != ref.task:
        raise McqaError(f"{what}: scored on task '{row.task}', not '{ref.task}'; compare rows of one task")
    if row.folds != ref.folds:
        raise McqaError(
            f"{what}: scored on {', '.join(row.folds)}, not {', '.join(ref.folds)}; compare rows of the same folds"
        )
    if sorted(row.ids) != sorted(ref.ids):
        ours, theirs = set(row.ids), set(ref.ids)
        extra, missing = [i for i in row.ids if i not in theirs], [i for i in ref.ids if i not in ours]
        said = [f"{len(missing)} of its examples missing (first: '{missing[0]}')"] if missing else []
        said += [f"{len(extra)} others (first: '{extra[0]}')"] if extra else []
        said = said or ["a repeated example"]  # same sets, other counts
        raise McqaError(
            f"{what}: scored on {len(row.ids)} examples, {' and '.join(said)}; "
            "a paired test needs every row scored on the same test examples"
        )


def check_row_name(name: str, names: Sequence[str], flag: str = "--against") -> None:
    """`flag` (--against, --stack) names exactly one row, as the table shows it."""
    hits = sum(n == name for n in names)
    if hits == 1:
        return
    if hits > 1:
        raise McqaError(f"{flag} '{name}' names {hits} rows; give the rows distinct names (their run folders)")
    raise McqaError(f"{flag}: no row '{name}'{did_you_mean(name, names)} (rows: {', '.join(repr(n) for n in names)})")


def _best(rows: Sequence[Outcomes], among: Sequence[int]) -> int | None:
    """The index of the row with the highest joint accuracy (the first on a tie)."""
    return max(among, key=lambda k: rows[k].joint.mean(), default=None)


def pair(row: Outcomes, ref: Outcomes, idx: np.ndarray) -> dict[str, Any]:
    """`row` minus `ref`, per field and joint, over the bootstrap index rows `idx`."""
    check_pairable(row, ref)
    row = row.aligned(ref.ids)
    return {
        "against": ref.name,
        "n": len(ref.ids),
        "fields": {f: paired_difference(row.fields[f], ref.fields[f], idx) for f in ref.fields},
        "joint": paired_difference(row.joint, ref.joint, idx),
    }


def pair_rows(rows: Sequence[Outcomes], against: str | None, resamples: int, seed: int) -> dict[str, Any]:
    """Every row against the reference (the row named `against`, else the best baseline, else
    none) and the best row against the second best. Returns {"reference": name or None, "rows":
    one pair per row (None for the reference itself), "best_two": pair or None}. Every row is
    checked against the first, so any two of them pair."""
    for row in rows[1:]:
        check_pairable(row, rows[0])
    names = [r.name for r in rows]
    if against is not None:
        check_row_name(against, names)
        ref = names.index(against)
    else:
        ref = _best(rows, [k for k, r in enumerate(rows) if r.kind == "baseline"])
    idx = M.bootstrap_indices(len(rows[0].ids), resamples, seed) if rows else None
    best = _best(rows, range(len(rows)))
    second = _best(rows, [k for k in range(len(rows)) if k != best])
    return {
        "reference": None if ref is None else rows[ref].name,
        "rows": [None if ref is None or k == ref else pair(r, rows[ref], idx) for k, r in enumerate(rows)],
        "best_two": None
        if second is None
        else {"rows": [rows[best].name, rows[second].name], **pair(rows[best], rows[second], idx)},
    }
