"""The Trainer callbacks of a training run: mcqa's own progress lines in place of Trainer's
tqdm bar (mcqa.train.progress formats them), and every log line appended to train_log.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from mcqa.train.progress import fit_line, say, step_line


class TrainProgress(TrainerCallback):
    """mcqa's own progress lines (mcqa.train.progress.step_line) in place of Trainer's tqdm bar and its
    printed dicts of strings; validation has its table (McqaTrainer.evaluate)."""

    def __init__(self):
        self.started = time.time()
        self.done_before = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.done_before = time.time(), state.global_step  # a resumed run starts past 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            say(
                step_line(
                    state.global_step,
                    state.max_steps,
                    state.epoch or 0.0,
                    logs,
                    time.time() - self.started,
                    self.done_before,
                )
            )
        elif "train_runtime" in logs:
            say(fit_line(state.global_step, logs["train_runtime"], logs.get("train_loss")))


class JsonlLog(TrainerCallback):
    """Every Trainer log line (loss, lr, grad norm, validation) appended to train_log.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")
