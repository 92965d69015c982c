"""mcqa's command line: one file per command here, each flags -> library calls; a library
error becomes one line on stderr and exit code 2, never a traceback.

Only the module of the command being run is imported (by name, from COMMANDS): `mcqa runs` or
`mcqa score --predictions` must not pay for torch, which `mcqa train` needs. This is the one
place mcqa imports its own modules by name, besides the lazy re-exports of mcqa.names."""

from __future__ import annotations

import importlib
import sys

from mcqa._cli.common import HELP_RUN, USER_ERROR, Parser
from mcqa.console import quiet_foreign_deprecations
from mcqa.errors import McqaError

# name -> one line of help, in the order `mcqa --help` lists them; the module is mcqa._cli.<name>.
COMMANDS = {
    "tasks": "list tasks with their fields, label spaces and split sizes",
    "show": "print rendered prompts with their targets",
    "schema": "print a task's JSON Schema, or --write every schemas/ file",
    "check": "run the conformance rules on a task (yours or a plugin's); exit 2 if any fails",
    "score": "score a model's raw outputs (JSONL of {id, output}), or run a model and score it",
    "predict": "run a model or trained run on a split or your own file; writes JSONL",
    "train": "LoRA-train a model on a task; writes a run folder",
    "baseline": "fit a non-LLM baseline on train and write its predictions",
    "compare": "baselines and trained runs in one table, same split, same scorer",
    "export": "a finished run as a bundle a serving engine (vLLM) serves as is",
    "runs": "list finished training runs with their task, model, mode and test scores",
    "models": "list, install or verify the offline model aliases",
    "view": "open a run's report.html or a compare.html: served on 127.0.0.1, or --print its path",
}


def command_module(name: str):
    return importlib.import_module(f"mcqa._cli.{name}")


def build_parser(command: str | None = None) -> Parser:
    """Every command's name and help; the arguments of `command` only (None: of all of them)."""
    p = Parser(prog="mcqa", description="Teach small LLMs multiple choice and JSON labels; score them honestly.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, help_text in COMMANDS.items():
        s = sub.add_parser(name, help=help_text)
        if command is None or name == command:
            module = command_module(name)
            module.add_arguments(s)
            s.set_defaults(fn=module.run)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    HELP_RUN[0] = any(a in ("-h", "--help") for a in argv)
    args = build_parser(command if command in COMMANDS else "tasks").parse_args(argv)
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
