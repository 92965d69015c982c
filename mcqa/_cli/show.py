"""`mcqa show`: a task's prompts as the model sees them (rendered by a chat template), each
with its target."""

from __future__ import annotations

from mcqa._cli.common import count
from mcqa.console import out
from mcqa.examples import load_split
from mcqa.model import load_chat_template
from mcqa.prompting import render_prompt
from mcqa.registry import get_task
from mcqa.task import gold_json


def add_arguments(s) -> None:
    s.add_argument("--task", required=True)
    s.add_argument("--split", default="train")
    s.add_argument("--protocol", help="split protocol (default: the task's first)")
    s.add_argument("-n", type=count(0), default=3, help="how many examples")
    s.add_argument("--tokenizer", help="hub id or folder whose chat template to use (default: Qwen3)")


def run(args) -> None:
    task = get_task(args.task)
    examples = load_split(task, args.split, args.protocol)[: args.n]
    template = load_chat_template(
        args.tokenizer
    )  # a folder or alias read as is; default the Qwen3 template, local copy first
    for e in examples:
        out.rule(f"{task.name} · {e.id} · groups: {', '.join(e.groups) or '-'}")
        out.print(render_prompt(template, task.messages(e)), markup=False, highlight=False, end="", soft_wrap=True)
        out.print(f"[bold green]{gold_json(task, e)}[/]" if e.target else "[dim](unlabeled)[/]")
