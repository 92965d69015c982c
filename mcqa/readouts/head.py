"""head: the classification heads of a head-mode run (mcqa.modes.head). The argmax of each
field's head is the output JSON and its softmax the probabilities. The training rows of head
mode come from the mode's own encoder, so what is read is what was trained."""

from __future__ import annotations

from dataclasses import replace

import torch

from mcqa.eval.records import Prediction
from mcqa.model.encoding import LeftPadCollator, encode_head, pad_id, shared_prefix
from mcqa.model.lm import capabilities
from mcqa.prompting import serialize_target
from mcqa.readouts.base import BATCH_SIZE, Options, register_readout
from mcqa.readouts.batching import read_batches
from mcqa.task import Example, Task


class HeadOptions(Options):
    batch_size: int = BATCH_SIZE


@register_readout("head", "the classification heads of a head-mode run", needs="heads", options=HeadOptions)
def head(model, tokenizer, task: Task, examples: list[Example], *, batch_size: int = BATCH_SIZE) -> list[Prediction]:
    return head_outputs(model, tokenizer, task, examples, batch_size)


def head_outputs(
    model, tokenizer, task: Task, examples: list[Example], batch_size: int = 16, share_prefix: bool = True
) -> list[Prediction]:
    """Argmax of each field's head as the output JSON, with the softmax as probabilities."""
    spaces = task.label_spaces
    rows = [
        {**r, "field_labels": None} for r in encode_head(tokenizer, task, [replace(e, target=None) for e in examples])
    ]
    # The prompt prefix every example shares (system prompt, instructions) is encoded once per
    # batch, where the model's layers allow it exactly.
    share_prefix = share_prefix and bool(rows) and capabilities(model).prefix_shared(max(r["length"] for r in rows))[0]
    collate = LeftPadCollator(pad_id(tokenizer), prefix=shared_prefix(rows) if share_prefix else None)

    def read(batch: list[dict], enc: dict) -> list[Prediction]:
        probs = [torch.softmax(lg.float(), dim=-1).cpu() for lg in model(**enc)["logits"]]
        out = []
        for i, row in enumerate(batch):
            value, dist = {}, {}
            for f, p in zip(task.fields, probs):
                values = spaces[f].values
                value[f] = values[int(p[i].argmax())]
                dist[f] = {str(v): float(p[i, j]) for j, v in enumerate(values)}
            out.append({"id": row["id"], "output": serialize_target(task.output, value), "probs": dist})
        return out

    return read_batches(model, rows, batch_size, "classifying", collate, read)
