"""The one place prompts and targets become text. Training and scoring both use exactly these
functions, so what a model learns is what the scorer expects.

Qwen3 runs with thinking off: its chat template, given enable_thinking=False, ends the prompt
with an empty <think></think> block so the assistant turn starts straight at the answer
(Qwen3.5's and SmolLM3's templates read the same flag). Templates that do not know the flag
ignore it. A template with no system role (Gemma 2 raises "System role not supported") gets the
system text folded into the first user turn, as Gemma 3's own template does.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2.exceptions import TemplateError
from pydantic import BaseModel

LETTERS = "ABCDEFGHIJ"


def format_options(options: list[str]) -> str:
    """Options as lettered lines: "A. first\nB. second"."""
    if len(options) > len(LETTERS):
        raise ValueError(f"{len(options)} options; at most {len(LETTERS)} are supported")
    return "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))


def label_list(values) -> str:
    """Allowed values as they appear in JSON, for instructions ("Work", "Personal", 1, 2)."""
    return ", ".join(json.dumps(v, ensure_ascii=False) for v in values)


def serialize_target(output: type[BaseModel], target: dict[str, Any]) -> str:
    """The target as compact JSON in the schema's field order: the exact text a model is
    trained to emit, and what scoring gold against itself round-trips through."""
    return output.model_validate(target).model_dump_json()


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """Chat messages -> the prompt text, ending where the assistant's answer begins."""
    try:
        return _apply(tokenizer, messages)
    except TemplateError as e:
        if not (messages and messages[0]["role"] == "system" and "system" in str(e).lower()):
            raise
        return _apply(tokenizer, fold_system(messages))


def _apply(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system text as the start of the first user turn, for a template without a system role."""
    system, rest = messages[0]["content"], messages[1:]
    first = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
    if first is None:
        return [{"role": "user", "content": system}] + rest
    return [*rest[:first], {**rest[first], "content": f"{system}\n\n{rest[first]['content']}"}, *rest[first + 1 :]]


def neutral_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same conversation with the question emptied: the last user turn says nothing. An
    option's likelihood here is what PMI subtracts (the options readout, the listwise mode)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return [{**m, "content": ""} if i == last else m for i, m in enumerate(messages)]
