"""Paired differences (mcqa.compare.paired), torch-free: hand-worked cases, a difference that marginal
intervals miss and a paired interval finds, seeded bootstraps, McNemar against scipy, and rows
that cannot be paired or a reference name that is not a row."""

from __future__ import annotations

import numpy as np
import pytest

from mcqa.compare.paired import Outcomes, check_pairable, mcnemar_exact, pair_rows, paired_difference
from mcqa.errors import McqaError
from mcqa.eval import metrics as M

RESAMPLES, SEED = 1000, 0


def row(
    name: str,
    right: list[int],
    kind: str = "baseline",
    ids: list[str] | None = None,
    task: str = "t",
    folds: tuple[str, ...] = ("seed",),
) -> Outcomes:
    """A one-field row whose example k is right when right[k] (the joint is the field)."""
    v = np.array(right, dtype=bool)
    return Outcomes(name, kind, task, folds, tuple(ids or [f"e{k}" for k in range(len(right))]), {"label": v}, v)


def test_ten_examples_worked_by_hand():
    # Both right on 0-2; only the reference right on 3-4 (c = 2); only the row right on 5-9 (b = 5).
    ref = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    new = [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]
    d = paired_difference(np.array(new, bool), np.array(ref, bool), M.bootstrap_indices(10, RESAMPLES, SEED))
    assert (d["b"], d["c"]) == (5, 2)
    assert d["difference"] == pytest.approx(0.8 - 0.5)
    # min(b, c) = 2 of 7 fair coin flips: P(X <= 2) = (1 + 7 + 21) / 2**7, doubled.
    assert d["p"] == pytest.approx(58 / 128)
    assert d["ci"][0] <= 0.3 <= d["ci"][1]


def test_mcnemar_by_hand():
    assert mcnemar_exact(0, 0) == 1.0  # no disagreement: no evidence either way
    assert mcnemar_exact(6, 0) == mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(4, 4) == 1.0  # 2 * P(X <= 4) exceeds 1 for 8 flips
    assert mcnemar_exact(1, 0) == 1.0


def test_a_difference_the_marginal_intervals_miss_and_the_paired_one_finds():
    """Two rows right on the same 100 of 200 examples, the new one also on 12 more: each row's
    own interval overlaps the other's, but every disagreement favours the new row."""
    n = 200
    ref = np.zeros(n, bool)
    ref[:100] = True
    new = ref.copy()
    new[100:112] = True
    idx = M.bootstrap_indices(n, RESAMPLES, SEED)
    ref_ci, new_ci = M.percentile_ci(ref[idx].mean(axis=1)), M.percentile_ci(new[idx].mean(axis=1))
    assert new_ci[0] < ref_ci[1]  # the marginal intervals overlap
    d = paired_difference(new, ref, idx)
    assert d["difference"] == pytest.approx(0.06) and (d["b"], d["c"]) == (12, 0)
    assert d["ci"][0] > 0  # the paired one excludes 0
    assert d["p"] == pytest.approx(2 / 2**12)


def test_the_paired_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    rows = [row("majority", rng.integers(0, 2, 50).tolist()), row("tfidf", rng.integers(0, 2, 50).tolist())]
    first, again = pair_rows(rows, None, RESAMPLES, SEED), pair_rows(rows, None, RESAMPLES, SEED)
    assert first == again
    other = pair_rows(rows, None, RESAMPLES, SEED + 1)
    assert other["best_two"]["joint"]["ci"] != first["best_two"]["joint"]["ci"]  # the seed is what fixes it


@pytest.mark.parametrize("b, c", [(0, 0), (1, 0), (3, 7), (10, 10), (11, 10), (25, 40), (0, 30), (150, 180)])
def test_mcnemar_agrees_with_scipy(b, c):
    stats = pytest.importorskip("scipy.stats", reason="scipy is not installed")
    want = 1.0 if b + c == 0 else stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(want, rel=1e-9)


def test_every_row_pairs_with_the_best_baseline_and_the_best_two_with_each_other():
    ref = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    rows = [
        row("majority", [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        row("tfidf", ref),
        row("run", [1, 1, 1, 0, 0, 1, 1, 1, 1, 1], kind="trained"),
        # the same outcomes listed in another order: pairing goes by id, not by position
        row("zero-shot", list(reversed(ref)), kind="zero-shot", ids=[f"e{k}" for k in reversed(range(10))]),
    ]
    got = pair_rows(rows, None, RESAMPLES, SEED)
    assert got["reference"] == "tfidf"
    assert got["rows"][1] is None
    assert got["rows"][0]["fields"]["label"]["difference"] == pytest.approx(-0.4)
    run = got["rows"][2]
    assert run["against"] == "tfidf" and (run["joint"]["b"], run["joint"]["c"]) == (5, 2)
    assert run["joint"]["p"] == pytest.approx(58 / 128)
    assert (got["rows"][3]["joint"]["b"], got["rows"][3]["joint"]["c"]) == (0, 0)
    assert got["best_two"]["rows"] == ["run", "tfidf"] and got["best_two"]["joint"]["difference"] == pytest.approx(0.3)

    named = pair_rows(rows, "majority", RESAMPLES, SEED)
    assert named["reference"] == "majority" and named["rows"][0] is None
    assert named["rows"][2]["joint"]["difference"] == pytest.approx(0.7)
    assert pair_rows(rows[2:], None, RESAMPLES, SEED)["reference"] is None  # no baseline row, no --against


def test_an_unknown_against_name_is_one_line_listing_the_rows():
    rows = [row("majority", [1, 0]), row("tfidf", [1, 1])]
    with pytest.raises(McqaError) as e:
        pair_rows(rows, "tfdf", RESAMPLES, SEED)
    assert str(e.value) == "--against: no row 'tfdf'; did you mean 'tfidf'? (rows: 'majority', 'tfidf')"


@pytest.mark.parametrize(
    "other, said",
    [
        (
            row("run", [1, 1, 0], ids=["e0", "e1", "x9"]),
            (
                "cannot pair 'run' with 'tfidf': scored on 3 examples, "
                "1 of its examples missing (first: 'e2') and 1 others (first: 'x9')"
            ),
        ),
        (row("run", [1, 1]), "scored on 2 examples, 1 of its examples missing (first: 'e2')"),
        (row("run", [1, 1, 0], folds=("cv5-0",)), "scored on cv5-0, not seed"),
        (row("run", [1, 1, 0], task="other"), "scored on task 'other', not 't'"),
    ],
)
def test_rows_that_cannot_be_paired_are_refused_naming_the_row_and_what_differs(other, said):
    ref = row("tfidf", [1, 0, 1])
    with pytest.raises(McqaError, match="^cannot pair 'run' with 'tfidf'") as e:
        pair_rows([ref, other], None, RESAMPLES, SEED)
    assert said in str(e.value) and "\n" not in str(e.value)
    check_pairable(ref, row("tfidf", [0, 0, 0]))  # the same examples pair, whatever the outcomes
