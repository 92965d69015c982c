"""`mcqa view`: a run's report.html or a compare.html served on 127.0.0.1 (that folder only),
or with --print its path, to open as a file."""

from __future__ import annotations

from pathlib import Path

from mcqa.eval.view import find_page, serve


def add_arguments(s) -> None:
    s.add_argument("path", type=Path, help="a scored run, training run or compare folder")
    s.add_argument("--print", action="store_true", help="print the page's file path instead of serving it")


def run(args) -> None:
    page = find_page(args.path)
    if args.print:
        print(page)
        return
    serve(page, lambda url: print(f"serving {page.parent} (that folder only) at {url}; Ctrl-C stops", flush=True))
