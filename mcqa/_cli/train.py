"""`mcqa train`: LoRA-train a model on a task (a config file and key=value overrides over the
task's defaults), or --resume an interrupted run; prints the test tables and the run folder."""

from __future__ import annotations

import json
from pathlib import Path

from mcqa._cli.common import listing, trust_arg
from mcqa.console import console, out
from mcqa.errors import McqaError
from mcqa.eval.report import tables
from mcqa.registry import get_task
from mcqa.train.config import defaults_note, load_config, parse_overrides
from mcqa.train.recipe import train


def add_arguments(s) -> None:
    s.add_argument("--task")
    s.add_argument("--model", help="hub id, local folder or alias (see `mcqa models`); default Qwen/Qwen3-0.6B")
    s.add_argument("--mode", help="training mode (default generate): " + listing("modes"))
    s.add_argument("--protocol", help="split protocol (default: the task's first); same as protocol=P")
    s.add_argument("--config", type=Path, help="YAML file of settings; key=value arguments override it")
    s.add_argument("--resume", type=Path, help="continue an interrupted run folder from its last checkpoint")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. epochs=2 lora.r=8")
    trust_arg(s)


def run(args) -> None:
    if args.resume:
        if args.task or args.config or args.overrides or args.model or args.mode or args.protocol:
            raise McqaError("--resume takes no other settings: the run continues with its saved config.yaml")
        config, note = None, None
    else:
        if not args.task and not args.config:
            raise McqaError("name a task with --task T (or give --config run.yaml that sets task)")
        overrides = parse_overrides(args.overrides)
        overrides |= {key: getattr(args, key) for key in ("task", "model", "mode", "protocol") if getattr(args, key)}
        if args.trust_remote_code:
            overrides["trust_remote_code"] = True
        if args.task:
            get_task(args.task)  # a wrong name fails here, with its did-you-mean, before any model is loaded
        config = load_config(args.config, overrides)
        get_task(config.task)
        note = defaults_note(config.task, args.config, overrides)
    run_dir = train(config, resume=args.resume, trust_remote_code=args.trust_remote_code, note=note)
    metrics_file = run_dir / "test" / "metrics.json"
    if metrics_file.is_file():
        for t in tables(json.loads(metrics_file.read_text(encoding="utf-8"))):
            out.print(t)
    console.print(
        f"run folder: [bold]{run_dir}[/] (adapter in {run_dir / 'adapter'}, "
        f"test report in {run_dir / 'test' / 'report.md'})"
    )
