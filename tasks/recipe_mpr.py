"""recipe_mpr: a recipe request and 5 recipe descriptions -> {"answer": "A".."E"}.

Data: Recipe-MPR 500QA (Apache-2.0), data/recipe_mpr/. In the raw file the gold is always the
first option, so each example's options are shuffled with a permutation recorded from
(SEED, example id): the same on every machine, and never the raw order.
Protocols: `split` (seeded 80/10/10) and 5-fold cross-validation `cv5-0` .. `cv5-4`.
Groups: the query-type flags (multi-label); items with no flag form the group "none".
"""

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mcqa.prompting import LETTERS, format_options
from mcqa.splits import dedupe, k_fold, option_order, three_way
from mcqa.task import Example, Task, reorder_options

DATA = Path(__file__).resolve().parent.parent / "data" / "recipe_mpr" / "500QA.json"
SEED = 20240501
FOLDS = 5
FLAGS = ("Specific", "Commonsense", "Negated", "Analogical", "Temporal")


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: Literal["A", "B", "C", "D", "E"]


SYSTEM = (
    "You help people choose a recipe. Read the request and the five recipe options, and pick the "
    "one option that satisfies every part of the request. Reply "
    'with one JSON object and nothing else: {"answer": "<letter>"}'
)


def from_record(r: dict) -> Example:
    """A Recipe-MPR record (query, options {id: text}, answer id, query_type) plus an "id"."""
    if not isinstance(r.get("id"), str):
        raise ValueError("field 'id' must be a string")
    if not isinstance(r.get("query"), str):
        raise ValueError("field 'query' must be a string")
    options = r.get("options")
    if not isinstance(options, dict) or len(options) != 5 or not all(isinstance(v, str) for v in options.values()):
        raise ValueError("field 'options' must map 5 option ids to descriptions (strings)")
    keys = list(options)
    order = option_order(SEED, r["id"], len(keys))
    shuffled = [keys[i] for i in order]
    target = None
    if "answer" in r:
        if not isinstance(r["answer"], str) or r["answer"] not in options:
            raise ValueError(f"answer {r['answer']!r} is not one of the option ids")
        target = {"answer": LETTERS[shuffled.index(r["answer"])]}
    flags = r.get("query_type") or {}
    if not isinstance(flags, dict) or not all(isinstance(v, (bool, int)) for v in flags.values()):
        raise ValueError(f"field 'query_type' must map flags ({', '.join(FLAGS)}) to 0/1 or true/false")
    groups = tuple(f for f in FLAGS if flags.get(f)) or ("none",)
    return Example(
        id=r["id"],
        input={"query": r["query"], "options": [options[k] for k in shuffled]},
        target=target,
        groups=groups,
    )


@lru_cache(maxsize=None)
def _all() -> tuple[Example, ...]:
    raw = json.loads(DATA.read_text(encoding="utf-8"))
    examples = [from_record({**r, "id": f"rmpr-{i:03d}"}) for i, r in enumerate(raw)]
    return tuple(dedupe(examples, key=lambda e: e.input["query"].strip().lower()))


PROTOCOLS = ("split",) + tuple(f"cv{FOLDS}-{k}" for k in range(FOLDS))


@lru_cache(maxsize=None)
def _splits(protocol: str) -> dict[str, list[str]]:
    ids = [e.id for e in _all()]
    if protocol == "split":
        return three_way(ids, (0.8, 0.1, 0.1), SEED)
    return k_fold(ids, FOLDS, int(protocol.split("-")[1]), SEED)


def load(split: str, protocol: str) -> list[Example]:
    ids = set(_splits(protocol)[split])
    return [e for e in _all() if e.id in ids]


def messages(e: Example) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Request: {e.input['query']}\n\nOptions:\n{format_options(e.input['options'])}"},
    ]


def options(e: Example) -> list[str]:
    return list(e.input["options"])


CLOZE_SYSTEM = "You help people choose a recipe. Reply with one recipe that satisfies every part of the request."


def cloze(e: Example) -> list[dict[str, str]]:
    """The request alone: the option-text readout and the choice mode score each recipe as the reply."""
    return [
        {"role": "system", "content": CLOZE_SYSTEM},
        {"role": "user", "content": f"Suggest one recipe for this request: {e.input['query']}"},
    ]


TASK = Task(
    name="recipe_mpr",
    output=Output,
    load=load,
    from_record=from_record,
    messages=messages,
    description="Recipe request -> the matching recipe among 5 shuffled options (A-E)",
    protocols=PROTOCOLS,
    choice_field="answer",
    options=options,
    cloze=cloze,
    reorder=lambda e, order: reorder_options(e, order, "answer"),
)
