"""`mcqa baseline`: fit one non-LLM baseline on train and write its predictions of a split (or
the user's file) as JSONL with a .json summary, ready for `mcqa score`."""

from __future__ import annotations

from pathlib import Path

from mcqa._cli.common import listing, out_file
from mcqa.compare.baseline_cache import DEFAULT_CACHE
from mcqa.compare.baselines import run_baseline
from mcqa.console import console
from mcqa.examples import load_file
from mcqa.io import write_json, write_jsonl
from mcqa.paths import baseline_file
from mcqa.registry import get_task


def add_arguments(s) -> None:
    s.add_argument("--task", required=True)
    s.add_argument("--baseline", required=True, help=listing("baselines"))
    s.add_argument("--protocol", help="split protocol (default: the task's first)")
    s.add_argument("--split", default="test", help="the split to predict (default: test)")
    s.add_argument("--data", type=Path, help="predict your own examples (JSONL, the task's input format) instead")
    s.add_argument("--out", type=Path, help="predictions file (default: runs/baselines/<task>-<baseline>-...jsonl)")


def run(args) -> None:
    task = get_task(args.task)
    examples = load_file(task, args.data) if args.data else None
    where = out_file(args.out) if args.out else None
    r = run_baseline(args.baseline, task, args.protocol, args.split, examples=examples, cache=DEFAULT_CACHE)
    where = where or out_file(baseline_file(task.name, args.baseline, r["protocol"], None if args.data else args.split))
    write_jsonl(where, r["predictions"].values())
    write_json(where.with_suffix(".json"), {k: v for k, v in r.items() if k != "predictions"})
    console.print(
        f"predictions: [bold]{where}[/] (score them with `mcqa score --task {task.name} --predictions {where} ...`)"
    )
