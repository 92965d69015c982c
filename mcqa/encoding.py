"""Examples -> token ids for training and inference, and the left-padding collator.

The target a model learns is exactly `serialize_target` followed by the chat template's end of
the assistant turn, placed after `render_prompt` (thinking off): the same text the scorer
parses. Batches are left-padded so every row ends at the same position: the target tokens
are then the last few positions of every row, and the model is asked for logits there only
(`logits_to_keep`), instead of materialising a vocabulary-wide row (151,936 entries for Qwen3)
for every prompt token. Position ids are counted from each row's first real token, so padding
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mcqa.prompting import render_prompt, serialize_target
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
        tail = full[full.index("PROBE") + len("PROBE"):]
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


def prompt_ids(tokenizer, task: Task, example: Example) -> list[int]:
    return tokenizer(render_prompt(tokenizer, task.messages(example)), add_special_tokens=False)["input_ids"]


def encode_generative(tokenizer, task: Task, examples: list[Example], eot: str) -> list[dict[str, Any]]:
    """input_ids = prompt + target + end of turn; labels are -100 on the prompt."""
    rows = []
    for e in examples:
        p = prompt_ids(tokenizer, task, e)
        t = tokenizer(serialize_target(task.output, e.target) + eot, add_special_tokens=False)["input_ids"]
        rows.append({"id": e.id, "input_ids": p + t, "labels": [IGNORE] * len(p) + t, "length": len(p) + len(t)})
    return rows


def encode_head(tokenizer, task: Task, examples: list[Example]) -> list[dict[str, Any]]:
    """input_ids = prompt; field_labels = the index of each field's gold value in its label space."""
    spaces = task.label_spaces
    rows = []
    for e in examples:
        p = prompt_ids(tokenizer, task, e)
        labels = [spaces[f].values.index(e.target[f]) for f in task.fields] if e.target else None
        rows.append({"id": e.id, "input_ids": p, "field_labels": labels, "length": len(p)})
    return rows


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
            features = [{**f, "input_ids": f["input_ids"][p:], **({"labels": f["labels"][p:]} if f.get("labels") is not None else {})}
                        for f in features]
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, width - n:] = torch.tensor(f["input_ids"])
            mask[i, width - n:] = 1
        batch: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        }
        if features[0].get("labels") is not None:
            labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
            for i, f in enumerate(features):
                labels[i, width - len(f["labels"]):] = torch.tensor(f["labels"])
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


def shared_prefix(rows: list[dict[str, Any]]) -> list[int]:
    """The longest token prefix every row starts with, all of it prompt (never a target token)."""
    from mcqa.prefix_cache import common_prefix_len

    n = common_prefix_len([r["input_ids"] for r in rows])
    if rows[0].get("labels") is not None:
        n = min([n] + [next(i for i, t in enumerate(r["labels"]) if t != IGNORE) for r in rows])
    return rows[0]["input_ids"][:n]


def prefix_cache(model, prefix_ids: torch.Tensor, batch_size: int):
    """Encode the shared prefix once (with gradients: LoRA acts on it too) and give every row of
    the batch a view of its keys and values; the forward over the rows concatenates onto them."""
    return expand_cache(model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1).past_key_values, batch_size)


def expand_cache(cache, batch_size: int):
    """A batch-of-one KV cache seen by `batch_size` rows (views; a forward concatenates onto them)."""
    from transformers import DynamicCache

    return DynamicCache([(x.keys.expand(batch_size, -1, -1, -1), x.values.expand(batch_size, -1, -1, -1)) for x in cache.layers])


def target_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Next-token cross-entropy on the kept (last K) positions; the sum is divided by the
    number of target tokens in the whole accumulated batch, so accumulation is exact."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    k = logits.shape[1]
    pred = logits[:, :-1].float()
    gold = labels[:, -(k - 1):].to(pred.device)
    loss = torch.nn.functional.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), gold.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    n = num_items_in_batch if num_items_in_batch is not None else (gold != IGNORE).sum()
    return loss / n
