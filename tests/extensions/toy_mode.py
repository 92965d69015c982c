"""A toy training mode, as a plugin author would write one: one file and its registration.
Generative training whose loss counts only the first TARGET_TOKENS tokens of the answer,
validated and read out through the toy readout (toy_readout.py)."""

from __future__ import annotations

from mcqa.model.encoding import IGNORE
from mcqa.modes import Mode, register_mode
from mcqa.modes.generate import encode_generative, target_loss

TARGET_TOKENS = 8


def encode_first_token(tokenizer, task, examples):
    rows = encode_generative(tokenizer, task, examples)
    for r in rows:
        first = next(i for i, t in enumerate(r["labels"]) if t != IGNORE)
        keep = first + TARGET_TOKENS
        r["labels"] = r["labels"][:keep] + [IGNORE] * (len(r["labels"]) - keep)
    return rows


register_mode(
    Mode(
        name="first_token",
        description=f"generative, loss on the first {TARGET_TOKENS} answer tokens only (toy)",
        encode=encode_first_token,
        columns=("labels",),
        build=lambda causal_lm, tokenizer, task: causal_lm,
        peft_kwargs=lambda task: {"task_type": "CAUSAL_LM"},
        loss=target_loss,
        model_takes_prefix=False,
        eval_readout="first_token",
        default_readout="first_token",
    )
)
