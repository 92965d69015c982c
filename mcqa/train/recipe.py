"""LoRA fine-tuning on transformers.Trainer + PEFT, in any registered training mode
(mcqa.modes: generative, classification heads, ...), as a recipe in named stages:
set-up (run folder, config, encoded examples), fit (model, Trainer, training with validation
every epoch), save (the best epoch's adapter) and test (the test split scored into the run).

Trainer brings gradient accumulation, schedules, checkpointing, logging, resume and
multi-process launch (torchrun / accelerate); mcqa adds what it lacks:
- the loss on target tokens only, with vocabulary-wide logits only where the loss is
  (mcqa.model.encoding, mcqa.modes.generate), and batches grouped by length;
- validation through the real scorer every epoch (accuracy, macro-F1, joint match, parse
  failures) read out by the mode's own readout, which also picks the best epoch and drives
  early stopping;
- a run folder that is complete only when run.json exists (written last, atomically; mcqa.train.runs).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import EarlyStoppingCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from mcqa.console import console, quiet_foreign_log_deprecations
from mcqa.errors import McqaError
from mcqa.eval.html import write_training_report
from mcqa.eval.scoring import score
from mcqa.examples import load_split, resolve_protocol, sample_examples
from mcqa.io import atomic_write_text, write_json
from mcqa.model import load_model_config, load_tokenizer
from mcqa.model.lm import Capabilities, capabilities
from mcqa.modes import Mode, get_mode
from mcqa.registry import get_task
from mcqa.schema import task_schema
from mcqa.splits import other_orders
from mcqa.task import Example, Task
from mcqa.train.callbacks import JsonlLog, TrainProgress
from mcqa.train.config import TrainConfig, dump_config
from mcqa.train.folder import RUN_MARKER, is_main
from mcqa.train.lora import adapter_line, build_model
from mcqa.train.progress import header, optimizer_steps, say, show
from mcqa.train.runs import complete_checkpoint
from mcqa.train.start import claim_run_dir, open_run, removed_if_refused
from mcqa.train.trainer import McqaTrainer, collator_for, flat_metrics, read_out


def permuted_copies(task: Task, examples: list[Example], k: int, seed: int) -> list[Example]:
    """Each training example again with k other option orders (letter bias survives LoRA unless
    the letters stop predicting the answer; arXiv 2406.01026)."""
    if k == 0:
        return []
    if task.reorder is None:  # raised even for no examples: setup checks this before any folder is made
        raise McqaError(
            f"permutations={k} needs a multiple-choice task that can reorder its options (Task.reorder); "
            f"task '{task.name}' cannot"
        )
    return [
        replace(task.reorder(e, order), id=f"{e.id}#order{j + 1}")
        for e in examples
        for j, order in enumerate(other_orders(seed, e.id, len(task.options(e)), k))
    ]


@dataclass
class Setup:
    """What the set-up stage settled, for the stages after it."""

    config: TrainConfig
    run_dir: Path
    task: Task
    mode: Mode
    protocol: str
    tokenizer: Any
    rows: list[dict[str, Any]]  # encoded training examples (within max_length)
    val: list[Example]
    resume: bool
    started: float
    caps: Capabilities | None  # what the model's layers allow (mcqa.model.lm), from its config; None until it loads

    def sharing(self) -> tuple[bool, str]:
        """Whether a batch's rows share their prompt prefix (or a question its options), and a
        line saying so for the header."""
        if self.caps is None:
            return False, "decided once the model is downloaded"
        if self.mode.shares == "options":
            if self.caps.trees:
                return True, "each question encoded once for its options (tree-masked rows)"
            return False, f"no tree rows: one row per option, the model has {'/'.join(self.caps.stateful)} layers"
        if not self.config.share_prefix:
            return False, "prefix shared: no (share_prefix=false)"
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return False, "prefix shared: no (several processes)"
        ok, why = self.caps.prefix_shared(max(r["length"] for r in self.rows))
        return ok, "prefix shared: yes" if ok else f"prefix shared: no, {why}"


def setup(config: TrainConfig | None, resume: str | Path | None, trust_remote_code: bool = False) -> Setup:
    """The run folder (the one to resume, locked before any model loads; a new one, made once
    the training examples are encoded, so a refusal up to then leaves nothing behind), its
    config, schema and tokenizer, and the encoded training and validation examples.
    `trust_remote_code` is the user's own flag: a resumed run's config cannot turn it on."""
    if config is not None:  # a mode or setting the task cannot serve fails before any folder is made
        get_mode(config.mode).check(get_task(config.task))
        if config.permutations and get_task(config.task).reorder is None:
            permuted_copies(get_task(config.task), [], config.permutations, config.seed)
    run_dir, config = open_run(config, resume, trust_remote_code)
    task, mode = get_task(config.task), get_mode(config.mode)
    protocol = resolve_protocol(task, config.protocol)
    started = time.time()
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    model_config = load_model_config(config.model, trust_remote_code=config.trust_remote_code)
    caps = capabilities(model_config) if model_config is not None else None  # None: a hub id not downloaded yet
    train_ex = sample_examples(load_split(task, "train", protocol), config.max_train_examples, config.seed)
    # A seeded sample, not the first N: split files may be ordered by class.
    val_ex = sample_examples(load_split(task, "validation", protocol), config.max_eval_examples, config.seed)
    train_ex = train_ex + permuted_copies(task, train_ex, config.permutations, config.seed)
    rows = mode.encode(tokenizer, task, train_ex)
    kept = [r for r in rows if r["length"] <= config.max_length]
    if not kept:
        raise McqaError(f"every training example is longer than max_length={config.max_length}; raise it")
    if len(kept) < len(rows):
        console.print(
            f"[yellow]dropped {len(rows) - len(kept)} of {len(rows)} "
            f"training examples longer than max_length={config.max_length}[/]"
        )
    claim_run_dir(run_dir, fresh=resume is None)
    if is_main():
        atomic_write_text(
            run_dir / "config.yaml",
            dump_config(config.model_copy(update={"protocol": protocol, "output_dir": str(run_dir)})),
        )
        write_json(run_dir / "schema.json", task_schema(task))
        tokenizer.save_pretrained(run_dir / "tokenizer")  # includes the chat template used
    return Setup(config, run_dir, task, mode, protocol, tokenizer, kept, val_ex, resume is not None, started, caps)


def fit(s: Setup) -> McqaTrainer:
    """Train with validation every epoch; the best epoch's weights are loaded at the end."""
    config, world = s.config, int(os.environ.get("WORLD_SIZE", "1"))
    if config.batch_size % (config.micro_batch_size * world):
        raise McqaError(
            f"batch_size {config.batch_size} is not divisible by "
            f"micro_batch_size {config.micro_batch_size} x {world} processes"
        )
    train_ds = Dataset.from_list([{k: r[k] for k in ("input_ids", *s.mode.columns, "length")} for r in s.rows])
    model = build_model(config, s.task, s.tokenizer)
    if s.caps is None:
        s.caps = capabilities(model)
    if is_main():
        say(adapter_line(model))
    # The prompt prefix every example shares is encoded once per batch where the model's layers
    # allow it exactly. Not under DDP, where a second forward call per step would confuse the
    # gradient reducer.
    collator = collator_for(
        s.mode, s.caps, s.rows, s.tokenizer.pad_token_id, share_prefix=config.share_prefix and world == 1
    )
    args = TrainingArguments(
        output_dir=str(s.run_dir / "checkpoints"),
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.batch_size // (config.micro_batch_size * world),
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=config.best_metric,
        greater_is_better=config.best_metric != "parse_failure_rate",
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
        disable_tqdm=True,  # TrainProgress prints the progress instead
    )
    callbacks = [JsonlLog(s.run_dir / "train_log.jsonl")]
    if config.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
    trainer = McqaTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=train_ds.select(range(1)),  # Trainer insists on one; evaluation runs the scorer instead
        data_collator=collator,
        compute_loss_func=s.mode.loss,
        callbacks=callbacks,
        mcqa_eval={
            "task": s.task,
            "tokenizer": s.tokenizer,
            "mode": s.mode,
            "examples": s.val,
            "config": config,
            "log": s.run_dir / "val_metrics.jsonl",
        },
    )
    trainer.remove_callback(PrinterCallback)  # its raw dicts of strings; TrainProgress says it readably
    trainer.add_callback(TrainProgress())
    ckpt = complete_checkpoint(s.run_dir / "checkpoints") if s.resume else None
    if s.resume:
        console.print(f"resuming from {ckpt}" if ckpt else "no complete checkpoint yet: starting from the beginning")
    trainer.train(resume_from_checkpoint=ckpt)
    return trainer


