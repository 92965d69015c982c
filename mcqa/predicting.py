"""Predictions from a model: a base model (zero-shot) or a trained run (base + adapter, heads
restored; mcqa.train.runs), read out one of the registered readouts (mcqa.readouts), on a split or
on a user's own file. `rank` is calibrated by a temperature fitted on the validation split
(mcqa.eval.calibration), and the fit (ECE before and after) travels with the predictions into the
report."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mcqa import __version__
from mcqa.console import console, quiet_foreign_log_deprecations
from mcqa.errors import McqaError
from mcqa.eval.calibration import apply_temperature, fit_temperature, with_option_rule
from mcqa.eval.records import PREDICTION_KEYS, Prediction
from mcqa.examples import load_split, resolve_protocol, sample_examples
from mcqa.io import is_number, read_json, write_json
from mcqa.model import load_causal_lm, load_tokenizer
from mcqa.modes import get_mode
from mcqa.readouts import get_readout, run_readout
from mcqa.readouts.base import check_options, parse_options
from mcqa.task import Example, Task
from mcqa.train.runs import load_run

# A temperature is one number: a few hundred examples fit it as well as thousands.
CALIBRATION_EXAMPLES = 200
CALIBRATION_SEED = 0
CALIBRATION_DIR = "calibration"  # in a trained run's folder: one fit per readout, options and sample


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    mode: str  # the training mode whose model this is (a base model is a "generate" one)
    source: dict[str, Any]  # what was loaded, for the report
    protocol: str | None = None  # a run's split protocol


def load_predictor(task: Task, model: str | None, adapter: Path | None, trust_remote_code: bool = False) -> Loaded:
    """A trained run (`adapter`: a `mcqa train` run folder) or a base model by name, alias or folder.
    `trust_remote_code` is the user's own flag; a run folder cannot turn it on."""
    quiet_foreign_log_deprecations()  # transformers' log handler exists once it is imported
    if adapter is not None:
        m, tok, _, config = load_run(adapter, task=task.name, model=model, trust_remote_code=trust_remote_code)
        return Loaded(
            m, tok, config.mode, {"model": config.model, "adapter": str(adapter), "mode": config.mode}, config.protocol
        )
    if model is None:
        raise McqaError("name a model with --model M (hub id, folder or alias), or a trained run with --adapter RUN")
    tok = load_tokenizer(model, trust_remote_code=trust_remote_code)
    m = load_causal_lm(model, trust_remote_code=trust_remote_code)
    m.eval()
    return Loaded(m, tok, "generate", {"model": model, "adapter": None, "mode": "zero-shot"})


def default_readout(loaded: Loaded) -> str:
    return get_mode(loaded.mode).default_readout


@torch.no_grad()
def calibration_split(task: Task, protocol: str, n: int | None) -> tuple[list[Example], str]:
    """The validation examples a temperature is fitted on: a seeded sample of n (None: all), and how to say so."""
    full = load_split(task, "validation", protocol)
    val = sample_examples(full, n, CALIBRATION_SEED)
    said = (
        f"a seeded sample of {len(val)} of {len(full)} validation examples (seed {CALIBRATION_SEED})"
        if len(val) < len(full)
        else f"all {len(full)} validation examples"
    )
    return val, said


