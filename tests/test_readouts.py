"""Readouts on tiny-qwen3 (random 2-layer Qwen3, real Qwen3 tokenizer and chat template).

Every fast path is checked against a plain computation: constrained decoding against greedy
decoding over the candidate strings with a full forward per step, rank against a full forward
per candidate string, the cached prefix against a full forward. The random model has no
preference worth the name, so the prompts are random text and the label sets are chosen to
reach every branch: multi-token labels ("computer science", "Promotions"), labels that share
their first tokens ("computer" / "computer science" / "computer engineering"), two fields.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import load, plain_logprobs
from readout_tasks import FREE, SHARED, random_examples, task_named

from mcqa.errors import McqaError
from mcqa.eval.calibration import apply_temperature, fit_temperature, group_probs
from mcqa.eval.scoring import parser_for
from mcqa.model.encoding import IGNORE, common_prefix_len, end_of_turn, prompt_ids
from mcqa.model.lm import PROBE_TOKENS, CausalLM
from mcqa.modes.generate import encode_generative
from mcqa.prompting import serialize_target
from mcqa.readouts import READOUTS, run_readout
from mcqa.readouts.decoding import SharedPrefix, Streams, Tree
from mcqa.readouts.trie import LabelCandidates
from mcqa.registry import get_task
from mcqa.task import Example, Task

TOL = 1e-4  # float32 log-probs; a batched, cached forward differs from a plain one by ~1e-6


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny inputs, one intra-op thread


def brute_loglik(model, prompt: list[int], seqs: list[tuple[int, ...]], score: str) -> list[float]:
    """A plain full forward per candidate string; the sum of its target tokens' log-probs up to
    the token that tells it apart from every other candidate ("prefix"), or all of them."""
    out = []
    for s in seqs:
        if score == "full":
            n = len(s)
        else:
            n = 1 + max(next((k for k in range(min(len(s), len(o))) if s[k] != o[k]), 0) for o in seqs if o != s)
        lp = plain_logprobs(model, prompt + list(s), last=len(s) + 1)  # lp[k]: the distribution of s[k]
        out.append(sum(float(lp[k, s[k]]) for k in range(n)))
    return out


# ------------------------------------------------------------ the cached prefix


@pytest.mark.parametrize("row_tokens", [4096, 1], ids=["one-row", "rows-as-wide-as-the-longest"])
def test_cached_prefix_and_trees_match_a_full_forward(tiny, row_tokens):
    model, _ = tiny
    lm = CausalLM(model)
    g = torch.Generator().manual_seed(0)
    shared = torch.randint(100, 5000, (20,), generator=g).tolist()
    prompts = [shared + torch.randint(100, 5000, (n,), generator=g).tolist() for n in (1, 9, 4)]
    n = common_prefix_len(prompts)
    assert n == 20
    streams = Streams(lm, SharedPrefix.encode(lm, prompts[0][:n]), 3, row_tokens)
    # Each stream: its suffix, then a tree with two branches [11 -> 12] and [13]; its end moves to 11.
    trees = {}
    for s, p in enumerate(prompts):
        k = len(p) - n
        trees[s] = Tree(p[n:] + [11, 12, 13], list(range(-1, k - 1)) + [k - 1, k, k - 1], [k - 1, k, k + 1, k + 2], k)
    got = streams.feed(trees)
    # Tight rows: the longest stream (12 tokens) alone, the two others packed into a second row.
    assert streams.n_rows == (1 if row_tokens > 100 else 2)
    for s, p in enumerate(prompts):
        want = [plain_logprobs(model, p + extra, last=1)[-1] for extra in ([], [11], [11, 12], [13])]
        assert max(float((a - b).abs().max()) for a, b in zip(got[s], want)) < TOL
    # Later feeds see the committed path only (not the sibling branches), and rows emptied by
    # finished streams leave the cache.
    streams.feed({s: Tree.chain([20, 21]) for s in range(3)})
    streams.finish([1])
    assert streams.n_rows == 1
    got = streams.feed({2: Tree.chain([30]), 0: Tree.chain([31, 32])})
    for s, extra in ((2, [30]), (0, [31, 32])):
        assert (
            float((got[s][0] - plain_logprobs(model, prompts[s] + [11, 20, 21] + extra, last=1)[-1]).abs().max()) < TOL
        )


def test_common_prefix_leaves_every_prompt_a_token():
    assert common_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix_len([[7, 1], [8, 1]]) == 0


# ------------------------------------------------------------ constrained


@pytest.mark.parametrize("name", ["mmlu_pro", "notification", "shared_prefixes"])
def test_constrained_is_always_valid_and_equals_plain_greedy(tiny, name):
    model, tok = tiny
    task = task_named(name)
    examples = random_examples(task, tok, 16, seed=len(name))
    outputs = run_readout("constrained", model, tok, task, examples, batch_size=6, row_tokens=200)
    parser, spaces = parser_for(task), task.label_spaces
    for o in outputs:
        parsed = parser.parse(o["output"])
        assert parsed.status == "ok" and parsed.notes == (), o
        assert all(parsed.value[f] in spaces[f].values for f in task.fields)
    # The same greedy choice, made with a full forward of prompt + answer so far at each step.
    cands = LabelCandidates(tok, task).candidates({}, task.fields)
    for e, o in list(zip(examples, outputs))[:4]:
        prompt, path = prompt_ids(tok, task, e), []
        left = cands
        while len(left) > 1:
            nxt = sorted({c.ids[len(path)] for c in left})
            if len(nxt) > 1:
                lp = plain_logprobs(model, prompt + path, last=1)[-1]
                nxt = [max(nxt, key=lambda t: float(lp[t]))]
            path.append(nxt[0])
            left = [c for c in left if list(c.ids[: len(path)]) == path]
        assert o["output"] == serialize_target(task.output, left[0].values)


def test_constrained_reaches_labels_behind_a_shared_first_token(tiny):
    """ "computer" / "computer science" / "computer engineering" share their first token: the
    choice among them is made one level down the trie, and each can come out."""
    model, tok = tiny
    cands = LabelCandidates(tok, SHARED).candidates({}, SHARED.fields)
    science = next(c.ids for c in cands if c.values["topic"] == "computer science")
    k = science.index(tok.convert_tokens_to_ids("computer"))
    bias = torch.zeros(model.get_output_embeddings().weight.shape[0])
    bias[[science[k], science[k + 1]]] = 30.0  # "computer", then " science": both levels of the trie
    hook = model.get_output_embeddings().register_forward_hook(lambda mod, args, out: out + bias)
    try:
        outputs = run_readout("constrained", model, tok, SHARED, random_examples(SHARED, tok, 3, seed=1))
    finally:
        hook.remove()
    assert [parser_for(SHARED).parse(o["output"]).value["topic"] for o in outputs] == ["computer science"] * 3


def test_constrained_with_free_fields_goes_through_the_grammar(tiny):
    pytest.importorskip("xgrammar")
    model, tok = tiny
    examples = random_examples(FREE, tok, 4, seed=3)
    outputs = run_readout("constrained", model, tok, FREE, examples, max_new_tokens=64)
    parser = parser_for(FREE)
    # The random model runs its free number ("-5555...") until only the closing reserve is
    # left; the object is then closed, not cut off.
    assert all(not o["truncated"] and parser.parse(o["output"]).status == "ok" for o in outputs), outputs
    assert {parser.parse(o["output"]).value["folder"] for o in outputs} <= {"Work", "Personal"}


# ------------------------------------------------------------ rank


@pytest.mark.parametrize(
    "name,score",
    [("notification", "prefix"), ("notification", "full"), ("shared_prefixes", "prefix"), ("mmlu_pro", "prefix")],
)
def test_rank_equals_brute_force_scoring_of_every_candidate(tiny, name, score):
    model, tok = tiny
    task = task_named(name)
    examples = random_examples(task, tok, 5, seed=7)
    outputs = run_readout("rank", model, tok, task, examples, score=score, batch_size=3, row_tokens=200)
    uncached = run_readout("rank", model, tok, task, examples, score=score, batch_size=1, prefix_cache=False)
    cands = LabelCandidates(tok, task).candidates({}, task.fields)
    for e, o, u in list(zip(examples, outputs, uncached)):
        (group,) = o["scores"]
        assert group["values"] == [[c.values[f] for f in task.fields] for c in cands]
        assert np.allclose(group["loglik"], u["scores"][0]["loglik"], atol=TOL)
        if e in examples[:2]:
            want = brute_loglik(model, prompt_ids(tok, task, e), [c.ids for c in cands], score)
            assert np.allclose(group["loglik"], want, atol=TOL), (group["loglik"], want)
        for f in task.fields:
            assert math.isclose(sum(o["probs"][f].values()), 1.0, abs_tol=1e-9)
            assert set(o["probs"][f]) == {str(v) for v in task.label_spaces[f].values}
        best = {f: max(task.label_spaces[f].values, key=lambda v: o["probs"][f][str(v)]) for f in task.fields}
        assert o["output"] == serialize_target(task.output, best)
        assert parser_for(task).parse(o["output"]).status == "ok"


def test_rank_reads_vocabulary_logits_only_where_it_scores(tiny):
    """mmlu_pro's 14 labels start with 14 different tokens: the LM head runs on 4 positions per
    example (the prompt's last token and the skeleton `{"`, `category`, `":"`), never on the prompt."""
    model, tok = tiny
    task = get_task("mmlu_pro")
    rows = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda mod, args, out: rows.append(args[0].shape[:-1].numel())
    )
    try:
        run_readout("rank", model, tok, task, random_examples(task, tok, 5, seed=2))
    finally:
        hook.remove()
    assert rows[:2] == [PROBE_TOKENS, PROBE_TOKENS]  # first the check that the head's logits are the model's
    assert sum(rows[2:]) == 4 * 5  # over however many batches the prompts were planned into


