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

from mcqa.errors import McqaError
from mcqa.modes.base import Mode, register_mode
from mcqa.modes.choice import ChoiceCollator, additive_mask, check_choice_task, cloze_messages, encode_choice
from mcqa.modes.generate import GENERATE
from mcqa.prompting import neutral_messages, render_prompt
from mcqa.readouts.decoding import check_head_is_last
from mcqa.task import Example, Task


def encode_listwise(tokenizer, task: Task, examples: list[Example]) -> list[dict[str, Any]]:
    """A choice row (cloze prompt + every option, mcqa.modes.choice.encode_choice) plus the
    neutral prompt's ids; the options are tokenized once, as the options readout does."""
    rows = encode_choice(tokenizer, task, examples)
    for row, e in zip(rows, examples):
        neutral = neutral_messages(cloze_messages(task, e))
        row["neutral_ids"] = tokenizer(render_prompt(tokenizer, neutral), add_special_tokens=False)["input_ids"]
        row["length"] += len(row["neutral_ids"]) + sum(row["option_lengths"])
    return rows


@dataclass
class ListwiseCollator:
    """2B rows for B examples: the question rows, then the neutral rows (the same options after
    the neutral prompt); `targets` says which logit predicts which option token."""

    pad_token_id: int
    prefix: list[int] | None = None  # unused: a row shares its prompt among its options already

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        options = [f["input_ids"][f["prompt_length"]:] for f in features]
        neutral = [{**f, "input_ids": f["neutral_ids"] + o, "prompt_length": len(f["neutral_ids"])}
                   for f, o in zip(features, options)]
        both = list(features) + neutral
        batch = ChoiceCollator(self.pad_token_id)(both)
        k = batch.pop("option_ends").shape[1]
        rows, pos, tok, slot = [], [], [], []
        for i, f in enumerate(both):
            p, start = f["prompt_length"], f["prompt_length"]
            for j, m in enumerate(f["option_lengths"]):
                # The prompt's last position predicts every option's first token (each branch sees only the prompt).
                rows += [i] * m
                pos += [p - 1] + list(range(start, start + m - 1))
                tok += f["input_ids"][start:start + m]
                slot += [i * k + j] * m
                start += m
        batch["targets"] = torch.tensor([rows, pos, tok, slot], dtype=torch.long)
        batch["n_options"] = torch.tensor(k)
        batch["attention_mask"] = batch["attention_mask"][:, None]  # (2B, 1, W, W): one mask for every head
        if "labels" in batch:  # renamed: Trainer counts "labels" as shifted next-token targets
            batch["choice_labels"] = batch.pop("labels")[:len(features)]
        return batch


def option_pmi(logits: torch.Tensor, targets: torch.Tensor, n_rows: int, n_options: int) -> torch.Tensor:
    """(B, K) PMI per option from the logits at the `targets` positions (one row per option
    token, in `targets` order) of 2B rows: summed option log-likelihood after the question
    minus after the neutral prompt; -inf where an example has fewer options."""
    _, _, tok, slot = targets
    lp = torch.log_softmax(logits.float(), dim=-1).gather(1, tok[:, None]).squeeze(1)
    sums = torch.zeros(n_rows * n_options, dtype=lp.dtype, device=lp.device).index_add_(0, slot, lp)
    seen = torch.zeros(n_rows * n_options, dtype=torch.bool, device=lp.device).index_fill_(0, slot, True)
    sums, seen = sums.view(n_rows, n_options), seen.view(n_rows, n_options)
    b = n_rows // 2
    return (sums[:b] - sums[b:]).masked_fill(~seen[:b], float("-inf"))


def output_head(model):
    """The LM head inside a Trainer's model (DDP's .module, PEFT's base model)."""
    model = getattr(model, "module", model)
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    return model.get_output_embeddings()


def listwise_loss(model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-entropy of the softmax over each example's option PMIs; the per-batch mean (Trainer
    divides it by the accumulation steps). The model runs its own forward (through DDP, FSDP and
    PEFT, and whatever it does to logits after its head, such as Gemma's softcapping), but its LM
    head sees only the positions that predict an option token, not every position of every row
    (prompts and padding too): on recipe_mpr with smollm2-135m, 7% less peak memory (bench/RESULTS.md,
    session 10). A model that reshapes its logits as (rows, positions) after the head fails loudly."""
    mask = inputs["attention_mask"]
    config = getattr(getattr(model, "module", model), "config", None)
    if getattr(config, "_attn_implementation", "sdpa") == "eager":  # eager adds a float mask; sdpa takes booleans
        mask = additive_mask(mask, next(model.parameters()).dtype)
    rows, pos, _, _ = inputs["targets"]
    hook = output_head(model).register_forward_pre_hook(lambda _head, args: (args[0][rows, pos], *args[1:]))
    try:
        logits = model(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=inputs["position_ids"]).logits
    finally:
        hook.remove()
    scores = option_pmi(logits, inputs["targets"], inputs["input_ids"].shape[0], int(inputs["n_options"]))
    return torch.nn.functional.cross_entropy(scores, inputs["choice_labels"]), {"logits": scores}


def build_listwise(causal_lm, tokenizer, task: Task):
    check_choice_task(task)
    impl = getattr(causal_lm.config, "_attn_implementation", "eager")
    if impl not in ("sdpa", "eager"):
        raise McqaError(f"listwise mode builds its own attention masks, which needs attention 'sdpa' or 'eager' (the model uses '{impl}')")
    check_head_is_last(causal_lm)  # the options readout that validates and reads the run must be able to read this model
    return causal_lm


LISTWISE = register_mode(Mode(
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
))
