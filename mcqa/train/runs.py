"""Loading a finished run (base model + adapter, heads restored) and checking weight files and
checkpoints (a truncated safetensors file, an unsafe pickle, a checkpoint cut off by a kill).
Reading a run folder without loading anything is mcqa.train.folder."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import torch
from peft import PeftModel
from transformers.trainer_pt_utils import safe_globals  # the numpy types Trainer's rng_state.pth holds

from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.io import read_json
from mcqa.model import load_causal_lm, load_tokenizer, weight_shapes
from mcqa.model.loading import first_line
from mcqa.modes import get_mode
from mcqa.registry import get_task
from mcqa.train.folder import check_remote_code, is_main, read_config, read_summary


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_run(run_dir: str | Path, task: str | None = None, model: str | None = None, trust_remote_code: bool = False):
    """A finished run's model (base + adapter, heads restored), tokenizer, task and config.
    `task` and `model`, when given, must match the run's; both, and remote code, are checked
    from config.yaml before anything is loaded."""
    run_dir = Path(run_dir)
    read_summary(run_dir)  # finished, and run.json agrees with config.yaml
    config = read_config(run_dir)
    if task is not None and config.task != task:
        raise McqaError(f"{run_dir}: this run was trained on task '{config.task}', not '{task}'")
    if model is not None and model != config.model:
        raise McqaError(f"{run_dir}: this run's base model is '{config.model}', not '{model}'; drop --model")
    check_remote_code(config, run_dir, trust_remote_code)
    run_task = get_task(config.task)
    for need in ("tokenizer", "adapter/adapter_config.json"):
        if not (run_dir / need).exists():
            raise McqaError(f"{run_dir / need}: missing from the run folder; retrain or re-copy the whole run")
    adapter_config = read_json(run_dir / "adapter" / "adapter_config.json")
    if not isinstance(adapter_config, dict):
        raise McqaError(
            f"{run_dir / 'adapter' / 'adapter_config.json'}: expected a JSON object; retrain or re-copy the run"
        )
    problem = weights_problem(run_dir / "adapter")
    if problem:
        raise McqaError(f"{problem}; retrain or re-copy the run")
    tokenizer = load_tokenizer(run_dir / "tokenizer", trust_remote_code=False, damaged="re-copy the run")
    base = load_causal_lm(config.model, dtype=torch_dtype(config.dtype), trust_remote_code=config.trust_remote_code)
    net = get_mode(config.mode).build(base, tokenizer, run_task)
    try:
        net = PeftModel.from_pretrained(net, run_dir / "adapter")
    except Exception as e:  # a refused pickle, mismatched shapes, a bad config: one line naming the folder
        raise McqaError(
            f"{run_dir / 'adapter'}: could not load the adapter ({first_line(e)}); retrain or re-copy the run"
        ) from None
    net.eval()
    return net, tokenizer, run_task, config


# ---------------------------------------------------------------- checkpoints


# Trainer pickles its TrainingArguments beside each checkpoint for the record and never loads
# it on resume; every other .pt/.pth/.bin file there is loaded, with weights_only=True.
_TRAINING_ARGS = "training_args.bin"


def weights_problem(folder: Path, load_pickles: bool = True) -> str | None:
    """A damaged weight file in `folder` (a truncated safetensors file, a cut-off or unsafe
    torch pickle), named; None when every file reads. Without `load_pickles` (a base model,
    whose loader reads its pickles with weights_only itself) a pickle is only checked whole."""
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with f.open("rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n)) if 0 < n < 100_000_000 else None
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if f.stat().st_size < 8 + n + end:
                return f"{f}: truncated ({f.stat().st_size} bytes, its header says {8 + n + end})"
        except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError):
            return f"{f}: not a readable safetensors file"
    for f in sorted([*folder.glob("*.pt"), *folder.glob("*.pth"), *folder.glob("*.bin")]):
        if f.name == _TRAINING_ARGS:
            continue
        problem = (
            _pickle_problem(f)
            if load_pickles
            else None
            if zipfile.is_zipfile(f)
            else f"{f}: truncated or not a torch file"
        )
        if problem:
            return problem
    return None


def _pickle_problem(f: Path) -> str | None:
    if not zipfile.is_zipfile(f):
        return f"{f}: truncated or not a torch file"
    try:
        with safe_globals():
            torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        return f"{f}: refused, it holds objects that are not plain tensors ({first_line(e).split('. ')[0]})"
    except Exception as e:  # a damaged zip member, a short read
        return f"{f}: truncated or damaged ({first_line(e)})"
    return None


def checkpoint_problem(ckpt: Path) -> str | None:
    state = ckpt / "trainer_state.json"
    try:
        if not isinstance(read_json(state), dict):
            return f"{state}: not a JSON object"
    except McqaError as e:
        return str(e)
    return weights_problem(ckpt)


def complete_checkpoint(ckpt_root: Path) -> str | None:
    """The newest checkpoint that reads back whole. One cut off mid-write by a kill (no
    trainer_state.json, which Trainer writes last) is removed; a damaged one is set aside as
    damaged-checkpoint-N, with a line saying so, and the one before it is used."""
    if not ckpt_root.is_dir():
        return None
    ckpts = sorted(
        (c for c in ckpt_root.glob("checkpoint-*") if c.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for c in reversed(ckpts):
        if not (c / "trainer_state.json").is_file():
            if is_main():
                shutil.rmtree(c, ignore_errors=True)
            continue
        problem = checkpoint_problem(c)
        if problem is None:
            return str(c)
        if is_main():
            aside = c.with_name(f"damaged-{c.name}")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(c, aside)
            console.print(
                f"{problem}: set aside as {aside.name}; falling back to the checkpoint before it",
                style="yellow",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    return None


def weight_names(model: str) -> set[str] | None:
    """The parameter names of a model, read from its safetensors headers (no weights loaded);
    None when its files are not on this machine (the load will then say why)."""
    shapes = weight_shapes(model)
    return None if shapes is None else set(shapes)