def _calibration(
    task: Task, loaded: Loaded, readout: str, options: dict[str, Any], protocol: str | None, n: int | None
) -> dict[str, Any]:
    """The readout's temperature, fitted on (a sample of) validation; a trained run keeps the fit
    in its folder (calibration/<digest>.json), so scoring it again skips the validation pass."""
    protocol = resolve_protocol(task, protocol or loaded.protocol)
    val, said = calibration_split(task, protocol, n)
    run_dir = Path(loaded.source["adapter"]) if loaded.source.get("adapter") else None
    key = hashlib.sha256(
        json.dumps(
            [__version__, task.name, protocol, readout, options, [e.id for e in val]], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:24]
    cached = _read_fit(run_dir / CALIBRATION_DIR / f"{key}.json", key) if run_dir else None
    if cached is not None:
        console.print(
            f"{readout} temperature {cached['temperature']:.3f}, fitted before on {said}: "
            f"{run_dir / CALIBRATION_DIR / f'{key}.json'}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return cached
    console.print(f"fitting the {readout} temperature on {said}", markup=False, highlight=False, soft_wrap=True)
    fit = fit_temperature(task, val, run_readout(readout, loaded.model, loaded.tokenizer, task, val, **options))
    result = {
        "temperature": fit.temperature,
        "validation_nll": [fit.nll_before, fit.nll_after],
        "validation_ece_before": fit.ece_before,
        "validation_ece_after": fit.ece_after,
        "n": fit.n,
        "fitted_on": said,
        "key": key,
    }
    console.print(f"temperature {fit.temperature:.3f}: validation NLL {fit.nll_before:.3f} -> {fit.nll_after:.3f}")
    if run_dir is not None:
        try:
            write_json(run_dir / CALIBRATION_DIR / f"{key}.json", result)
        except McqaError as e:  # a read-only run folder: the fit is simply not kept
            console.print(f"temperature not cached: {e}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    return result


def _read_fit(path: Path, key: str) -> dict[str, Any] | None:
    """A cached fit from a run folder (untrusted): used only when every value checks out."""
    if not path.is_file():
        return None
    try:
        fit = read_json(path)
    except McqaError:
        fit = None

    ok = (
        isinstance(fit, dict)
        and fit.get("key") == key
        and isinstance(fit.get("fitted_on"), str)
        and is_number(fit.get("temperature"))
        and fit["temperature"] > 0
        and is_number(fit.get("n"))
        and all(
            isinstance(fit.get(k), dict) and all(map(is_number, fit[k].values()))
            for k in ("validation_ece_before", "validation_ece_after")
        )
        and isinstance(fit.get("validation_nll"), list)
        and len(fit["validation_nll"]) == 2
        and all(map(is_number, fit["validation_nll"]))
    )
    if not ok:
        console.print(
            f"ignoring {path}: not a temperature fit mcqa wrote; fitting again",
            style="yellow",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return None
    return fit


def predict(
    task: Task,
    loaded: Loaded,
    examples: list[Example],
    readout: str,
    protocol: str | None,
    calibrate: bool = True,
    options: dict[str, Any] | None = None,
    calibration_examples: int | None = CALIBRATION_EXAMPLES,
) -> tuple[list[Prediction], dict[str, Any]]:
    """Predictions in the scorer's format, and a summary (readout, speed, calibration).
    `options`: the readout's own options (its --help lists them). A calibrated readout's
    temperature is fitted on a seeded sample of `calibration_examples` validation examples (None: all)."""
    options = options or {}
    info: dict[str, Any] = {"readout": readout, **loaded.source, **({"readout_options": options} if options else {})}
    check_options(get_readout(readout), options)  # a wrong option fails before any work
    if get_readout(readout).calibrated and calibrate:
        info["calibration"] = _calibration(task, loaded, readout, options, protocol, calibration_examples)
    started = time.perf_counter()
    outputs = run_readout(readout, loaded.model, loaded.tokenizer, task, examples, **options)
    if "calibration" in info:
        outputs = apply_temperature(task, outputs, info["calibration"]["temperature"])
    seconds = time.perf_counter() - started
    info.update(
        examples=len(examples), seconds=round(seconds, 2), examples_per_second=round(len(examples) / seconds, 3)
    )
    requests = [{"id": o["id"], **o["endpoint"]} for o in outputs if isinstance(o.get("endpoint"), dict)]
    if requests:  # a server's answers: its latency per request goes to the summary, not into the predictions
        lat = sorted(r.get("latency_s", 0.0) for r in requests)
        info["latency_s"] = {"mean": round(sum(lat) / len(lat), 4), "median": lat[len(lat) // 2], "max": lat[-1]}
        info["requests"] = requests
    # The scorer's format; rank's raw candidate log-likelihoods ("scores") and its temperature
    # travel too, so a temperature can be refitted later without running the model again.
    return [{k: v for k, v in o.items() if k in PREDICTION_KEYS} for o in outputs], info


def predict_option_rules(
    task: Task,
    loaded: Loaded,
    examples: list[Example],
    protocol: str | None,
    rules: list[str],
    calibrate: bool = True,
    options: dict[str, Any] | None = None,
) -> dict[str, tuple[list[Prediction], dict[str, Any]]]:
    """The options readout under several scoring rules for the price of one: it runs once with
    rule=pmi (whose predictions carry every rule's scores) on these examples, and on the
    validation split when calibrating; each rule is then re-ranked from those scores and gets
    its own temperature, fitted on validation as `predict` would."""
    opts = {**(options or {}), "rule": "pmi"}
    outputs, info = predict(task, loaded, examples, "options", protocol, calibrate=False, options=opts)
    val = None
    if calibrate:
        val_examples, said = calibration_split(
            task, resolve_protocol(task, protocol or loaded.protocol), CALIBRATION_EXAMPLES
        )
        console.print(f"fitting a temperature per rule on {said}")
        val = (val_examples, run_readout("options", loaded.model, loaded.tokenizer, task, val_examples, **opts))
    result = {}
    for rule in rules:
        ranked, rule_info = with_option_rule(task, outputs, rule), {**info, "readout_options": {**opts, "rule": rule}}
        if val is not None:
            fit = fit_temperature(task, val[0], with_option_rule(task, val[1], rule))
            ranked = apply_temperature(task, ranked, fit.temperature)
            rule_info["calibration"] = {
                "temperature": fit.temperature,
                "validation_nll": [fit.nll_before, fit.nll_after],
                "validation_ece_before": fit.ece_before,
                "validation_ece_after": fit.ece_after,
                "n": fit.n,
                "fitted_on": said,
            }
        result[rule] = (ranked, rule_info)
    return result


@dataclass
class ModelRequest:
    """What `mcqa score` and `mcqa predict` name to run: a base model and/or a trained run read
    out locally, or a server's endpoint (`served_model` the name it serves)."""

    model: str | None = None
    adapter: Path | None = None
    readout: str | None = None
    readout_options: list[str] | None = None  # KEY=VALUE items
    endpoint: str | None = None
    served_model: str | None = None
    calibrate: bool = True
    calibration_examples: int | None = None  # None: CALIBRATION_EXAMPLES; 0: all
    trust_remote_code: bool = False


def run_model(
    task: Task, request: ModelRequest, examples: list[Example], protocol: str | None, journal: Path | None = None
) -> tuple[list[Prediction], dict[str, Any]]:
    """Predictions of the model a request names, and their summary. A wrong readout or option,
    or an endpoint named with a local model, fails before any model loads; with `journal`, an
    endpoint's answers are appended as they arrive, so an interrupted run resumes."""
    r = request
    options = parse_options(r.readout_options or [], "--readout-opt")
    if r.endpoint is not None or r.served_model is not None:
        if not (r.endpoint and r.served_model):
            raise McqaError(
                "--endpoint URL and --served-model NAME go together (the server's /v1 URL and the model it serves)"
            )
        if r.model or r.adapter or (r.readout and r.readout != "endpoint"):
            raise McqaError("--endpoint reads a server: give no --model, --adapter or --readout with it")
        options |= {"url": r.endpoint, "served_model": r.served_model}
        if journal is not None:
            options["journal"] = str(journal)
        check_options(get_readout("endpoint"), options)
        loaded = Loaded(
            None, None, "generate", {"model": r.served_model, "endpoint": r.endpoint, "adapter": None, "mode": "served"}
        )
        return predict(task, loaded, examples, "endpoint", protocol, calibrate=False, options=options)
    if r.readout:  # a wrong name or option fails before the model loads
        check_options(get_readout(r.readout), options)
    loaded = load_predictor(task, r.model, r.adapter, trust_remote_code=r.trust_remote_code)
    n = CALIBRATION_EXAMPLES if r.calibration_examples is None else r.calibration_examples or None
    return predict(
        task,
        loaded,
        examples,
        r.readout or default_readout(loaded),
        protocol,
        calibrate=r.calibrate,
        options=options,
        calibration_examples=n,
    )
