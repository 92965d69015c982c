"""Run folders of `mcqa train`: their default names, the completion marker (run.json, written
last, atomically), the newest complete checkpoint to resume from, and loading a finished run
for read-out. Reading out a run needs only this module, never the training recipe."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
from peft import PeftModel

from mcqa.config import TrainConfig, load_config
from mcqa.errors import McqaError
from mcqa.model import load_causal_lm, load_tokenizer
from mcqa.modes import get_mode
from mcqa.registry import get_task

RUN_MARKER = "run.json"


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def new_run_dir(config: TrainConfig) -> Path:
    if config.output_dir:
        return Path(config.output_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Processes of one torchrun launch share a parent (the launcher), not a clock second.
        return Path("runs") / "train" / f"{config.task}-{config.mode}-{time.strftime('%Y%m%d')}-launch{os.getppid()}"
    return Path("runs") / "train" / f"{config.task}-{config.mode}-{time.strftime('%Y%m%d-%H%M%S')}"


def complete_checkpoint(ckpt_root: Path) -> str | None:
    """The newest checkpoint whose trainer_state.json (Trainer writes it last) exists; a
    checkpoint cut off mid-write by a kill is removed so Trainer never tries to load it."""
    if not ckpt_root.is_dir():
        return None
    ckpts = sorted(ckpt_root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    for c in reversed(ckpts):
        if (c / "trainer_state.json").is_file():
            return str(c)
        if is_main_process():
            shutil.rmtree(c, ignore_errors=True)
    return None


def load_run(run_dir: str | Path):
    """A finished run's model (base + adapter, heads restored), tokenizer, task and config."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_MARKER).is_file():
        raise McqaError(f"{run_dir}: not a finished training run (no {RUN_MARKER}); resume it with `mcqa train --resume {run_dir}`")
    config = load_config(run_dir / "config.yaml")
    task = get_task(config.task)
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    base = load_causal_lm(config.model, dtype=torch_dtype(config.dtype), trust_remote_code=config.trust_remote_code)
    model = get_mode(config.mode).build(base, tokenizer, task)
    model = PeftModel.from_pretrained(model, run_dir / "adapter")
    model.eval()
    return model, tokenizer, task, config
