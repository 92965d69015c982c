"""A tokenizer folder's chat template, rendered without transformers: what `mcqa show` and
`mcqa check` need to print and check prompts, which should not cost the seconds of importing
torch and transformers (a listing or a check of a task's text loads no model).

transformers renders templates with jinja2 in a sandbox (chat_template_utils); this does the
same with the same settings (trim_blocks, lstrip_blocks, loop controls, `raise_exception`,
`strftime_now`, a `tojson` that keeps non-ASCII, the special tokens as variables). A test
compares it with `tokenizer.apply_chat_template` on every task's prompts for each local
tokenizer. A hub id that is not on disk needs transformers (mcqa.model.load_tokenizer)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mcqa.errors import McqaError

_SPECIAL = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class _Generation(Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for a training mask in
    transformers; rendering a prompt only needs its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class ChatTemplate:
    """The template of one tokenizer folder, with that tokenizer's special tokens."""

    def __init__(self, source: str, special: dict[str, str], where: str):
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise McqaError(f"{where}: its chat template does not parse ({e}); use another tokenizer") from None
        self.special, self.where = special, where
        self.eos_token = special.get("eos_token")

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool = False, add_generation_prompt: bool = False, **kwargs: Any
    ) -> str:
        if tokenize:
            raise ValueError(
                "ChatTemplate renders text only; load the tokenizer (mcqa.model.load_tokenizer) for token ids"
            )
        # A TemplateError (a template without a system role, say) reaches the caller as from
        # transformers: mcqa.prompting.render_prompt folds the system text and tries again.
        return self._template.render(
            messages=[dict(m) for m in messages],
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **self.special,
            **kwargs,
        )


def read_chat_template(folder: Path) -> ChatTemplate | None:
    """The chat template of a tokenizer folder (chat_template.jinja, chat_template.json or
    tokenizer_config.json's chat_template), or None when the folder has none."""
    config_file = folder / "tokenizer_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except (OSError, ValueError) as e:
        raise McqaError(f"{config_file}: not readable JSON ({e}); re-copy the tokenizer") from None
    if not isinstance(config, dict):
        raise McqaError(f"{config_file}: expected a JSON object; re-copy the tokenizer")
    source: Any = None
    if (folder / "chat_template.jinja").is_file():
        source = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif (folder / "chat_template.json").is_file():
        source = json.loads((folder / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    else:
        source = config.get("chat_template")
    if isinstance(source, list):  # named templates: the default one renders a chat
        source = next((t.get("template") for t in source if isinstance(t, dict) and t.get("name") == "default"), None)
    if not isinstance(source, str):
        return None
    special = {k: t for k in _SPECIAL if (t := _token_text(config.get(k))) is not None}
    if "pad_token" not in special and "eos_token" in special:  # the one pad policy (mcqa.model.load_tokenizer)
        special["pad_token"] = special["eos_token"]
    return ChatTemplate(source, special, str(folder))
