"""The rows of a compare table: the Row being built, rows from scorer metrics, the folds of a
protocol, the baseline rows and the zero-shot rows (a base model read out with no adapter,
cached in mcqa.compare.zero_shot_cache). Trained runs' rows are mcqa.compare.run_rows; the table
itself is mcqa.compare.table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcqa.compare.baseline_cache import load_cached, store
from mcqa.compare.baselines import BASELINES, BaselineNotApplicable, run_baseline
from mcqa.compare.embeddings import minilm_dir
from mcqa.compare.zero_shot_cache import code_digest, model_identity, zero_shot_key
from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.eval.records import Record
from mcqa.eval.scoring import make_records, score_records
from mcqa.examples import load_split, resolve_protocol
from mcqa.io import inside, is_number, safe_name
from mcqa.model import parameter_count
from mcqa.predicting import (
    CALIBRATION_EXAMPLES,
    Loaded,
    calibration_split,
    load_predictor,
    predict,
    predict_option_rules,
)
from mcqa.readouts.base import check_options, get_readout, parse_options
from mcqa.readouts.options import RULES
from mcqa.task import Task


def sub_folder(out: Path, *parts: Any) -> Path:
    """A folder below --out named from values that may come from a run folder: each part made
    a plain file name, and the result checked to be inside --out."""
    return inside(out, out.joinpath(*(safe_name(p) for p in parts)))


@dataclass
class Row:
    """A table row in the making: what compare.json shows, the per-example records it was
    scored from (what the paired tests read), and the scorer metrics still to write into its
    folder (None for a trained run's own test folder, which is only read). Nothing is written
    until every row is built and pairs with the others, so a refused compare leaves no folder."""

    shown: dict[str, Any]
    records: list[Record]
    metrics: dict[str, Any] | None = None
    validation: dict[str, list[Record]] | None = None  # fold -> records on its validation split: what a stack fits on


def row_from_metrics(
    name: str, kind: str, metrics: dict[str, Any], folder: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    """One table row, every score taken from a scorer's metrics.json."""
    try:
        return _row(name, kind, metrics, folder, extra)
    except (KeyError, TypeError, IndexError, AttributeError):
        raise McqaError(
            f"{folder / 'metrics.json'}: not a complete scorer metrics.json; re-score the run "
            f"(mcqa score --adapter RUN --split test --out FOLDER)"
        ) from None


def _row(name: str, kind: str, metrics: dict[str, Any], folder: Path, extra: dict[str, Any]) -> dict[str, Any]:
    fields = {}
    for f, fm in metrics["fields"].items():
        fields[f] = {
            "accuracy": fm["accuracy"],
            "accuracy_ci": fm["ci"]["accuracy"],
            "macro_f1": fm.get("macro_f1"),
            "macro_f1_ci": fm["ci"].get("macro_f1"),
        }
    return {
        "name": name,
        "kind": kind,
        "folder": str(folder),
        "n": metrics["n"],
        "fields": fields,
        "joint": metrics["joint"]["accuracy"],
        "joint_ci": metrics["joint"]["ci"],
        "parse_failure_rate": metrics["parse"]["failure_rate"],
        **extra,
    }


def protocol_folds(task: Task, protocol: str | None) -> list[str]:
    """A protocol of the task, or the name of a cross-validation family ("cv5" for cv5-0 ..
    cv5-4) whose test folds are pooled."""
    if protocol is not None and protocol not in task.protocols:
        folds = [p for p in task.protocols if p.startswith(f"{protocol}-")]
        if folds:
            return folds
    try:
        return [resolve_protocol(task, protocol)]
    except McqaError as e:  # an unknown protocol: also name the fold families compare can pool
        families = sorted({p.rsplit("-", 1)[0] for p in task.protocols if re.fullmatch(r"cv\d+-\d+", p)})
        if not families:
            raise
        raise McqaError(f"{e}, or {' or '.join(families)} to pool all its folds") from None


def _mean(xs: list[float | None]) -> float | None:
    return None if any(x is None for x in xs) else sum(xs) / len(xs)


def pooled_row(
    task: Task, name: str, kind: str, records: list[Record], run: dict, folder: Path, per_fold: list[dict[str, Any]]
) -> Row:
    """Score pooled per-example records; speed, training time and size are means over folds."""
    scored = score_records(task, records, run)  # written into `folder` by compare(), once every row pairs
    extra = {k: _mean([f[k] for f in per_fold]) for k in per_fold[0]}
    return Row(row_from_metrics(name, kind, scored.metrics, folder, extra), records, scored.metrics)


def baseline_rows(
    task: Task, folds: list[str], names: list[str], out: Path, cache: Path | None = None, validation: bool = False
) -> list[Row]:
    """`validation`: also predict each fold's validation split (from the same fit), for a stack."""
    rows = []
    for name in names:
        records, per_fold, val = [], [], {}
        encoder = model_parameters(minilm_dir()) if BASELINES.resolve(name).encoder else 0
        try:
            for protocol in folds:
                test = load_split(task, "test", protocol)
                held = load_split(task, "validation", protocol) if validation else []
                result = run_baseline(name, task, protocol, examples=test + held, cache=cache)
                records += make_records(task, test, result["predictions"])
                val[protocol] = make_records(task, held, result["predictions"], progress=False)
                per_fold.append(
                    {
                        "examples_per_second": result["examples_per_second"],
                        "train_seconds": result["fit_seconds"],
                        "trained_parameters": result["n_params"],
                        "parameters": None if encoder is None else result["n_params"] + encoder,
                    }
                )
        except BaselineNotApplicable as e:
            console.print(f"[dim]skipped {name}: {e}[/]")
            continue
        run = {"task": task.name, "split": "test", "protocol": ",".join(folds), "baseline": name}
        rows.append(pooled_row(task, name, "baseline", records, run, sub_folder(out, "baselines", name), per_fold))
        rows[-1].validation = val if validation else None
    return rows


def model_parameters(model: str | Path | None) -> int | None:
    """A model's parameter count from its weight headers; None when it is not on this machine."""
    if model is None:
        return None
    try:
        return parameter_count(model)
    except McqaError:
        return None


def zero_shot_rows(
    task: Task,
    folds: list[str],
    model: str,
    readouts: list[str],
    out: Path,
    trust_remote_code: bool = False,
    cache: Path | None = None,
    validation: bool = False,
) -> list[Row]:
    """The base LLM with no adapter, read out through the scorer like everything else (rank fits
    its temperature on each fold's own validation split). `cache`: a folder of zero-shot
    predictions (mcqa.compare.zero_shot_cache) to reuse and fill; the model is loaded only if some
    fold and readout is not there. `validation`: also read out each fold's validation split, for a stack."""
    specs = {spec: parse_readout_spec(spec) for spec in readouts}  # a bad spec fails before the model loads
    for name, options in specs.values():
        check_options(get_readout(name), options)  # and so does a bad option value (rule=bogus)
    identity = model_identity(model) if cache is not None else None
    code = code_digest(task) if identity else ""
    loaded: Loaded | None = None
    got: dict[
        tuple[str, str, str], tuple[list[dict[str, Any]], float]
    ] = {}  # (spec, fold, split) -> predictions, examples/s
    splits = ("test", "validation") if validation else ("test",)
    data = {(protocol, split): load_split(task, split, protocol) for protocol in folds for split in splits}
    for (protocol, split), test in data.items():
        keys = {}
        if identity:
            calibration = calibration_split(task, protocol, CALIBRATION_EXAMPLES)[0]
            for spec in specs:
                keys[spec] = zero_shot_key(identity, spec, task, protocol, test, calibration, code)
                hit = load_cached(
                    cache, keys[spec], task, [e.id for e in test], what="zero-shot", redo="reading the model out again"
                )
                if hit is not None and _speed(hit.get("examples_per_second")):
                    got[spec, protocol, split] = ([hit["predictions"][e.id] for e in test], hit["examples_per_second"])
                    console.print(
                        f"{Path(model).name} zero-shot {spec} on {protocol} {split}: reusing {hit['cached']}",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )
        missing = [spec for spec in specs if (spec, protocol, split) not in got]
        if not missing:
            continue
        loaded = loaded or load_predictor(task, model, None, trust_remote_code=trust_remote_code)
        # Every options rule of one fold comes from one options run (see predict_option_rules).
        by_rule = {
            opts["rule"]: spec
            for spec in missing
            for name, opts in [specs[spec]]
            if name == "options" and set(opts) == {"rule"}
        }
        fresh = (
            {
                by_rule[rule]: got_rule
                for rule, got_rule in predict_option_rules(task, loaded, test, protocol, list(by_rule)).items()
            }
            if by_rule
            else {}
        )
        for spec in missing:
            readout, options = specs[spec]
            outputs, info = (
                fresh[spec] if spec in fresh else predict(task, loaded, test, readout, protocol, options=options)
            )
            got[spec, protocol, split] = (outputs, info["examples_per_second"])
            if spec in keys:
                store(
                    cache,
                    keys[spec],
                    {"predictions": {o["id"]: o for o in outputs}, "examples_per_second": info["examples_per_second"]},
                )
    rows, parameters = [], model_parameters(model)
    for spec in specs:
        records, per_fold = [], []
        for protocol in folds:
            outputs, speed = got[spec, protocol, "test"]
            records += make_records(task, data[protocol, "test"], {o["id"]: o for o in outputs})
            per_fold.append(
                {"examples_per_second": speed, "train_seconds": 0.0, "trained_parameters": 0, "parameters": parameters}
            )
        run = {"task": task.name, "split": "test", "protocol": ",".join(folds), "model": model, "readout": spec}
        rows.append(
            pooled_row(
                task,
                zero_shot_name(model, spec),
                "zero-shot",
                records,
                run,
                sub_folder(out, "zero_shot", f"{Path(model).name}-{spec}"),
                per_fold,
            )
        )
        if validation:
            rows[-1].validation = {
                p: make_records(
                    task, data[p, "validation"], {o["id"]: o for o in got[spec, p, "validation"][0]}, progress=False
                )
                for p in folds
            }
    return rows


def zero_shot_name(model: str, spec: str) -> str:
    return f"{Path(model).name} zero-shot {spec}"


def _speed(v: Any) -> bool:
    """A cached examples-per-second figure that can be shown (a cache file is untrusted)."""
    return is_number(v) and v > 0


def parse_readout_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """ "options:rule=sum,prompt=task" -> ("options", {"rule": "sum", "prompt": "task"})."""
    name, _, rest = spec.partition(":")
    return name, parse_options([x for x in rest.split(",") if x], f"zero-shot readout '{spec}'")


def default_zero_shot_readouts(task: Task) -> tuple[str, ...]:
    """rank and constrained read letters or labels; a multiple-choice task also gets every
    option-text scoring rule."""
    rules = tuple(f"options:rule={r}" for r in RULES) if task.options is not None else ()
    return ("constrained", "rank") + rules
