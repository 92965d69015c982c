"""`mcqa export`: a finished generate-mode run as a bundle a serving engine serves as is."""

from __future__ import annotations

from pathlib import Path

from mcqa.console import console
from mcqa.serve import ENGINES
from mcqa.serve.export import export


def add_arguments(s) -> None:
    s.add_argument("run", type=Path, help="a finished `mcqa train` run folder (generate mode)")
    s.add_argument(
        "--to",
        default="vllm",
        choices=list(ENGINES),
        help="the serving engine (default vllm): " + "; ".join(f"{e.name}: {e.description}" for e in ENGINES.values()),
    )
    s.add_argument("out", type=Path, help="the bundle folder (new or empty)")
    s.add_argument(
        "--merge", action="store_true", help="write the base model with the adapter merged in, instead of the adapter"
    )
    s.add_argument("--name", help="the served model name (default: <task>-<run folder name>)")


def run(args) -> None:
    where = export(args.run, args.out, engine=args.to, merge=args.merge, name=args.name)
    console.print(
        f"bundle: [bold]{where}[/] (serve it with {where / 'serve.sh'}; {where / 'README.md'} says how to read it out)"
    )
