"""Is the LLM worth it? Baselines and trained runs in one table, on the same split and scored by
the same scorer: per-field accuracy and macro-F1 with bootstrap intervals, joint match, parse
failures, speed, training time and parameters trained. Every number in the table is read from
a scorer run folder (metrics.json) written here or by `mcqa train`.

A cross-validated task is compared over all its folds at once: `--protocol cv5` names the family
cv5-0 .. cv5-4, each baseline and zero-shot model is run on every fold, each trained model must
bring one run per fold, and every row is scored on the pooled test predictions (each example is
in exactly one test fold), so its intervals cover the whole dataset rather than one fold.

Rows scored on the same examples are also compared example by example (mcqa.compare.paired): every row
against a reference row (the best baseline, or `against`) and the best row against the second,
each with a paired bootstrap interval and McNemar's exact p-value. A row that cannot be paired
(another task, other folds, other examples, such as a run tested on a sample) is refused before
anything is written."""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcqa.compare.baseline_cache import load_cached, store
from mcqa.compare.baselines import BASELINES, BaselineNotApplicable, run_baseline
from mcqa.compare.view import bar_chart, markdown
from mcqa.console import console
from mcqa.compare.embeddings import minilm_dir
from mcqa.errors import McqaError
from mcqa.examples import load_split, resolve_protocol
from mcqa.eval.html import write_compare_html
from mcqa.io import atomic_write_bytes, atomic_write_text, inside, read_json, read_jsonl, safe_name, write_json
from mcqa.model import parameter_count
from mcqa.compare.paired import check_row_name, outcomes, pair_rows
from mcqa.predicting import CALIBRATION_EXAMPLES, Loaded, calibration_split, load_predictor, predict, predict_option_rules
from mcqa.readouts.base import check_options, get_readout, parse_options
from mcqa.readouts.options import RULES
from mcqa.eval.records import Record
from mcqa.eval.report import write_run
from mcqa.train.config import INCIDENTAL
from mcqa.train.folder import RunSummary, read_summary
from mcqa.eval.scoring import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, check_prediction, make_records, match_ids, score_records
from mcqa.compare.stack import Member, stack as stack_predictions
from mcqa.task import Example, Task
from mcqa.compare.zero_shot_cache import code_digest, model_identity, zero_shot_key


def _sub(out: Path, *parts: Any) -> Path:
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


