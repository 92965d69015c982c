"""Prompts -> token ids, the end of the assistant turn, the left-padding collator, the
shared-prefix and row-chunk helpers, and head-mode rows, which training and the readouts both
use. What each training mode adds (its targets and loss) lives in mcqa/modes/; what a model
family allows (sharing a prefix's cache) in mcqa/model/lm.py.

Batches are left-padded so every row ends at the same position: the target tokens
are then the last few positions of every row, and the model is asked for logits there only
(`logits_to_keep`), instead of materialising a vocabulary-wide row (151,936 entries for Qwen3)
for every prompt token. Position ids are counted from each row's first real token, so padding
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mcqa.errors import McqaError
from mcqa.prompting import render_prompt
from mcqa.task import Example, Task

IGNORE = -100


def end_of_turn(tokenizer) -> str:
    """The text the chat template puts after an assistant message's content (Qwen3:
    "<|im_end|>"), found by rendering a probe conversation; falls back to the eos token."""
    probe = [{"role": "user", "content": "x"}]
    prompt = render_prompt(tokenizer, probe)
    full = tokenizer.apply_chat_template(
        probe + [{"role": "assistant", "content": "PROBE"}], tokenize=False, enable_thinking=False
    )
    if full.startswith(prompt) and "PROBE" in full:
        tail = full[full.index("PROBE") + len("PROBE") :]
        stop = tail.rstrip("\n")
        if stop:
            return stop
    return tokenizer.eos_token or ""


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end an answer: the end-of-turn token and eos."""
    ids = set()
    eot = end_of_turn(tokenizer)
    if eot:
        enc = tokenizer(eot, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.add(enc[0])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def pad_id(tokenizer) -> int:
    """The one pad policy (as mcqa.model.load_tokenizer sets it): a tokenizer without a pad
    token pads with its EOS."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def message_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Chat messages -> the prompt's token ids (render_prompt, no special tokens added)."""
    return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer, task: Task, example: Example) -> list[int]:
    return message_ids(tokenizer, task.messages(example))


@dataclass
class LeftPadCollator:
    """Left-pads a batch. With `prefix` (token ids every row starts with, such as the system
    prompt), rows are cut after it and the batch carries it once as `prefix_ids`: the trainer
    encodes it once per batch instead of once per example (see SharedPrefixTrainerMixin)."""

    pad_token_id: int
    prefix: list[int] | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if self.prefix:
            p = len(self.prefix)
            features = [
                {
                    **f,
                    "input_ids": f["input_ids"][p:],
                    **({"labels": f["labels"][p:]} if f.get("labels") is not None else {}),
                }
                for f in features
            ]
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, width - n :] = torch.tensor(f["input_ids"])
            mask[i, width - n :] = 1
        batch: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        }
        if features[0].get("labels") is not None:
            labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
            for i, f in enumerate(features):
                labels[i, width - len(f["labels"]) :] = torch.tensor(f["labels"])
            batch["labels"] = labels
            # Logits are needed from the position before each row's first target token onwards.
            target_len = max(sum(x != IGNORE for x in f["labels"]) for f in features)
            batch["logits_to_keep"] = target_len + 1
        if features[0].get("field_labels") is not None:
            batch["labels"] = torch.tensor([f["field_labels"] for f in features], dtype=torch.long)
        if self.prefix:
            p = len(self.prefix)
            batch["prefix_ids"] = torch.tensor([self.prefix], dtype=torch.long)
            batch["attention_mask"] = torch.cat([torch.ones(len(features), p, dtype=torch.long), mask], dim=1)
            batch["position_ids"] = batch["position_ids"] + p
        return batch


def batch_tokens(batch: dict[str, Any]) -> int:
    """The tokens one forward pass of a collated batch computes: rows x padded width, plus the
    shared prefix once (it is encoded once; only its small KV cache is copied to every row)."""
    rows, width = batch["input_ids"].shape
    prefix = batch.get("prefix_ids")
    return rows * width + (prefix.shape[1] if prefix is not None else 0)


def row_chunks(batch: dict[str, Any], max_tokens: int | None) -> list[dict[str, Any]]:
    """A collated micro batch as chunks of rows, each computing at most `max_tokens` tokens
    (batch_tokens), of near-equal size, at least one row each. Tensors with a row per example
    are cut; the rest (prefix_ids, logits_to_keep) go to every chunk."""
    rows, width = batch["input_ids"].shape
    prefix = batch_tokens(batch) - rows * width
    per = max(1, (max_tokens - prefix) // width) if max_tokens else rows
    if per >= rows:
        return [batch]
    n = -(-rows // per)
    size = -(-rows // n)
    return [
        {
            k: v[i : i + size]
            if k != "prefix_ids" and isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == rows
            else v
            for k, v in batch.items()
        }
        for i in range(0, rows, size)
    ]


def chunk_share(loss_items: str, chunk: dict[str, Any], batch: dict[str, Any], num_items_in_batch=None) -> float:
    """The weight of a chunk's loss so that the chunks' weighted losses sum to the batch's: its
    share of the rows, or of the target tokens; 1 when the loss already divides by the whole
    accumulated batch's target count (num_items_in_batch)."""
    if loss_items == "rows":
        return chunk["input_ids"].shape[0] / batch["input_ids"].shape[0]
    if num_items_in_batch is not None:
        return 1.0
    return float((chunk["labels"] != IGNORE).sum() / (batch["labels"] != IGNORE).sum())


def common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the longest common token prefix, leaving every sequence at least one token of
    its own (the last prompt token must be fed to read the first answer token)."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def shared_prefix(rows: list[dict[str, Any]]) -> list[int]:
    """The longest token prefix every row starts with, all of it prompt (never a target token)."""
    n = common_prefix_len([r["input_ids"] for r in rows])
    if rows[0].get("labels") is not None:
        n = min([n] + [next(i for i, t in enumerate(r["labels"]) if t != IGNORE) for r in rows])
    return rows[0]["input_ids"][:n]


def head_sizes(task: Task) -> dict[str, int]:
    """The number of labels of each field, for classification heads (head mode)."""
    spaces = task.label_spaces
    free = [f for f, s in spaces.items() if s is None]
    if free:
        raise McqaError(
            f"task '{task.name}' has free fields ({', '.join(free)}); "
            "head mode needs a label space for every field, use --mode generate"
        )
    return {f: len(s.values) for f, s in spaces.items()}


def encode_head(tokenizer, task: Task, examples: list[Example]) -> list[dict[str, Any]]:
    """Head-mode rows: input_ids = prompt; field_labels = the index of each field's gold value in
    its label space (None when unlabeled)."""
    spaces = task.label_spaces
    rows = []
    for e in examples:
        p = prompt_ids(tokenizer, task, e)
        labels = [spaces[f].values.index(e.target[f]) for f in task.fields] if e.target else None
        rows.append({"id": e.id, "input_ids": p, "field_labels": labels, "length": len(p)})
    return rows
