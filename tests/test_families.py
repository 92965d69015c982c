"""Every family mcqa claims, against the plain thing: for each tiny random model (tests/families.py)
the capabilities it reports, the cached streams, and every readout equal brute-force per-example
forwards (the training modes: test_family_training.py). Then the commands a user runs, on the
hybrid (Qwen3.5) and sliding-window (Gemma 3) families, the one-line refusal of a model that is
not a causal LM, and a chat template without a system role."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch
from families import FAMILIES, WINDOW, family_model, save_family
from helpers import load, messages_ids, plain_loglik, plain_logprobs, run_cli
from readout_tasks import FREE, random_examples  # the free-field task the grammar tests use

from mcqa.conformance import check
from mcqa.model.choice_rows import cloze_messages
from mcqa.model.encoding import end_of_turn, prompt_ids, stop_token_ids
from mcqa.model.lm import CausalLM, capabilities, lora_targets
from mcqa.modes import get_mode
from mcqa.prompting import neutral_messages, render_prompt
from mcqa.readouts import batching, run_readout
from mcqa.readouts.decoding import SharedPrefix, Tree, open_streams
from mcqa.registry import get_task
from mcqa.task import Example

TOL = 1e-4  # float32 log-probs: a batched, cached forward differs from a plain one by ~1e-6

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param, *family_model(request.param)


def random_notifications(tok, n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)

    def text(k):
        return tok.decode([rng.randrange(151_000) for _ in range(k)])

    return [Example(f"r{i}", {"app": text(2), "title": text(4), "body": text(rng.randrange(3, 30))}) for i in range(n)]


# ------------------------------------------------------------ the layer the readouts share


def test_capabilities_say_what_each_family_is(family):
    name, model, _ = family
    caps = capabilities(model)
    assert caps.trees == (name not in ("qwen3_5", "lfm2"))
    assert caps.stateful == {"qwen3_5": ("linear_attention",), "lfm2": ("conv",)}.get(name, ())
    assert caps.window == (WINDOW if name == "gemma3" else None)
    assert caps.prefix_shared(WINDOW)[0] == (name not in ("qwen3_5", "lfm2"))
    assert caps.prefix_shared(WINDOW + 1)[0] == (name not in ("qwen3_5", "lfm2", "gemma3"))
    targets = lora_targets(model)
    assert {"q_proj", "k_proj", "v_proj"} <= set(targets)
    if name == "qwen3_5":  # its linear-attention projections too
        assert {"in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj"} <= set(targets)


def test_streams_read_what_a_plain_forward_reads(family):
    """A shared prefix, three examples of other lengths, a tree of two branches, a commit to
    one branch, a later feed that must not see the other, a finished stream: every read equals
    a plain forward of that example's whole sequence (past Gemma's 16-token window too)."""
    _, model, _ = family
    lm = CausalLM(model)
    g = torch.Generator().manual_seed(0)
    shared = torch.randint(100, 5000, (20,), generator=g).tolist()
    prompts = [shared + torch.randint(100, 5000, (n,), generator=g).tolist() for n in (1, 9, 4)]
    streams = open_streams(lm, SharedPrefix.encode(lm, shared), 3, 4096)
    trees = {}
    for s, p in enumerate(prompts):
        k = len(p) - 20
        trees[s] = Tree(p[20:] + [11, 12, 13], list(range(-1, k - 1)) + [k - 1, k, k - 1], [k - 1, k, k + 1, k + 2], k)
    got = streams.feed(trees)
    for s, p in enumerate(prompts):
        want = [plain_logprobs(model, p + extra, last=1)[-1] for extra in ([], [11], [11, 12], [13])]
        assert max(float((a - b).abs().max()) for a, b in zip(got[s], want)) < TOL
    streams.feed({s: Tree.chain([20, 21]) for s in range(3)})
    streams.finish([1])
    got = streams.feed({2: Tree.chain([30]), 0: Tree.chain([31, 32])})
    for s, extra in ((2, [30]), (0, [31, 32])):
        assert (
            float((got[s][0] - plain_logprobs(model, prompts[s] + [11, 20, 21] + extra, last=1)[-1]).abs().max()) < TOL
        )


# ------------------------------------------------------------ readouts against the brute force


def tree_path(t: Tree, j: int) -> list[int]:
    """The tokens of a fed tree from the stream's end to token j."""
    return [] if j < 0 else tree_path(t, t.parents[j]) + [t.tokens[j]]


