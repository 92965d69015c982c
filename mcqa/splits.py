"""Seeded, disjoint splits (stratified where asked) on top of scikit-learn's splitters:
three_way (train/validation/test by fractions), carve_validation (keep an official test split,
carve validation out of train), k_fold (fold i of k is test), per_class_sample (n per class),
dedupe; plus the seeded per-example option orders for multiple choice (option_order, other_orders).
A split that cannot be made is one McqaError that says what to change."""

from __future__ import annotations

import hashlib
import random
from typing import Hashable, Sequence, TypeVar

from mcqa.errors import McqaError

T = TypeVar("T")


def dedupe(items: Sequence[T], key) -> list[T]:
    """Keep the first item of each key, in order."""
    seen: set = set()
    out = []
    for it in items:
        k = key(it)
        if k not in seen:
            seen.add(k)
            out.append(it)
    return out


def _fraction_problem(name: str, f: float) -> str | None:
    if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f < 1:
        return f"the {name} fraction must be between 0 and 1 (exclusive), got {f!r}"
    return None


def _split_off(
    indices: list[int], size: float, seed: int, strata: list | None, what: str
) -> tuple[list[int], list[int]]:
    """scikit-learn's seeded (stratified) split, its refusals turned into one line saying what to change."""
    from sklearn.model_selection import train_test_split  # seconds to import: only once a split is made

    try:
        return train_test_split(indices, test_size=size, random_state=seed, stratify=strata)
    except ValueError as e:
        hint = "; stratify by coarser groups, or pass strata=None" if strata is not None else ""
        raise McqaError(f"cannot split off the {what} split of {len(indices)} examples ({e}){hint}") from None


def three_way(
    ids: Sequence[str],
    fractions: tuple[float, float, float],
    seed: int,
    strata: Sequence[Hashable] | None = None,
) -> dict[str, list[str]]:
    """Split ids into train/validation/test with the given fractions, stratified by `strata`.
    Every fraction must be above 0: a dataset that ships its own test split wants
    carve_validation instead."""
    train_f, val_f, test_f = fractions
    if test_f == 0:
        raise McqaError(
            "three_way: the test fraction is 0; if your data ships its own test split, keep it with "
            "mcqa.splits.carve_validation(train_ids, test_ids, val_fraction, seed), else give test a share"
        )
    problems = [p for p in (_fraction_problem(n, f) for n, f in zip(("train", "validation", "test"), fractions)) if p]
    if problems:
        raise McqaError(f"three_way: {'; '.join(problems)}")
    if abs(train_f + val_f + test_f - 1) > 1e-9:
        raise McqaError(f"three_way: the fractions {tuple(fractions)} add up to {train_f + val_f + test_f:g}, not 1")
    ids = list(ids)
    strata = list(strata) if strata is not None else None
    rest, test = _split_off(list(range(len(ids))), test_f, seed, strata, "test")
    rest_strata = [strata[i] for i in rest] if strata is not None else None
    train, val = _split_off(rest, val_f / (train_f + val_f), seed, rest_strata, "validation")
    return {
        name: sorted(ids[i] for i in part) for name, part in (("train", train), ("validation", val), ("test", test))
    }


def carve_validation(
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    val_fraction: float,
    seed: int,
    strata: Sequence[Hashable] | None = None,
) -> dict[str, list[str]]:
    """Keep a dataset's official test split as it is and carve a seeded validation split out of
    its train split, stratified by `strata` (one per train id) when given."""
    problem = _fraction_problem("validation", val_fraction)
    if problem:
        raise McqaError(f"carve_validation: {problem}")
    train_ids, test_ids = list(train_ids), list(test_ids)
    shared = set(train_ids) & set(test_ids)
    if shared:
        raise McqaError(
            f"carve_validation: {len(shared)} ids are in both the train and the test split "
            f"(e.g. {sorted(shared)[0]!r}); the official splits must be disjoint"
        )
    if strata is not None and len(strata) != len(train_ids):
        raise McqaError(f"carve_validation: {len(strata)} strata for {len(train_ids)} train ids; give one per train id")
    train, val = _split_off(
        list(range(len(train_ids))), val_fraction, seed, list(strata) if strata is not None else None, "validation"
    )
    return {
        "train": sorted(train_ids[i] for i in train),
        "validation": sorted(train_ids[i] for i in val),
        "test": sorted(test_ids),
    }


def k_fold(
    ids: Sequence[str],
    k: int,
    fold: int,
    seed: int,
    strata: Sequence[Hashable] | None = None,
    val_fraction: float = 0.1,
) -> dict[str, list[str]]:
    """Fold `fold` of k: that fold is the test split; a seeded slice of the rest is validation."""
    ids = list(ids)
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (
        StratifiedKFold(k, shuffle=True, random_state=seed)
        if strata is not None
        else KFold(k, shuffle=True, random_state=seed)
    )
    rest, test = list(splitter.split(ids, strata if strata is not None else None))[fold]
    rest_strata = [strata[i] for i in rest] if strata is not None else None
    train, val = _split_off(list(rest), val_fraction, seed, rest_strata, "validation")
    return {
        name: sorted(ids[i] for i in part) for name, part in (("train", train), ("validation", val), ("test", test))
    }


def per_class_sample(ids: Sequence[str], labels: Sequence[Hashable], n: int, seed: int) -> list[str]:
    """A seeded sample of exactly n ids from each class."""
    rng = random.Random(seed)
    by_class: dict = {}
    for i, lab in zip(ids, labels):
        by_class.setdefault(lab, []).append(i)
    out = []
    for lab in sorted(by_class, key=str):
        members = sorted(by_class[lab])
        if len(members) < n:
            raise ValueError(f"class {lab!r} has {len(members)} examples, fewer than the {n} asked for")
        out.extend(rng.sample(members, n))
    return sorted(out)


def option_order(seed: int, example_id: str, n: int) -> list[int]:
    """The recorded, reproducible permutation of an example's n options (independent of
    Python's hash seed, so the same example is shuffled the same way on every machine)."""
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    order = list(range(n))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def other_orders(seed: int, example_id: str, n: int, k: int) -> list[list[int]]:
    """k reproducible orders of n options, none the identity (the order as shown) and no two
    the same, as far as n! allows: the extra orders of permutation training and readout."""
    orders: list[list[int]] = []
    for attempt in range(50 * k):
        if len(orders) == k:
            break
        order = option_order(seed + attempt, example_id, n)
        if order != list(range(n)) and order not in orders:
            orders.append(order)
    return orders
