"""Choice mode: decoder multiple choice, listwise. Every (question, option) pair gets one score,
a linear head on the decoder's state at the option's end (after its text and the end of
turn); a softmax over the example's options and cross-entropy train the head and the LoRA
adapters together. transformers has no multiple-choice class for decoders; this is the
reranker pattern (one score per query-candidate pair, softmax over one query's candidates).

The question (the task's cloze prompt, or its own prompt) is encoded once per example and its
keys and values shared by its options, under a tree-shaped mask, where every layer of the model
attends; a model with layers that carry a state gets a row per option instead
(mcqa.model.choice_rows). The head is saved beside the adapter (PEFT modules_to_save) and restored
on load.
"""

from __future__ import annotations

import torch
from torch import nn

from mcqa.model.choice_rows import ChoiceCollator, check_choice_task, encode_choice
from mcqa.model.lm import Capabilities, capabilities, hidden_size, layer_masks
from mcqa.modes.base import Mode, register_mode
from mcqa.task import Task

HEAD_MODULE = "choice_head"


class ChoiceModel(nn.Module):
    offers = "choice"  # what readouts can read from it (mcqa.readouts.base.offers): option scores, no LM head
    base_model_prefix = "backbone"  # where transformers' weight conversions find the decoder

    def __init__(self, backbone: nn.Module, hidden: int, caps: Capabilities, config=None):
        super().__init__()
        self.backbone = backbone
        self.choice_head = nn.Linear(hidden, 1)
        self.config = config  # lets PEFT and Trainer read model_type and friends
        self.caps = caps

    def forward(self, input_ids, option_ends, attention_mask=None, position_ids=None, labels=None):
        """input_ids (R, W); option_ends (B, K), flat indices into the (R x W) positions of each
        option's last token, -1 where an example has fewer options; attention_mask (R, W, W)
        booleans and position_ids for tree rows, none for unrolled rows (mcqa.model.choice_rows)."""
        # No **kwargs on purpose: Trainer then averages the loss over accumulation steps itself.
        if attention_mask is not None:
            attention_mask = layer_masks(
                self.caps, attention_mask, position_ids, position_ids, next(self.parameters()).dtype
            )
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        pooled = hidden.reshape(-1, hidden.shape[-1])[option_ends.clamp(min=0)]  # (B, K, H)
        scores = self.choice_head(pooled).squeeze(-1).float().masked_fill(option_ends < 0, float("-inf"))
        out = {"logits": scores}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(scores, labels)
        return out


def build_choice_model(causal_lm, tokenizer, task: Task) -> ChoiceModel:
    check_choice_task(task)
    model = ChoiceModel(
        causal_lm.get_decoder(), hidden_size(causal_lm), capabilities(causal_lm), config=causal_lm.config
    )
    with torch.no_grad():  # every option scores 0 at step 0: the softmax starts at chance
        model.choice_head.weight.zero_()
        model.choice_head.bias.zero_()
    return model.to(causal_lm.dtype)


CHOICE = register_mode(
    Mode(
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
        shares="options",
    )
)
