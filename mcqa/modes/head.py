"""Head mode (classification heads): the last prompt token's hidden state feeds one linear head per
label field. Each head starts from the LM-head rows of its labels' first tokens, so at step 0
it already ranks labels the way the language model would.

The heads live inside the PEFT model as `modules_to_save`, so PEFT saves them with the
adapter and restores them on load (heads lost or re-initialised on reload is a known pain in
other tools); Trainer's checkpointing, resume and best-model loading then handle them too.
"""

from __future__ import annotations

import torch
from torch import nn

from mcqa.model.encoding import encode_head, head_sizes
from mcqa.model.lm import cache_kwargs, hidden_size, prefix_cache
from mcqa.modes.base import Mode, register_mode
from mcqa.task import Task

HEADS_MODULE = "heads"


class HeadModel(nn.Module):
    offers = "heads"  # what readouts can read from it (mcqa.readouts.base.offers): no LM head
    base_model_prefix = "backbone"  # where transformers' weight conversions find the decoder

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
            cache = prefix_cache(self.backbone, prefix_ids, input_ids.shape[0], lm_head=False)
        extra = cache_kwargs(self.backbone, cache) if cache is not None else {}
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **extra
        ).last_hidden_state
        last = hidden[:, -1]  # rows are left-padded: the last position is the last prompt token
        logits = [self.heads[f](last).float() for f in self.fields]
        out = {"logits": tuple(logits)}
        if labels is not None:
            out["loss"] = sum(nn.functional.cross_entropy(lg, labels[:, i]) for i, lg in enumerate(logits))
        return out


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
    model = HeadModel(causal_lm.get_decoder(), hidden_size(causal_lm), sizes, config=causal_lm.config)
    with torch.no_grad():
        for f, head in model.heads.items():
            head.weight.copy_(rows[f].to(head.weight.dtype))
            head.bias.zero_()
    return model.to(causal_lm.dtype)


HEAD = register_mode(
    Mode(
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
    )
)
