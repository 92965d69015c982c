"""Reading a model's answers: free greedy generation (parsed later by the scorer, which is how
parse failures are measured) and the classification heads of a head-mode model. Both return
records in the scorer's predictions format: {"id", "output", "truncated"?, "probs"?}."""

from __future__ import annotations

import torch

from mcqa.console import track
from mcqa.encoding import LeftPadCollator, encode_head, prompt_ids, shared_prefix, stop_token_ids
from mcqa.prompting import serialize_target
from mcqa.task import Example, Task


def _batches(rows: list, size: int):
    # Longest first: similar lengths share a batch (little padding) and the slowest batch
    # comes first, so the progress estimate errs on the safe side.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    for start in range(0, len(order), size):
        yield [rows[i] for i in order[start:start + size]]


@torch.no_grad()
def generate_outputs(model, tokenizer, task: Task, examples: list[Example], max_new_tokens: int, batch_size: int = 16) -> list[dict]:
    """Greedy generation, batched and left-padded; `truncated` when no stop token came."""
    model.eval()
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    collate = LeftPadCollator(pad)
    rows = [{"id": e.id, "input_ids": prompt_ids(tokenizer, task, e)} for e in examples]
    device = next(model.parameters()).device
    out: dict[str, dict] = {}
    batches = list(_batches(rows, batch_size))
    for batch in track(batches, f"generating ({len(rows)} examples)", total=len(batches)):
        enc = collate(batch)
        gen = model.generate(
            input_ids=enc["input_ids"].to(device),
            attention_mask=enc["attention_mask"].to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=pad,
        )
        new = gen[:, enc["input_ids"].shape[1]:]
        for row, seq in zip(batch, new.tolist()):
            ended = next((i for i, t in enumerate(seq) if t in stops), None)
            text = tokenizer.decode(seq[:ended] if ended is not None else seq, skip_special_tokens=False)
            out[row["id"]] = {"id": row["id"], "output": text, "truncated": ended is None}
    return [out[e.id] for e in examples]


@torch.no_grad()
def head_outputs(model, tokenizer, task: Task, examples: list[Example], batch_size: int = 16, share_prefix: bool = True) -> list[dict]:
    """Argmax of each field's head as the output JSON, with the softmax as probabilities."""
    model.eval()
    spaces = task.label_spaces
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [{**r, "field_labels": None} for r in encode_head(tokenizer, task, [_unlabeled(e) for e in examples])]
    # The prompt prefix every example shares (system prompt, instructions) is encoded once per batch.
    collate = LeftPadCollator(pad, prefix=shared_prefix(rows) if share_prefix and rows else None)
    device = next(model.parameters()).device
    out: dict[str, dict] = {}
    batches = list(_batches(rows, batch_size))
    for batch in track(batches, f"classifying ({len(rows)} examples)", total=len(batches)):
        enc = {k: v.to(device) for k, v in collate(batch).items() if k in ("input_ids", "attention_mask", "position_ids", "prefix_ids")}
        logits = model(**enc)["logits"]
        probs = [torch.softmax(lg.float(), dim=-1).cpu() for lg in logits]
        for i, row in enumerate(batch):
            value, dist = {}, {}
            for f, p in zip(task.fields, probs):
                values = spaces[f].values
                value[f] = values[int(p[i].argmax())]
                dist[f] = {str(v): float(p[i, j]) for j, v in enumerate(values)}
            out[row["id"]] = {"id": row["id"], "output": serialize_target(task.output, value), "probs": dist}
    return [out[e.id] for e in examples]


def _unlabeled(e: Example) -> Example:
    return Example(e.id, e.input, None, e.groups)