def save(s: Setup, trainer: McqaTrainer) -> None:
    """The best epoch's adapter (and whatever the mode has PEFT save beside it), atomically."""
    tmp = s.run_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    shutil.rmtree(s.run_dir / "adapter", ignore_errors=True)
    os.replace(tmp, s.run_dir / "adapter")


def score_test(s: Setup, trainer: McqaTrainer) -> dict[str, Any]:
    """Score the saved model on the test split into RUN/test/; the summary becomes run.json."""
    train_seconds = time.time() - s.started
    all_test = load_split(s.task, "test", s.protocol)
    test_ex = sample_examples(all_test, s.config.max_test_examples, s.config.seed)
    if len(test_ex) < len(all_test):
        console.print(
            f"testing on a seeded sample of {len(test_ex)} of {len(all_test)} test examples "
            f"(max_test_examples={s.config.max_test_examples}, seed {s.config.seed})",
            soft_wrap=True,
        )
    predict_started = time.time()
    outputs = read_out(trainer.model, s.tokenizer, s.task, s.mode, test_ex, s.config)
    predict_seconds = time.time() - predict_started
    config = s.config
    run = {
        "task": s.task.name,
        "split": "test",
        "protocol": s.protocol,
        "model": config.model,
        "mode": config.mode,
        "run": str(s.run_dir),
        **(
            {"sample": f"a seeded sample of {len(test_ex)} of {len(all_test)} examples"}
            if len(test_ex) < len(all_test)
            else {}
        ),
    }
    metrics = score(s.task, test_ex, outputs, run, folder=s.run_dir / "test").metrics
    # The kept model's outputs on the whole validation split: what a stack of this run with
    # others is fitted on (mcqa.compare.stack), so the test split never reaches that fit.
    val_ex = load_split(s.task, "validation", s.protocol)
    if val_ex:
        say(f"reading out the validation split ({len(val_ex)} examples) for stacking")
        val_run = {**run, "split": "validation"}
        val_run.pop("sample", None)
        score(
            s.task,
            val_ex,
            read_out(trainer.model, s.tokenizer, s.task, s.mode, val_ex, s.config),
            val_run,
            folder=s.run_dir / "validation",
        )
    return {
        "task": s.task.name,
        "protocol": s.protocol,
        "model": config.model,
        "mode": config.mode,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": config.best_metric,
        "best_value": trainer.state.best_metric,
        "epochs_run": trainer.state.epoch,
        "train_examples": len(s.rows),
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "train_seconds": round(train_seconds, 1),
        "test_examples": len(test_ex),
        "test_split_examples": len(all_test),
        "test_examples_per_second": round(len(test_ex) / predict_seconds, 2),
        "test": flat_metrics(s.task, metrics, prefix=""),
    }


