"""`mcqa runs`: the finished training runs under a folder, one line each within the terminal
(--wide: every test metric), then each damaged or unfinished folder in one line."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from mcqa.console import out
from mcqa.paths import RUNS
from mcqa.train.index import find_runs, problem_lines, runs_table


def add_arguments(s) -> None:
    s.add_argument("folder", nargs="?", type=Path, default=RUNS, help="where to look (default: runs/)")
    s.add_argument("--wide", action="store_true", help="also each run folder and every test metric, at full width")


def run(args) -> None:
    found = find_runs(args.folder)
    if not found:
        out.print(
            f"no run folders under {args.folder}/ (`mcqa train` writes them under runs/train/)",
            markup=False,
            highlight=False,
        )
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
