"""Tasks and inputs the readout tests make up: labels that share prefixes (a trie's hard
case), free fields under a grammar, and random token text for any task's inputs."""

from __future__ import annotations

import random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcqa.registry import get_task
from mcqa.task import Example, Task, check_task


class Shared(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: Literal["computer", "computer science", "computer engineering", "Promotions", "Prom", "math"]
    flag: bool


class Free(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folder: Literal["Work", "Personal"]
    note: Annotated[str, Field(max_length=16)]
    count: int
    level: Annotated[int, Field(ge=1, le=3)]


def synthetic(name: str, output) -> Task:
    def messages(e: Example) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": "Label the text. Reply with one JSON object."},
            {"role": "user", "content": e.input["text"]},
        ]

    def unavailable(*_):
        raise ValueError("synthetic task: examples are made by the test")

    return check_task(
        Task(name=name, output=output, load=unavailable, from_record=unavailable, messages=messages), name, __file__
    )


SHARED, FREE = synthetic("shared_prefixes", Shared), synthetic("free_fields", Free)


def random_text(rng: random.Random, tokenizer, n: int) -> str:
    """Random tokens of the vocabulary (any script, punctuation, code) decoded to text."""
    return tokenizer.decode([rng.randrange(151_000) for _ in range(n)])


def random_examples(task: Task, tokenizer, n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if task.name == "notification":
            inp = {
                "app": random_text(rng, tokenizer, 2),
                "title": random_text(rng, tokenizer, 4),
                "body": random_text(rng, tokenizer, rng.randrange(3, 30)),
            }
        elif task.name == "mmlu_pro":
            inp = {"question": random_text(rng, tokenizer, rng.randrange(3, 40))}
        else:
            inp = {"text": random_text(rng, tokenizer, rng.randrange(3, 30))}
        out.append(Example(f"r{i}", inp))
    return out


def task_named(name: str) -> Task:
    return {"shared_prefixes": SHARED, "free_fields": FREE}.get(name) or get_task(name)
