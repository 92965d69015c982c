"""`mcqa models`: the offline aliases and hub ids (list), installing an alias from its packages
(install), and a short generation to check one works (verify)."""

from __future__ import annotations

from rich.table import Table

from mcqa import model as models
from mcqa.console import console, out
from mcqa.errors import McqaError


def add_arguments(s) -> None:
    s.add_argument("action", nargs="?", default="list", choices=["list", "install", "verify"])
    s.add_argument("alias", nargs="?")
    s.add_argument("--force", action="store_true", help="with install: rebuild even if installed")


def run(args) -> None:
    if args.action == "list":
        rows = models.list_models()
        for title, hub in (
            ("offline aliases (`mcqa models install NAME`, or on first use)", False),
            ("hub ids to pass as --model (need the Hugging Face hub once)", True),
        ):
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
