"""Content mode: generative LoRA whose target is the gold option's *text*, not its letter
("answer by content"). Small models cannot bind options to letters, but they can learn to
prefer the right answer's words: each example is the task's cloze prompt (the question
without the lettered options) followed by the gold option's text and the end of turn, the
loss on the option's tokens only. It trains exactly what the options readout reads (the
likelihood of each option's text as the reply, mcqa.readouts.options), which is its
validation and default readout, so the letter it reports is the best option's letter."""

from __future__ import annotations

from typing import Any

from mcqa.model.choice_rows import check_choice_task, cloze_prompt_ids
from mcqa.model.encoding import IGNORE, end_of_turn
from mcqa.modes.base import Mode, register_mode
from mcqa.modes.generate import GENERATE
from mcqa.task import Example, Task


def encode_content(tokenizer, task: Task, examples: list[Example]) -> list[dict[str, Any]]:
    """input_ids = cloze prompt + gold option text + end of turn, tokenized as the options
    readout tokenizes them (prompt and option apart); labels are -100 on the prompt."""
    check_choice_task(task)
    eot, letters = end_of_turn(tokenizer), list(task.label_spaces[task.choice_field].values)
    rows = []
    for e in examples:
        p = cloze_prompt_ids(tokenizer, task, e)
        gold = task.options(e)[letters.index(e.target[task.choice_field])]
        t = tokenizer(gold + eot, add_special_tokens=False)["input_ids"]
        rows.append({"id": e.id, "input_ids": p + t, "labels": [IGNORE] * len(p) + t, "length": len(p) + len(t)})
    return rows


CONTENT = register_mode(
    Mode(
        name="content",
        description="multiple choice, generative: LoRA on the causal LM with the gold option's text as the target; "
        "read out by option-text likelihood",
        encode=encode_content,
        # the model, PEFT settings and loss of generate mode: only the rows and the readouts differ
        columns=GENERATE.columns,
        build=GENERATE.build,
        peft_kwargs=GENERATE.peft_kwargs,
        loss=GENERATE.loss,
        model_takes_prefix=GENERATE.model_takes_prefix,
        eval_readout="options",
        default_readout="options",
        check=check_choice_task,
        loss_items="target_tokens",
    )
)
