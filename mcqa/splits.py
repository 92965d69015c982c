"""Seeded, disjoint splits (stratified where asked) and k-fold cross-validation, on top of
scikit-learn's splitters; plus the seeded per-example option shuffle for multiple choice."""

from __future__ import annotations

import hashlib
import random
from typing import Hashable, Sequence, TypeVar

from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

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


def three_way(
    ids: Sequence[str],
    fractions: tuple[float, float, float],
    seed: int,
    strata: Sequence[Hashable] | None = None,
) -> dict[str, list[str]]:
    """Split ids into train/validation/test with the given fractions, stratified by `strata`."""
    train_f, val_f, test_f = fractions
    assert abs(train_f + val_f + test_f - 1) < 1e-9, fractions
    ids = list(ids)
    strata = list(strata) if strata is not None else None
    rest, test = train_test_split(
        list(range(len(ids))), test_size=test_f, random_state=seed, stratify=strata
    )
    rest_strata = [strata[i] for i in rest] if strata is not None else None
    train, val = train_test_split(
        rest, test_size=val_f / (train_f + val_f), random_state=seed, stratify=rest_strata
    )
    return {name: sorted(ids[i] for i in part) for name, part in (("train", train), ("validation", val), ("test", test))}


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
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if strata is not None else KFold(k, shuffle=True, random_state=seed)
    rest, test = list(splitter.split(ids, strata if strata is not None else None))[fold]
    rest_strata = [strata[i] for i in rest] if strata is not None else None
    train, val = train_test_split(list(rest), test_size=val_fraction, random_state=seed, stratify=rest_strata)
    return {name: sorted(ids[i] for i in part) for name, part in (("train", train), ("validation", val), ("test", test))}


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
