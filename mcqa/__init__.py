"""mcqa: one task definition drives prompting, LoRA training, decoding and honest scoring.

The plugin API (what a task module or an installed task package imports) is re-exported
here; its modules keep their import paths: mcqa.task, mcqa.splits, mcqa.prompting, mcqa.io.
The names load on first use (PEP 562), so `import mcqa.errors` stays cheap for a CLI run
that only refuses a flag."""

from __future__ import annotations

from mcqa.names import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "mcqa.errors": ("DataError", "McqaError", "TaskContractError"),
        "mcqa.io": ("read_jsonl",),
        "mcqa.prompting": ("LETTERS", "format_options", "label_list", "render_prompt", "serialize_target"),
        "mcqa.splits": ("carve_validation", "k_fold", "three_way"),
        "mcqa.task": ("SPLITS", "Example", "LabelSpace", "Task"),
    },
)