def row_from_metrics(name: str, kind: str, metrics: dict[str, Any], folder: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """One table row, every score taken from a scorer's metrics.json."""
    try:
        return _row(name, kind, metrics, folder, extra)
    except (KeyError, TypeError, IndexError, AttributeError):
        raise McqaError(f"{folder / 'metrics.json'}: not a complete scorer metrics.json; re-score the run "
                        f"(mcqa score --adapter RUN --split test --out FOLDER)") from None


def _row(name: str, kind: str, metrics: dict[str, Any], folder: Path, extra: dict[str, Any]) -> dict[str, Any]:
    fields = {}
    for f, fm in metrics["fields"].items():
        fields[f] = {"accuracy": fm["accuracy"], "accuracy_ci": fm["ci"]["accuracy"],
                     "macro_f1": fm.get("macro_f1"), "macro_f1_ci": fm["ci"].get("macro_f1")}
    return {"name": name, "kind": kind, "folder": str(folder), "n": metrics["n"], "fields": fields,
            "joint": metrics["joint"]["accuracy"], "joint_ci": metrics["joint"]["ci"],
            "parse_failure_rate": metrics["parse"]["failure_rate"], **extra}


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


def _pooled_row(task: Task, name: str, kind: str, records: list[Record], run: dict, folder: Path,
                per_fold: list[dict[str, Any]]) -> Row:
    """Score pooled per-example records; speed, training time and size are means over folds."""
    scored = score_records(task, records, run)  # written into `folder` by compare(), once every row pairs
    extra = {k: _mean([f[k] for f in per_fold]) for k in per_fold[0]}
    return Row(row_from_metrics(name, kind, scored.metrics, folder, extra), records, scored.metrics)


def baseline_rows(task: Task, folds: list[str], names: list[str], out: Path, cache: Path | None = None,
                  validation: bool = False) -> list[Row]:
    """`validation`: also predict each fold's validation split (from the same fit), for a stack."""
    rows = []
    for name in names:
        records, per_fold, val = [], [], {}
        encoder = _parameters(minilm_dir()) if BASELINES.resolve(name).encoder else 0
        try:
            for protocol in folds:
                test = load_split(task, "test", protocol)
                held = load_split(task, "validation", protocol) if validation else []
                result = run_baseline(name, task, protocol, examples=test + held, cache=cache)
                records += make_records(task, test, result["predictions"])
                val[protocol] = make_records(task, held, result["predictions"], progress=False)
                per_fold.append({"examples_per_second": result["examples_per_second"], "train_seconds": result["fit_seconds"],
                                 "trained_parameters": result["n_params"],
                                 "parameters": None if encoder is None else result["n_params"] + encoder})
        except BaselineNotApplicable as e:
            console.print(f"[dim]skipped {name}: {e}[/]")
            continue
        run = {"task": task.name, "split": "test", "protocol": ",".join(folds), "baseline": name}
        rows.append(_pooled_row(task, name, "baseline", records, run, _sub(out, "baselines", name), per_fold))
        rows[-1].validation = val if validation else None
    return rows


def _parameters(model: str | Path | None) -> int | None:
    """A model's parameter count from its weight headers; None when it is not on this machine."""
    if model is None:
        return None
    try:
        return parameter_count(model)
    except McqaError:
        return None


def zero_shot_rows(task: Task, folds: list[str], model: str, readouts: list[str], out: Path,
                   trust_remote_code: bool = False, cache: Path | None = None, validation: bool = False) -> list[Row]:
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
    got: dict[tuple[str, str, str], tuple[list[dict[str, Any]], float]] = {}  # (spec, fold, split) -> predictions, examples/s
    splits = ("test", "validation") if validation else ("test",)
    data = {(protocol, split): load_split(task, split, protocol) for protocol in folds for split in splits}
    for (protocol, split), test in data.items():
        keys = {}
        if identity:
            calibration = calibration_split(task, protocol, CALIBRATION_EXAMPLES)[0]
            for spec in specs:
                keys[spec] = zero_shot_key(identity, spec, task, protocol, test, calibration, code)
                hit = load_cached(cache, keys[spec], task, [e.id for e in test], what="zero-shot", redo="reading the model out again")
                if hit is not None and _speed(hit.get("examples_per_second")):
                    got[spec, protocol, split] = ([hit["predictions"][e.id] for e in test], hit["examples_per_second"])
                    console.print(f"{Path(model).name} zero-shot {spec} on {protocol} {split}: reusing {hit['cached']}",
                                  markup=False, highlight=False, soft_wrap=True)
        missing = [spec for spec in specs if (spec, protocol, split) not in got]
        if not missing:
            continue
        loaded = loaded or load_predictor(task, model, None, trust_remote_code=trust_remote_code)
        # Every options rule of one fold comes from one options run (see predict_option_rules).
        by_rule = {opts["rule"]: spec for spec in missing for name, opts in [specs[spec]] if name == "options" and set(opts) == {"rule"}}
        fresh = {by_rule[rule]: got_rule for rule, got_rule in
                 predict_option_rules(task, loaded, test, protocol, list(by_rule)).items()} if by_rule else {}
        for spec in missing:
            readout, options = specs[spec]
            outputs, info = fresh[spec] if spec in fresh else predict(task, loaded, test, readout, protocol, options=options)
            got[spec, protocol, split] = (outputs, info["examples_per_second"])
            if spec in keys:
                store(cache, keys[spec], {"predictions": {o["id"]: o for o in outputs}, "examples_per_second": info["examples_per_second"]})
    rows, parameters = [], _parameters(model)
    for spec in specs:
        records, per_fold = [], []
        for protocol in folds:
            outputs, speed = got[spec, protocol, "test"]
            records += make_records(task, data[protocol, "test"], {o["id"]: o for o in outputs})
            per_fold.append({"examples_per_second": speed, "train_seconds": 0.0, "trained_parameters": 0, "parameters": parameters})
        run = {"task": task.name, "split": "test", "protocol": ",".join(folds), "model": model, "readout": spec}
        rows.append(_pooled_row(task, zero_shot_name(model, spec), "zero-shot", records, run,
                                _sub(out, "zero_shot", f"{Path(model).name}-{spec}"), per_fold))
        if validation:
            rows[-1].validation = {p: make_records(task, data[p, "validation"], {o["id"]: o for o in got[spec, p, "validation"][0]},
                                                   progress=False) for p in folds}
    return rows


def zero_shot_name(model: str, spec: str) -> str:
    return f"{Path(model).name} zero-shot {spec}"


def _speed(v: Any) -> bool:
    """A cached examples-per-second figure that can be shown (a cache file is untrusted)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def parse_readout_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """"options:rule=sum,prompt=task" -> ("options", {"rule": "sum", "prompt": "task"})."""
    name, _, rest = spec.partition(":")
    return name, parse_options([x for x in rest.split(",") if x], f"zero-shot readout '{spec}'")


def default_zero_shot_readouts(task: Task) -> tuple[str, ...]:
    """rank and constrained read letters or labels; a multiple-choice task also gets every
    option-text scoring rule."""
    rules = tuple(f"options:rule={r}" for r in RULES) if task.options is not None else ()
    return ("constrained", "rank") + rules


def _read_run(run_dir: Path, task: Task, folds: list[str]) -> RunSummary:
    summary = read_summary(run_dir)  # validated: registered task, protocol and mode names
    if not (run_dir / "test" / "metrics.json").is_file():
        raise McqaError(f"{run_dir}: not a finished training run (no test/metrics.json)")
    if summary.task != task.name or summary.protocol not in folds:
        want = folds[0] if len(folds) == 1 else f"one of {', '.join(folds)}"
        raise McqaError(f"{run_dir}: trained on {summary.task}/{summary.protocol}, not {task.name}/{want}; "
                        "compare runs on the same task and split protocol")
    return summary


def _tested(task: Task, run_dir: Path, protocol: str, split: str = "test") -> tuple[list[Example], dict[str, dict[str, Any]]]:
    """A run's test (or validation) examples and its raw outputs, to be scored again against the
    task's own gold (make_records): a received run's records are never trusted for gold,
    correctness or probabilities. The run must cover the whole test split: rows are paired
    example by example (a stack checks its members' validation coverage itself)."""
    path = run_dir / split / "predictions.jsonl"
    preds = {}
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(rec.get("id"), str) or rec["id"] in preds:
            raise McqaError(f"{where}: a record needs a unique string 'id'; re-score the run")
        preds[rec["id"]] = check_prediction({"id": rec["id"], "output": rec.get("raw"), "truncated": rec.get("status") == "truncated",
                                             "probs": rec.get("probs")}, where, task)
    test = load_split(task, split, protocol)
    tested = match_ids(test, preds, str(path), subset=True)  # an unknown id is refused here
    if split == "test" and len(tested) < len(test):
        raise McqaError(f"{run_dir}: tested on {len(tested)} of the {len(test)} test examples of {protocol} "
                        "(max_test_examples?); compare pairs rows example by example, so train the run "
                        "on the whole test split")
    return tested, preds


def _run_extra(summary: RunSummary) -> dict[str, Any]:
    base, trained = _parameters(summary.model), summary.trainable_parameters
    return {"examples_per_second": summary.test_examples_per_second, "train_seconds": summary.train_seconds,
            "trained_parameters": trained, "parameters": None if base is None or trained is None else base + trained}


def _validated(task: Task, run_dir: Path, protocol: str) -> list[Record] | None:
    """A run's records on its validation split (written by the test pass), or None without them."""
    if not (run_dir / "validation" / "predictions.jsonl").is_file():
        return None
    return make_records(task, *_tested(task, run_dir, protocol, "validation"), progress=False)


# Runs pool into one row when they differ only in settings that do not change what is learned
# (marked in mcqa.train.config) and in fold and folder; task, protocol and mode are the row's
# identity, checked on their own.
_INCIDENTAL = INCIDENTAL | {"task", "protocol", "mode"}


def _recipe(summary: RunSummary) -> dict[str, Any] | None:
    """A run's training settings from its config.yaml (validated), flattened (lora.r, ...), lists
    as sorted tuples, without the incidental ones; None for a run folder without a config."""
    if summary.config is None:
        return None
    flat: dict[str, Any] = {}
    for key, value in summary.config.model_dump(mode="json").items():
        if key in _INCIDENTAL:
            continue
        for sub, v in (value.items() if isinstance(value, dict) else [(None, value)]):
            flat[key if sub is None else f"{key}.{sub}"] = tuple(sorted(map(str, v))) if isinstance(v, list) else v
    return flat


def _shown(value: Any) -> str:
    """A setting as it is written on the command line (epochs=2, lora.layers=null)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    return ",".join(value) if isinstance(value, tuple) else str(value)


RecipeKey = tuple[str, str, tuple | None]  # (model as named, mode, sorted recipe items or None)


def _recipe_names(keys: list[RecipeKey]) -> dict[RecipeKey, str]:
    """Each (model, mode, recipe) named by the settings in which it differs from the other
    recipes of its model and mode, and by its permutations when it trains on reordered options;
    a run without a config is "(settings unknown)"."""
    names = {}
    for key in keys:
        model, mode, items = key
        base = [Path(model).name, mode]
        if items is None:
            names[key] = " ".join(base + ["(settings unknown)"])
            continue
        recipe = {"model": model, **dict(items)}  # org1/x and org2/x are both shown as x, unless told apart
        siblings = [{"model": k[0], **dict(k[2])} for k in keys if k[2] is not None and Path(k[0]).name == base[0] and k[1] == mode]
        differ = sorted({s for r in siblings for s in r if len({repr(x.get(s)) for x in siblings}) > 1})
        if recipe.get("permutations") and "permutations" not in differ:
            differ.append("permutations")
        names[key] = " ".join(base + [f"{s}={_shown(recipe.get(s, '-'))}" for s in differ])
    return names


def _row_folder(out: Path, name: str, key: RecipeKey) -> Path:
    """A pooled row's scorer folder: its name, cut short, and a digest of its recipe, so two
    recipes whose names agree in the first characters never share a folder."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
    return _sub(out, "runs", f"{safe_name(name.replace(' ', '-'))[:80]}-{digest}")


def run_rows(run_dirs: list[Path], task: Task, folds: list[str], out: Path) -> list[Row]:
    """Finished `mcqa train` runs. On one protocol each run is a row, read from its own test report;
    on a fold family the runs of one model, mode and training recipe are pooled, one run per fold
    (a row's name shows the settings that tell it from the other rows of its model and mode)."""
    summaries = [_read_run(r, task, folds) for r in run_dirs]
    tested = {r: _tested(task, r, s.protocol) for r, s in zip(run_dirs, summaries)}  # all checked before any is parsed
    if len(folds) == 1:
        return [Row(row_from_metrics(f"{Path(s.model).name} {s.mode} ({r.name})", "trained",
                                     read_json(r / "test" / "metrics.json"), r / "test", _run_extra(s)),
                    make_records(task, *tested[r], progress=False), validation=_fold_records({s.protocol: _validated(task, r, s.protocol)}))
                for r, s in zip(run_dirs, summaries)]
    recipes = [_recipe(s) for s in summaries]
    keys: list[RecipeKey] = [(s.model, s.mode, None if c is None else tuple(sorted(c.items()))) for s, c in zip(summaries, recipes)]
    groups: dict[RecipeKey, dict[str, tuple[Path, RunSummary]]] = {k: {} for k in keys}
    names = _recipe_names(list(groups))
    for r, s, key in zip(run_dirs, summaries, keys):
        by_fold = groups[key]
        if s.protocol in by_fold:
            raise McqaError(f"{r}: a second {names[key]} run on fold {s.protocol} (the first is {by_fold[s.protocol][0]}); "
                            "pass one run per fold")
        by_fold[s.protocol] = (r, s)
    rows = []
    for key, by_fold in groups.items():
        missing = [p for p in folds if p not in by_fold]
        if missing:
            raise McqaError(f"{names[key]}: no run on fold{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                            f"train one per fold (mcqa train --protocol {missing[0]} ...) with the same settings and pass them all to --runs")
        fold_runs = [by_fold[p] for p in folds]
        records = [rec for r, _ in fold_runs for rec in make_records(task, *tested[r], progress=False)]
        per_fold = [_run_extra(s) for _, s in fold_runs]
        run = {"task": task.name, "split": "test", "protocol": ",".join(folds), "runs": [str(r) for r, _ in fold_runs]}
        rows.append(_pooled_row(task, f"{names[key]} ({len(folds)} folds)", "trained", records, run,
                                _row_folder(out, names[key], key), per_fold))
        rows[-1].validation = _fold_records({s.protocol: _validated(task, r, s.protocol) for r, s in fold_runs})
    return rows


def _fold_records(by_fold: dict[str, list[Record] | None]) -> dict[str, list[Record]] | None:
    return None if any(v is None for v in by_fold.values()) else by_fold  # type: ignore[return-value]


def compare(task: Task, protocol: str | None, runs: list[Path], baselines: list[str] | None, out: Path,
            zero_shot: str | list[str] | None = None, zero_shot_readouts: tuple[str, ...] | None = None,
            trust_remote_code: bool = False, baseline_cache: Path | None = None,
            zero_shot_cache: Path | None = None, against: str | None = None, stack: list[str] | None = None) -> dict[str, Any]:
    """`zero_shot`: one base model or several, each read out with every zero-shot readout.
    `baseline_cache`, `zero_shot_cache`: folders of cached baseline predictions (mcqa.compare.baseline_cache)
    and zero-shot predictions (mcqa.compare.zero_shot_cache) to reuse and fill. `against`: the name of
    the row every other is paired with (default: the best baseline). `stack`: the names of the
    rows to stack into one more row (mcqa.compare.stack), or ["all"] for every row with probabilities."""
    folds = protocol_folds(task, protocol)
    names = list(BASELINES) if baselines is None else baselines
    for n in names:
        BASELINES.resolve(n)  # an unknown name fails here, with "did you mean"
    models = [zero_shot] if isinstance(zero_shot, str) else zero_shot or []
    specs = list(zero_shot_readouts or default_zero_shot_readouts(task))
    rows = run_rows([Path(r) for r in runs], task, folds, out)  # check runs first: fail before slow work
    coming = [r.shown["name"] for r in rows] + names + [zero_shot_name(m, s) for m in models for s in specs]
    if against is not None:  # and so does a typo; a baseline that turns out not to apply is caught when pairing
        check_row_name(against, coming)
    for member in stack if stack and stack != ["all"] else []:
        check_row_name(member, coming, "--stack")
    if stack is not None:
        for r in rows:  # a run without validation predictions is refused before the slow rows
            if (stack == ["all"] or r.shown["name"] in stack) and r.validation is None:
                raise McqaError(f"stack member '{r.shown['name']}' has no validation predictions (no validation/ in its run "
                                "folder) to fit the stack on; train it again, or leave it out of --stack")
    rows = baseline_rows(task, folds, names, out, baseline_cache, validation=stack is not None) + rows
    for model in models:
        rows += zero_shot_rows(task, folds, model, specs, out, trust_remote_code, zero_shot_cache, validation=stack is not None)
    if stack is not None:
        rows.append(stack_row(task, folds, rows, stack, out))
    paired = pair_rows([outcomes(r.shown["name"], r.shown["kind"], task.name, folds, r.records, task.fields) for r in rows],
                       against, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    for r in rows:
        if r.metrics is not None:
            write_run(r.shown["folder"], r.records, r.metrics)
    shown = folds[0] if len(folds) == 1 else protocol
    result = {"task": task.name, "protocol": shown, "folds": folds, "split": "test", "fields": task.fields,
              "rows": [{**r.shown, "paired": p} for r, p in zip(rows, paired["rows"])],
              "reference": paired["reference"], "best_two": paired["best_two"],
              "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "interval": "percentile 95%, paired"},
              "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", markdown(result))
    atomic_write_bytes(out / "compare.png", bar_chart(result))
    write_compare_html(out, result)
    return result


def stack_row(task: Task, folds: list[str], rows: list[Row], names: list[str], out: Path) -> Row:
    """The stack of the rows named (every row with probabilities for ["all"]), scored on the
    pooled test predictions like any other row. Its train time is its members' and its speed
    theirs run one after another."""
    if names == ["all"]:
        chosen = [r for r in rows if r.validation is not None and all(isinstance(x.get("probs"), dict) for x in r.records)]
    else:
        chosen = [next(r for r in rows if r.shown["name"] == n) for n in names]
    members = [Member(r.shown["name"], r.shown.get("parameters"), r.validation, r.records) for r in chosen]
    preds, info = stack_predictions(task, folds, members)
    test = [e for p in folds for e in load_split(task, "test", p)]
    speeds = [r.shown["examples_per_second"] for r in chosen]
    trained = [r.shown["trained_parameters"] for r in chosen]
    extra = {"examples_per_second": None if any(not x for x in speeds) else 1 / sum(1 / x for x in speeds),
             "train_seconds": sum(r.shown["train_seconds"] or 0.0 for r in chosen),
             "trained_parameters": None if None in trained else sum(trained) + len(members) * len(task.label_spaces),
             "parameters": info["parameters"]}
    run = {"task": task.name, "split": "test", "protocol": ",".join(folds), "stack": info["members"]}
    scored = score_records(task, make_records(task, test, preds), run)
    folder = _sub(out, "stack", "-".join(safe_name(n.replace(" ", "-"))[:24] for n in info["members"])[:120])
    shown = row_from_metrics("stack: " + " + ".join(info["members"]), "stack", scored.metrics, folder, extra)
    return Row({**shown, "stack": info}, make_records(task, test, preds, progress=False), scored.metrics)
