"""`mcqa check`: the conformance rules run on one task (yours or a plugin's); exit 2 if any fails."""

from __future__ import annotations

from mcqa.conformance import RULES, rule_lines
from mcqa.console import out
from mcqa.errors import McqaError
from mcqa.model import load_chat_template
from mcqa.registry import get_task


def add_arguments(s) -> None:
    s.add_argument("--task", required=True)
    s.add_argument("--tokenizer", help="hub id or folder whose chat template renders the prompts (default: Qwen3)")


def run(args) -> None:
    task = get_task(args.task)
    lines, failed = rule_lines(task, load_chat_template(args.tokenizer))  # prompts checked as rendered
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise McqaError(
            f"task '{task.name}' breaks {len(failed)} of {len(RULES)} conformance rules ({', '.join(failed)}); "
            "the FAIL lines above say what is wrong"
        )
    out.print(f"task '{task.name}' passes all {len(RULES)} conformance rules", markup=False, highlight=False)
