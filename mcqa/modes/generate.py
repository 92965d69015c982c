"""Generative mode: the model learns to write the answer. The target is exactly
`serialize_target` followed by the chat template's end of the assistant turn, placed after
`render_prompt` (thinking off): the same text the scorer parses. The loss is on the target
tokens only, with vocabulary-wide logits only where the loss is (see LeftPadCollator)."""

from __future__ import annotations

from typing import Any

import torch

from mcqa.model.encoding import IGNORE, end_of_turn, prompt_ids
from mcqa.modes.base import Mode, register_mode
from mcqa.task import Example, Task, gold_json


def encode_generative(tokenizer, task: Task, examples: list[Example], eot: str | None = None) -> list[dict[str, Any]]:
    """input_ids = prompt + target + end of turn; labels are -100 on the prompt."""
    eot = end_of_turn(tokenizer) if eot is None else eot
    rows = []
    for e in examples:
        p = prompt_ids(tokenizer, task, e)
        t = tokenizer(gold_json(task, e) + eot, add_special_tokens=False)["input_ids"]
        rows.append({"id": e.id, "input_ids": p + t, "labels": [IGNORE] * len(p) + t, "length": len(p) + len(t)})
    return rows


def target_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Next-token cross-entropy on the kept (last K) positions; the sum is divided by the
    number of target tokens in the whole accumulated batch, so accumulation is exact."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    k = logits.shape[1]
    pred = logits[:, :-1].float()
    gold = labels[:, -(k - 1) :].to(pred.device)
    loss = torch.nn.functional.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), gold.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    n = num_items_in_batch if num_items_in_batch is not None else (gold != IGNORE).sum()
    return loss / n


GENERATE = register_mode(
    Mode(
        name="generate",
        description="LoRA on the causal LM; the target is the answer's JSON text",
        encode=encode_generative,
        columns=("labels",),
        build=lambda causal_lm, tokenizer, task: causal_lm,
        peft_kwargs=lambda task: {"task_type": "CAUSAL_LM"},
        loss=target_loss,
        model_takes_prefix=False,
        eval_readout="generate",  # free generation, so validation counts parse failures
        default_readout="constrained",
        loss_items="target_tokens",
    )
)
