"""Multiple-choice rows: a question (the task's cloze prompt, or its own) followed by each of its
options, as the choice and listwise modes train them and the choice readout reads them.

Two layouts of the same computation, chosen by the model's layers (mcqa.model.lm.Capabilities):
- a tree (`trees=True`): one row per example, the prompt then every option, with a tree-shaped
  mask (each option sees the prompt and itself, never another option) and positions that
  restart after the prompt for each option, so the prompt is encoded once and each option is
  scored exactly as if it followed the prompt alone;
- unrolled (`trees=False`, for layers that carry a state, which a tree cannot share): one row
  per option, the prompt then that option, right-padded, with no mask at all (no earlier
  position of a causal model sees the padding).
Either way `option_ends` holds, for each example's options, the flat index (row x width +
column) of the option's last token, -1 where an example has fewer options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mcqa.errors import McqaError
from mcqa.model.encoding import end_of_turn, message_ids
from mcqa.task import Example, Task


def check_choice_task(task: Task) -> None:
    if task.options is None or task.choice_field is None:
        raise McqaError(
            f"task '{task.name}' declares no options; the choice, content and listwise modes need a "
            "multiple-choice task (Task(options=..., choice_field=...)); use --mode generate or head"
        )


def cloze_messages(task: Task, e: Example) -> list[dict[str, str]]:
    """The conversation an option's text answers: the task's cloze prompt, else its own."""
    return task.cloze(e) if task.cloze is not None else task.messages(e)


def cloze_prompt_ids(tokenizer, task: Task, e: Example) -> list[int]:
    return message_ids(tokenizer, cloze_messages(task, e))


def encode_choice(tokenizer, task: Task, examples: list[Example]) -> list[dict[str, Any]]:
    """One row per example: the prompt's ids, then each option's text and the end of turn;
    choice_label is the gold option's index (None when unlabeled)."""
    check_choice_task(task)
    eot, letters = end_of_turn(tokenizer), list(task.label_spaces[task.choice_field].values)
    rows = []
    for e in examples:
        prompt = cloze_prompt_ids(tokenizer, task, e)
        options = [tokenizer(t + eot, add_special_tokens=False)["input_ids"] for t in task.options(e)]
        label = letters.index(e.target[task.choice_field]) if e.target is not None else None
        ids = prompt + [t for o in options for t in o]
        rows.append(
            {
                "id": e.id,
                "input_ids": ids,
                "prompt_length": len(prompt),
                "option_lengths": [len(o) for o in options],
                "choice_label": label,
                "length": len(ids),
            }
        )
    return rows


@dataclass(frozen=True)
class Span:
    """Where option j of example i sits: its row, the column of its first token, its length,
    and the column of the prompt's last token in that row (which predicts the first token)."""

    row: int
    start: int
    length: int
    prompt_end: int


@dataclass
class ChoiceCollator:
    """Choice rows as a tree per example, or unrolled to a row per option (see the module)."""

    pad_token_id: int
    prefix: list[int] | None = None  # unused: each example's options already share its prompt
    trees: bool = True

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.build(features)[0]

    def build(self, features: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[list[Span]]]:
        rows: list[list[int]] = []
        spans: list[list[Span]] = []
        for f in features:
            p, ids = f["prompt_length"], f["input_ids"]
            prompt, out, start = ids[:p], [], p
            for m in f["option_lengths"]:
                option = ids[start : start + m]
                if self.trees:
                    if not out:
                        rows.append(list(prompt))
                    out.append(Span(len(rows) - 1, len(rows[-1]), m, p - 1))
                    rows[-1] += option
                else:
                    out.append(Span(len(rows), p, m, p - 1))
                    rows.append(list(prompt) + option)
                start += m
            spans.append(out)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
        k = max(len(f["option_lengths"]) for f in features)
        ends = torch.full((len(features), k), -1, dtype=torch.long)
        for i, out in enumerate(spans):
            for j, s in enumerate(out):
                ends[i, j] = s.row * width + s.start + s.length - 1
        batch = {"input_ids": ids, "option_ends": ends}
        if self.trees:
            batch["attention_mask"], batch["position_ids"] = tree_mask(features, spans, width)
        if features[0].get("choice_label") is not None:
            batch["labels"] = torch.tensor([f["choice_label"] for f in features], dtype=torch.long)
        return batch, spans


def tree_mask(features: list[dict[str, Any]], spans: list[list[Span]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, width, width) "may attend" booleans and positions for tree rows, one per example."""
    n = len(features)
    pos = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width, width), dtype=torch.bool)
    for i, (f, out) in enumerate(zip(features, spans)):
        p = f["prompt_length"]
        pos[i, :p] = torch.arange(p)
        mask[i, :p, :p] = torch.tril(torch.ones(p, p, dtype=torch.bool))
        end = p
        for s in out:
            span = slice(s.start, s.start + s.length)
            pos[i, span] = torch.arange(p, p + s.length)
            mask[i, span, :p] = True
            mask[i, span, span] = torch.tril(torch.ones(s.length, s.length, dtype=torch.bool))
            end = s.start + s.length
        for j in range(end, width):  # padding sees itself only (no empty softmax rows)
            mask[i, j, j] = True
    return mask, pos