class PlainStreams:
    """The oracle behind the prefix-cached readouts: every read is one ordinary forward of the
    example's whole sequence (prefix, committed tokens, the path to the read token)."""

    def __init__(self, model, prefix: list[int], n: int):
        self.model, self.ends, self.last = model, [list(prefix)] * n, {}

    def feed(self, trees):
        out = {}
        for s, t in trees.items():
            out[s] = (
                torch.stack([plain_logprobs(self.model, self.ends[s] + tree_path(t, j), last=1)[-1] for j in t.read])
                if t.read
                else torch.empty(0)
            )
            self.last[s] = (self.ends[s], t)
            self.commit(s, t.commit)
        return out

    def commit(self, s, index):
        start, t = self.last[s]
        self.ends[s] = start + (tree_path(t, index) if index is not None else [])

    def finish(self, streams):
        pass


@pytest.fixture
def oracle(monkeypatch):
    """Run a readout again with PlainStreams in place of the model-layer streams."""

    def run(name, model, tok, task, examples, **opts):
        with monkeypatch.context() as m:
            m.setattr(batching, "open_streams", lambda lm, prefix, n, capacity=512: PlainStreams(model, prefix.ids, n))
            return run_readout(name, model, tok, task, examples, **opts)

    return run


def close(a, b) -> bool:
    return np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=TOL)


def test_rank_and_constrained_equal_plain_forwards(family, oracle):
    _, model, tok = family
    task = get_task("notification")
    examples = random_notifications(tok, 3, seed=1)
    for opts in ({"score": "prefix"}, {"score": "prefix", "joint_limit": 1}, {"score": "full"}):
        got = run_readout("rank", model, tok, task, examples, batch_size=3, **opts)
        want = oracle("rank", model, tok, task, examples, batch_size=3, **opts)
        assert [o["output"] for o in got] == [o["output"] for o in want]
        assert all(close(g["loglik"], w["loglik"]) for a, b in zip(got, want) for g, w in zip(a["scores"], b["scores"]))
    got = run_readout("constrained", model, tok, task, examples, batch_size=3)
    assert [o["output"] for o in got] == [
        o["output"] for o in oracle("constrained", model, tok, task, examples, batch_size=3)
    ]


def test_options_under_every_rule_and_permuted_equal_plain_forwards(family, oracle):
    _, model, tok = family
    task = get_task("recipe_mpr")
    examples = list(load("recipe_mpr", "test", "split")[:2])
    got = run_readout("options", model, tok, task, examples, batch_size=2)
    want = oracle("options", model, tok, task, examples, batch_size=2)
    for g, w in zip(got, want):
        assert set(g["option_scores"]) == {"sum", "mean", "char", "pmi"}
        assert all(close(g["option_scores"][r], w["option_scores"][r]) for r in g["option_scores"])
    eot = end_of_turn(tok)
    e, o = examples[0], got[0]  # ... and the oracle is what it says: the first option by hand
    messages = cloze_messages(task, e)
    cont = tok(task.options(e)[0] + eot, add_special_tokens=False)["input_ids"]

    pmi = plain_loglik(model, messages_ids(tok, messages), cont) - plain_loglik(
        model, messages_ids(tok, neutral_messages(messages)), cont
    )
    assert o["option_scores"]["pmi"][0] == pytest.approx(pmi, abs=TOL)
    got = run_readout("permuted", model, tok, task, examples, orders=2)
    want = oracle("permuted", model, tok, task, examples, orders=2)
    assert all(
        close(list(g["probs"]["answer"].values()), list(w["probs"]["answer"].values())) for g, w in zip(got, want)
    )


def test_constrained_free_fields_equal_plain_forwards(family, oracle):
    pytest.importorskip("xgrammar")

    _, model, tok = family
    examples = random_examples(FREE, tok, 3, seed=3)
    got = run_readout("constrained", model, tok, FREE, examples, max_new_tokens=12)
    assert got == oracle("constrained", model, tok, FREE, examples, max_new_tokens=12)


def test_generate_equals_a_greedy_loop_over_plain_forwards(family):
    """Left-padded batches through transformers' generate, against an argmax loop over plain
    unpadded forwards (Qwen3.5's linear attention and LFM2's convolutions see the padding too)."""
    _, model, tok = family
    task = get_task("notification")
    examples = random_notifications(tok, 4, seed=9)
    stops, steps = stop_token_ids(tok), 4
    got = run_readout("generate", model, tok, task, examples, max_new_tokens=steps, batch_size=4)
    for e, o in zip(examples, got):
        ids, new = prompt_ids(tok, task, e), []
        for _ in range(steps):
            t = int(plain_logprobs(model, ids + new, last=1)[-1].argmax())
            if t in stops:
                break
            new.append(t)
        assert o["output"] == tok.decode(new, skip_special_tokens=False)


