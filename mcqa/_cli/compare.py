"""`mcqa compare`: baselines, trained runs, zero-shot readouts and a stack in one table on the
same examples and scorer, each row paired with a reference row; compare.html, .md, .json, .png."""

from __future__ import annotations

from pathlib import Path

from mcqa._cli.common import trust_arg
from mcqa.compare.baseline_cache import DEFAULT_CACHE
from mcqa.compare.table import compare
from mcqa.compare.zero_shot_cache import DEFAULT_CACHE as ZERO_SHOT_CACHE
from mcqa.console import console, out
from mcqa.io import check_out_folder
from mcqa.paths import compare_dir
from mcqa.registry import get_task


def add_arguments(s) -> None:
    s.add_argument("--task", required=True)
    s.add_argument(
        "--protocol",
        help="split protocol (default: the task's first), or a cross-validation family "
        "such as cv5 to pool the test predictions of its folds (cv5-0 .. cv5-4)",
    )
    s.add_argument(
        "--runs", nargs="*", type=Path, default=[], help="finished `mcqa train` run folders (one per fold for a family)"
    )
    s.add_argument("--baselines", help="comma-separated (default: all); an empty string for none")
    s.add_argument(
        "--zero-shot",
        nargs="+",
        metavar="MODEL",
        help="also these base models with no adapter (constrained and rank readouts); their predictions "
        "are cached in runs/cache/zero_shot, so a second compare reuses them",
    )
    s.add_argument(
        "--zero-shot-readouts",
        nargs="+",
        metavar="R",
        help="readouts of --zero-shot, each NAME or "
        "NAME:key=value,... such as options:rule=pmi (default: "
        "constrained, rank, and for multiple choice every options rule)",
    )
    s.add_argument(
        "--against",
        metavar="NAME",
        help="the row every other is paired with, as the table names it "
        "(default: the best baseline): accuracy differences with paired bootstrap intervals and McNemar's exact p",
    )
    s.add_argument(
        "--stack",
        nargs="+",
        metavar="NAME",
        help="add a row stacking these rows, as the table names them, "
        "or 'all' for every row with probabilities: log-linear pooling with weights fitted on each fold's "
        "validation split only",
    )
    s.add_argument("--out", type=Path, help="folder (default: runs/compare/<task>-<time>)")
    trust_arg(s)


def run(args) -> None:
    task = get_task(args.task)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()] if args.baselines is not None else None
    folder = check_out_folder(args.out or compare_dir(task.name))
    readouts = tuple(args.zero_shot_readouts) if args.zero_shot_readouts else None
    compare(
        task,
        args.protocol,
        args.runs,
        baselines,
        folder,
        zero_shot=args.zero_shot,
        zero_shot_readouts=readouts,
        trust_remote_code=args.trust_remote_code,
        baseline_cache=DEFAULT_CACHE,
        zero_shot_cache=ZERO_SHOT_CACHE,
        against=args.against,
        stack=args.stack,
    )
    out.print((folder / "compare.md").read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"compare folder: [bold]{folder}[/] (compare.html, compare.md, compare.json, compare.png, baselines/)"
    )
