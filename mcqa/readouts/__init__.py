"""Readouts: the ways of reading a task's answer out of a model, one file each, registered by name
(mcqa.readouts.base): generate, constrained, rank, head, options, choice, permuted, endpoint.
Each returns one Prediction per example, in order, in the scorer's predictions format. The
shared decoding machinery sits beside them: decoding (prefix-cached, tree-shaped batched
forwards), batching (batch planning) and trie (label candidates). A new readout is one file
that calls `register_readout`, plus its import below."""

from mcqa.readouts import generate, constrained, rank, head, options, choice, permuted, endpoint  # noqa: F401, I001  (each registers itself; this order is the listing order)
from mcqa.readouts.base import (
    READOUTS,
    Options,
    Readout,
    default_max_new_tokens,
    get_readout,
    offers,
    register_readout,
    run_readout,
)

__all__ = [
    "READOUTS",
    "Options",
    "Readout",
    "default_max_new_tokens",
    "get_readout",
    "offers",
    "register_readout",
    "run_readout",
]
