"""generate: free greedy generation, parsed later by the scorer (how parse failures are
measured). Batched and left-padded through transformers' generate; `truncated` when no stop
token came within max_new_tokens."""

from __future__ import annotations

from mcqa.eval.records import Prediction
from mcqa.model.encoding import LeftPadCollator, pad_id, prompt_ids, stop_token_ids
from mcqa.readouts.base import BATCH_SIZE, Options, default_max_new_tokens, register_readout
from mcqa.readouts.batching import read_batches
from mcqa.task import Example, Task


class GenerateOptions(Options):
    max_new_tokens: int | None = None  # default: default_max_new_tokens
    batch_size: int = BATCH_SIZE


@register_readout("generate", "free greedy generation, parsed by the scorer", needs="lm", options=GenerateOptions)
def generate(
    model,
    tokenizer,
    task: Task,
    examples: list[Example],
    *,
    max_new_tokens: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> list[Prediction]:
    return generate_outputs(
        model, tokenizer, task, examples, max_new_tokens or default_max_new_tokens(tokenizer, task), batch_size
    )


def generate_outputs(
    model, tokenizer, task: Task, examples: list[Example], max_new_tokens: int, batch_size: int = 16
) -> list[Prediction]:
    """Greedy generation, batched and left-padded; `truncated` when no stop token came."""
    stops = stop_token_ids(tokenizer)
    pad = pad_id(tokenizer)

    def read(batch: list[dict], enc: dict) -> list[Prediction]:
        gen = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=pad,
        )
        out = []
        for row, seq in zip(batch, gen[:, enc["input_ids"].shape[1] :].tolist()):
            ended = next((i for i, t in enumerate(seq) if t in stops), None)
            text = tokenizer.decode(seq[:ended] if ended is not None else seq, skip_special_tokens=False)
            out.append({"id": row["id"], "output": text, "truncated": ended is None})
        return out

    rows = [{"id": e.id, "input_ids": prompt_ids(tokenizer, task, e)} for e in examples]
    return read_batches(model, rows, batch_size, "generating", LeftPadCollator(pad), read)
