"""mcqa.eval.metrics against scikit-learn and hand computation, on random labels with parse
failures (None) mixed in; calibration, bootstrap intervals and the position histogram."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, precision_recall_fscore_support

from mcqa.eval import metrics as M
from mcqa.eval.scoring import compute_metrics, make_records
from mcqa.registry import get_task
from mcqa.task import Example, LabelSpace

SEEDS = [0, 1, 2, 3, 4, 5]
FAIL = "<fail>"  # what sklearn sees for a parse failure: a label outside the space


def random_case(seed: int, ordinal: bool, fail_rate: float = 0.15):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    n = int(rng.integers(30, 300))
    values = tuple(range(1, k + 1)) if ordinal else tuple(f"class{i}" for i in range(k))
    space = LabelSpace("f", values, ordinal)
    gold = [values[i] for i in rng.integers(0, k, n)]
    # Predictions: right about half the time, else random; some parse failures.
    pred = [g if rng.random() < 0.5 else values[rng.integers(0, k)] for g in gold]
    pred = [None if rng.random() < fail_rate else p for p in pred]
    return space, gold, pred


def for_sklearn(pred):
    return [FAIL if p is None else p for p in pred]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ordinal", [False, True])
def test_field_metrics_match_sklearn(seed, ordinal):
    space, gold, pred = random_case(seed, ordinal)
    labels = list(space.values)
    sk_pred = for_sklearn(pred)
    if ordinal:  # sklearn wants one type of label: map failures to an int outside the space
        sk_pred = [0 if p == FAIL else p for p in sk_pred]
    m = M.field_metrics(gold, pred, space)

    assert m["accuracy"] == pytest.approx(accuracy_score(gold, sk_pred))
    assert m["accuracy"] == pytest.approx(np.mean([g == p for g, p in zip(gold, pred)]))
    present = [v for v in labels if v in gold or v in pred]  # macro-F1 skips classes absent from both
    for avg in ("macro", "micro", "weighted"):
        expected = f1_score(gold, sk_pred, labels=present if avg == "macro" else labels, average=avg, zero_division=0)
        assert m[f"{avg}_f1"] == pytest.approx(expected), avg
    prec, rec, f1, support = precision_recall_fscore_support(gold, sk_pred, labels=labels, zero_division=0)
    for i, v in enumerate(labels):
        pc = m["per_class"][str(v)]
        assert pc["precision"] == pytest.approx(prec[i])
        assert pc["recall"] == pytest.approx(rec[i])
        assert pc["f1"] == pytest.approx(f1[i])
        assert pc["support"] == support[i] == gold.count(v)


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_has_a_failure_column(seed):
    space, gold, pred = random_case(seed, ordinal=False, fail_rate=0.3)
    cm = M.field_metrics(gold, pred, space)["confusion"]
    k = len(space.values)
    assert cm["gold"] == list(space.values)
    assert cm["pred"] == list(space.values) + [M.FAILURE]
    expected = [[0] * (k + 1) for _ in range(k)]
    for g, p in zip(gold, pred):
        expected[space.values.index(g)][k if p is None else space.values.index(p)] += 1
    assert cm["matrix"] == expected
    assert [sum(row) for row in cm["matrix"]] == [gold.count(v) for v in space.values]
    assert sum(row[k] for row in cm["matrix"]) == pred.count(None) > 0


def test_unknown_value_is_encoded_as_a_failure():
    space = LabelSpace("f", ("a", "b"))
    assert M.encode(["a", "b", None, "zzz"], space).tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_macro_f1_batch_matches_sklearn_row_by_row(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    # Short rows, so that some classes are missing from some rows (the zero_division path).
    g = rng.integers(0, k, size=(60, int(rng.integers(3, 40))))
    p = rng.integers(0, k + 1, size=g.shape)  # k = parse failure
    got = M.macro_f1_batch(g, p, k)
    expected = [
        f1_score(gi, pi, labels=sorted(set(gi) | set(pi) - {k}), average="macro", zero_division=0)
        for gi, pi in zip(g, p)
    ]
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_qwk_matches_sklearn_without_failures(seed):
    space, gold, pred = random_case(seed, ordinal=True, fail_rate=0.0)
    m = M.field_metrics(gold, pred, space)
    expected = cohen_kappa_score(gold, pred, labels=list(space.values), weights="quadratic")
    assert m["qwk"] == pytest.approx(expected)


def _farthest(g, values):
    i = values.index(g)
    return values[0] if i >= len(values) - 1 - i else values[-1]


@pytest.mark.parametrize("seed", SEEDS)
def test_ordinal_metrics_count_a_failure_as_the_farthest_label(seed):
    space, gold, pred = random_case(seed, ordinal=True, fail_rate=0.25)
    values = list(space.values)
    filled = [_farthest(g, values) if p is None else p for g, p in zip(gold, pred)]
    err = [abs(values.index(g) - values.index(p)) for g, p in zip(gold, filled)]
    m = M.field_metrics(gold, pred, space)
    assert m["mae"] == pytest.approx(sum(err) / len(err))
    assert m["within1"] == pytest.approx(sum(e <= 1 for e in err) / len(err))
    assert m["qwk"] == pytest.approx(cohen_kappa_score(gold, filled, labels=values, weights="quadratic"))


def test_ordinal_failure_by_hand():
    space = LabelSpace("p", (1, 2, 3, 4, 5), ordinal=True)
    # gold 1 fails -> counted as 5 (error 4); gold 5 -> 1 (4); gold 3 -> error 2 either way.
    m = M.field_metrics([1, 5, 3, 2], [None, None, None, 2], space)
    assert m["mae"] == pytest.approx((4 + 4 + 2 + 0) / 4)
    assert m["within1"] == pytest.approx(1 / 4)
    assert m["accuracy"] == pytest.approx(1 / 4)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_perfect_predictions_of_a_single_class_are_not_chance_level():
    space = LabelSpace("p", (1, 2, 3), ordinal=True)
    assert M.field_metrics([2, 2, 2, 2], [2, 2, 2, 2], space)["qwk"] == pytest.approx(1.0)


def test_perfect_predictions_get_macro_f1_one_when_a_class_is_absent():
    space = LabelSpace("folder", ("Work", "Personal", "Promotions", "Alerts"))
    gold = ["Work", "Personal", "Work", "Personal"]
    assert M.field_metrics(gold, gold, space)["macro_f1"] == pytest.approx(1.0)


# --- calibration ----------------------------------------------------------------------------

AB = LabelSpace("f", ("a", "b"))


def test_ece_is_zero_when_perfectly_calibrated():
    # 10 at confidence 0.8 (8 right), 4 at 0.5 (argmax "a", 2 right), 5 at 1.0 (all right).
    probs = [{"a": 0.8, "b": 0.2}] * 10 + [{"a": 0.5, "b": 0.5}] * 4 + [{"a": 0.0, "b": 1.0}] * 5
    gold = ["a"] * 8 + ["b"] * 2 + ["a", "a", "b", "b"] + ["b"] * 5
    assert M.calibration(probs, gold, AB)["ece"] == pytest.approx(0.0, abs=1e-12)


def test_ece_and_brier_by_hand():
    # Bin [0.6, 0.667): confidences 0.61 (right) and 0.65 (wrong) -> |0.5 - 0.63| = 0.13, weight 2/6.
    # Bin [0.933, 1]: four at 0.95, three right -> |0.75 - 0.95| = 0.2, weight 4/6.
    probs = [{"a": 0.61, "b": 0.39}, {"a": 0.35, "b": 0.65}] + [{"a": 0.95, "b": 0.05}] * 4
    gold = ["a", "a", "a", "a", "a", "b"]
    c = M.calibration(probs, gold, AB)
    assert c["ece"] == pytest.approx(2 / 6 * 0.13 + 4 / 6 * 0.2)
    brier = [0.39**2 * 2, 0.65**2 * 2] + [0.05**2 * 2] * 3 + [0.95**2 * 2]
    assert c["brier"] == pytest.approx(sum(brier) / 6)
    assert c["n"] == 6


def test_brier_treats_a_missing_label_as_probability_zero():
    space = LabelSpace("f", ("a", "b", "c"))
    c = M.calibration([{"a": 0.6, "b": 0.4}, {"c": 1.0}], ["b", "c"], space)
    assert c["brier"] == pytest.approx(((0.6**2 + 0.6**2 + 0) + 0) / 2)


# --- bootstrap, histogram, and the whole compute_metrics path ---------------------------------


def _notification_run(n: int, seed: int, resamples: int = 200):
    """n synthetic notification examples; predictions right ~70% of the time, ~10% unparseable."""
    task = get_task("notification")
    rng = np.random.default_rng(seed)
    folders = ["Work", "Personal", "Promotions", "Alerts"]
    examples, preds = [], {}
    for i in range(n):
        gold = {"folder": folders[rng.integers(4)], "priority": int(rng.integers(1, 4))}
        e = Example(id=f"x{i}", input={"app": "a", "title": "t", "body": f"b{i}"}, target=gold, groups=(f"g{i % 2}",))
        roll = rng.random()
        if roll < 0.1:
            out = "no idea"
        elif roll < 0.3:
            out = json.dumps({"folder": folders[(folders.index(gold["folder"]) + 1) % 4], "priority": gold["priority"]})
        else:
            out = json.dumps(gold)
        examples.append(e)
        preds[e.id] = {"id": e.id, "output": out}
    records = make_records(task, examples, preds)
    return preds, examples, compute_metrics(task, records, resamples=resamples)


def test_compute_metrics_counts_failures_as_wrong():
    preds, examples, m = _notification_run(300, seed=7)
    failed = sum(p["output"] == "no idea" for p in preds.values())
    right = sum(json.loads(preds[e.id]["output"]) == e.target for e in examples if preds[e.id]["output"] != "no idea")
    assert m["parse"]["counts"]["no_json"] == failed
    assert m["parse"]["failure_rate"] == pytest.approx(failed / 300)
    assert m["joint"]["accuracy"] == pytest.approx(right / 300)
    assert sum(row[-1] for row in m["fields"]["folder"]["confusion"]["matrix"]) == failed
    assert sum(g["n"] for g in m["groups"].values()) == 300


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_ci_contains_the_estimate_and_narrows_with_n(seed):
    widths = []
    for n in (60, 1500):
        _, _, m = _notification_run(n, seed)
        for f in ("folder", "priority"):
            fm = m["fields"][f]
            lo, hi = fm["ci"]["accuracy"]
            assert lo <= fm["accuracy"] <= hi
            lo, hi = fm["ci"]["macro_f1"]
            assert lo <= fm["macro_f1"] <= hi
        lo, hi = m["joint"]["ci"]
        assert lo < m["joint"]["accuracy"] < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~sqrt(25) = 5 times narrower in theory


def test_bootstrap_intervals_are_95_percent_for_the_headline_and_each_group():
    """On a large sample an accuracy is a Bernoulli mean: its 95% interval is about
    p +- 1.96 sqrt(p(1-p)/n). A 50% interval would be a third as wide, a 99.9% one 1.7 times."""
    _, _, m = _notification_run(2000, seed=11, resamples=1000)

    def check(p: float, n: int, ci: list[float], what: str) -> None:
        half = 1.96 * np.sqrt(p * (1 - p) / n)
        assert ci[1] - ci[0] == pytest.approx(2 * half, rel=0.12), what
        assert (ci[0] + ci[1]) / 2 == pytest.approx(p, abs=half / 4), what

    check(m["joint"]["accuracy"], m["n"], m["joint"]["ci"], "joint")
    for f in ("folder", "priority"):
        check(m["fields"][f]["accuracy"], m["n"], m["fields"][f]["ci"]["accuracy"], f)
    assert set(m["groups"]) == {"g0", "g1"}
    for g, s in m["groups"].items():
        check(s["joint_accuracy"], s["n"], s["joint_ci"], g)


def test_bootstrap_is_seeded():
    a = M.bootstrap_indices(50, 20, seed=3)
    assert a.shape == (20, 50) and a.min() >= 0 and a.max() < 50
    assert (a == M.bootstrap_indices(50, 20, seed=3)).all()
    assert not (a == M.bootstrap_indices(50, 20, seed=4)).all()


def test_position_histogram_counts():
    h = M.position_histogram(["A", "A", "B", None, "C", "A"], ["A", "B", "B", "C", "E", "A"], "ABCDE")
    assert h == {
        "positions": ["A", "B", "C", "D", "E"],
        "predicted": [3, 1, 1, 0, 0],
        "gold": [2, 2, 1, 0, 1],
        "failed": 1,
        "accuracy_by_gold": [1.0, 0.5, 0.0, None, 0.0],  # a failed parse is wrong; no gold at D
    }


def test_free_field_is_exact_match_and_failure_is_wrong():
    assert M.field_metrics(["x", "y", "z"], ["x", None, "q"], None) == {"accuracy": pytest.approx(1 / 3)}
