"""Listwise mode: multiple choice trained on what the options readout reads. Each option's score
is its PMI, the log-likelihood of its text as the reply to the task's cloze prompt minus its
log-likelihood under the same conversation with the question emptied (the options readout's
default rule, lm-eval's acc_mutual_info); a softmax over the example's options and
cross-entropy on the gold option train LoRA on the causal LM. No head is added: training
starts from the zero-shot PMI readout rather than from chance (a new head on 360 examples
stays at chance, bench/RESULTS.md), and the run is read out by `options` like any causal LM.

Content mode raises the gold option's likelihood alone; this mode also lowers the others',
the listwise objective of rerankers. An example is two rows, each a prompt followed by every
option under a tree-shaped mask (mcqa.modes.choice.ChoiceCollator): one with the question,
one with the neutral prompt, so each option is scored as if it followed its prompt alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mcqa.model.choice_rows import ChoiceCollator, check_choice_task, cloze_messages, encode_choice
from mcqa.model.encoding import message_ids
from mcqa.model.lm import base_model, capabilities, check_head_is_last, layer_masks
from mcqa.modes.base import Mode, register_mode
from mcqa.modes.generate import GENERATE
from mcqa.prompting import neutral_messages
from mcqa.task import Example, Task


def encode_listwise(tokenizer, task: Task, examples: list[Example]) -> list[dict[str, Any]]:
    """A choice row (cloze prompt + every option, mcqa.model.choice_rows.encode_choice) plus the
    neutral prompt's ids; the options are tokenized once, as the options readout does."""
    rows = encode_choice(tokenizer, task, examples)
    for row, e in zip(rows, examples):
        neutral = neutral_messages(cloze_messages(task, e))
        row["neutral_ids"] = message_ids(tokenizer, neutral)
        row["length"] += len(row["neutral_ids"]) + sum(row["option_lengths"])
    return rows


@dataclass
class ListwiseCollator:
    """The choice rows of B examples' questions, then of their neutral prompts (the same options
    after the neutral prompt), as trees or unrolled (mcqa.model.choice_rows); `targets` says which
    logit predicts which option token of which (prompt, option) slot."""

    pad_token_id: int
    prefix: list[int] | None = None  # unused: a row shares its prompt among its options already
    trees: bool = True

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        options = [f["input_ids"][f["prompt_length"] :] for f in features]
        neutral = [
            {**f, "input_ids": f["neutral_ids"] + o, "prompt_length": len(f["neutral_ids"])}
            for f, o in zip(features, options)
        ]
        both = list(features) + neutral
        batch, spans = ChoiceCollator(self.pad_token_id, trees=self.trees).build(both)
        k = batch.pop("option_ends").shape[1]
        rows, pos, tok, slot = [], [], [], []
        for i, (_f, out) in enumerate(zip(both, spans)):
            for j, s in enumerate(out):
                # The prompt's last position predicts the option's first token (a branch sees only the prompt).
                rows += [s.row] * s.length
                pos += [s.prompt_end] + list(range(s.start, s.start + s.length - 1))
                tok += batch["input_ids"][s.row, s.start : s.start + s.length].tolist()
                slot += [i * k + j] * s.length
        batch["targets"] = torch.tensor([rows, pos, tok, slot], dtype=torch.long)
        batch["n_options"] = torch.tensor(k)
        batch["n_examples"] = torch.tensor(len(both))
        if "labels" in batch:  # renamed: Trainer counts "labels" as shifted next-token targets
            batch["choice_labels"] = batch.pop("labels")[: len(features)]
        return batch


def option_pmi(logits: torch.Tensor, targets: torch.Tensor, n_rows: int, n_options: int) -> torch.Tensor:
    """(B, K) PMI per option from the logits at the `targets` positions (one per option token,
    in `targets` order) of 2B examples' rows: summed option log-likelihood after the question
    minus after the neutral prompt; -inf where an example has fewer options."""
    _, _, tok, slot = targets
    lp = torch.log_softmax(logits.float(), dim=-1).gather(1, tok[:, None]).squeeze(1)
    sums = torch.zeros(n_rows * n_options, dtype=lp.dtype, device=lp.device).index_add_(0, slot, lp)
    seen = torch.zeros(n_rows * n_options, dtype=torch.bool, device=lp.device).index_fill_(0, slot, True)
    sums, seen = sums.view(n_rows, n_options), seen.view(n_rows, n_options)
    b = n_rows // 2
    return (sums[:b] - sums[b:]).masked_fill(~seen[:b], float("-inf"))


def listwise_loss(model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-entropy of the softmax over each example's option PMIs; the per-batch mean (Trainer
    divides it by the accumulation steps). The model runs its own forward (through DDP, FSDP and
    PEFT, and whatever it does to logits after its head), but its LM head sees only the
    positions that predict an option token, not every position of every row (prompts and
    padding too): on recipe_mpr, 7% less peak memory with a 135M model (5.56 -> 5.13 GB). A
    model that reshapes its logits as (rows, positions) after the head fails loudly."""
    base = base_model(model)
    kwargs = {}
    if "attention_mask" in inputs:  # tree rows; unrolled rows need no mask (mcqa.model.choice_rows)
        pos = inputs["position_ids"]
        kwargs = {
            "attention_mask": layer_masks(
                capabilities(base), inputs["attention_mask"], pos, pos, next(model.parameters()).dtype
            ),
            "position_ids": pos,
        }
    rows, pos, _, _ = inputs["targets"]
    hook = base.get_output_embeddings().register_forward_pre_hook(lambda _head, args: (args[0][rows, pos], *args[1:]))
    try:
        logits = model(input_ids=inputs["input_ids"], **kwargs).logits
    finally:
        hook.remove()
    scores = option_pmi(logits, inputs["targets"], int(inputs["n_examples"]), int(inputs["n_options"]))
    return torch.nn.functional.cross_entropy(scores, inputs["choice_labels"]), {"logits": scores}


def build_listwise(causal_lm, tokenizer, task: Task):
    check_choice_task(task)
    check_head_is_last(
        causal_lm
    )  # the options readout that validates and reads the run must be able to read this model
    return causal_lm


LISTWISE = register_mode(
    Mode(
        name="listwise",
        description="multiple choice, listwise over option likelihoods: softmax over each option's PMI (its text's "
        "likelihood after the question minus after an empty one); LoRA on the causal LM; read out by options",
        encode=encode_listwise,
        columns=("prompt_length", "option_lengths", "choice_label", "neutral_ids"),
        build=build_listwise,
        peft_kwargs=GENERATE.peft_kwargs,
        loss=None,
        compute=listwise_loss,
        model_takes_prefix=True,
        eval_readout="options",  # rule pmi: the score trained
        default_readout="options",
        check=check_choice_task,
        collator=ListwiseCollator,
        shares="options",
    )
)