def show_header(s: Setup) -> None:
    """What is about to happen, before the model loads: the first thing a user sees."""
    c, world = s.config, int(os.environ.get("WORLD_SIZE", "1"))
    n_test = len(load_split(s.task, "test", s.protocol))
    test = (
        f"{min(n_test, c.max_test_examples)} of {n_test}"
        if c.max_test_examples and c.max_test_examples < n_test
        else str(n_test)
    )
    sizes = {"train": str(len(s.rows)), "validation": str(len(s.val)), "test": test}
    steps = c.max_steps or optimizer_steps(len(s.rows), c.micro_batch_size, c.batch_size, c.epochs, world)
    show(
        header(
            s.task.name,
            s.protocol,
            c.model,
            c.mode,
            sizes,
            steps,
            c.batch_size,
            c.micro_batch_size,
            c.epochs,
            s.run_dir,
            s.resume,
            c.max_steps,
            layers=s.caps.describe() if s.caps else "",
            sharing=s.sharing()[1],
        )
    )


def train(
    config: TrainConfig | None,
    resume: str | Path | None = None,
    trust_remote_code: bool = False,
    note: str | None = None,
) -> Path:
    """Train, keep the best epoch, score it on the test split; return the run folder.
    `trust_remote_code` is the user's own flag: a run folder's config cannot turn it on.
    `note` (the settings taken from the task's defaults) is said once the run is set up."""
    quiet_foreign_log_deprecations()  # transformers is imported by now, its log handler in place
    s = setup(config, resume, trust_remote_code)
    with removed_if_refused(s.run_dir, fresh=not s.resume):  # refused before the first checkpoint: no folder left
        if is_main():
            if note:
                say(note)
            show_header(s)
        trainer = fit(s)
    if not is_main():
        return s.run_dir
    save(s, trainer)
    write_json(s.run_dir / RUN_MARKER, score_test(s, trainer))
    write_training_report(s.run_dir)  # the test report again, with the loss and validation curves
    return s.run_dir
