"""mcqa: one task definition drives prompting, LoRA training, decoding and honest scoring.

The plugin API (what a task module or an installed task package imports) is re-exported
here; its modules keep their import paths: mcqa.task, mcqa.splits, mcqa.prompting, mcqa.io."""

__version__ = "0.1.0"

from mcqa.errors import DataError, McqaError, TaskContractError  # noqa: E402
from mcqa.io import read_jsonl  # noqa: E402
from mcqa.prompting import LETTERS, format_options, label_list, render_prompt, serialize_target  # noqa: E402
from mcqa.splits import carve_validation, k_fold, three_way  # noqa: E402
from mcqa.task import SPLITS, Example, LabelSpace, Task  # noqa: E402

__all__ = ["LETTERS", "SPLITS", "DataError", "Example", "LabelSpace", "McqaError", "Task", "TaskContractError",
           "carve_validation", "format_options", "k_fold", "label_list", "read_jsonl", "render_prompt", "serialize_target", "three_way"]