def test_rank_field_by_field_fixes_earlier_fields_to_their_argmax(tiny):
    model, tok = tiny
    task = get_task("notification")
    e = random_examples(task, tok, 1, seed=11)[0]
    (o,) = run_readout("rank", model, tok, task, [e], joint_limit=1)
    folder, priority = o["scores"]
    assert folder["fields"] == ["folder"] and priority["fields"] == ["priority"]
    plan, prompt = LabelCandidates(tok, task, joint_limit=1), prompt_ids(tok, task, e)
    assert np.allclose(
        folder["loglik"],
        brute_loglik(model, prompt, [c.ids for c in plan.candidates({}, ["folder"])], "prefix"),
        atol=TOL,
    )
    best = folder["values"][int(np.argmax(folder["loglik"]))][0]
    later = brute_loglik(model, prompt, [c.ids for c in plan.candidates({"folder": best}, ["priority"])], "prefix")
    # Scores within a group may differ by a constant (the shared tokens before the group's
    # fed point are not summed); the distribution over the group's values may not.
    assert np.allclose(np.asarray(priority["loglik"]) - priority["loglik"][0], np.asarray(later) - later[0], atol=TOL)
    assert parser_for(task).parse(o["output"]).value["folder"] == best
    with pytest.raises(McqaError, match="joint_limit"):
        run_readout("rank", model, tok, task, [e], joint_limit=1, score="full")


