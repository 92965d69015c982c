"""LoRA fine-tuning on transformers.Trainer + PEFT, generative or with classification heads.

Trainer brings gradient accumulation, schedules, checkpointing, logging, resume and
multi-process launch (torchrun / accelerate); mcqa adds what it lacks:
- the loss on target tokens only, with vocabulary-wide logits only where the loss is
  (mcqa.encoding), and batches grouped by length;
- validation through the real scorer every epoch (accuracy, macro-F1, joint match, parse
  failures), which also picks the best epoch and drives early stopping;
- a run folder that is complete only when run.json exists (written last, atomically).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

from mcqa.config import TrainConfig, dump_config
from mcqa.console import console
from mcqa.encoding import LeftPadCollator, encode_generative, encode_head, end_of_turn, prefix_cache, shared_prefix, target_loss
from mcqa.errors import McqaError
from mcqa.examples import load_split, resolve_protocol
from mcqa.heads import HEADS_MODULE, build_head_model
from mcqa.inference import generate_outputs, head_outputs
from mcqa.io import atomic_write_text, write_json
from mcqa.models import load_causal_lm, load_tokenizer
from mcqa.prompting import serialize_target
from mcqa.registry import get_task
from mcqa.report import write_run
from mcqa.runs import RUN_MARKER, _complete_checkpoint, load_run, open_run  # noqa: F401 (load_run: re-exported for callers of the old home)
from mcqa.runs import is_main as _is_main
from mcqa.runs import torch_dtype as _dtype
from mcqa.scoring import compute_metrics, make_records
from mcqa.task import Example, Task

VAL_RESAMPLES = 200


def flat_metrics(task: Task, m: dict[str, Any], prefix: str = "eval_") -> dict[str, float]:
    """The scorer's metrics as the flat names Trainer logs and `best_metric` chooses from."""
    out = {f"{prefix}joint": m["joint"]["accuracy"], f"{prefix}parse_failure_rate": m["parse"]["failure_rate"]}
    for f, fm in m["fields"].items():
        out[f"{prefix}{f}_accuracy"] = fm["accuracy"]
        if "macro_f1" in fm:
            out[f"{prefix}{f}_macro_f1"] = fm["macro_f1"]
    return out


def predict(model, tokenizer, task: Task, mode: str, examples: list[Example], batch_size: int, max_new_tokens: int) -> list[dict]:
    if mode == "head":
        return head_outputs(model, tokenizer, task, examples, batch_size)
    return generate_outputs(model, tokenizer, task, examples, max_new_tokens, batch_size)


def score_outputs(task: Task, examples: list[Example], outputs: list[dict], resamples: int) -> tuple[list[dict], dict]:
    records = make_records(task, examples, {o["id"]: o for o in outputs})
    return records, compute_metrics(task, records, resamples=resamples)


