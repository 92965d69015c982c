"""mmlu_pro_answer: the MMLU-Pro questions as multiple choice -> {"answer": "A".."J"}.

Same deduplicated questions and the same split protocols (`seed`, `full`) as mmlu_pro, so the
two tasks never disagree on which questions are test questions. Options are shown as given
(3-10 of them; MMLU-Pro's gold letters are already spread over the positions).
Groups: the question's category.
"""

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mcqa.prompting import LETTERS, format_options
from mcqa.registry import task_module
from mcqa.task import Example, Task, reorder_options

mmlu_pro = task_module("mmlu_pro")  # the question pool and its splits


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: Literal["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"]


SYSTEM = (
    "Answer the multiple-choice question. Reply with one JSON object and nothing else: "
    '{"answer": "<letter>"}, the letter of the correct option.'
)


def from_record(r: dict) -> Example:
    eid = mmlu_pro.check_record(r)
    target = None
    if "answer" in r:
        if r["answer"] not in LETTERS[: len(r["options"])]:
            raise ValueError(f"answer {r['answer']!r} is not the letter of one of the {len(r['options'])} options")
        target = {"answer": r["answer"]}
    groups = (r["category"],) if isinstance(r.get("category"), str) else ()
    return Example(
        id=eid, input={"question": r["question"], "options": list(r["options"])}, target=target, groups=groups
    )


@lru_cache(maxsize=None)
def _examples() -> dict[str, Example]:
    return {e.id: e for e in map(from_record, mmlu_pro.records())}


def load(split: str, protocol: str) -> list[Example]:
    examples = _examples()
    return [examples[i] for i in mmlu_pro.split_ids(protocol)[split]]


def messages(e: Example) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": f"Question: {e.input['question']}\n\nOptions:\n{format_options(e.input['options'])}",
        },
    ]


def options(e: Example) -> list[str]:
    return list(e.input["options"])


def cloze(e: Example) -> list[dict[str, str]]:
    """The question alone: the option-text readout and the choice mode score each option as the reply."""
    return [{"role": "system", "content": "Answer the question."}, {"role": "user", "content": e.input["question"]}]


TASK = Task(
    name="mmlu_pro_answer",
    output=Output,
    load=load,
    from_record=from_record,
    messages=messages,
    description="MMLU-Pro question -> the correct option letter (3-10 options, A-J)",
    protocols=mmlu_pro.TASK.protocols,
    choice_field="answer",
    options=options,
    cloze=cloze,
    reorder=lambda e, order: reorder_options(e, order, "answer"),
)
