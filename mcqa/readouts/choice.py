"""choice: the option scores of a choice-mode run (mcqa.modes.choice): the softmax over an
example's options is its probability per letter, the best option's letter the output. The
rows are encoded by the mode's own encoder and collator, so what is read is what was trained."""

from __future__ import annotations

from dataclasses import replace

import torch

from mcqa.eval.records import Prediction
from mcqa.model.choice_rows import ChoiceCollator, encode_choice
from mcqa.model.encoding import pad_id
from mcqa.model.lm import capabilities
from mcqa.prompting import serialize_target
from mcqa.readouts.base import BATCH_SIZE, Options, register_readout
from mcqa.readouts.batching import read_batches
from mcqa.task import Example, Task


class ChoiceOptions(Options):
    batch_size: int = BATCH_SIZE


@register_readout(
    "choice",
    "the option scores of a choice-mode run, softmax over each example's options",
    needs="choice",
    options=ChoiceOptions,
)
def choice(model, tokenizer, task: Task, examples: list[Example], *, batch_size: int = BATCH_SIZE) -> list[Prediction]:
    field, letters = task.choice_field, task.label_spaces[task.choice_field].values
    rows = encode_choice(tokenizer, task, [replace(e, target=None) for e in examples])

    def read(batch: list[dict], enc: dict) -> list[Prediction]:
        probs = torch.softmax(model(**enc)["logits"].float(), dim=-1).cpu()
        out = []
        for i, row in enumerate(batch):
            n = len(row["option_lengths"])
            dist = {str(letters[j]): float(probs[i, j]) for j in range(n)}
            best = letters[int(probs[i, :n].argmax())]
            out.append(
                {"id": row["id"], "output": serialize_target(task.output, {field: best}), "probs": {field: dist}}
            )
        return out

    collate = ChoiceCollator(pad_id(tokenizer), trees=capabilities(model).trees)
    return read_batches(model, rows, batch_size, "scoring options", collate, read)
