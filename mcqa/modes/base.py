"""What a training mode is: one registered unit that owns everything that differs between
modes (how examples become training rows, which model LoRA wraps and which modules PEFT saves
beside the adapter, the loss, and the readouts used for validation and by default at predict
time). The recipe in mcqa.train.recipe never tests a mode's name; it asks the mode."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcqa.model.encoding import LeftPadCollator
from mcqa.names import Registry
from mcqa.task import Example, Task


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    # (tokenizer, task, examples) -> rows with "id", "input_ids", "length" and the `columns`
    encode: Callable[[Any, Task, list[Example]], list[dict[str, Any]]]
    columns: tuple[str, ...]  # the label columns of a training row, kept in the dataset
    # (causal LM, tokenizer, task) -> the model LoRA wraps (the LM itself, or one with heads)
    build: Callable[[Any, Any, Task], Any]
    # task -> LoraConfig arguments beyond r/alpha/dropout/targets (task_type, modules_to_save)
    peft_kwargs: Callable[[Task], dict[str, Any]]
    # Trainer's compute_loss_func; None when the model returns its own loss (or `compute` gives it)
    loss: Callable[..., Any] | None
    # the model encodes a batch's shared prefix itself (it takes prefix_ids), so the trainer
    # hands the batch over as is
    model_takes_prefix: bool
    eval_readout: str  # validation during training
    default_readout: str  # `mcqa predict|score --adapter RUN` without --readout
    check: Callable[[Task], None] = lambda task: None  # raise McqaError when the mode cannot serve the task
    # (pad token id, prefix=shared prompt prefix or None) -> the batch collator of training rows
    collator: Callable[..., Any] = LeftPadCollator
    # What the loss averages over, so a micro batch over the token budget (max_batch_tokens)
    # can run as row chunks with the same gradient: "rows", "target_tokens" (labels that are
    # not -100), or None when a batch's rows cannot be separated (it is then never split).
    loss_items: str | None = None
    # (model, batch) -> (loss, outputs): the mode runs the forward itself, for a loss the model's
    # outputs and `labels` alone cannot give (a per-batch mean; Trainer divides it by the
    # accumulation steps). None: Trainer's own forward and `loss`.
    compute: Callable[[Any, dict[str, Any]], tuple[Any, Any]] | None = None
    # What a batch's rows share: "prefix", the prompt prefix every example starts with (encoded
    # once when the model allows it exactly; the collator takes `prefix`), or "options", each
    # question shared by its options (the collator takes `trees`: one tree-masked row per
    # example, or a row per option; mcqa.model.choice_rows).
    shares: str = "prefix"


MODES: Registry[Mode] = Registry("training mode")


def register_mode(mode: Mode) -> Mode:
    return MODES.register(mode.name, mode)


def get_mode(name: str) -> Mode:
    return MODES.resolve(name)
