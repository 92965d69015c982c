"""Choice mode: decoder multiple choice, listwise. Every (question, option) pair gets one score,
a linear head on the decoder's state at the option's end (after its text and the end of
turn); a softmax over the example's options and cross-entropy train the head and the LoRA
adapters together. transformers has no multiple-choice class for decoders; this is the
reranker pattern (one score per query-candidate pair, softmax over one query's candidates).

The question (the task's cloze prompt, or its own prompt) is encoded once per example and its
keys and values shared by its options: an example is one row, the prompt followed by every
option, with a tree-shaped attention mask (each option sees the prompt and itself, never
another option) and positions that restart after the prompt for each option, so each option
is scored exactly as if it followed the prompt alone. The head is saved beside the adapter
(PEFT modules_to_save) and restored on load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mcqa.encoding import end_of_turn
from mcqa.errors import McqaError
from mcqa.modes.base import Mode, register_mode
from mcqa.prompting import render_prompt
from mcqa.task import Example, Task

HEAD_MODULE = "choice_head"


class ChoiceModel(nn.Module):
    offers = "choice"  # what readouts can read from it (mcqa.readouts.base.offers): option scores, no LM head

    def __init__(self, backbone: nn.Module, hidden_size: int, config=None, bool_mask: bool = True):
        super().__init__()
        self.backbone = backbone
        self.choice_head = nn.Linear(hidden_size, 1)
        self.config = config  # lets PEFT and Trainer read model_type and friends
        self.bool_mask = bool_mask  # sdpa takes "may attend" booleans; eager adds a float mask

    def forward(self, input_ids, attention_mask, position_ids, option_ends, labels=None):
        """input_ids (B, W); attention_mask (B, W, W) booleans, the tree mask; option_ends
        (B, K) the index of each option's last token, -1 where an example has fewer options."""
        # No **kwargs on purpose: Trainer then averages the loss over accumulation steps itself.
        mask = attention_mask[:, None] if self.bool_mask else additive_mask(attention_mask[:, None], next(self.parameters()).dtype)
        hidden = self.backbone(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
        ends = option_ends.clamp(min=0)
        pooled = hidden.gather(1, ends[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, K, H)
        scores = self.choice_head(pooled).squeeze(-1).float().masked_fill(option_ends < 0, float("-inf"))
        out = {"logits": scores}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(scores, labels)
        return out


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A "may attend" boolean mask as eager attention takes it: 0 where allowed, the dtype's minimum elsewhere."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def build_choice_model(causal_lm, tokenizer, task: Task) -> ChoiceModel:
    check_choice_task(task)
    config = causal_lm.config.get_text_config() if hasattr(causal_lm.config, "get_text_config") else causal_lm.config
    impl = getattr(causal_lm.config, "_attn_implementation", "eager")
    if impl not in ("sdpa", "eager"):
        raise McqaError(f"choice mode builds its own attention masks, which needs attention 'sdpa' or 'eager' (the model uses '{impl}')")
    model = ChoiceModel(causal_lm.get_decoder(), config.hidden_size, config=causal_lm.config, bool_mask=impl == "sdpa")
    with torch.no_grad():  # every option scores 0 at step 0: the softmax starts at chance
        model.choice_head.weight.zero_()
        model.choice_head.bias.zero_()
    return model.to(causal_lm.dtype)


def check_choice_task(task: Task) -> None:
    if task.options is None or task.choice_field is None:
        raise McqaError(f"task '{task.name}' declares no options; the choice, content and listwise modes need a "
                        "multiple-choice task (Task(options=..., choice_field=...)); use --mode generate or head")


def cloze_messages(task: Task, e: Example) -> list[dict[str, str]]:
    """The conversation an option's text answers: the task's cloze prompt, else its own."""
    return task.cloze(e) if task.cloze is not None else task.messages(e)


def cloze_prompt_ids(tokenizer, task: Task, e: Example) -> list[int]:
    return tokenizer(render_prompt(tokenizer, cloze_messages(task, e)), add_special_tokens=False)["input_ids"]


def encode_choice(tokenizer, task: Task, examples: list[Example]) -> list[dict[str, Any]]:
    """One row per example: the prompt's ids, then each option's text and the end of turn;
    choice_label is the gold option's index (None when unlabeled)."""
    check_choice_task(task)
    eot, letters = end_of_turn(tokenizer), list(task.label_spaces[task.choice_field].values)
    rows = []
    for e in examples:
        prompt = cloze_prompt_ids(tokenizer, task, e)
        options = [tokenizer(t + eot, add_special_tokens=False)["input_ids"] for t in task.options(e)]
        label = letters.index(e.target[task.choice_field]) if e.target is not None else None
        ids = prompt + [t for o in options for t in o]
        rows.append({"id": e.id, "input_ids": ids, "prompt_length": len(prompt), "option_lengths": [len(o) for o in options],
                     "choice_label": label, "length": len(ids)})
    return rows


@dataclass
class ChoiceCollator:
    """Right-pads rows and builds each one's tree mask, positions and option ends."""

    pad_token_id: int
    prefix: list[int] | None = None  # unused: each row already shares its prompt among its options

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        k = max(len(f["option_lengths"]) for f in features)
        n = len(features)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, width, width), dtype=torch.bool)
        ends = torch.full((n, k), -1, dtype=torch.long)
        for i, f in enumerate(features):
            p = f["prompt_length"]
            ids[i, :len(f["input_ids"])] = torch.tensor(f["input_ids"])
            pos[i, :p] = torch.arange(p)
            mask[i, :p, :p] = torch.tril(torch.ones(p, p, dtype=torch.bool))
            start = p
            for j, m in enumerate(f["option_lengths"]):
                span = slice(start, start + m)
                pos[i, span] = torch.arange(p, p + m)
                mask[i, span, :p] = True
                mask[i, span, span] = torch.tril(torch.ones(m, m, dtype=torch.bool))
                ends[i, j] = start + m - 1
                start += m
            for j in range(start, width):  # padding sees itself only (no empty softmax rows)
                mask[i, j, j] = True
        batch = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "option_ends": ends}
        if features[0].get("choice_label") is not None:
            batch["labels"] = torch.tensor([f["choice_label"] for f in features], dtype=torch.long)
        return batch


CHOICE = register_mode(Mode(
    name="choice",
    description="multiple choice, listwise: one score per (question, option) from a linear head on the option's "
                "end state, softmax over the options",
    encode=encode_choice,
    columns=("prompt_length", "option_lengths", "choice_label"),
    build=build_choice_model,
    peft_kwargs=lambda task: {"modules_to_save": [HEAD_MODULE]},
    loss=None,  # the model's own loss; Trainer then averages it over accumulation steps
    model_takes_prefix=True,
    eval_readout="choice",
    default_readout="choice",
    check=check_choice_task,
    collator=ChoiceCollator,
))
