"""A toy readout, as a plugin author would write one: one file and its registration. It
answers each field with the label the LM scores highest as the answer's first token, read
from one forward over the prompt (no trie, no prefix cache)."""

from __future__ import annotations

import torch

from mcqa.model.encoding import prompt_ids
from mcqa.prompting import serialize_target
from mcqa.readouts import Options, register_readout


class FirstTokenOptions(Options):
    prefix: str = '{"'  # the answer's forced start before the first field's name


@register_readout(
    "first_token", "label whose first token the LM scores highest (toy)", needs="lm", options=FirstTokenOptions
)
@torch.no_grad()
def first_token(model, tokenizer, task, examples, *, prefix: str = '{"'):
    out = []
    for e in examples:
        ids = prompt_ids(tokenizer, task, e) + tokenizer(prefix, add_special_tokens=False)["input_ids"]
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        value = {}
        for f, space in task.label_spaces.items():
            firsts = [tokenizer(str(v), add_special_tokens=False)["input_ids"][0] for v in space.values]
            value[f] = space.values[int(torch.argmax(logits[firsts]))]
        out.append({"id": e.id, "output": serialize_target(task.output, value), "truncated": False})
    return out