def test_rank_full_score_is_minus_the_training_loss_of_the_gold_target(tiny):
    model, tok = tiny
    task = get_task("notification")
    examples = load("notification", "train", "seed")[:3]
    outputs = run_readout("rank", model, tok, task, examples, score="full")
    for e, o, row in zip(examples, outputs, encode_generative(tok, task, examples, end_of_turn(tok))):
        (group,) = o["scores"]
        gold = group["values"].index([e.target["folder"], e.target["priority"]])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits, torch.tensor(row["labels"][1:]), ignore_index=IGNORE, reduction="sum"
        )
        assert group["loglik"][gold] == pytest.approx(-loss.item(), abs=1e-3)


# ------------------------------------------------------------ temperature scaling


def fake_rank_outputs(
    rng: np.random.Generator, n: int, sharpness: float, accuracy: float
) -> tuple[Task, list[Example], list[dict]]:
    task = get_task("notification")
    examples, outputs = [], []
    values = [[f, p] for f in ("Work", "Personal", "Promotions", "Alerts") for p in (1, 2, 3)]
    for i in range(n):
        gold = values[rng.integers(len(values))]
        ll = rng.normal(scale=0.1, size=len(values))
        top = values.index(gold) if rng.random() < accuracy else int(rng.integers(len(values)))
        ll[top] += sharpness
        examples.append(Example(f"v{i}", {}, {"folder": gold[0], "priority": gold[1]}))
        outputs.append(
            {
                "id": f"v{i}",
                "output": "",
                "scores": [{"fields": ["folder", "priority"], "values": values, "loglik": ll.tolist()}],
            }
        )
    return task, examples, outputs