class McqaTrainer(Trainer):
    """Trainer whose evaluation is the mcqa scorer on the validation split, and which encodes a
    batch's shared prompt prefix once (its KV cache is reused by every row)."""

    def __init__(self, *args, mcqa_eval: dict[str, Any] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mcqa_eval = mcqa_eval or {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "prefix_ids" not in inputs or self.mcqa_eval.get("mode") == "head":  # a head model takes prefix_ids itself
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        prefix = inputs.pop("prefix_ids")
        labels = inputs.pop("labels")
        cache = prefix_cache(model, prefix, inputs["input_ids"].shape[0])
        outputs = model(**inputs, past_key_values=cache, use_cache=True)
        loss = target_loss(outputs, labels, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        e = self.mcqa_eval
        outputs = predict(self.model, e["tokenizer"], e["task"], e["mode"], e["examples"], e["batch_size"], e["max_new_tokens"])
        self.model.train()
        _, m = score_outputs(e["task"], e["examples"], outputs, VAL_RESAMPLES)
        metrics = flat_metrics(e["task"], m, prefix=f"{metric_key_prefix}_")
        metrics["epoch"] = self.state.epoch
        self.log(metrics)
        if self.is_world_process_zero():
            with open(e["log"], "a", encoding="utf-8") as f:
                f.write(json.dumps({"epoch": self.state.epoch, "step": self.state.global_step, **metrics}) + "\n")
            console.print("validation: " + ", ".join(f"{k[len(metric_key_prefix) + 1:]} {v:.3f}" for k, v in metrics.items() if k != "epoch"))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class JsonlLog(TrainerCallback):
    """Every Trainer log line (loss, lr, grad norm, validation) appended to train_log.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def prepare_tokenizer(config: TrainConfig):
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(config: TrainConfig, task: Task, tokenizer):
    """The base model with fresh LoRA adapters (and heads in head mode)."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(config.seed)  # LoRA's random init must not depend on what the process did before
    kwargs: dict[str, Any] = {}
    if config.qlora:
        kwargs["quantization_config"] = qlora_config(config)
    base = load_causal_lm(config.model, dtype=_dtype(config.dtype), trust_remote_code=config.trust_remote_code, **kwargs)
    if config.qlora:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.enable_input_require_grads()
    lora = dict(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout, target_modules=config.lora.target_modules)
    if config.mode == "head":
        model = build_head_model(base, tokenizer, task)
        return get_peft_model(model, LoraConfig(**lora, modules_to_save=[f"{HEADS_MODULE}.{f}" for f in task.fields]))
    return get_peft_model(base, LoraConfig(**lora, task_type="CAUSAL_LM"))


def qlora_config(config: TrainConfig):
    if not torch.cuda.is_available():
        raise McqaError("qlora=true needs a CUDA GPU and bitsandbytes; this machine has no CUDA device, so drop qlora=true")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise McqaError("qlora=true needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)


def _sample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return examples
    return sorted(random.Random(seed).sample(examples, n), key=lambda e: e.id)


def train(config: TrainConfig | None, resume: str | Path | None = None, trust_remote_code: bool = False) -> Path:
    """Train, keep the best epoch, score it on the test split; return the run folder.
    `trust_remote_code` is the user's own flag: a resumed run's config cannot turn it on."""
    run_dir, config = open_run(config, resume, trust_remote_code)  # checked and locked before any model loads
    task = get_task(config.task)
    protocol = resolve_protocol(task, config.protocol)
    started = time.time()
    tokenizer = prepare_tokenizer(config)  # a model that cannot be found fails before any folder is made
    if _is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(config.model_copy(update={"protocol": protocol, "output_dir": str(run_dir)})))
        write_json(run_dir / "schema.json", task.output.model_json_schema())

    if _is_main():
        tokenizer.save_pretrained(run_dir / "tokenizer")  # includes the chat template used
    train_ex = _sample(load_split(task, "train", protocol), config.max_train_examples, config.seed)
    # A seeded sample, not the first N: split files may be ordered by class.
    val_ex = _sample(load_split(task, "validation", protocol), config.max_eval_examples, config.seed)
    eot = end_of_turn(tokenizer)
    if config.mode == "head":
        rows = encode_head(tokenizer, task, train_ex)
    else:
        rows = encode_generative(tokenizer, task, train_ex, eot)
    kept = [r for r in rows if r["length"] <= config.max_length]
    if len(kept) < len(rows):
        console.print(f"[yellow]dropped {len(rows) - len(kept)} of {len(rows)} training examples longer than max_length={config.max_length}[/]")
    if not kept:
        raise McqaError(f"every training example is longer than max_length={config.max_length}; raise it")
    longest_target = max(len(tokenizer(serialize_target(task.output, e.target) + eot, add_special_tokens=False)["input_ids"]) for e in train_ex)
    max_new = config.eval_max_new_tokens or longest_target + 16

    from datasets import Dataset

    train_ds = Dataset.from_list([{k: r[k] for k in ("input_ids", "labels" if config.mode == "generate" else "field_labels", "length")} for r in kept])
    model = build_model(config, task, tokenizer)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if config.batch_size % (config.micro_batch_size * world):
        raise McqaError(f"batch_size {config.batch_size} is not divisible by micro_batch_size {config.micro_batch_size} x {world} processes")
    greater = config.best_metric != "parse_failure_rate"
    # The prompt prefix every example shares is encoded once per batch. Not under DDP, where a
    # second forward call per step would confuse the gradient reducer.
    prefix = shared_prefix(kept) if config.share_prefix and world == 1 else None
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.batch_size // (config.micro_batch_size * world),
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=config.best_metric,
        greater_is_better=greater,
        logging_steps=config.logging_steps,
        report_to=[],
        seed=config.seed,
        data_seed=config.seed,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        remove_unused_columns=False,
        label_names=["labels"],
        bf16=config.dtype == "bfloat16" and torch.cuda.is_available(),
        ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        save_only_model=False,
    )
    callbacks = [JsonlLog(run_dir / "train_log.jsonl")]
    if config.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
    trainer = McqaTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=train_ds.select(range(1)),  # Trainer insists on one; evaluation runs the scorer instead
        data_collator=LeftPadCollator(tokenizer.pad_token_id, prefix=prefix),
        compute_loss_func=target_loss if config.mode == "generate" else None,
        callbacks=callbacks,
        mcqa_eval={"task": task, "tokenizer": tokenizer, "mode": config.mode, "examples": val_ex,
                   "batch_size": config.eval_batch_size, "max_new_tokens": max_new, "log": run_dir / "val_metrics.jsonl"},
    )
    ckpt = _complete_checkpoint(run_dir / "checkpoints") if resume is not None else None
    if resume is not None:
        console.print(f"resuming from {ckpt}" if ckpt else "no complete checkpoint yet: starting from the beginning")
    trainer.train(resume_from_checkpoint=ckpt)
    if not _is_main():
        return run_dir
    # The best epoch's weights are loaded now (load_best_model_at_end); save them as the run's adapter.
    tmp = run_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    shutil.rmtree(run_dir / "adapter", ignore_errors=True)
    os.replace(tmp, run_dir / "adapter")
    train_seconds = time.time() - started

    test_ex = load_split(task, "test", protocol)
    predict_started = time.time()
    outputs = predict(trainer.model, tokenizer, task, config.mode, test_ex, config.eval_batch_size, max_new)
    predict_seconds = time.time() - predict_started
    records, metrics = score_outputs(task, test_ex, outputs, 1000)
    metrics["run"] = {"task": task.name, "split": "test", "protocol": protocol, "model": config.model, "mode": config.mode, "run": str(run_dir)}
    write_run(run_dir / "test", records, metrics)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    summary = {
        "task": task.name, "protocol": protocol, "model": config.model, "mode": config.mode,
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_metric": config.best_metric,
        "best_value": trainer.state.best_metric, "epochs_run": trainer.state.epoch,
        "train_examples": len(kept), "trainable_parameters": trainable, "train_seconds": round(train_seconds, 1),
        "test_examples": len(test_ex), "test_examples_per_second": round(len(test_ex) / predict_seconds, 2),
        "test": flat_metrics(task, metrics, prefix=""),
    }
    write_json(run_dir / RUN_MARKER, summary)
    return run_dir
