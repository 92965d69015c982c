"""permuted: a letter readout made fair to every position. Each example is read out in several
option orders (the order shown and `orders - 1` others, seeded per example), each option's
probability is averaged over the orders it was shown in, and the best average wins. A model
that prefers a letter rather than an answer then gains nothing from it, and the choice per
order ("order_choices") shows how often the chosen option's text is the same in all orders
(the scorer's consistency)."""

from __future__ import annotations

import json

from mcqa.errors import McqaError
from mcqa.eval.records import Prediction
from mcqa.prompting import serialize_target
from mcqa.readouts.base import BATCH_SIZE, READOUTS, Options, register_readout, run_readout
from mcqa.splits import other_orders
from mcqa.task import Example, Task


class PermutedOptions(Options):
    orders: int = 4  # the order shown included
    seed: int = 0
    readout: str = "rank"  # the letter readout to average; it must give probabilities
    batch_size: int = BATCH_SIZE


@register_readout(
    "permuted",
    "a letter readout averaged over several option orders (position bias cancels)",
    needs="lm",
    options=PermutedOptions,
)
def permuted(
    model,
    tokenizer,
    task: Task,
    examples: list[Example],
    *,
    orders: int = 4,
    seed: int = 0,
    readout: str = "rank",
    batch_size: int = BATCH_SIZE,
) -> list[Prediction]:
    if task.reorder is None or task.options is None:
        raise McqaError(
            f"task '{task.name}' cannot reorder its options (Task.reorder); the 'permuted' readout needs one that can"
        )
    if orders < 1:
        raise McqaError("readout 'permuted': orders must be at least 1")
    field, letters = task.choice_field, [str(v) for v in task.label_spaces[task.choice_field].values]
    plans = []  # per example: the orders, each a list of original option indices by position
    copies: list[Example] = []
    for e in examples:
        n = len(task.options(e))
        plan = [list(range(n))] + other_orders(seed, e.id, n, orders - 1)
        plans.append(plan)
        copies += [e if j == 0 else task.reorder(e, o) for j, o in enumerate(plan)]
    copies = [Example(f"{c.id}#{i}", c.input, None, c.groups) for i, c in enumerate(copies)]
    takes_batch = "batch_size" in READOUTS.resolve(readout).options.model_fields
    outs = run_readout(readout, model, tokenizer, task, copies, **({"batch_size": batch_size} if takes_batch else {}))
    result, at = [], 0
    for e, plan in zip(examples, plans):
        n = len(plan[0])
        avg, chosen = [0.0] * n, []
        for order in plan:
            o = outs[at]
            at += 1
            if "probs" not in o:
                raise McqaError(f"readout 'permuted' averages probabilities; '{readout}' gives none (use rank)")
            dist = o["probs"][field]
            for pos, original in enumerate(order):
                avg[original] += dist.get(letters[pos], 0.0) / len(plan)
            chosen.append(order[letters.index(str(json.loads(o["output"])[field]))])
        best = max(range(n), key=lambda i: avg[i])
        result.append(
            {
                "id": e.id,
                "output": serialize_target(task.output, {field: task.label_spaces[field].values[best]}),
                "probs": {field: {letters[i]: avg[i] for i in range(n)}},
                "order_choices": chosen,
            }
        )
    return result