def marginal_probs(group: dict, t: float) -> dict[str, dict[str, float]]:
    """The test's own softmax of loglik / T over a group's candidates, summed per field value."""
    ll = np.asarray(group["loglik"], dtype=np.float64) / t
    p = np.exp(ll - ll.max())
    p /= p.sum()
    out: dict[str, dict[str, float]] = {f: {} for f in group["fields"]}
    for values, pc in zip(group["values"], p):
        for f, v in zip(group["fields"], values):
            out[f][str(v)] = out[f].get(str(v), 0.0) + float(pc)
    return out


def gold_nll(examples: list[Example], outputs: list[dict], t: float | np.ndarray) -> np.ndarray | float:
    """Mean over examples and fields of -log p(gold label) at temperature t (one value per t)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None, None]
    ll = np.array([o["scores"][0]["loglik"] for o in outputs])[None] / t  # (T, n, candidates)
    log_z = np.logaddexp.reduce(ll, axis=2)
    values = outputs[0]["scores"][0]["values"]
    terms = []
    for k, f in enumerate(outputs[0]["scores"][0]["fields"]):
        gold = np.array([[v[k] == e.target[f] for v in values] for e in examples])[None]
        terms.append(log_z - np.logaddexp.reduce(np.where(gold, ll, -np.inf), axis=2))
    out = np.mean(np.concatenate(terms, axis=1), axis=1)
    return out if out.size > 1 else float(out[0])


def ece(examples: list[Example], outputs: list[dict], t: float, field: str) -> float:
    """Expected calibration error of one field at temperature t, 15 equal-width bins, by hand."""
    conf, right = [], []
    for e, o in zip(examples, outputs):
        probs = marginal_probs(o["scores"][0], t)[field]
        top = max(probs, key=probs.get)
        conf.append(probs[top])
        right.append(top == str(e.target[field]))
    conf, right = np.array(conf), np.array(right, dtype=float)
    bins = np.minimum((conf * 15).astype(int), 14)
    return float(
        sum(abs(right[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    )


GRID = np.exp(np.linspace(math.log(0.05), math.log(20.0), 1201))  # 0.5% steps in T


@pytest.mark.parametrize("sharpness,accuracy,direction", [(8.0, 0.6, "up"), (0.5, 0.95, "down"), (3.0, 0.8, None)])
def test_temperature_fit_is_the_nll_minimum_and_calibrates_unseen_data(sharpness, accuracy, direction):
    """The fitted T is where a fine grid search finds the validation NLL lowest, and on a second
    sample from the same distribution (data the fit never saw) it lowers NLL and ECE."""
    task, examples, outputs = fake_rank_outputs(np.random.default_rng(0), 300, sharpness, accuracy)
    fit = fit_temperature(task, examples, outputs)
    nll = gold_nll(examples, outputs, GRID)
    best = float(GRID[int(np.argmin(nll))])
    assert fit.temperature == pytest.approx(best, rel=0.02), (fit.temperature, best)
    assert fit.nll_after == pytest.approx(min(nll), abs=1e-4)
    assert fit.nll_before == pytest.approx(gold_nll(examples, outputs, 1.0), abs=1e-9)
    if direction == "up":  # overconfident: T > 1 flattens
        assert fit.temperature > 1.5
    elif direction == "down":  # underconfident: T < 1 sharpens
        assert fit.temperature < 0.7
    if direction is not None:
        _, fresh, fresh_out = fake_rank_outputs(np.random.default_rng(1), 300, sharpness, accuracy)
        assert gold_nll(fresh, fresh_out, fit.temperature) < gold_nll(fresh, fresh_out, 1.0) - 0.02
        for f in task.fields:
            assert ece(fresh, fresh_out, fit.temperature, f) < ece(fresh, fresh_out, 1.0, f), f
    # Applying T gives the softmax of loglik / T, marginalised per field.
    for o, c in zip(outputs[:20], apply_temperature(task, outputs[:20], fit.temperature)):
        assert c["temperature"] == fit.temperature
        want = marginal_probs(o["scores"][0], fit.temperature)
        for f in task.fields:
            assert c["probs"][f] == pytest.approx(want[f], abs=1e-12)
            assert math.isclose(sum(c["probs"][f].values()), 1.0, abs_tol=1e-9)
        assert group_probs(o["scores"], fit.temperature) == c["probs"]


def test_calibration_never_changes_the_prediction(tiny):
    """The temperature reshapes probabilities, never the answer: the output is each field's
    most probable label under the uncalibrated scores (T=1), whatever T is applied. Jointly
    ranked fields are where it could differ: a marginal's argmax moves with T."""
    task = get_task("notification")
    values = [[f, p] for f in ("Work", "Personal", "Promotions", "Alerts") for p in (1, 2, 3)]
    # One strong Work candidate against three fairly strong Personal ones: Personal has the
    # larger marginal at T=1 and T=5, Work at T=0.2 (where the single peak dominates).
    ll = [2.0 if v == ["Work", 1] else 1.2 if v[0] == "Personal" else -10.0 for v in values]
    rec = {"id": "x", "output": "", "scores": [{"fields": ["folder", "priority"], "values": values, "loglik": ll}]}
    sharp = marginal_probs(rec["scores"][0], 0.2)
    assert max(sharp["folder"], key=sharp["folder"].get) == "Work"  # the case is real
    for t in (0.2, 1.0, 5.0):
        (o,) = apply_temperature(task, [rec], t)
        assert json.loads(o["output"]) == {"folder": "Personal", "priority": 1}, t
        assert o["probs"] == marginal_probs(rec["scores"][0], t)  # the probabilities do follow T
    # The rank readout itself, on the tiny model: same outputs at any temperature.
    model, tok = tiny
    examples = random_examples(task, tok, 8, seed=21)
    plain = run_readout("rank", model, tok, task, examples)
    for t in (0.05, 3.0):
        assert [o["output"] for o in run_readout("rank", model, tok, task, examples, temperature=t)] == [
            o["output"] for o in plain
        ]
    # A fitted temperature leaves accuracy as it was.
    task, val, outputs = fake_rank_outputs(np.random.default_rng(5), 200, 8.0, 0.6)
    fit = fit_temperature(task, val, outputs)
    assert fit.temperature > 1.5
    assert [o["output"] for o in apply_temperature(task, outputs, fit.temperature)] == [
        o["output"] for o in apply_temperature(task, outputs, 1.0)
    ]


