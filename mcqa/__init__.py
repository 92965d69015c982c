"""mcqa: one task definition drives prompting, LoRA training, decoding and honest scoring.

The plugin API (what a task module or an installed task package imports) is re-exported
here; its modules keep their import paths: mcqa.task, mcqa.splits, mcqa.prompting, mcqa.io.
The names load on first use (PEP 562), so `import mcqa.errors` stays cheap for a CLI run
that only refuses a flag."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    "mcqa.errors": ("DataError", "McqaError", "TaskContractError"),
    "mcqa.io": ("read_jsonl",),
    "mcqa.prompting": ("LETTERS", "format_options", "label_list", "render_prompt", "serialize_target"),
    "mcqa.splits": ("carve_validation", "k_fold", "three_way"),
    "mcqa.task": ("SPLITS", "Example", "LabelSpace", "Task"),
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE)


def __getattr__(name: str) -> Any:
    if name not in _MODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_MODULE[name])
    # Bind all of that module's names at once: a submodule's import binds its own name here
    # (mcqa.model.verify, the module), which the function of the same name must then replace.
    globals().update({n: getattr(module, n) for n in _WHERE[_MODULE[name]]})
    return globals()[name]


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
