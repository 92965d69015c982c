"""synth: a small learnable task for trainer tests. Each input is a few filler words followed
by one keyword; the keyword's class is the label. A model must carry the keyword to the answer
position to get it right, so reaching high accuracy checks the loss masking and the training
loop for real (a random 2-layer model learns it in a few hundred steps)."""

import random
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mcqa.splits import k_fold, three_way
from mcqa.task import Example, Task

KEYWORDS = {
    "north": ["snow", "ice", "glacier"],
    "south": ["sand", "cactus", "dune"],
    "east": ["tea", "silk", "jade"],
    "west": ["cowboy", "saloon", "ranch"],
}
FILLER = "the a of on in big small old new red blue green one two".split()


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Literal["north", "south", "east", "west"]


def from_record(r: dict) -> Example:
    target = {"label": r["label"]} if "label" in r else None
    return Example(id=r["id"], input={"text": r["text"]}, target=target)


@lru_cache(maxsize=None)
def _all() -> tuple[Example, ...]:
    rng = random.Random(0)
    out = []
    for i in range(400):
        label = rng.choice(sorted(KEYWORDS))
        words = rng.sample(FILLER, 3) + [rng.choice(KEYWORDS[label])]
        out.append(from_record({"id": f"s{i:03d}", "text": " ".join(words), "label": label}))
    return tuple(out)


PROTOCOLS = ("default", "cv3-0", "cv3-1", "cv3-2")  # the folds test pooled cross-validation in compare


def load(split: str, protocol: str) -> list[Example]:
    ids = [e.id for e in _all()]
    parts = three_way(ids, (0.6, 0.2, 0.2), 0) if protocol == "default" else k_fold(ids, 3, int(protocol[-1]), 0)
    ids = set(parts[split])
    return [e for e in _all() if e.id in ids]


def messages(e: Example) -> list[dict[str, str]]:
    return [{"role": "user", "content": e.input["text"]}]


TASK = Task(
    name="synth",
    output=Output,
    load=load,
    from_record=from_record,
    messages=messages,
    protocols=PROTOCOLS,
    description="synthetic keyword -> region task for trainer tests",
)
