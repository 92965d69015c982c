"""choice: the option scores of a choice-mode run (mcqa.modes.choice): the softmax over an
example's options is its probability per letter, the best option's letter the output. The
rows are encoded by the mode's own encoder and collator, so what is read is what was trained."""

from __future__ import annotations

import torch

from mcqa.console import track
from mcqa.model.choice_rows import ChoiceCollator, encode_choice
from mcqa.model.lm import capabilities
from mcqa.prompting import serialize_target
from mcqa.readouts.base import BATCH_SIZE, Options, register_readout
from mcqa.readouts.batching import length_batches
from mcqa.eval.records import Prediction
from mcqa.task import Example, Task


class ChoiceOptions(Options):
    batch_size: int = BATCH_SIZE


@register_readout("choice", "the option scores of a choice-mode run, softmax over each example's options", needs="choice",
                  options=ChoiceOptions)
@torch.no_grad()
def choice(model, tokenizer, task: Task, examples: list[Example], *, batch_size: int = BATCH_SIZE) -> list[Prediction]:
    model.eval()
    field, letters = task.choice_field, task.label_spaces[task.choice_field].values
    rows = encode_choice(tokenizer, task, [Example(e.id, e.input, None, e.groups) for e in examples])
    collate = ChoiceCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                             trees=capabilities(model).trees)
    device = next(model.parameters()).device
    out: dict[str, Prediction] = {}
    batches = list(length_batches(rows, batch_size))
    for batch in track(batches, f"scoring options ({len(rows)} examples)", total=len(batches)):
        enc = {k: v.to(device) for k, v in collate(batch).items()}
        probs = torch.softmax(model(**enc)["logits"].float(), dim=-1).cpu()
        for i, row in enumerate(batch):
            n = len(row["option_lengths"])
            dist = {str(letters[j]): float(probs[i, j]) for j in range(n)}
            best = letters[int(probs[i, :n].argmax())]
            out[row["id"]] = {"id": row["id"], "output": serialize_target(task.output, {field: best}), "probs": {field: dist}}
    return [out[e.id] for e in examples]