def test_temperature_fit_keeps_t_1_when_nothing_is_better():
    """The gold is every example's argmax, so any flattening raises the NLL: offered only
    temperatures above 1, the fit must keep T=1 and its NLL."""
    task, examples, outputs = fake_rank_outputs(np.random.default_rng(1), 20, 0.0, 1.0)
    for e, o in zip(examples, outputs):
        g = o["scores"][0]
        g["loglik"] = [3.0 if v == [e.target["folder"], e.target["priority"]] else 0.0 for v in g["values"]]
    fit = fit_temperature(task, examples, outputs, bounds=(1.5, 20.0))
    assert fit.temperature == 1.0 and fit.nll_after == fit.nll_before


# ------------------------------------------------------------ registry and model kinds


def test_registry_names_and_errors(tiny):
    model, tok = tiny
    task = get_task("notification")
    assert set(READOUTS) == {"generate", "constrained", "rank", "head", "options", "choice", "permuted", "endpoint"}
    with pytest.raises(McqaError, match="did you mean 'rank'"):
        run_readout("rnak", model, tok, task, [])
    with pytest.raises(McqaError, match="did you mean 'batch_size'.*prefix_cache"):
        run_readout("rank", model, tok, task, [], batch_sise=4)
    with pytest.raises(McqaError, match="head-mode run"):
        run_readout("head", model, tok, task, [])
    with pytest.raises(McqaError, match="free fields"):
        run_readout("rank", model, tok, FREE, [])


