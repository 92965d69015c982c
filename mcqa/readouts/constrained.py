"""constrained: greedy decoding forced into the schema, never a parse failure. The JSON
skeleton is fixed and each label field restricted to its allowed values through a token trie
of the label candidates (mcqa.readouts.trie); a task with free fields goes through xgrammar
instead. Shares the prefix cache and packed batches with rank."""

from __future__ import annotations

import json

import torch

from mcqa.errors import McqaError
from mcqa.eval.records import Prediction
from mcqa.model.encoding import stop_token_ids
from mcqa.model.lm import CausalLM
from mcqa.prompting import serialize_target
from mcqa.readouts.base import BATCH_SIZE, FREE_MAX_NEW_TOKENS, Options, register_readout
from mcqa.readouts.batching import Row, prefix_batches
from mcqa.readouts.decoding import Tree
from mcqa.readouts.trie import JOINT_LIMIT, LabelCandidates
from mcqa.schema import task_schema
from mcqa.task import Example, Task


class ConstrainedOptions(Options):
    batch_size: int = BATCH_SIZE
    row_tokens: int | None = None
    prefix_cache: bool = True
    joint_limit: int = JOINT_LIMIT
    max_new_tokens: int | None = None


@register_readout(
    "constrained",
    "greedy decoding forced into the schema (label tries; xgrammar for free fields)",
    needs="lm",
    options=ConstrainedOptions,
)
def constrained(
    model,
    tokenizer,
    task: Task,
    examples: list[Example],
    *,
    batch_size: int = BATCH_SIZE,
    row_tokens: int | None = None,
    prefix_cache: bool = True,
    joint_limit: int = JOINT_LIMIT,
    max_new_tokens: int | None = None,
) -> list[Prediction]:
    lm = CausalLM(model)
    free = any(s is None for s in task.label_spaces.values())
    plan = None if free else LabelCandidates(tokenizer, task, joint_limit)
    batches = prefix_batches(
        lm,
        tokenizer,
        task,
        examples,
        batch_size,
        row_tokens,
        prefix_cache,
        "constrained decoding",
        0 if free else plan.forced_start(),
    )
    if free:
        return _grammar(lm, tokenizer, task, examples, batches, max_new_tokens or FREE_MAX_NEW_TOKENS)
    out: dict[int, dict] = {}
    for chunk, streams, suffixes in batches:
        states = [Row(pending=list(s)) for s in suffixes]
        live = set(range(len(chunk)))
        while live:
            done = {r for r in live if not _advance(plan, states[r])}
            for r in done:
                out[chunk[r]] = {
                    "id": examples[chunk[r]].id,
                    "output": serialize_target(task.output, states[r].fixed),
                    "truncated": False,
                }
            streams.finish(done)
            live -= done
            if not live:
                break
            lps = streams.feed(
                {r: Tree.chain(states[r].pending + states[r].path[states[r].fed :]) for r in sorted(live)}
            )
            for r, lp in lps.items():
                st = states[r]
                st.fed, st.pending = len(st.path), []
                st.path.append(st.allowed[int(lp[0][st.allowed].argmax())])
    return [out[i] for i in range(len(examples))]


def _advance(plan: LabelCandidates, st: Row) -> bool:
    """Follow forced tokens and settle decided groups; True when the row waits on a choice
    (then `st.allowed` holds the tokens to choose from), False when every field is decided."""
    while st.group < len(plan.groups):
        group = plan.groups[st.group]
        cands = plan.consistent(st.fixed, group, st.path)
        if len(cands) == 1:
            st.fixed |= cands[0].values
            st.group += 1
            continue
        nxt = sorted({c.ids[len(st.path)] for c in cands})
        if len(nxt) == 1:
            st.path.append(nxt[0])
            continue
        st.allowed = nxt
        return True
    return False


def _grammar(lm: CausalLM, tokenizer, task: Task, examples: list[Example], batches, max_new_tokens: int) -> list[dict]:
    """Free fields: greedy decoding under xgrammar's matcher for the task's JSON Schema, compact
    separators and no free whitespace, so the output is the serializer's format. Label fields
    are then held to their enum/bounds by the schema (any tokenization of an allowed value).
    A free string or number has no end of its own (an untrained model runs "-5555..." to the
    limit), so once only a reserve of tokens is left, any allowed closing token (quote, comma,
    brace, end of turn) is taken as soon as the grammar allows one, and the object is finished."""
    try:
        import xgrammar as xgr
    except ImportError:
        raise McqaError(
            f"task '{task.name}' has free fields; "
            "constrained decoding of free fields needs xgrammar: pip install xgrammar"
        ) from None
    stops = stop_token_ids(tokenizer)
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=lm.vocab_size, stop_token_ids=stops)
    grammar = xgr.GrammarCompiler(info).compile_json_schema(
        json.dumps(task_schema(task)), any_whitespace=False, separators=(",", ":"), strict_mode=True
    )
    bitmask = xgr.allocate_token_bitmask(1, lm.vocab_size)
    closers = _closing_tokens(tokenizer, stops)
    reserve = min(6 * len(task.fields) + 4, max_new_tokens // 2)
    out: dict[int, dict] = {}
    for chunk, streams, suffixes in batches:
        matchers = [xgr.GrammarMatcher(grammar) for _ in chunk]
        tokens: list[list[int]] = [[] for _ in chunk]
        feeds = {r: list(s) for r, s in enumerate(suffixes)}
        for step in range(max_new_tokens):
            finished = set()
            for r, lp in streams.feed({r: Tree.chain(f) for r, f in feeds.items()}).items():
                logits = lp[:1].clone()
                matchers[r].fill_next_token_bitmask(bitmask, 0)
                xgr.apply_token_bitmask_inplace(logits, bitmask)
                tok = int(logits[0].argmax())
                if max_new_tokens - step <= reserve and torch.isfinite(logits[0, closers]).any():
                    tok = closers[int(logits[0, closers].argmax())]
                matchers[r].accept_token(tok)
                if matchers[r].is_terminated():
                    finished.add(r)
                else:
                    tokens[r].append(tok)
                    feeds[r] = [tok]
            for r in finished:
                out[chunk[r]] = {"id": examples[chunk[r]].id, "output": tokenizer.decode(tokens[r]), "truncated": False}
                del feeds[r]
            streams.finish(finished)
            if not feeds:
                break
        for r in feeds:
            out[chunk[r]] = {"id": examples[chunk[r]].id, "output": tokenizer.decode(tokens[r]), "truncated": True}
    return [out[i] for i in range(len(examples))]


def _closing_tokens(tokenizer, stops: list[int]) -> list[int]:
    out = set(stops)
    for text in ('"', "}", "]", ",", '"}', '",', '"]', "}]", "}}", "]}", "],", "},"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            out.add(ids[0])
    return sorted(out)
