"""Readouts: the ways of reading a task's answer out of a model. Each returns records in the
scorer's predictions format, {"id", "output", "truncated"?, "probs"?}, one per example, in order.

- generate     free greedy generation, parsed later by the scorer (parse failures are measured)
- constrained  greedy decoding forced into the schema: the JSON skeleton is fixed and each label
               field restricted to its allowed values (a token trie of the label candidates,
               mcqa.trie); a task with free fields goes through xgrammar instead. Never a
               parse failure.
- rank         the log-likelihood of every allowed output, the argmax, and a probability for
               each label of each field; one temperature fitted on validation calibrates them
- head         the classification heads of a head-mode run

rank's score of a candidate (score="prefix", the default) is the sum of its token log-probs
from the first answer token through the token that tells it apart from every other candidate:
the tokens after that one are forced by the schema and carry no choice, so labels whose first
tokens differ are scored from the prefill logits alone. score="full" sums every token of the
target and the end of turn instead (the likelihood a trained model was fitted to), at the cost
of feeding every candidate's continuation. Fields are ranked jointly when the product of their
label spaces is at most `joint_limit` (each field's probabilities are marginals of the joint,
and the output takes each field's most probable label under the uncalibrated scores, so a
temperature never changes it), else field by field with the earlier fields fixed to their
argmax. constrained and rank share the prefix cache, the packed batches and the trie
(mcqa.prefix_cache, mcqa.trie).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mcqa.console import track
from mcqa.encoding import end_of_turn, prompt_ids, stop_token_ids
from mcqa.errors import McqaError, did_you_mean
from mcqa.prefix_cache import CausalLM, SharedPrefix, Streams, Tree, common_prefix_len, plan_chunks
from mcqa.prompting import serialize_target
from mcqa.task import Example, Task
from mcqa.trie import JOINT_LIMIT, LabelCandidates, Trie

FREE_MAX_NEW_TOKENS = 256
BATCH_SIZE = 16  # examples decoded together
SCORES = ("prefix", "full")


@dataclass(frozen=True)
class Readout:
    name: str
    fn: Callable[..., list[dict]]
    description: str


READOUTS: dict[str, Readout] = {}


def _register(name: str, description: str):
    def wrap(fn):
        if name in READOUTS:
            raise ValueError(f"readout '{name}' registered twice")
        READOUTS[name] = Readout(name, fn, description)
        return fn
    return wrap


def get_readout(name: str) -> Readout:
    if name in READOUTS:
        return READOUTS[name]
    raise McqaError(f"unknown readout '{name}'{did_you_mean(name, READOUTS)} (known readouts: {', '.join(READOUTS)})")


def run_readout(name: str, model, tokenizer, task: Task, examples: list[Example], **opts) -> list[dict]:
    """Run a readout by name; an option it does not take is an error that lists those it does."""
    readout = get_readout(name)
    known = [p.name for p in inspect.signature(readout.fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    for key in opts:
        if key not in known:
            raise McqaError(f"readout '{name}' has no option '{key}'{did_you_mean(key, known)} (its options: {', '.join(known) or 'none'})")
    return readout.fn(model, tokenizer, task, examples, **opts)


# ---------------------------------------------------------------- generate and head


@_register("generate", "free greedy generation, parsed by the scorer")
def generate(model, tokenizer, task: Task, examples: list[Example], *, max_new_tokens: int | None = None, batch_size: int = 16) -> list[dict]:
    from mcqa.inference import generate_outputs

    if _is_head_model(model):
        raise McqaError("this is a head-mode run (classification heads, no LM head); use the 'head' readout")
    return generate_outputs(model, tokenizer, task, examples, max_new_tokens or default_max_new_tokens(tokenizer, task), batch_size)


@_register("head", "the classification heads of a head-mode run")
def head(model, tokenizer, task: Task, examples: list[Example], *, batch_size: int = 16) -> list[dict]:
    from mcqa.inference import head_outputs

    if not _is_head_model(model):
        raise McqaError("the 'head' readout needs a head-mode run (mcqa train mode=head); this model has no classification heads")
    return head_outputs(model, tokenizer, task, examples, batch_size)


def _is_head_model(model) -> bool:
    from mcqa.heads import HeadModel

    return isinstance(model.get_base_model() if hasattr(model, "get_base_model") else model, HeadModel)


def default_max_new_tokens(tokenizer, task: Task) -> int:
    """Room for the longest label combination and the end of turn (a few tokens spare); a task
    with free fields gets FREE_MAX_NEW_TOKENS."""
    spaces = task.label_spaces
    if any(s is None for s in spaces.values()):
        return FREE_MAX_NEW_TOKENS
    longest = {f: max(s.values, key=lambda v: len(json.dumps(v))) for f, s in spaces.items()}
    text = serialize_target(task.output, longest) + end_of_turn(tokenizer)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 4


# ---------------------------------------------------------------- batching over the shared prefix


def _batches(lm: CausalLM, tokenizer, task: Task, examples: list[Example], batch_size: int, row_tokens: int | None,
             prefix_cache: bool, what: str, extra: int = 0):
    """(example indices, Streams, prompt suffixes) per batch of at most `batch_size` examples,
    longest prompts first; the shared prefix is encoded once for all batches. By default the
    batches are cut where the prompt lengths make it cheaper (prefix_cache.plan_chunks) and
    each packs its examples into rows as wide as its longest suffix; `row_tokens` instead packs
    every `batch_size` examples into rows of that many tokens. `extra`: tokens each example
    feeds after its suffix in the first forward (the answer's forced start)."""
    prompts = [prompt_ids(tokenizer, task, e) for e in examples]
    n = common_prefix_len(prompts) if prefix_cache else 0
    prefix = SharedPrefix.encode(lm, prompts[0][:n]) if n else SharedPrefix([], None)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    first_feed = [len(p) - n + extra for p in prompts]  # tokens each example feeds in the first forward
    if row_tokens is None:
        chunks = [order[a:b] for a, b in plan_chunks([first_feed[i] for i in order], n, batch_size, lm.pairs_per_token)]
    else:
        chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    for chunk in track(chunks, f"{what} ({len(examples)} examples, {n} prefix tokens shared)", total=len(chunks)):
        width = row_tokens if row_tokens is not None else first_feed[chunk[0]]
        yield chunk, Streams(lm, prefix, len(chunk), width), [prompts[i][n:] for i in chunk]


@dataclass
class _Row:
    pending: list[int]  # tokens to feed before the answer's next token (the prompt suffix)
    fixed: dict[str, Any] = field(default_factory=dict)
    path: list[int] = field(default_factory=list)  # answer tokens chosen so far
    fed: int = 0  # how many of them are in the cache and visible
    end_lp: torch.Tensor | None = None  # next-token log-probs at the row's end, when already read
    group: int = 0
    allowed: list[int] = field(default_factory=list)


# ---------------------------------------------------------------- rank


@_register("rank", "log-likelihood of every allowed output; argmax and calibrated probabilities")
def rank(model, tokenizer, task: Task, examples: list[Example], *, batch_size: int = BATCH_SIZE, row_tokens: int | None = None,
         prefix_cache: bool = True, joint_limit: int = JOINT_LIMIT, score: str = "prefix", temperature: float = 1.0) -> list[dict]:
    if score not in SCORES:
        raise McqaError(f"unknown rank score '{score}'; choose one of {', '.join(SCORES)}")
    lm, plan = CausalLM(model), LabelCandidates(tokenizer, task, joint_limit)
    if score == "full" and len(plan.groups) > 1:
        raise McqaError(f"score='full' needs the fields ranked jointly, but their label spaces multiply past "
                        f"joint_limit={joint_limit}; raise joint_limit or use score='prefix'")
    out: dict[int, dict] = {}
    batches = _batches(lm, tokenizer, task, examples, batch_size, row_tokens, prefix_cache, "ranking", plan.forced_start())
    for chunk, streams, suffixes in batches:
        states = [_Row(pending=list(s)) for s in suffixes]
        scores: list[list[dict]] = [[] for _ in chunk]
        for gi, group in enumerate(plan.groups):
            last = gi == len(plan.groups) - 1
            for r, result in enumerate(_rank_group(streams, plan, states, group, score, commit=not last)):
                scores[r].append(result)
        for r, i in enumerate(chunk):
            out[i] = _rank_record(task, examples[i].id, scores[r], temperature)
    return [out[i] for i in range(len(examples))]


def _rank_group(streams: Streams, plan: LabelCandidates, states: list[_Row], group: list[str], score: str, commit: bool) -> list[dict]:
    """Score every candidate of one group for every row in one forward: the prompt suffix (first
    group only) and the trie nodes the scores read are fed as one tree per row."""
    trees, plans = [], []
    for st in states:
        cands = plan.consistent(st.fixed, group, st.path)
        trie = Trie([c.ids[st.fed:] for c in cands])
        needed = trie.needed(score)
        chain = st.pending
        # Fed index of each trie node; the root is the chain's last token, or -1 (the row's end).
        index = {0: len(chain) - 1} | {n: len(chain) + k for k, n in enumerate(needed)}
        parents = list(range(-1, len(chain) - 1)) + [index[trie.parent[n]] for n in needed]
        read = ([index[0]] if chain else []) + [index[n] for n in needed]
        trees.append(Tree(chain + [trie.token[n] for n in needed], parents, read, None))
        plans.append((cands, trie, [0] * bool(chain) + needed, index))
    lps = streams.feed(dict(enumerate(trees)))
    results = []
    for r, (st, (cands, trie, read_nodes, index)) in enumerate(zip(states, plans)):
        lp = lps[r]
        at = {0: st.end_lp} | {n: lp[k] for k, n in enumerate(read_nodes)}
        stops = [trie.stop(i, score) for i in range(len(cands))]
        loglik = [sum(float(at[trie.parent[n]][trie.token[n]]) for n in trie.path(s)) for s in stops]
        results.append({"fields": list(group), "values": [[c.values[f] for f in group] for c in cands], "loglik": loglik})
        if commit:  # the argmax's value is fixed for the next group; the row's end moves to it
            best = int(np.argmax(loglik))
            end = trie.parent[stops[best]]
            streams.commit(r, index[end] if index[end] >= 0 else None)
            st.fixed |= cands[best].values
            st.path = list(cands[best].ids[:st.fed + trie.depth[stops[best]]])
            st.fed += trie.depth[end]
            st.end_lp = at[end]
            st.pending = []
    return results


def _rank_record(task: Task, eid: str, groups: list[dict], temperature: float) -> dict:
    probs = group_probs(groups, temperature)
    # The answer comes from the uncalibrated scores: a temperature reshapes the probabilities,
    # never the prediction (a jointly ranked field's marginal argmax would move with T).
    raw = probs if temperature == 1.0 else group_probs(groups, 1.0)
    spaces = task.label_spaces
    value = {f: max(spaces[f].values, key=lambda v: raw[f][str(v)]) for f in task.fields}
    return {"id": eid, "output": serialize_target(task.output, value), "probs": probs, "scores": groups}


def group_probs(groups: list[dict], temperature: float = 1.0) -> dict[str, dict[str, float]]:
    """Per-field probabilities from a rank record's scores: softmax of log-likelihood / T over
    each group's candidates, marginalised to each field."""
    out: dict[str, dict[str, float]] = {}
    for g in groups:
        ll = np.asarray(g["loglik"], dtype=np.float64) / temperature
        p = np.exp(ll - ll.max())
        p /= p.sum()
        for k, f in enumerate(g["fields"]):
            dist: dict[str, float] = {}
            for values, pc in zip(g["values"], p):
                dist[str(values[k])] = dist.get(str(values[k]), 0.0) + float(pc)
            out[f] = dist
    return out


# ---------------------------------------------------------------- constrained


@_register("constrained", "greedy decoding forced into the schema (label tries; xgrammar for free fields)")
def constrained(model, tokenizer, task: Task, examples: list[Example], *, batch_size: int = BATCH_SIZE, row_tokens: int | None = None,
                prefix_cache: bool = True, joint_limit: int = JOINT_LIMIT, max_new_tokens: int | None = None) -> list[dict]:
    lm = CausalLM(model)
    free = any(s is None for s in task.label_spaces.values())
    plan = None if free else LabelCandidates(tokenizer, task, joint_limit)
    batches = _batches(lm, tokenizer, task, examples, batch_size, row_tokens, prefix_cache, "constrained decoding",
                       0 if free else plan.forced_start())
    if free:
        return _grammar(lm, tokenizer, task, examples, batches, max_new_tokens or FREE_MAX_NEW_TOKENS)
    out: dict[int, dict] = {}
    for chunk, streams, suffixes in batches:
        states = [_Row(pending=list(s)) for s in suffixes]
        live = set(range(len(chunk)))
        while live:
            done = {r for r in live if not _advance(plan, states[r])}
            for r in done:
                out[chunk[r]] = {"id": examples[chunk[r]].id, "output": serialize_target(task.output, states[r].fixed), "truncated": False}
            streams.finish(done)
            live -= done
            if not live:
                break
            lps = streams.feed({r: Tree.chain(states[r].pending + states[r].path[states[r].fed:]) for r in sorted(live)})
            for r, lp in lps.items():
                st = states[r]
                st.fed, st.pending = len(st.path), []
                st.path.append(st.allowed[int(lp[0][st.allowed].argmax())])
    return [out[i] for i in range(len(examples))]


def _advance(plan: LabelCandidates, st: _Row) -> bool:
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
        raise McqaError(f"task '{task.name}' has free fields; constrained decoding of free fields needs xgrammar: pip install xgrammar") from None
    from mcqa.scoring import task_schema

    stops = stop_token_ids(tokenizer)
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=lm.vocab_size, stop_token_ids=stops)
    grammar = xgr.GrammarCompiler(info).compile_json_schema(
        json.dumps(task_schema(task)), any_whitespace=False, separators=(",", ":"), strict_mode=True)
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


