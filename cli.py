"""mcqa command line: flags -> mcqa calls; library errors -> one line and exit code 2.

    mcqa tasks
    mcqa show   --task T --split S -n 3
    mcqa schema --task T | --write
    mcqa check  --task T
    mcqa score  --task T --split S --predictions FILE.jsonl
    mcqa score  --task T --split S --model M [--adapter RUN] --readout R
    mcqa predict --task T --data FILE.jsonl --adapter RUN
    mcqa train  --task T [--model M] [--mode head] [--config run.yaml] [key=value ...]
    mcqa runs   [FOLDER] [--wide]
    mcqa models [list | install ALIAS | verify ALIAS]
    mcqa view   RUN_OR_COMPARE_FOLDER [--print]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mcqa.errors import McqaError

USER_ERROR = 2


def _listing(kind: str) -> str:
    """Names (and readout options) for --help, read from the registries. Those import torch,
    which costs seconds, so only a --help run reads them (see main); a wrong name in a normal
    run is refused by the registry itself, with "did you mean"."""
    if not _FULL_HELP:
        return f"see `mcqa {_HELP_OF[kind]} --help`"
    if kind == "readouts":
        from mcqa.readouts import READOUTS

        return "; ".join(r.help() for r in READOUTS.values())
    if kind == "modes":
        from mcqa.modes import MODES

        return "; ".join(f"{m.name}: {m.description}" for m in MODES.values())
    from mcqa.compare.baselines import BASELINES

    return "; ".join(f"{b.name}: {b.description}" for b in BASELINES.values())


_FULL_HELP = False
_HELP_OF = {"readouts": "score", "modes": "train", "baselines": "baseline"}


def _count(minimum: int):
    """An argparse type: a whole number >= minimum (argparse reports a refusal as one line)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"number >= {minimum}"
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not a usage dump
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(USER_ERROR)


