"""Predictions from a model: a base model (zero-shot) or a trained run (base + adapter, heads
restored), read out one of four ways (mcqa.readouts), on a split or on a user's own file.
`rank` is calibrated by a temperature fitted on the validation split, and the fit (ECE before
and after) travels with the predictions into the report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.examples import load_split, resolve_protocol
from mcqa.runs import load_run
from mcqa.task import Example, Task


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    mode: str  # "generate" (a causal LM) or "head"
    source: dict[str, Any]  # what was loaded, for the report
    protocol: str | None = None  # a run's split protocol


def load_predictor(task: Task, model: str | None, adapter: Path | None, trust_remote_code: bool = False) -> Loaded:
    """A trained run (`adapter`: a `mcqa train` run folder) or a base model by name, alias or folder.
    `trust_remote_code` is the user's own flag; a run folder cannot turn it on."""
    if adapter is not None:
        m, tok, _, config = load_run(adapter, task=task.name, model=model, trust_remote_code=trust_remote_code)
        return Loaded(m, tok, config.mode, {"model": config.model, "adapter": str(adapter), "mode": config.mode}, config.protocol)
    if model is None:
        raise McqaError("name a model with --model M (hub id, folder or alias), or a trained run with --adapter RUN")
    from mcqa.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    m = load_causal_lm(model, trust_remote_code=trust_remote_code)
    m.eval()
    return Loaded(m, tok, "generate", {"model": model, "adapter": None, "mode": "zero-shot"})


def default_readout(loaded: Loaded) -> str:
    return "head" if loaded.mode == "head" else "constrained"


@torch.no_grad()
def predict(task: Task, loaded: Loaded, examples: list[Example], readout: str, protocol: str | None,
            calibrate: bool = True) -> tuple[list[dict], dict[str, Any]]:
    """Outputs in the scorer's format, and a summary (readout, speed, calibration)."""
    from mcqa.readouts import apply_temperature, fit_temperature, run_readout

    info: dict[str, Any] = {"readout": readout, **loaded.source}
    if readout == "rank" and calibrate:
        protocol = resolve_protocol(task, protocol or loaded.protocol)
        val = load_split(task, "validation", protocol)
        console.print(f"fitting the rank temperature on {len(val)} validation examples")
        fit = fit_temperature(task, val, run_readout("rank", loaded.model, loaded.tokenizer, task, val))
        info["calibration"] = {"temperature": fit.temperature, "validation_nll": [fit.nll_before, fit.nll_after],
                               "validation_ece_before": fit.ece_before, "validation_ece_after": fit.ece_after, "n": fit.n}
        console.print(f"temperature {fit.temperature:.3f}: validation NLL {fit.nll_before:.3f} -> {fit.nll_after:.3f}")
    started = time.perf_counter()
    outputs = run_readout(readout, loaded.model, loaded.tokenizer, task, examples)
    if "calibration" in info:
        outputs = apply_temperature(task, outputs, info["calibration"]["temperature"])
    seconds = time.perf_counter() - started
    info.update(examples=len(examples), seconds=round(seconds, 2), examples_per_second=round(len(examples) / seconds, 3))
    # The scorer's format; rank's raw candidate log-likelihoods ("scores") and its temperature
    # travel too, so a temperature can be refitted later without running the model again.
    return [{k: v for k, v in o.items() if k in ("id", "output", "truncated", "probs", "scores", "temperature")} for o in outputs], info