# ---------------------------------------------------------------- temperature scaling


@dataclass(frozen=True)
class TemperatureFit:
    """One temperature for every field's log-likelihoods, chosen to minimise the validation
    negative log-likelihood of the gold label (mean over examples and fields); T=1 is always a
    candidate, so the fit never makes that NLL worse. ECE per field before and after."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: dict[str, float]
    ece_after: dict[str, float]
    n: int


def _gold_terms(task: Task, examples: list[Example], outputs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """One row per (example, field): its group's log-likelihoods (padded with -inf) and which
    candidates carry the gold label."""
    by_id = {o["id"]: o for o in outputs}
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    for e in examples:
        if e.target is None:
            raise McqaError(f"example '{e.id}' has no gold label; temperature scaling needs labeled validation examples")
        rec = by_id.get(e.id)
        if rec is None or "scores" not in rec:
            raise McqaError(f"no rank output with scores for example '{e.id}'; fit the temperature on the 'rank' readout's outputs")
        gold = task.output.model_validate(e.target).model_dump(mode="json")
        for g in rec["scores"]:
            for k, f in enumerate(g["fields"]):
                rows.append((np.asarray(g["loglik"], dtype=np.float64), np.array([v[k] == gold[f] for v in g["values"]])))
    width = max(len(ll) for ll, _ in rows)
    ll = np.full((len(rows), width), -np.inf)
    gold_mask = np.zeros((len(rows), width), dtype=bool)
    for i, (x, m) in enumerate(rows):
        ll[i, :len(x)], gold_mask[i, :len(m)] = x, m
    return ll, gold_mask


def _nll(terms: tuple[np.ndarray, np.ndarray], t: float) -> float:
    from scipy.special import logsumexp

    ll, gold = terms
    return float(np.mean(logsumexp(ll / t, axis=1) - logsumexp(np.where(gold, ll / t, -np.inf), axis=1)))


def fit_temperature(task: Task, examples: list[Example], outputs: list[dict], bounds: tuple[float, float] = (0.05, 20.0)) -> TemperatureFit:
    """Fit T on labeled (validation) examples and their rank outputs (bounded search on log T)."""
    from scipy.optimize import minimize_scalar

    from mcqa.metrics import calibration

    terms = _gold_terms(task, examples, outputs)
    res = minimize_scalar(lambda lt: _nll(terms, math.exp(lt)), bounds=tuple(map(math.log, bounds)), method="bounded")
    t, before = math.exp(res.x), _nll(terms, 1.0)
    after = _nll(terms, t)
    if not after < before:
        t, after = 1.0, before
    spaces = task.label_spaces
    by_id = {o["id"]: o for o in outputs}
    gold = [task.output.model_validate(e.target).model_dump(mode="json") for e in examples]

    def ece(temp: float) -> dict[str, float]:
        probs = [group_probs(by_id[e.id]["scores"], temp) for e in examples]
        return {f: calibration([p[f] for p in probs], [g[f] for g in gold], spaces[f])["ece"] for f in task.fields}

    return TemperatureFit(t, before, after, ece(1.0), ece(t), len(examples))


def apply_temperature(task: Task, outputs: list[dict], temperature: float) -> list[dict]:
    """Rank outputs with their probabilities recomputed at T; the outputs stay those of T=1."""
    return [{**_rank_record(task, o["id"], o["scores"], temperature), "temperature": temperature} for o in outputs]
