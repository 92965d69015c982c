"""The Trainer a run fits with: transformers.Trainer whose evaluation is mcqa's scorer on the
validation split (read out as the test pass reads out), whose loss is the mode's on the target
positions only, a batch's shared prompt prefix encoded once, and a micro batch over
max_batch_tokens run as row chunks with the whole batch's gradient."""

from __future__ import annotations

import json
from typing import Any

from transformers import Trainer

from mcqa.eval.records import Prediction
from mcqa.eval.scoring import score
from mcqa.model.encoding import chunk_share, row_chunks, shared_prefix
from mcqa.model.lm import Capabilities, cache_kwargs, prefix_cache
from mcqa.modes import Mode
from mcqa.readouts import get_readout, run_readout
from mcqa.task import Example, Task
from mcqa.train.config import TrainConfig
from mcqa.train.progress import show, validation_table

VAL_RESAMPLES = 200


def flat_metrics(task: Task, m: dict[str, Any], prefix: str = "eval_") -> dict[str, float]:
    """The scorer's metrics as the flat names Trainer logs and `best_metric` chooses from."""
    out = {f"{prefix}joint": m["joint"]["accuracy"], f"{prefix}parse_failure_rate": m["parse"]["failure_rate"]}
    for f, fm in m["fields"].items():
        out[f"{prefix}{f}_accuracy"] = fm["accuracy"]
        if "macro_f1" in fm:
            out[f"{prefix}{f}_macro_f1"] = fm["macro_f1"]
    return out


def read_out(
    model, tokenizer, task: Task, mode: Mode, examples: list[Example], config: TrainConfig
) -> list[Prediction]:
    """The mode's own readout (validation every epoch, and the test split at the end), with the
    run's batch size and answer-length limit where that readout takes them."""
    known = get_readout(mode.eval_readout).options.model_fields
    opts = {"batch_size": config.eval_batch_size, "max_new_tokens": config.eval_max_new_tokens}
    return run_readout(
        mode.eval_readout,
        model,
        tokenizer,
        task,
        examples,
        **{k: v for k, v in opts.items() if k in known and v is not None},
    )


def batch_loss(model, mode: Mode, inputs: dict[str, Any], num_items_in_batch=None) -> tuple[Any, Any]:
    """A collated batch's loss and outputs as training computes them: the mode's own forward,
    the model's own loss, or the mode's loss over a forward that starts from the batch's shared
    prefix, encoded once (McqaTrainer hands the middle case to Trainer, which adds its
    label-smoothing and accumulation bookkeeping)."""
    if mode.compute is not None:
        return mode.compute(model, inputs)
    inputs = dict(inputs)
    if "prefix_ids" not in inputs or mode.model_takes_prefix:
        labels = inputs.pop("labels") if mode.loss is not None else None
        outputs = model(**inputs)
        return (mode.loss(outputs, labels, num_items_in_batch) if mode.loss is not None else outputs["loss"]), outputs
    prefix = inputs.pop("prefix_ids")
    labels = inputs.pop("labels")
    cache = prefix_cache(model, prefix, inputs["input_ids"].shape[0])
    outputs = model(**inputs, **cache_kwargs(model, cache))
    return mode.loss(outputs, labels, num_items_in_batch), outputs


def collator_for(
    mode: Mode, caps: Capabilities, rows: list[dict[str, Any]], pad_token_id: int, share_prefix: bool = True
):
    """The mode's collator for these rows, sharing what the model's layers allow exactly: the
    prompt prefix every row starts with, or each question among its options (tree rows)."""
    if mode.shares == "options":
        return mode.collator(pad_token_id, prefix=None, trees=caps.trees)
    shared = share_prefix and caps.prefix_shared(max(r["length"] for r in rows))[0]
    return mode.collator(pad_token_id, prefix=shared_prefix(rows) if shared else None)


class McqaTrainer(Trainer):
    """Trainer whose evaluation is the mcqa scorer on the validation split, and which encodes a
    batch's shared prompt prefix once (its KV cache is reused by every row)."""

    def __init__(self, *args, mcqa_eval: dict[str, Any] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mcqa_eval = mcqa_eval or {}
        self.history: list[dict[str, float]] = []  # each epoch's validation scores, for the table

    share = 1.0  # the weight of the running chunk's loss (training_step)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """A micro batch over max_batch_tokens runs as row chunks, each forward and backward on
        its own, their losses weighted so that the gradient is the whole batch's."""
        mode = self.mcqa_eval["mode"]
        chunks = row_chunks(inputs, self.mcqa_eval["config"].max_batch_tokens) if mode.loss_items else [inputs]
        if len(chunks) == 1:
            return super().training_step(model, inputs, num_items_in_batch)
        total = None
        try:
            for chunk in chunks:
                self.share = chunk_share(mode.loss_items, chunk, inputs, num_items_in_batch)
                loss = super().training_step(model, chunk, num_items_in_batch)
                total = loss if total is None else total + loss
        finally:
            self.share = 1.0
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = self.mcqa_eval["mode"]
        if mode.compute is None and ("prefix_ids" not in inputs or mode.model_takes_prefix):
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        else:
            loss, outputs = batch_loss(model, mode, inputs, num_items_in_batch)
        if self.share != 1.0:
            loss = loss * self.share
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        e = self.mcqa_eval
        outputs = read_out(self.model, e["tokenizer"], e["task"], e["mode"], e["examples"], e["config"])
        self.model.train()
        m = score(e["task"], e["examples"], outputs, {"split": "validation"}, resamples=VAL_RESAMPLES).metrics
        metrics = flat_metrics(e["task"], m, prefix=f"{metric_key_prefix}_")
        metrics["epoch"] = self.state.epoch
        self.log(metrics)
        if self.is_world_process_zero():
            with open(e["log"], "a", encoding="utf-8") as f:
                f.write(json.dumps({"epoch": self.state.epoch, "step": self.state.global_step, **metrics}) + "\n")
            self.history.append(metrics)
            config = e["config"]
            show(
                validation_table(
                    self.history,
                    f"{metric_key_prefix}_",
                    config.best_metric,
                    config.best_metric != "parse_failure_rate",
                )
            )
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
