"""Batch planning for the readouts. `prefix_batches` (rank, constrained): the prompt prefix
every example shares is encoded once, batches are cut where prompt lengths make it cheaper
and packed into Streams (mcqa.readouts.decoding). `read_batches` (generate, head, choice):
plain batches of a fixed size, longest prompts first (`length_batches`), collated and read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from mcqa.console import track
from mcqa.eval.records import Prediction
from mcqa.model.encoding import common_prefix_len, prompt_ids
from mcqa.model.lm import CausalLM
from mcqa.readouts.decoding import SharedPrefix, open_streams, plan_chunks
from mcqa.task import Example, Task


def length_batches(rows: list, size: int):
    # Longest first: similar lengths share a batch (little padding) and the slowest batch
    # comes first, so the progress estimate errs on the safe side.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    for start in range(0, len(order), size):
        yield [rows[i] for i in order[start : start + size]]


@torch.no_grad()
def read_batches(
    model,
    rows: list[dict],
    batch_size: int,
    what: str,
    collate: Callable[[list[dict]], dict],
    read: Callable[[list[dict], dict[str, torch.Tensor]], list[Prediction]],
) -> list[Prediction]:
    """One prediction per row, in the rows' order: the model in eval mode, the rows in batches
    of `batch_size` (length_batches) behind a progress line saying `what`, each batch collated,
    moved to the model's device and given to `read(batch, encoded)`, which returns one
    prediction per row of the batch."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, Prediction] = {}
    batches = list(length_batches(rows, batch_size))
    for batch in track(batches, f"{what} ({len(rows)} examples)", total=len(batches)):
        enc = {k: v.to(device) for k, v in collate(batch).items()}
        out |= {row["id"]: p for row, p in zip(batch, read(batch, enc))}
    return [out[row["id"]] for row in rows]


def prefix_batches(
    lm: CausalLM,
    tokenizer,
    task: Task,
    examples: list[Example],
    batch_size: int,
    row_tokens: int | None,
    prefix_cache: bool,
    what: str,
    extra: int | list[int] = 0,
    prompts: list[list[int]] | None = None,
):
    """(example indices, Streams, prompt suffixes) per batch of at most `batch_size` examples,
    longest prompts first; the shared prefix is encoded once for all batches. By default the
    batches are cut where the prompt lengths make it cheaper (decoding.plan_chunks) and
    each packs its examples into rows as wide as its longest suffix; `row_tokens` instead packs
    every `batch_size` examples into rows of that many tokens. `extra`: tokens each example
    feeds after its suffix in the first forward (the answer's forced start), one number for all
    or one per example. `prompts`: token ids to use instead of the task's rendered prompts."""
    if prompts is None:
        prompts = [prompt_ids(tokenizer, task, e) for e in examples]
    extras = extra if isinstance(extra, list) else [extra] * len(prompts)
    n = common_prefix_len(prompts) if prefix_cache else 0
    prefix = SharedPrefix.encode(lm, prompts[0][:n]) if n else SharedPrefix([], None)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    first_feed = [len(p) - n + x for p, x in zip(prompts, extras)]  # tokens each example feeds in the first forward
    if row_tokens is None:
        order.sort(key=lambda i: -first_feed[i])  # stable: longest prompts first where first feeds tie
        chunks = [order[a:b] for a, b in plan_chunks([first_feed[i] for i in order], n, batch_size, lm.pairs_per_token)]
    else:
        chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    for chunk in track(chunks, f"{what} ({len(examples)} examples, {n} prefix tokens shared)", total=len(chunks)):
        width = row_tokens if row_tokens is not None else first_feed[chunk[0]]
        yield chunk, open_streams(lm, prefix, len(chunk), width), [prompts[i][n:] for i in chunk]


@dataclass
class Row:
    """One example's state while rank or constrained walks the label trie."""

    pending: list[int]  # tokens to feed before the answer's next token (the prompt suffix)
    fixed: dict[str, Any] = field(default_factory=dict)
    path: list[int] = field(default_factory=list)  # answer tokens chosen so far
    fed: int = 0  # how many of them are in the cache and visible
    end_lp: torch.Tensor | None = None  # next-token log-probs at the row's end, when already read
    group: int = 0
    allowed: list[int] = field(default_factory=list)
