"""Starting a training run: the checks made before its folder exists (settings the model's
files can answer, qlora without CUDA, a cut-off weights file, a folder that holds another run),
the folder's name, making and locking it once the examples are encoded (mcqa.train.recipe.setup),
and removing it again when the run is refused before its first checkpoint. A refused command
leaves nothing behind, so the same command works once its cause is fixed."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from huggingface_hub import try_to_load_from_cache

from mcqa.errors import McqaError
from mcqa.model import ALIASES, check_causal_lm, load_model_config, resolve_model
from mcqa.modes import get_mode
from mcqa.paths import TRAIN, train_dir
from mcqa.registry import get_task
from mcqa.train.config import TrainConfig, settings_problems
from mcqa.train.folder import CONFIG_FILE, LOCK_FILE, RUN_MARKER, STARTED, check_remote_code, is_main, read_config
from mcqa.train.runs import weight_names, weights_problem


def new_run_dir(config: TrainConfig) -> Path:
    if config.output_dir:
        return Path(config.output_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Processes of one torchrun launch share a parent (the launcher), not a clock second.
        return TRAIN / f"{config.task}-{config.mode}-{time.strftime('%Y%m%d')}-launch{os.getppid()}"
    return train_dir(config.task, config.mode)


_LOCKS: dict[str, int] = {}


def lock_run_dir(run_dir: Path) -> None:
    """Hold the run folder for this process's lifetime: a second `mcqa train` into the same
    folder is refused instead of training on top of the first."""
    key = str(run_dir.resolve())
    if key in _LOCKS:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise McqaError(f"{run_dir}: could not create the run folder ({e.strerror}); pick another output_dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise McqaError(
            f"{run_dir}: another `mcqa train` is writing to this folder; wait for it to end or pick another output_dir"
        ) from None
    _LOCKS[key] = fd


def _held(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir() if p.name != LOCK_FILE} if run_dir.is_dir() else set()


_MADE: set[str] = set()  # run folders this process created (claim_run_dir), so a refusal may remove them


def open_run(
    config: TrainConfig | None, resume: str | Path | None, trust_remote_code: bool = False
) -> tuple[Path, TrainConfig]:
    """The run folder and the config to train with, after every check that needs no model
    weights. A run to resume is locked now; a fresh run's folder is only checked (claim_run_dir
    makes it once its examples are encoded): it must be new, empty, or left by a run that failed
    before its first checkpoint (nothing is lost by starting it again)."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / CONFIG_FILE).is_file():
            raise McqaError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}); start a run with `mcqa train --task T`")
        if (run_dir / RUN_MARKER).is_file():
            raise McqaError(f"{run_dir}: this run already finished; start a new one")
        config = read_config(run_dir)
        check_remote_code(config, run_dir, trust_remote_code)
        check_settings(config)
        if is_main():
            lock_run_dir(run_dir)
        return run_dir, config
    check_settings(config)  # before a folder is made: a refused config leaves nothing behind
    run_dir = new_run_dir(config)
    if is_main():  # under torchrun the main process checks and creates; the others follow it
        _check_fresh(run_dir)
    return run_dir, config


def claim_run_dir(run_dir: Path, fresh: bool) -> None:
    """Make and lock a fresh run's folder, once every check has passed, and clear what a run
    that failed before its first checkpoint left there (a resumed run's is locked already)."""
    if not fresh or not is_main():
        return
    made = not run_dir.exists()
    lock_run_dir(run_dir)
    if made:
        _MADE.add(str(run_dir.resolve()))
    _check_fresh(run_dir)  # again, now that it is locked
    for name in _held(run_dir):  # a run that failed before its first checkpoint: start it over
        p = run_dir / name
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _check_fresh(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise McqaError(f"{run_dir}: output_dir is a file, not a folder; pick another output_dir")
    held = _held(run_dir)
    if RUN_MARKER in held:
        raise McqaError(f"{run_dir}: holds a finished run; pick another output_dir")
    if _has_checkpoint(run_dir):
        raise McqaError(
            f"{run_dir}: folder holds an interrupted run; resume it with --resume {run_dir} or pick another output_dir"
        )
    if held and not held <= STARTED:
        raise McqaError(f"{run_dir}: folder exists and is not empty; pick another output_dir")


@contextmanager
def removed_if_refused(run_dir: Path, fresh: bool) -> Iterator[None]:
    """A fresh run refused before its first checkpoint (a setting only the loaded model can
    check) leaves no folder behind, so the same command works once the cause is fixed; a
    folder the user named is left as they made it."""
    try:
        yield
    except McqaError:
        if fresh and is_main() and not _has_checkpoint(run_dir) and _held(run_dir) <= STARTED:
            key = str(run_dir.resolve())
            if key in _LOCKS:
                os.close(_LOCKS.pop(key))
            if key in _MADE:
                _MADE.discard(key)
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for name in [*_held(run_dir), LOCK_FILE]:
                    p = run_dir / name
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(
                        missing_ok=True
                    )
        raise


def _has_checkpoint(run_dir: Path) -> bool:
    return any((c / "trainer_state.json").is_file() for c in (run_dir / "checkpoints").glob("checkpoint-*"))


def check_settings(config: TrainConfig) -> None:
    """Every setting that transformers or PEFT would only check once work has begun, checked
    now and reported at once: the schedule, the metric that picks the best epoch, the LoRA
    target modules (against the model's weight names, read from its files without loading it)."""
    task = get_task(config.task)
    get_mode(config.mode)  # a wrong name: one line with its did-you-mean, before the model's files are read
    model_config = load_model_config(config.model, trust_remote_code=config.trust_remote_code)
    if model_config is not None:  # an encoder or a vision-only model: one line, before anything is made
        check_causal_lm(model_config)
    check_model_weights(config.model)
    problems = qlora_problems(config) + settings_problems(config, task, weight_names(config.model))
    if problems:
        n = len(problems)
        raise McqaError(f"invalid config ({n} problem{'s' if n > 1 else ''}): {'; '.join(problems)}")


def qlora_problems(config: TrainConfig) -> list[str]:
    """qlora=true loads the model through bitsandbytes, which needs CUDA: refused before any
    folder is made, not when the model loads."""
    if not config.qlora:
        return []
    with warnings.catch_warnings(record=True) as said:  # torch's own line on a broken driver: folded into this one
        warnings.simplefilter("always")
        cuda = torch.cuda.is_available()
    if not cuda:
        why = "".join(f" ({str(w.message).strip().splitlines()[0]})" for w in said[:1] if str(w.message).strip())
        return [
            "qlora: qlora=true needs a CUDA GPU and bitsandbytes; "
            f"this machine has no CUDA device{why}, so drop qlora=true"
        ]
    if (
        importlib.util.find_spec("bitsandbytes") is None
    ):  # found, not imported: its import prints on a machine it cannot use
        return ["qlora: qlora=true needs bitsandbytes: pip install bitsandbytes"]
    return []


def check_model_weights(model: str) -> None:
    """A weights file of the model cut short (an interrupted copy or download) or damaged,
    named in one line now rather than when the model loads, after the run folder is made."""
    where = resolve_model(model)
    if not isinstance(where, Path):  # a hub id: its snapshot folder, when it is in the local cache
        hit = try_to_load_from_cache(where, "config.json")
        if not isinstance(hit, str):
            return
        where = Path(hit).parent
    problem = weights_problem(where, load_pickles=False)
    if problem:
        fix = (
            f"reinstall it with `mcqa models install {model} --force`"
            if model in ALIASES
            else "re-download or re-copy the model"
        )
        raise McqaError(f"{problem}; {fix}")
