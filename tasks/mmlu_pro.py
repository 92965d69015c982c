"""mmlu_pro: an MMLU-Pro question -> {"category": one of 14 subjects}.

Data: the MMLU-Pro test set, 12,032 questions (MIT), data/mmlu_pro/. Question texts are
deduplicated before any split (357 texts repeat; a repeat across splits would leak a test
question into training); the 4 texts filed under several categories are dropped, since their
label cannot be known from the text. Protocols:
- `seed`: the published recipe, 142 questions per category (1,988), stratified seeded 60/20/20;
- `full`: every deduplicated question, stratified seeded 80/10/10.
Groups: the question's original source (ori_mmlu, stemez, theoremQA, scibench).
mmlu_pro_answer reuses these questions and splits.
"""

import gzip
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mcqa.prompting import label_list
from mcqa.splits import per_class_sample, three_way
from mcqa.task import Example, Task

DATA = Path(__file__).resolve().parent.parent / "data" / "mmlu_pro" / "mmlu_pro_test_12032.jsonl.gz"
SEED = 42
PER_CATEGORY = 142
Category = Literal[
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
]


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: Category


SYSTEM = (
    "Classify the exam question by subject. Reply with one JSON object and nothing else: "
    '{"category": "<subject>"}, where <subject> is one of: ' + label_list(Category.__args__) + "."
)


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def check_record(r: dict) -> str:
    """Validate the common MMLU-Pro fields; return the example id."""
    qid = r.get("id", r.get("question_id"))
    if not isinstance(qid, (str, int)) or isinstance(qid, bool):
        raise ValueError("needs an 'id' or 'question_id'")
    if not isinstance(r.get("question"), str):
        raise ValueError("field 'question' must be a string")
    opts = r.get("options")
    if not (isinstance(opts, list) and 3 <= len(opts) <= 10 and all(isinstance(o, str) for o in opts)):
        raise ValueError("field 'options' must be a list of 3-10 strings")
    return f"mmlu-{qid}" if isinstance(qid, int) else qid


def from_record(r: dict) -> Example:
    eid = check_record(r)
    target = {"category": r["category"]} if "category" in r else None
    src = r.get("src", "")
    return Example(id=eid, input={"question": r["question"]}, target=target, groups=(src.split("-")[0],) if src else ())


@lru_cache(maxsize=None)
def records() -> tuple[dict, ...]:
    """Deduplicated raw records, in question_id order."""
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        rows = sorted((json.loads(line) for line in f), key=lambda r: r["question_id"])
    categories: dict[str, set] = {}
    for r in rows:
        categories.setdefault(normalize(r["question"]), set()).add(r["category"])
    seen, out = set(), []
    for r in rows:
        key = normalize(r["question"])
        if len(categories[key]) == 1 and key not in seen:
            seen.add(key)
            out.append(r)
    return tuple(out)


@lru_cache(maxsize=None)
def split_ids(protocol: str) -> dict[str, list[str]]:
    rows = records()
    ids = [f"mmlu-{r['question_id']}" for r in rows]
    cats = [r["category"] for r in rows]
    if protocol == "seed":
        chosen = set(per_class_sample(ids, cats, PER_CATEGORY, SEED))
        pairs = [(i, c) for i, c in zip(ids, cats) if i in chosen]
        return three_way([i for i, _ in pairs], (0.6, 0.2, 0.2), SEED, [c for _, c in pairs])
    return three_way(ids, (0.8, 0.1, 0.1), SEED, cats)


@lru_cache(maxsize=None)
def _examples() -> dict[str, Example]:
    return {e.id: e for e in map(from_record, records())}


def load(split: str, protocol: str) -> list[Example]:
    examples = _examples()
    return [examples[i] for i in split_ids(protocol)[split]]


def messages(e: Example) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Question: {e.input['question']}"}]


TASK = Task(
    name="mmlu_pro",
    output=Output,
    load=load,
    from_record=from_record,
    messages=messages,
    description="MMLU-Pro question -> subject (14 classes)",
    protocols=("seed", "full"),
)
