"""Prompts rendered without transformers (mcqa.model.chat_template, what `mcqa show` and `mcqa
check` use) are the prompts transformers renders: the same text for every built-in task's
examples, under the Qwen3 template, templates written to exercise what the renderer must match
(special tokens as variables, a template that refuses a system turn, loop controls, `tojson`,
`{% generation %}`, `raise_exception`), and the installed aliases' own templates when present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import USER_CACHE, load
from transformers import AutoTokenizer

from mcqa.errors import McqaError
from mcqa.model import load_chat_template, qwen3_tokenizer_dir
from mcqa.model.chat_template import ChatTemplate, read_chat_template
from mcqa.prompting import render_prompt
from mcqa.registry import get_task

TASKS = (("notification", "seed"), ("recipe_mpr", "cv5-0"), ("mmlu_pro", "seed"), ("mmlu_pro_answer", "seed"))

TEMPLATES = {
    # special tokens as template variables, and a system turn refused (mcqa folds it into the user turn)
    "no_system": (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<{{ m['role'] }}>{{ m['content'] | trim }}{{ eos_token }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    ),
    # loop controls, tojson of non-ASCII text, a namespace, whitespace control
    "loops": (
        "{%- set ns = namespace(n=0) -%}{%- for m in messages -%}{%- if m.content == '' %}{% continue %}{% endif -%}"
        "{%- set ns.n = ns.n + 1 -%}[{{ ns.n }}:{{ m.role }}] {{ m.content | tojson }}\n"
        "{%- if loop.last %}{% break %}{% endif -%}{%- endfor %}\n{%- if add_generation_prompt %}\n[reply]{% endif %}"
    ),
    # a {% generation %} block (a training mask in transformers) and a keyword the caller passes
    "generation": (
        "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
        "{% else %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% if enable_thinking is defined and not enable_thinking %}"
        " <think></think>{% endif %}{% endif %}"
    ),
}


def prompts(tokenizer) -> list[str]:
    out = []
    for name, protocol in TASKS:
        task = get_task(name)
        for e in load(name, "test", protocol)[:3]:
            out.append(render_prompt(tokenizer, task.messages(e)))
    return out


def folder_with(tmp_path: Path, name: str, template: str) -> Path:
    """The Qwen3 tokenizer files with another chat template (and a BOS token to render)."""
    folder = tmp_path / name
    shutil.copytree(qwen3_tokenizer_dir(), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = template
    config["bos_token"] = "<|endoftext|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    for f in ("chat_template.jinja", "chat_template.json"):
        (folder / f).unlink(missing_ok=True)
    return folder


def test_the_qwen3_template_renders_every_tasks_prompts_as_transformers_does():
    template = load_chat_template()
    assert isinstance(template, ChatTemplate)
    assert prompts(template) == prompts(AutoTokenizer.from_pretrained(qwen3_tokenizer_dir()))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_templates_render_as_transformers_renders_them(tmp_path, name):
    folder = folder_with(tmp_path, name, TEMPLATES[name])
    ours, theirs = read_chat_template(folder), AutoTokenizer.from_pretrained(folder)
    assert prompts(ours) == prompts(theirs)
    if name == "no_system":  # the renderer raised as transformers does, and the system text was folded
        assert all(p.startswith("<|endoftext|><user>") for p in prompts(ours))


@pytest.mark.parametrize("alias", ["smollm2-135m", "gemma3-270m"])
def test_an_installed_aliases_own_template_renders_as_transformers_does(alias):
    folder = USER_CACHE / "models" / alias
    if not (folder / "tokenizer_config.json").is_file():
        pytest.skip(f"{alias} is not installed here (`mcqa models install {alias}`)")
    assert prompts(read_chat_template(folder)) == prompts(AutoTokenizer.from_pretrained(folder))


def test_a_folder_without_a_template_is_none_and_a_broken_one_is_one_line(tmp_path):
    folder = folder_with(tmp_path, "none", "x")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert read_chat_template(folder) is None
    broken = folder_with(tmp_path, "broken", "{% for m in messages %}")
    with pytest.raises(McqaError, match="chat template does not parse"):
        read_chat_template(broken)