def test_head_and_choice_readouts_equal_plain_forwards(family):
    _, model, tok = family
    torch.manual_seed(0)
    heads = get_mode("head").build(model, tok, get_task("notification"))
    for h in heads.heads.values():
        torch.nn.init.normal_(h.weight, std=0.5)
    task = get_task("notification")
    examples = random_notifications(tok, 4, seed=4)
    got = run_readout("head", heads, tok, task, examples, batch_size=4)
    for e, o in zip(examples, got):
        with torch.no_grad():
            logits = heads(input_ids=torch.tensor([prompt_ids(tok, task, e)]))["logits"]
        for f, lg in zip(task.fields, logits):
            want = torch.softmax(lg[0].float(), -1)
            assert close(list(o["probs"][f].values()), want.tolist())
    task = get_task("recipe_mpr")
    choice = get_mode("choice").build(model, tok, task)
    torch.nn.init.normal_(choice.choice_head.weight, std=0.5)
    examples = list(load("recipe_mpr", "test", "split")[:3])
    got = run_readout("choice", choice, tok, task, examples, batch_size=3)
    eot = end_of_turn(tok)
    for e, o in zip(examples, got):
        prompt = messages_ids(tok, cloze_messages(task, e))
        with torch.no_grad():
            scores = [
                float(
                    choice.choice_head(
                        choice.backbone(
                            input_ids=torch.tensor([prompt + tok(t + eot, add_special_tokens=False)["input_ids"]])
                        ).last_hidden_state[0, -1]
                    )
                )
                for t in task.options(e)
            ]
        assert close(list(o["probs"]["answer"].values()), torch.softmax(torch.tensor(scores), -1).tolist())


# ------------------------------------------------------------ the commands, on a hybrid and a sliding-window model


@pytest.mark.parametrize(
    "name,mode,task",
    [
        ("qwen3_5", "head", "notification"),
        ("gemma3", "generate", "notification"),
        ("qwen3_5", "listwise", "recipe_mpr"),
        ("gemma3", "choice", "recipe_mpr"),
    ],
)
def test_train_and_score_run_on_hybrid_and_sliding_window_models(tmp_path, name, mode, task):
    folder = save_family(name, tmp_path / name)
    protocol = ["--protocol", "cv5-0"] if task == "recipe_mpr" else []
    r = run_cli(
        [
            "train",
            "--task",
            task,
            *protocol,
            "--model",
            str(folder),
            "--mode",
            mode,
            "max_steps=1",
            "max_train_examples=4",
            "max_eval_examples=4",
            "max_test_examples=4",
            "batch_size=4",
            "micro_batch_size=4",
            f"output_dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert r.rc == 0, r.out + r.err
    said = r.out + r.err
    assert "Traceback" not in said and "falling back" not in said
    if name == "qwen3_5":
        assert "linear attention" in said and "in_proj_qkv" in said  # the header's layer mix; LoRA on its projections
        assert ("one row per option" if mode == "listwise" else "prefix shared: no") in said
    else:
        assert "sliding attention" in said
    assert json.loads((tmp_path / "run" / "run.json").read_text())["test_examples"] == 4
    readout = "options" if mode == "listwise" else "constrained" if task == "recipe_mpr" else "rank"
    r = run_cli(
        [
            "score",
            "--task",
            task,
            *protocol,
            "--split",
            "test",
            "--model",
            str(folder),
            "--readout",
            readout,
            "--limit",
            "3",
            "--calibration-examples",
            "3",
        ],
        cwd=tmp_path,
    )
    assert r.rc == 0, r.out + r.err


def test_a_model_that_is_no_causal_lm_is_one_line_before_any_run_folder(tmp_path):
    from transformers import BertConfig

    folder = tmp_path / "encoder"
    BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        architectures=["BertForMaskedLM"],
    ).save_pretrained(folder)
    for args in (
        ("train", "--task", "notification", "--model", str(folder), f"output_dir={tmp_path / 'run'}"),
        ("score", "--task", "notification", "--split", "test", "--model", str(folder), "--limit", "2"),
    ):
        r = run_cli(list(args), cwd=tmp_path)
        assert r.rc == 2, r.out + r.err
        lines = [x for x in (r.out + r.err).splitlines() if x.strip()]
        assert (
            len(lines) == 1 and "model type 'bert' (BertForMaskedLM) is not a decoder with a causal LM head" in lines[0]
        ), lines
    assert not (tmp_path / "run").exists()


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_user_turn(qwen_tokenizer):
    """Gemma 2's template raises on a system message; the system text then opens the first
    user turn, every built-in task still renders, and the conformance rules still pass."""
    tok = copy.deepcopy(qwen_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    text = render_prompt(tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    task = get_task("notification")
    e = load("notification", "test", "split")[0]
    assert task.messages(e)[0]["content"] in render_prompt(tok, task.messages(e))
    assert check(task, tok) == []
