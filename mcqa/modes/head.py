"""Head mode (classification heads): the last prompt token's hidden state feeds one linear head per
label field. Each head starts from the LM-head rows of its labels' first tokens, so at step 0
it already ranks labels the way the language model would.

The heads live inside the PEFT model as `modules_to_save`, so PEFT saves them with the
adapter and restores them on load (heads lost or re-initialised on reload is a known pain in
other tools); Trainer's checkpointing, resume and best-model loading then handle them too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mcqa.encoding import expand_cache, prompt_ids
from mcqa.errors import McqaError
from mcqa.modes.base import Mode, register_mode
from mcqa.task import Example, Task

HEADS_MODULE = "heads"


class HeadModel(nn.Module):
    offers = "heads"  # what readouts can read from it (mcqa.readouts.base.offers): no LM head

    def __init__(self, backbone: nn.Module, hidden_size: int, fields: dict[str, int], config=None):
        super().__init__()
        self.backbone = backbone
        self.fields = list(fields)
        self.heads = nn.ModuleDict({f: nn.Linear(hidden_size, n) for f, n in fields.items()})
        self.config = config  # lets PEFT and Trainer read model_type and friends

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None, prefix_ids=None):
        """With `prefix_ids` (1 x P, the prompt prefix every row shares; see LeftPadCollator),
        the prefix is encoded once and its KV cache serves every row, whose `input_ids` then
        hold only the rest of the prompt (mask and positions count the prefix in)."""
        # No **kwargs on purpose: Trainer then averages the loss over accumulation steps itself.
        cache = None
        if prefix_ids is not None:
            cache = expand_cache(self.backbone(input_ids=prefix_ids, use_cache=True).past_key_values, input_ids.shape[0])
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=cache, use_cache=cache is not None).last_hidden_state
        last = hidden[:, -1]  # rows are left-padded: the last position is the last prompt token
        logits = [self.heads[f](last).float() for f in self.fields]
        out = {"logits": tuple(logits)}
        if labels is not None:
            out["loss"] = sum(nn.functional.cross_entropy(lg, labels[:, i]) for i, lg in enumerate(logits))
        return out


def head_sizes(task: Task) -> dict[str, int]:
    spaces = task.label_spaces
    free = [f for f, s in spaces.items() if s is None]
    if free:
        raise McqaError(f"task '{task.name}' has free fields ({', '.join(free)}); head mode needs a label space for every field, use --mode generate")
    return {f: len(s.values) for f, s in spaces.items()}


def first_token_rows(causal_lm, tokenizer, task: Task) -> dict[str, torch.Tensor]:
    """For each field, the LM-head rows of the first token of each label as it appears in the
    serialized JSON (no leading space: the serializer writes `"folder":"Work"`)."""
    weight = causal_lm.get_output_embeddings().weight.detach()
    rows = {}
    for f, space in task.label_spaces.items():
        ids = []
        for v in space.values:
            text = "true" if v is True else "false" if v is False else str(v)
            ids.append(tokenizer(text, add_special_tokens=False)["input_ids"][0])
        rows[f] = weight[ids].clone()
    return rows


def build_head_model(causal_lm, tokenizer, task: Task) -> HeadModel:
    """Wrap a causal LM's decoder with fresh heads initialised from its LM-head rows."""
    sizes = head_sizes(task)
    rows = first_token_rows(causal_lm, tokenizer, task)
    hidden = causal_lm.config.get_text_config().hidden_size if hasattr(causal_lm.config, "get_text_config") else causal_lm.config.hidden_size
    model = HeadModel(causal_lm.get_decoder(), hidden, sizes, config=causal_lm.config)
    with torch.no_grad():
        for f, head in model.heads.items():
            head.weight.copy_(rows[f].to(head.weight.dtype))
            head.bias.zero_()
    return model.to(causal_lm.dtype)


def encode_head(tokenizer, task: Task, examples: list[Example]) -> list[dict[str, Any]]:
    """input_ids = prompt; field_labels = the index of each field's gold value in its label space."""
    spaces = task.label_spaces
    rows = []
    for e in examples:
        p = prompt_ids(tokenizer, task, e)
        labels = [spaces[f].values.index(e.target[f]) for f in task.fields] if e.target else None
        rows.append({"id": e.id, "input_ids": p, "field_labels": labels, "length": len(p)})
    return rows


HEAD = register_mode(Mode(
    name="head",
    description="LoRA on the decoder plus one linear head per field on the last prompt token",
    encode=encode_head,
    columns=("field_labels",),
    build=build_head_model,
    # The heads are saved beside the adapter and restored on load.
    peft_kwargs=lambda task: {"modules_to_save": [f"{HEADS_MODULE}.{f}" for f in task.fields]},
    loss=None,  # the model's own loss; Trainer then averages it over accumulation steps
    model_takes_prefix=True,
    eval_readout="head",
    default_readout="head",
    check=lambda task: head_sizes(task) and None,
    loss_items="rows",
))