def test_head_readout_and_head_models_refuse_lm_readouts(tiny):
    from mcqa.modes.head import build_head_model

    model, tok = tiny
    task = get_task("notification")
    heads = build_head_model(model, tok, task)
    examples = random_examples(task, tok, 3, seed=5)
    outputs = run_readout("head", heads, tok, task, examples)
    assert [o["id"] for o in outputs] == [e.id for e in examples]
    assert all(parser_for(task).parse(o["output"]).status == "ok" for o in outputs)
    for name in ("rank", "constrained", "generate"):
        with pytest.raises(McqaError, match="'head' readout"):
            run_readout(name, heads, tok, task, examples)


def test_generate_readout_is_the_free_greedy_loop(tiny):
    """A batch of mixed prompt lengths (left-padded together) gives, token for token, what an
    argmax loop over full unpadded forwards gives, stopping at the first stop token, and
    `truncated` is true exactly when no stop token came."""
    from mcqa.model.encoding import stop_token_ids

    model, tok = tiny
    task = get_task("mmlu_pro")
    examples = random_examples(task, tok, 6, seed=9)
    assert len({len(prompt_ids(tok, task, e)) for e in examples}) == 6
    stops, eot, steps = stop_token_ids(tok), tok.convert_tokens_to_ids("<|im_end|>"), 6

    # The random model repeats one token forever; steer it. A fixed projection of each
    # position's hidden state picks among a few words and <|im_end|>, so texts vary and stops
    # come at different steps, and the batched and the plain forward apply the rule alike.
    words = tok(" the cat sat on a mat", add_special_tokens=False)["input_ids"] + [eot]
    proj = torch.randn(model.config.hidden_size, len(words), generator=torch.Generator().manual_seed(3))

    def stop_sometimes(mod, args, out):
        out = out.clone()
        out[..., words] += 50.0 + 20.0 * (args[0].float() / args[0].float().norm(dim=-1, keepdim=True)) @ proj
        return out

    hook = model.get_output_embeddings().register_forward_hook(stop_sometimes)
    try:
        outputs = run_readout("generate", model, tok, task, examples, max_new_tokens=steps, batch_size=6)
        want = []
        for e in examples:
            ids, new = prompt_ids(tok, task, e), []
            for _ in range(steps):
                t = int(plain_logprobs(model, ids + new, last=1)[-1].argmax())
                if t in stops:
                    break
                new.append(t)
            want.append((tok.decode(new, skip_special_tokens=False), len(new) == steps))
    finally:
        hook.remove()
    assert [o["id"] for o in outputs] == [e.id for e in examples]
    assert [(o["output"], o["truncated"]) for o in outputs] == want
    assert any(t for _, t in want) and not all(t for _, t in want)  # both endings occur
    assert len({text for text, _ in want}) > 2  # the texts differ


def test_plan_chunks_covers_every_stream_once_and_splits_long_from_short():
    from mcqa.readouts.decoding import plan_chunks

    lengths = sorted([316, 234, 163, 150, 85, 79, 56, 34, 31, 30, 26, 26, 25, 22, 20, 20] * 3, reverse=True)
    plan = plan_chunks(lengths, 230, 16, 3000.0)
    assert plan[0][0] == 0 and plan[-1][1] == len(lengths)
    assert all(a < b and b - a <= 16 for a, b in plan) and all(p[1] == q[0] for p, q in zip(plan, plan[1:]))
    assert len(plan) > -(-len(lengths) // 16)  # cheaper to cut where lengths drop than every 16
    assert len(plan_chunks([5] * 10, 0, 4, 100.0)) == 3  # equal lengths: as few forward calls as the cap allows
    with pytest.raises(ValueError):
        plan_chunks([1, 2], 0, 4, 100.0)
