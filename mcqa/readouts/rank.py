"""rank: the log-likelihood of every allowed output, the argmax, and a probability for each
label of each field; one temperature fitted on validation calibrates them (mcqa.eval.calibration).

rank's score of a candidate (score="prefix", the default) is the sum of its token log-probs
from the first answer token through the token that tells it apart from every other candidate:
the tokens after that one are forced by the schema and carry no choice, so labels whose first
tokens differ are scored from the prefill logits alone. score="full" sums every token of the
target and the end of turn instead (the likelihood a trained model was fitted to), at the cost
of feeding every candidate's continuation. Fields are ranked jointly when the product of their
label spaces is at most `joint_limit` (each field's probabilities are marginals of the joint,
and the output takes each field's most probable label under the uncalibrated scores, so a
temperature never changes it), else field by field with the earlier
fields fixed to their argmax. Shares the prefix cache, the packed batches and the trie with
constrained (mcqa.readouts.decoding, batching, trie).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mcqa.errors import McqaError
from mcqa.eval.calibration import rank_record
from mcqa.eval.records import Prediction
from mcqa.model.lm import CausalLM
from mcqa.readouts.base import BATCH_SIZE, Options, register_readout
from mcqa.readouts.batching import Row, prefix_batches
from mcqa.readouts.decoding import Streams
from mcqa.readouts.trie import JOINT_LIMIT, LabelCandidates, Trie
from mcqa.task import Example, Task

Score = Literal["prefix", "full"]


class RankOptions(Options):
    batch_size: int = BATCH_SIZE
    row_tokens: int | None = None
    prefix_cache: bool = True
    joint_limit: int = JOINT_LIMIT
    score: Score = "prefix"
    temperature: float = 1.0


@register_readout(
    "rank",
    "log-likelihood of every allowed output; argmax and calibrated probabilities",
    needs="lm",
    options=RankOptions,
    calibrated=True,
)
def rank(
    model,
    tokenizer,
    task: Task,
    examples: list[Example],
    *,
    batch_size: int = BATCH_SIZE,
    row_tokens: int | None = None,
    prefix_cache: bool = True,
    joint_limit: int = JOINT_LIMIT,
    score: Score = "prefix",
    temperature: float = 1.0,
) -> list[Prediction]:
    lm, plan = CausalLM(model), LabelCandidates(tokenizer, task, joint_limit)
    if score == "full" and len(plan.groups) > 1:
        raise McqaError(
            f"score='full' needs the fields ranked jointly, but their label spaces multiply past "
            f"joint_limit={joint_limit}; raise joint_limit or use score='prefix'"
        )
    out: dict[int, dict] = {}
    batches = prefix_batches(
        lm, tokenizer, task, examples, batch_size, row_tokens, prefix_cache, "ranking", plan.forced_start()
    )
    for chunk, streams, suffixes in batches:
        states = [Row(pending=list(s)) for s in suffixes]
        scores: list[list[dict]] = [[] for _ in chunk]
        for gi, group in enumerate(plan.groups):
            last = gi == len(plan.groups) - 1
            for r, result in enumerate(_rank_group(streams, plan, states, group, score, commit=not last)):
                scores[r].append(result)
        for r, i in enumerate(chunk):
            out[i] = rank_record(task, examples[i].id, scores[r], temperature)
    return [out[i] for i in range(len(examples))]


def _rank_group(
    streams: Streams, plan: LabelCandidates, states: list[Row], group: list[str], score: str, commit: bool
) -> list[dict]:
    """Score every candidate of one group for every row in one forward: the prompt suffix (first
    group only) and the trie nodes the scores read are fed as one tree per row."""
    trees, plans = [], []
    for st in states:
        cands = plan.consistent(st.fixed, group, st.path)
        trie = Trie([c.ids[st.fed :] for c in cands])
        tree, index, read_nodes = trie.tree(st.pending, trie.needed(score))
        trees.append(tree)
        plans.append((cands, trie, read_nodes, index))
    lps = streams.feed(dict(enumerate(trees)))
    results = []
    for r, (st, (cands, trie, read_nodes, index)) in enumerate(zip(states, plans)):
        lp = lps[r]
        at = {0: st.end_lp} | {n: lp[k] for k, n in enumerate(read_nodes)}
        stops = [trie.stop(i, score) for i in range(len(cands))]
        loglik = [sum(float(at[trie.parent[n]][trie.token[n]]) for n in trie.path(s)) for s in stops]
        results.append(
            {"fields": list(group), "values": [[c.values[f] for f in group] for c in cands], "loglik": loglik}
        )
        if commit:  # the argmax's value is fixed for the next group; the row's end moves to it
            best = int(np.argmax(loglik))
            end = trie.parent[stops[best]]
            streams.commit(r, index[end] if index[end] >= 0 else None)
            st.fixed |= cands[best].values
            st.path = list(cands[best].ids[: st.fed + trie.depth[stops[best]]])
            st.fed += trie.depth[end]
            st.end_lp = at[end]
            st.pending = []
    return results