def cmd_tasks(args) -> None:
    from rich.table import Table

    from mcqa.console import console, out
    from mcqa.examples import load_split
    from mcqa.registry import discover_tasks
    from mcqa.task import SPLITS

    table = Table(title="mcqa tasks")
    for col in ("task", "fields and label spaces", "protocols", f"splits ({'/'.join(SPLITS)})", "description"):
        table.add_column(col, no_wrap=col == "task")  # the name a user must type is never cut
    tasks, broken = discover_tasks()
    for task in tasks:
        fields = []
        for f, space in task.label_spaces.items():
            if space is None:
                fields.append(f"{f}: free")
            else:
                kind = " (ordinal)" if space.ordinal else ""
                fields.append(f"{f}: {', '.join(map(str, space.values))}{kind}")
        try:
            sizes = "/".join(str(len(load_split(task, s))) for s in SPLITS)
        except Exception as e:  # a plugin's own loading code: one broken task must not hide the others
            reason = str(e).strip().splitlines()[:1]
            broken[task.name] = f"{task.source}: loading its splits failed ({type(e).__name__}{': ' + reason[0] if reason else ''})"
            continue
        table.add_row(task.name, "\n".join(fields), ", ".join(task.protocols), f"{sizes} ({task.default_protocol})", task.description)
    out.print(table)
    for name, problem in broken.items():  # listed, not fatal: a command that names the task still refuses it
        problem = " ".join(problem.split())  # one line, whatever the plugin's exception said
        console.print(f"warning: task '{name}' is not listed: {problem}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def cmd_show(args) -> None:
    from mcqa.console import out
    from mcqa.examples import load_split
    from mcqa.model import load_tokenizer
    from mcqa.prompting import render_prompt, serialize_target
    from mcqa.registry import get_task

    task = get_task(args.task)
    examples = load_split(task, args.split, args.protocol)[: args.n]
    tokenizer = load_tokenizer(args.tokenizer)  # a hub id, folder or alias; default the Qwen3 tokenizer, local copy first
    for e in examples:
        out.rule(f"{task.name} · {e.id} · groups: {', '.join(e.groups) or '-'}")
        out.print(render_prompt(tokenizer, task.messages(e)), markup=False, highlight=False, end="", soft_wrap=True)
        out.print(f"[bold green]{serialize_target(task.output, e.target)}[/]" if e.target else "[dim](unlabeled)[/]")


def cmd_schema(args) -> None:
    from mcqa.console import console
    from mcqa.registry import all_tasks, get_task
    from mcqa.schema import write_schema

    if args.write:
        for task in all_tasks():  # one line per task: what was written, or why nothing was
            console.print(write_schema(task).message, markup=False, highlight=False, soft_wrap=True)
        return
    if not args.task:
        raise McqaError("name a task with --task T, or pass --write to regenerate every schema file")
    print(json.dumps(get_task(args.task).output.model_json_schema(), indent=2, ensure_ascii=False))


def cmd_check(args) -> None:
    from mcqa.conformance import RULES, rule_lines
    from mcqa.console import out
    from mcqa.model import load_tokenizer
    from mcqa.registry import get_task

    task = get_task(args.task)
    lines, failed = rule_lines(task, load_tokenizer(args.tokenizer))  # prompts checked as rendered (default: Qwen3's template)
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise McqaError(f"task '{task.name}' breaks {len(failed)} of {len(RULES)} conformance rules ({', '.join(failed)}); "
                        "the FAIL lines above say what is wrong")
    out.print(f"task '{task.name}' passes all {len(RULES)} conformance rules", markup=False, highlight=False)


def cmd_score(args) -> None:
    from mcqa.console import console, out
    from mcqa.examples import load_file, load_split, resolve_protocol
    from mcqa.registry import get_task
    from mcqa.io import check_out_folder, unique_name
    from mcqa.eval.report import tables
    from mcqa.eval.scoring import match_ids, read_predictions, score

    task = get_task(args.task)
    if args.split is not None and args.data is not None:
        raise McqaError("give only one of --split S (a shipped split) or --data FILE.jsonl (your labeled examples)")
    if args.data is None and args.split is None:
        args.split = "test"  # the usage line's `mcqa score --task T` scores the test split
    if args.predictions is not None and (args.model is not None or args.adapter is not None or args.endpoint is not None):
        raise McqaError("give either --predictions FILE.jsonl (outputs from anywhere), --model M / --adapter RUN (mcqa runs the "
                        "model) or --endpoint URL --served-model NAME (a server runs it)")
    if args.predictions is None and args.model is None and args.adapter is None and args.endpoint is None:
        args.adapter = _latest_run(task.name)
    where = check_out_folder(args.out or Path("runs") / "score" / unique_name(f"{task.name}-{args.split or 'data'}"))
    if args.data:
        examples, source = load_file(task, args.data), {"data": str(args.data)}
    else:
        protocol = resolve_protocol(task, args.protocol or _run_protocol(args.adapter, task.name))
        examples, source = load_split(task, args.split, protocol), {"split": args.split, "protocol": protocol}
    if args.limit is not None and args.predictions is not None:
        raise McqaError("--limit samples the examples a model is run on; with --predictions, score a part with --subset instead")
    if args.model is not None:  # a model that is no causal LM: one line before anything is sampled or loaded
        from mcqa.model import check_model

        check_model(args.model, args.trust_remote_code)
    examples, sample = _limit(examples, args.limit)
    if sample:
        source["sample"] = sample
    info: dict = {}
    if args.predictions is not None:
        preds = read_predictions(args.predictions, task)
        examples = match_ids(examples, preds, str(args.predictions), subset=args.subset)
        info["predictions"] = str(args.predictions)
    else:
        outputs, info = _run_model(task, args, examples, source.get("protocol"))
        preds = {o["id"]: o for o in outputs}
    run = {"task": task.name, **source, **{k: v for k, v in info.items() if not isinstance(v, dict)},
           "subset": args.subset, "scored_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    extra = {"calibration_fit": info["calibration"]} if "calibration" in info else None
    scored = score(task, examples, preds, run, folder=where, resamples=args.resamples, extra=extra)
    for t in tables(scored.metrics):
        out.print(t)
    console.print(f"run folder: [bold]{scored.folder}[/]")


LIMIT_SEED = 0


def _limit(examples: list, limit: int | None) -> tuple[list, str | None]:
    """--limit N: a seeded sample of N examples (a quick look), said in one line and in the outputs."""
    from mcqa.console import console
    from mcqa.examples import sample_examples

    sampled = sample_examples(examples, limit, LIMIT_SEED)
    if len(sampled) == len(examples):
        return examples, None
    sample = f"a seeded sample of {len(sampled)} of {len(examples)} examples (--limit {limit}, seed {LIMIT_SEED})"
    console.print(f"running on {sample}", markup=False, highlight=False)
    return sampled, sample


def _latest_run(task_name: str) -> Path:
    """With nothing to score named: the newest finished run of the task under runs/, said in one line."""
    from mcqa.console import console
    from mcqa.train.index import DEFAULT_ROOT, latest_run

    run = latest_run(task_name, DEFAULT_ROOT)
    if run is None:
        raise McqaError(f"nothing to score: no finished `mcqa train` run of task '{task_name}' under {DEFAULT_ROOT}/; "
                        "pass --predictions FILE.jsonl (outputs from anywhere), --model M (zero-shot) or --adapter RUN")
    console.print(f"scoring the most recent finished run of '{task_name}': {run} (pass --adapter RUN for another)",
                  markup=False, highlight=False, soft_wrap=True)
    return run


def _run_protocol(adapter: Path | None, task: str) -> str | None:
    """A trained run is scored on its own protocol's split unless --protocol says otherwise
    (a cv fold's test split is not the default protocol's). A run of another task is left to
    load_run to refuse, with its own message."""
    if adapter is None:
        return None
    from mcqa.train.runs import read_summary  # torch and peft: seconds, only when a run is named

    summary = read_summary(adapter)
    return summary.protocol if summary.task == task else None


def _run_model(task, args, examples, protocol, journal: Path | None = None):
    from mcqa.predicting import CALIBRATION_EXAMPLES, Loaded, default_readout, load_predictor, predict
    from mcqa.readouts import get_readout
    from mcqa.readouts.base import check_options, parse_options

    options = parse_options(args.readout_opt, "--readout-opt")
    if args.endpoint is not None or args.served_model is not None:
        if not (args.endpoint and args.served_model):
            raise McqaError("--endpoint URL and --served-model NAME go together (the server's /v1 URL and the model it serves)")
        if args.model or args.adapter or (args.readout and args.readout != "endpoint"):
            raise McqaError("--endpoint reads a server: give no --model, --adapter or --readout with it")
        options |= {"url": args.endpoint, "served_model": args.served_model}
        if journal is not None:
            options["journal"] = str(journal)  # each answer appended as it arrives: an interrupted run resumes
        check_options(get_readout("endpoint"), options)
        loaded = Loaded(None, None, "generate", {"model": args.served_model, "endpoint": args.endpoint, "adapter": None, "mode": "served"})
        return predict(task, loaded, examples, "endpoint", protocol, calibrate=False, options=options)
    if args.readout:  # a wrong name or option fails before the model loads
        check_options(get_readout(args.readout), options)
    loaded = load_predictor(task, args.model, args.adapter, trust_remote_code=args.trust_remote_code)
    return predict(task, loaded, examples, args.readout or default_readout(loaded), protocol, calibrate=not args.no_calibrate,
                   options=options, calibration_examples=CALIBRATION_EXAMPLES if args.calibration_examples is None
                   else args.calibration_examples or None)


def cmd_predict(args) -> None:
    from mcqa.console import console
    from mcqa.examples import load_file, load_split
    from mcqa.io import check_out_folder, unique_name, write_json, write_jsonl
    from mcqa.registry import get_task
    from mcqa.eval.scoring import score

    task = get_task(args.task)
    if (args.split is None) == (args.data is None):
        raise McqaError("give exactly one of --split S or --data FILE.jsonl (new examples, labeled or not)")
    stem = unique_name(f"{task.name}-{args.readout or 'default'}")
    where = _out_file(args.out or Path("runs") / "predict" / f"{stem}.jsonl")
    examples = load_file(task, args.data) if args.data else load_split(task, args.split, args.protocol or _run_protocol(args.adapter, task.name))
    if args.model is not None:  # a model that is no causal LM: one line before anything is sampled or loaded
        from mcqa.model import check_model

        check_model(args.model, args.trust_remote_code)
    # Labeled examples are also scored, into a run folder named like the predictions file,
    # checked now so that a clash is found before the model runs.
    scored_dir = check_out_folder(where.with_suffix("")) if examples and all(e.target is not None for e in examples) else None
    examples, sample = _limit(examples, args.limit)
    outputs, info = _run_model(task, args, examples, args.protocol, journal=where)
    if sample:
        info["sample"] = sample
    write_jsonl(where, outputs)
    write_json(where.with_suffix(".json"), info)
    console.print(f"{len(outputs)} predictions ({info['examples_per_second']} examples/s): [bold]{where}[/]")
    if scored_dir is not None:
        source = {"split": args.split} if args.split else {"data": str(args.data)}
        run = {"task": task.name, **source, **{k: v for k, v in info.items() if not isinstance(v, dict)}, "predictions": str(where)}
        score(task, examples, outputs, run, folder=scored_dir)
        console.print(f"the examples have labels: scored in [bold]{scored_dir}[/] (report.html, report.md, metrics.json)")


def _out_file(path: Path) -> Path:
    """A predictions file and its .json summary beside it: both must be regular files (or new)."""
    from mcqa.io import check_out_file

    if path.suffix == ".json":
        raise McqaError(f"{path}: --out names the predictions file, which gets a .json summary beside it; give it a .jsonl name")
    check_out_file(path.with_suffix(".json"))
    return check_out_file(path)


def cmd_train(args) -> None:
    from mcqa.train.config import load_config, parse_overrides
    from mcqa.console import console, out
    from mcqa.eval.report import tables

    if args.resume:
        if args.task or args.config or args.overrides or args.model or args.mode or args.protocol:
            raise McqaError("--resume takes no other settings: the run continues with its saved config.yaml")
        config, note = None, None
    else:
        if not args.task and not args.config:
            raise McqaError("name a task with --task T (or give --config run.yaml that sets task)")
        overrides = parse_overrides(args.overrides)
        for key in ("task", "model", "mode", "protocol"):
            if getattr(args, key):
                overrides[key] = getattr(args, key)
        if args.trust_remote_code:
            overrides["trust_remote_code"] = True
        from mcqa.registry import get_task

        if args.task:
            get_task(args.task)  # a wrong name fails here, with its did-you-mean, before any model is loaded
        config = load_config(args.config, overrides)
        get_task(config.task)
        note = _task_defaults_note(config.task, args.config, overrides)
    from mcqa.train.recipe import train

    run_dir = train(config, resume=args.resume, trust_remote_code=args.trust_remote_code, note=note)
    metrics_file = run_dir / "test" / "metrics.json"
    if metrics_file.is_file():
        for t in tables(json.loads(metrics_file.read_text(encoding="utf-8"))):
            out.print(t)
    console.print(f"run folder: [bold]{run_dir}[/] (adapter in {run_dir / 'adapter'}, test report in {run_dir / 'test' / 'report.md'})")


def _task_defaults_note(task_name: str, config_file, overrides: dict) -> str | None:
    """One line naming the settings that came from the task's train_defaults (what the user
    did not set in a config file or on the command line); said once the run is set up."""
    from mcqa.train.config import defaults_used

    used = defaults_used(task_name, config_file, overrides)
    if not used:
        return None
    return f"task '{task_name}' defaults: " + " ".join(f"{k}={v}" for k, v in used.items()) + " (a config file or key=value overrides win)"


def cmd_runs(args) -> None:
    from rich.console import Console

    from mcqa.console import out
    from mcqa.train.index import find_runs, problem_lines, runs_table

    found = find_runs(args.folder)
    if not found:
        out.print(f"no run folders under {args.folder}/ (`mcqa train` writes them under runs/train/)", markup=False, highlight=False)
        return
    table = runs_table(found, args.folder, width=out.width, wide=args.wide)
    natural = out.measure(table, options=out.options.update_width(10_000)).maximum
    show = Console(width=max(out.width, natural)) if args.wide else out  # --wide: never cut
    if table.row_count:
        show.print(table)
    else:
        out.print(f"no finished runs under {args.folder}/", markup=False, highlight=False)
    for line in problem_lines(found):  # each damaged or unfinished folder, never a traceback; narrow: wrapped at spaces
        show.print(line, markup=False, highlight=False, soft_wrap=args.wide)


def cmd_models(args) -> None:
    from rich.table import Table

    from mcqa import model as models
    from mcqa.console import console, out

    if args.action == "list":
        rows = models.list_models()
        for title, hub in (("offline aliases (`mcqa models install NAME`, or on first use)", False),
                           ("hub ids to pass as --model (need the Hugging Face hub once)", True)):
            table = Table(title=title, title_justify="left")
            table.add_column("alias" if not hub else "hub id", no_wrap=True)
            table.add_column("installed", no_wrap=True)
            table.add_column("size", no_wrap=True, justify="right")
            table.add_column("licence")
            table.add_column("description", ratio=1)
            for m in (m for m in rows if m.needs_network == hub):
                size = f"{m.size_bytes / 2**20:.0f} MiB" if m.size_bytes else "-"
                what = m.description.split("; licence:")[0].split("; a hub id:")[0]
                table.add_row(m.alias, "yes" if m.installed else "no", size, m.licence or "-", what)
            out.print(table)
        out.print(f"aliases are installed under {models.cache_root() / 'models'}")
        return
    if not args.alias:
        raise McqaError(f"`mcqa models {args.action}` needs an alias; see `mcqa models list`")
    if args.action == "install":
        models.install(args.alias, force=args.force)  # prints its own progress and result
    else:
        console.print(f"{args.alias}: {models.verify(args.alias)}")


def cmd_baseline(args) -> None:
    from mcqa.compare.baseline_cache import DEFAULT_CACHE
    from mcqa.compare.baselines import run_baseline
    from mcqa.console import console
    from mcqa.examples import load_file
    from mcqa.io import write_json, write_jsonl
    from mcqa.registry import get_task

    task = get_task(args.task)
    examples = load_file(task, args.data) if args.data else None
    where = _out_file(args.out) if args.out else None
    r = run_baseline(args.baseline, task, args.protocol, args.split, examples=examples, cache=DEFAULT_CACHE)
    where = where or _out_file(Path("runs") / "baselines" / f"{task.name}-{args.baseline}-{r['protocol']}-{'data' if args.data else args.split}.jsonl")
    write_jsonl(where, r["predictions"].values())
    write_json(where.with_suffix(".json"), {k: v for k, v in r.items() if k != "predictions"})
    console.print(f"predictions: [bold]{where}[/] (score them with `mcqa score --task {task.name} --predictions {where} ...`)")


def cmd_compare(args) -> None:
    from mcqa.compare.baseline_cache import DEFAULT_CACHE
    from mcqa.compare.table import compare
    from mcqa.compare.zero_shot_cache import DEFAULT_CACHE as ZERO_SHOT_CACHE
    from mcqa.console import console, out
    from mcqa.io import check_out_folder, unique_name
    from mcqa.registry import get_task

    task = get_task(args.task)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()] if args.baselines is not None else None
    folder = check_out_folder(args.out or Path("runs") / "compare" / unique_name(task.name))
    readouts = tuple(args.zero_shot_readouts) if args.zero_shot_readouts else None
    compare(task, args.protocol, args.runs, baselines, folder, zero_shot=args.zero_shot, zero_shot_readouts=readouts,
            trust_remote_code=args.trust_remote_code, baseline_cache=DEFAULT_CACHE, zero_shot_cache=ZERO_SHOT_CACHE,
            against=args.against, stack=args.stack)
    out.print((folder / "compare.md").read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True)
    console.print(f"compare folder: [bold]{folder}[/] (compare.html, compare.md, compare.json, compare.png, baselines/)")


def cmd_export(args) -> None:
    from mcqa.console import console
    from mcqa.serve.export import export

    where = export(args.run, args.out, engine=args.to, merge=args.merge, name=args.name)
    console.print(f"bundle: [bold]{where}[/] (serve it with {where / 'serve.sh'}; {where / 'README.md'} says how to read it out)")


def cmd_view(args) -> None:
    from mcqa.eval.view import find_page, serve

    page = find_page(args.path)
    if args.print:
        print(page)
        return
    serve(page, lambda url: print(f"serving {page.parent} (that folder only) at {url}; Ctrl-C stops", flush=True))


def _model_args(s) -> None:
    s.add_argument("--model", help="base model: hub id, folder or alias (zero-shot, or the base of --adapter)")
    s.add_argument("--adapter", type=Path, help="a finished `mcqa train` run folder")
    s.add_argument("--readout", help="how the answer is read out (default: the run's mode's, else constrained): " + _listing("readouts"))
    s.add_argument("--readout-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the readout (repeatable), e.g. --readout-opt rule=sum for options")
    s.add_argument("--no-calibrate", action="store_true", help="rank, options: skip the temperature fitted on validation")
    s.add_argument("--endpoint", metavar="URL", help="read out an OpenAI-compatible server instead (vLLM, SGLang, ...), "
                   "e.g. http://127.0.0.1:8000/v1; the API key comes from $OPENAI_API_KEY (see --readout-opt api_key_env=...)")
    s.add_argument("--served-model", metavar="NAME", help="with --endpoint: the model (or LoRA module) name the server serves")
    s.add_argument("--calibration-examples", type=_count(0), metavar="N",
                   help="rank, options: fit the temperature on a seeded sample of N validation examples (0: all; default 200); "
                   "a trained run keeps the fit in its folder")
    s.add_argument("--limit", type=_count(1), metavar="N", help="run the model on a seeded sample of N examples (a quick look; "
                   "the output says so)")
    _trust_arg(s)


def _trust_arg(s) -> None:
    s.add_argument("--trust-remote-code", action="store_true",
                   help="let a model run its own Python code (never turned on by a run folder; only if you trust it)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mcqa", description="Teach small LLMs multiple choice and JSON labels; score them honestly.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("tasks", help="list tasks with their fields, label spaces and split sizes").set_defaults(fn=cmd_tasks)

    s = sub.add_parser("show", help="print rendered prompts with their targets")
    s.add_argument("--task", required=True)
    s.add_argument("--split", default="train")
    s.add_argument("--protocol", help="split protocol (default: the task's first)")
    s.add_argument("-n", type=_count(0), default=3, help="how many examples")
    s.add_argument("--tokenizer", help="hub id or folder whose chat template to use (default: Qwen3)")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("schema", help="print a task's JSON Schema, or --write every schemas/ file")
    s.add_argument("--task")
    s.add_argument("--write", action="store_true")
    s.set_defaults(fn=cmd_schema)

    s = sub.add_parser("check", help="run the conformance rules on a task (yours or a plugin's); exit 2 if any fails")
    s.add_argument("--task", required=True)
    s.add_argument("--tokenizer", help="hub id or folder whose chat template renders the prompts (default: Qwen3)")
    s.set_defaults(fn=cmd_check)

    s = sub.add_parser("score", help="score a model's raw outputs (JSONL of {id, output})")
    s.add_argument("--task", required=True)
    s.add_argument("--split", help="train, validation or test (default: test, unless --data is given)")
    s.add_argument("--protocol", help="split protocol (default: the task's first)")
    s.add_argument("--data", type=Path, help="your own labeled examples, in the task's input format (JSONL)")
    s.add_argument("--predictions", type=Path, help="raw outputs to score (or run a model with --model/--adapter; "
                   "with none of the three, the most recent finished run of the task under runs/)")
    _model_args(s)
    s.add_argument("--out", type=Path, help="run folder (default: runs/score/<task>-<split>-<time>)")
    s.add_argument("--subset", action="store_true", help="score only the examples that have a prediction")
    s.add_argument("--resamples", type=_count(1), default=1000, help="bootstrap resamples for the intervals")
    s.set_defaults(fn=cmd_score)

    s = sub.add_parser("predict", help="run a model or trained run on a split or your own file; writes JSONL")
    s.add_argument("--task", required=True)
    s.add_argument("--split", help="train, validation or test")
    s.add_argument("--protocol", help="split protocol (default: the task's first, or the run's)")
    s.add_argument("--data", type=Path, help="new examples in the task's input format (JSONL, labels optional)")
    _model_args(s)
    s.add_argument("--out", type=Path, help="predictions file (default: runs/predict/<task>-<readout>-<time>.jsonl)")
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("train", help="LoRA-train a model on a task; writes a run folder")
    s.add_argument("--task")
    s.add_argument("--model", help="hub id, local folder or alias (see `mcqa models`); default Qwen/Qwen3-0.6B")
    s.add_argument("--mode", help="training mode (default generate): " + _listing("modes"))
    s.add_argument("--protocol", help="split protocol (default: the task's first); same as protocol=P")
    s.add_argument("--config", type=Path, help="YAML file of settings; key=value arguments override it")
    s.add_argument("--resume", type=Path, help="continue an interrupted run folder from its last checkpoint")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. epochs=2 lora.r=8")
    _trust_arg(s)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("baseline", help="fit a non-LLM baseline on train and write its predictions")
    s.add_argument("--task", required=True)
    s.add_argument("--baseline", required=True, help=_listing("baselines"))
    s.add_argument("--protocol", help="split protocol (default: the task's first)")
    s.add_argument("--split", default="test", help="the split to predict (default: test)")
    s.add_argument("--data", type=Path, help="predict your own examples (JSONL, the task's input format) instead")
    s.add_argument("--out", type=Path, help="predictions file (default: runs/baselines/<task>-<baseline>-...jsonl)")
    s.set_defaults(fn=cmd_baseline)

    s = sub.add_parser("compare", help="baselines and trained runs in one table, same split, same scorer")
    s.add_argument("--task", required=True)
    s.add_argument("--protocol", help="split protocol (default: the task's first), or a cross-validation family "
                   "such as cv5 to pool the test predictions of its folds (cv5-0 .. cv5-4)")
    s.add_argument("--runs", nargs="*", type=Path, default=[], help="finished `mcqa train` run folders (one per fold for a family)")
    s.add_argument("--baselines", help="comma-separated (default: all); an empty string for none")
    s.add_argument("--zero-shot", nargs="+", metavar="MODEL",
                   help="also these base models with no adapter (constrained and rank readouts); their predictions "
                        "are cached in runs/cache/zero_shot, so a second compare reuses them")
    s.add_argument("--zero-shot-readouts", nargs="+", metavar="R", help="readouts of --zero-shot, each NAME or "
                   "NAME:key=value,... such as options:rule=pmi (default: constrained, rank, and for multiple choice every options rule)")
    s.add_argument("--against", metavar="NAME", help="the row every other is paired with, as the table names it "
                   "(default: the best baseline): accuracy differences with paired bootstrap intervals and McNemar's exact p")
    s.add_argument("--stack", nargs="+", metavar="NAME", help="add a row stacking these rows, as the table names them, "
                   "or 'all' for every row with probabilities: log-linear pooling with weights fitted on each fold's "
                   "validation split only")
    s.add_argument("--out", type=Path, help="folder (default: runs/compare/<task>-<time>)")
    _trust_arg(s)
    s.set_defaults(fn=cmd_compare)

    s = sub.add_parser("export", help="a finished run as a bundle a serving engine (vLLM) serves as is")
    s.add_argument("run", type=Path, help="a finished `mcqa train` run folder (generate mode)")
    s.add_argument("--to", default="vllm", choices=["vllm"], help="the serving engine (default vllm)")
    s.add_argument("out", type=Path, help="the bundle folder (new or empty)")
    s.add_argument("--merge", action="store_true", help="write the base model with the adapter merged in, instead of the adapter")
    s.add_argument("--name", help="the served model name (default: <task>-<run folder name>)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("runs", help="list finished training runs with their task, model, mode and test scores")
    s.add_argument("folder", nargs="?", type=Path, default=Path("runs"), help="where to look (default: runs/)")
    s.add_argument("--wide", action="store_true", help="also each run folder and every test metric, at full width")
    s.set_defaults(fn=cmd_runs)

    s = sub.add_parser("models", help="list, install or verify the offline model aliases")
    s.add_argument("action", nargs="?", default="list", choices=["list", "install", "verify"])
    s.add_argument("alias", nargs="?")
    s.add_argument("--force", action="store_true", help="with install: rebuild even if installed")
    s.set_defaults(fn=cmd_models)

    s = sub.add_parser("view", help="open a run's report.html or a compare.html: served on 127.0.0.1, or --print its path")
    s.add_argument("path", type=Path, help="a scored run, training run or compare folder")
    s.add_argument("--print", action="store_true", help="print the page's file path instead of serving it")
    s.set_defaults(fn=cmd_view)
    return p


def main(argv: list[str] | None = None) -> int:
    global _FULL_HELP
    _FULL_HELP = any(a in ("-h", "--help") for a in (sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    from mcqa.console import quiet_foreign_deprecations

    quiet_foreign_deprecations()
    try:
        args.fn(args)
    except McqaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a path the library did not expect to fail (a full disk, a lost mount): still one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; check the path, its permissions and free space", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
