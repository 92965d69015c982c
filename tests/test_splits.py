"""The splitters a task author uses (mcqa.splits): refusals are one McqaError saying what to
change, never a scikit-learn traceback; carve_validation keeps an official test split."""

from __future__ import annotations

from collections import Counter

import pytest

from mcqa.errors import McqaError
from mcqa.splits import carve_validation, three_way

IDS = [f"x{i:03d}" for i in range(200)]
STRATA = ["a" if i % 4 else "b" for i in range(200)]  # 150 a, 50 b


@pytest.mark.parametrize(
    ("fractions", "fragments"),
    [
        ((0.8, 0.2, 0.0), ["test fraction is 0", "carve_validation"]),
        ((1.0, 0.0, 0.0), ["test fraction is 0"]),
        ((0.9, 0.0, 0.1), ["validation fraction must be between 0 and 1"]),
        ((0.5, 0.2, 0.2), ["add up to 0.9, not 1"]),
        ((-0.2, 0.6, 0.6), ["train fraction"]),
    ],
)
def test_three_way_refuses_bad_fractions_in_one_clear_error(fractions, fragments):
    with pytest.raises(McqaError) as e:
        three_way(IDS, fractions, 0)
    for f in fragments:
        assert f in str(e.value)
    assert "\n" not in str(e.value)


def test_a_stratum_too_small_to_split_says_what_to_change():
    strata = ["only-one" if i == 0 else "many" for i in range(200)]
    with pytest.raises(McqaError) as e:
        three_way(IDS, (0.6, 0.2, 0.2), 0, strata)
    assert "test split of 200 examples" in str(e.value) and "strata=None" in str(e.value)


def test_carve_validation_keeps_the_official_test_split_and_stratifies_validation():
    train, test = IDS[:160], IDS[160:]
    parts = carve_validation(train, test, 0.25, seed=3, strata=STRATA[:160])
    assert parts["test"] == sorted(test)
    assert sorted(parts["train"] + parts["validation"]) == sorted(train)
    assert not set(parts["train"]) & set(parts["validation"])
    assert len(parts["validation"]) == 40
    by_id = dict(zip(train, STRATA[:160]))
    assert Counter(by_id[i] for i in parts["validation"]) == {"a": 30, "b": 10}  # stratified: the train ratio
    assert carve_validation(train, test, 0.25, seed=3, strata=STRATA[:160]) == parts  # seeded
    assert carve_validation(train, test, 0.25, seed=4, strata=STRATA[:160])["validation"] != parts["validation"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((IDS[:160], IDS[150:], 0.2, 0), "10 ids are in both the train and the test split"),
        ((IDS[:160], IDS[160:], 0.0, 0), "validation fraction must be between 0 and 1"),
        ((IDS[:160], IDS[160:], 0.2, 0, STRATA[:10]), "10 strata for 160 train ids"),
    ],
)
def test_carve_validation_refusals(args, fragment):
    with pytest.raises(McqaError) as e:
        carve_validation(*args)
    assert fragment in str(e.value)
