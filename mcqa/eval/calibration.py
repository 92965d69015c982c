"""Probabilities from rank's log-likelihoods, and temperature scaling: one temperature for
every field, fitted on labeled (validation) examples, applied to the outputs being scored.
Torch-free: it reads the scores a rank Prediction carries, so a temperature can be refitted
or applied later without running the model again."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mcqa.errors import McqaError
from mcqa.eval.metrics import calibration
from mcqa.eval.records import Prediction, RankGroup
from mcqa.prompting import serialize_target
from mcqa.task import Example, Task


def rank_record(task: Task, eid: str, groups: list[RankGroup], temperature: float) -> Prediction:
    probs = group_probs(groups, temperature)
    # The answer comes from the uncalibrated scores: a temperature reshapes the probabilities,
    # never the prediction (a jointly ranked field's marginal argmax would move with T).
    raw = probs if temperature == 1.0 else group_probs(groups, 1.0)
    spaces = task.label_spaces
    # Each field's most probable label among those scored (a multiple-choice example may show
    # fewer options than its field has letters).
    value = {
        f: max((v for v in spaces[f].values if str(v) in raw[f]), key=lambda v: raw[f][str(v)]) for f in task.fields
    }
    return {"id": eid, "output": serialize_target(task.output, value), "probs": probs, "scores": groups}


def group_probs(groups: list[RankGroup], temperature: float = 1.0) -> dict[str, dict[str, float]]:
    """Per-field probabilities from a rank record's scores: softmax of log-likelihood / T over
    each group's candidates, marginalised to each field."""
    out: dict[str, dict[str, float]] = {}
    for g in groups:
        ll = np.asarray(g["loglik"], dtype=np.float64) / temperature
        p = np.exp(ll - ll.max())
        p /= p.sum()
        for k, f in enumerate(g["fields"]):
            dist: dict[str, float] = {}
            for values, pc in zip(g["values"], p):
                dist[str(values[k])] = dist.get(str(values[k]), 0.0) + float(pc)
            out[f] = dist
    return out


@dataclass(frozen=True)
class TemperatureFit:
    """One temperature for every field's log-likelihoods, chosen to minimise the validation
    negative log-likelihood of the gold label (mean over examples and fields); T=1 is always a
    candidate, so the fit never makes that NLL worse. ECE per field before and after."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: dict[str, float]
    ece_after: dict[str, float]
    n: int


def _gold_terms(task: Task, examples: list[Example], outputs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """One row per (example, field): its group's log-likelihoods (padded with -inf) and which
    candidates carry the gold label."""
    by_id = {o["id"]: o for o in outputs}
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    for e in examples:
        if e.target is None:
            raise McqaError(
                f"example '{e.id}' has no gold label; temperature scaling needs labeled validation examples"
            )
        rec = by_id.get(e.id)
        if rec is None or "scores" not in rec:
            raise McqaError(
                f"no rank output with scores for example '{e.id}'; fit the temperature on the 'rank' readout's outputs"
            )
        gold = task.output.model_validate(e.target).model_dump(mode="json")
        for g in rec["scores"]:
            for k, f in enumerate(g["fields"]):
                rows.append(
                    (np.asarray(g["loglik"], dtype=np.float64), np.array([v[k] == gold[f] for v in g["values"]]))
                )
    width = max(len(ll) for ll, _ in rows)
    ll = np.full((len(rows), width), -np.inf)
    gold_mask = np.zeros((len(rows), width), dtype=bool)
    for i, (x, m) in enumerate(rows):
        ll[i, : len(x)], gold_mask[i, : len(m)] = x, m
    return ll, gold_mask


def _nll(terms: tuple[np.ndarray, np.ndarray], t: float) -> float:
    from scipy.special import logsumexp

    ll, gold = terms
    return float(np.mean(logsumexp(ll / t, axis=1) - logsumexp(np.where(gold, ll / t, -np.inf), axis=1)))


def fit_temperature(
    task: Task, examples: list[Example], outputs: list[dict], bounds: tuple[float, float] = (0.05, 20.0)
) -> TemperatureFit:
    """Fit T on labeled (validation) examples and their rank outputs (bounded search on log T)."""
    from scipy.optimize import minimize_scalar

    terms = _gold_terms(task, examples, outputs)
    res = minimize_scalar(lambda lt: _nll(terms, math.exp(lt)), bounds=tuple(map(math.log, bounds)), method="bounded")
    t, before = math.exp(res.x), _nll(terms, 1.0)
    after = _nll(terms, t)
    if not after < before:
        t, after = 1.0, before
    spaces = task.label_spaces
    by_id = {o["id"]: o for o in outputs}
    gold = [task.output.model_validate(e.target).model_dump(mode="json") for e in examples]

    def ece(temp: float) -> dict[str, float]:
        probs = [group_probs(by_id[e.id]["scores"], temp) for e in examples]
        return {f: calibration([p[f] for p in probs], [g[f] for g in gold], spaces[f])["ece"] for f in task.fields}

    return TemperatureFit(t, before, after, ece(1.0), ece(t), len(examples))


def apply_temperature(task: Task, outputs: list[Prediction], temperature: float) -> list[Prediction]:
    """Rank (or options) outputs with their probabilities recomputed at T; the outputs stay those of T=1."""
    return [{**o, **rank_record(task, o["id"], o["scores"], temperature), "temperature": temperature} for o in outputs]


def with_option_rule(task: Task, outputs: list[Prediction], rule: str) -> list[Prediction]:
    """Options-readout predictions re-ranked by another of the scoring rules they carry
    ("option_scores"), at T=1: one run with rule=pmi holds every rule's scores."""
    out = []
    for o in outputs:
        if rule not in o.get("option_scores", {}):
            raise McqaError(
                f"prediction '{o['id']}' has no '{rule}' option scores; "
                "read it out with the options readout (rule=pmi holds every rule)"
            )
        groups = [{**g, "loglik": o["option_scores"][rule]} for g in o["scores"]]
        out.append({**o, **rank_record(task, o["id"], groups, 1.0)})
    return out
