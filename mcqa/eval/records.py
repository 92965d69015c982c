"""The typed hand-offs between stages. A readout (or any outside producer, through a
predictions file) gives one Prediction per example; the scorer turns each into a Record; every
metric is computed from Records alone. Open this file to learn what flows.

TypedDicts rather than classes: both are written to and read from JSONL as they are."""

from __future__ import annotations

from typing import Any, TypedDict

from typing_extensions import NotRequired


class RankGroup(TypedDict):
    """rank's scores for one group of fields ranked together: every candidate combination of
    their values and its log-likelihood (the raw material of probabilities and calibration)."""

    fields: list[str]
    values: list[list[Any]]
    loglik: list[float]


class Prediction(TypedDict):
    """A model's answer to one example, in the predictions-file format."""

    id: str
    output: str  # the raw text, parsed by the scorer
    truncated: NotRequired[bool]  # the producer hit its token limit
    finish_reason: NotRequired[str]  # an OpenAI-style alternative: "length" means truncated
    probs: NotRequired[dict[str, dict[str, float]]]  # field -> label (as str) -> probability
    scores: NotRequired[list[RankGroup]]  # rank and options: what calibration reads
    temperature: NotRequired[float]  # rank and options: the temperature its probs were computed at
    option_scores: NotRequired[dict[str, list[float]]]  # options only: each scoring rule's score per option
    order_choices: NotRequired[list[int]]  # permuted only: the option (index in display order) chosen in each order
    endpoint: NotRequired[dict[str, Any]]  # endpoint only, while running: server, served model, latency_s, retries


PREDICTION_KEYS = ("id", "output", "truncated", "probs", "scores", "temperature", "option_scores", "order_choices")


class Record(TypedDict):
    """One scored example: everything a metric or a report line needs."""

    id: str
    raw: str  # the prediction's output, always kept
    status: str  # mcqa.eval.parsing.STATUSES
    notes: list[str]  # tolerated oddities (prose around the JSON, a code fence, ...)
    error: str | None
    parsed: dict[str, Any] | None
    gold: dict[str, Any]
    correct: dict[str, bool]  # per field
    joint: bool  # every field correct
    groups: list[str]
    probs: NotRequired[dict[str, dict[str, float]]]
    order_choices: NotRequired[list[int]]
