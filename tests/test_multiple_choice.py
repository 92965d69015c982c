"""Multiple choice read from option texts, on tiny-qwen3: the options readout
against a plain forward per option, the choice mode's tree-shaped rows against one forward per
(question, option) pair, and a choice run saved and reloaded in a fresh process."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from helpers import CLI, cli_env, messages_ids, plain_loglik, run_cli
from peft import LoraConfig, get_peft_model
from transformers import CohereConfig, CohereForCausalLM

from mcqa.errors import McqaError
from mcqa.eval.scoring import score
from mcqa.examples import load_split
from mcqa.model.choice_rows import ChoiceCollator, encode_choice
from mcqa.model.encoding import end_of_turn
from mcqa.modes import get_mode
from mcqa.modes.choice import build_choice_model
from mcqa.modes.generate import target_loss
from mcqa.modes.listwise import ListwiseCollator, listwise_loss
from mcqa.prompting import neutral_messages, serialize_target
from mcqa.readouts import run_readout
from mcqa.readouts.options import option_texts, question_messages
from mcqa.registry import all_tasks, get_task
from mcqa.splits import other_orders
from mcqa.train.config import load_config
from mcqa.train.recipe import train

TOL = 1e-3


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny inputs, one intra-op thread


@pytest.mark.parametrize("task_name,protocol", [("recipe_mpr", "split"), ("mmlu_pro_answer", "seed")])
def test_options_readout_scores_each_option_as_a_plain_forward_would(tiny, task_name, protocol):
    model, tok = tiny
    task = get_task(task_name)
    examples = load_split(task, "test", protocol)[:3]
    outputs = run_readout("options", model, tok, task, examples, batch_size=2)
    eot = end_of_turn(tok)
    letters = task.label_spaces["answer"].values
    for e, o in zip(examples, outputs):
        messages = question_messages(task, e, "cloze")
        texts = option_texts(task, e)
        assert e.input["question" if task_name == "mmlu_pro_answer" else "query"] in messages[-1]["content"]
        assert not any(t in messages[-1]["content"] for t in texts)  # cloze: the options are not shown
        for j, text in enumerate(texts):
            cont = tok(text + eot, add_special_tokens=False)["input_ids"]
            full = plain_loglik(model, messages_ids(tok, messages), cont)
            neutral = plain_loglik(model, messages_ids(tok, neutral_messages(messages)), cont)
            s = o["option_scores"]
            assert s["sum"][j] == pytest.approx(full, abs=TOL)
            assert s["mean"][j] == pytest.approx(full / len(cont), abs=TOL)
            assert s["char"][j] == pytest.approx(full / len(text), abs=TOL)
            assert s["pmi"][j] == pytest.approx(full - neutral, abs=TOL)
        probs = o["probs"]["answer"]
        assert list(probs) == [str(x) for x in letters[: len(texts)]] and sum(probs.values()) == pytest.approx(1.0)
        best = max(range(len(texts)), key=lambda j: o["option_scores"]["pmi"][j])
        assert json.loads(o["output"]) == {"answer": letters[best]}


def test_options_readout_refuses_a_task_without_options(tiny):
    model, tok = tiny
    task = get_task("notification")
    with pytest.raises(McqaError, match="declares no options"):
        run_readout("options", model, tok, task, load_split(task, "test")[:1])


def test_choice_rows_score_each_option_as_if_it_followed_the_question_alone(tiny):
    model, tok = tiny
    task = get_task("recipe_mpr")
    examples = load_split(task, "train", "split")[:3]
    choice = build_choice_model(model, tok, task)
    torch.manual_seed(0)
    torch.nn.init.normal_(choice.choice_head.weight, std=0.1)
    rows = encode_choice(tok, task, examples)
    batch = ChoiceCollator(tok.pad_token_id)(rows)
    scores = choice(**batch)["logits"]
    eot = end_of_turn(tok)
    for i, e in enumerate(examples):
        prompt = messages_ids(tok, task.cloze(e))
        for j, text in enumerate(task.options(e)):
            ids = prompt + tok(text + eot, add_special_tokens=False)["input_ids"]
            h = model.get_decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            assert float(scores[i, j]) == pytest.approx(float(choice.choice_head(h)), abs=TOL)
    assert rows[0]["choice_label"] == list("ABCDE").index(examples[0].target["answer"])


def test_choice_run_reloads_in_a_fresh_process_with_identical_probabilities(tmp_path):
    config = load_config(
        None,
        {
            "task": "recipe_mpr",
            "protocol": "split",
            "model": "tiny-qwen3",
            "mode": "choice",
            "epochs": 1,
            "max_train_examples": 16,
            "max_eval_examples": 8,
            "micro_batch_size": 8,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "patience": None,
            "output_dir": str(tmp_path / "run"),
        },
    )
    run = train(config)
    before = {r["id"]: r for r in map(json.loads, (run / "test" / "predictions.jsonl").read_text().splitlines())}
    out = tmp_path / "again.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            str(CLI),
            "predict",
            "--task",
            "recipe_mpr",
            "--adapter",
            str(run),
            "--split",
            "test",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    after = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(after) == len(before) and all(a["output"] == before[a["id"]]["raw"] for a in after)
    for a in after:
        for letter, p in a["probs"]["answer"].items():
            assert p == pytest.approx(before[a["id"]]["probs"]["answer"][letter], abs=1e-6)
    spread = [max(a["probs"]["answer"].values()) - min(a["probs"]["answer"].values()) for a in after]
    assert max(spread) > 0  # the trained head is restored, not a fresh zero one (all 0.2)


@pytest.mark.parametrize("task_name", [t.name for t in all_tasks() if t.options])
def test_every_multiple_choice_task_declares_options_its_letters_point_at(task_name):
    """The contract of Task.options on every shipped split: one text per shown option, as many
    as the answer field has letters at most, the gold letter inside them, and the cloze prompt
    showing neither the lettered options nor the gold answer."""
    task = get_task(task_name)
    letters = [str(v) for v in task.label_spaces[task.choice_field].values]
    for protocol in task.protocols[:1]:
        for split in ("train", "validation", "test"):
            for e in load_split(task, split, protocol):
                texts = task.options(e)
                assert 2 <= len(texts) <= len(letters) and all(isinstance(t, str) and t.strip() for t in texts), e.id
                assert letters.index(str(e.target[task.choice_field])) < len(texts), e.id
                if task.cloze is not None:
                    shown = " ".join(m["content"] for m in task.cloze(e))
                    assert serialize_target(task.output, e.target) not in shown
                    assert "A. " + texts[0] not in shown, e.id


def test_permuted_readout_averages_each_options_probability_over_its_orders(tiny):
    model, tok = tiny
    task = get_task("recipe_mpr")
    examples = load_split(task, "test", "split")[:3]
    single = run_readout("permuted", model, tok, task, examples, orders=1)
    rank = run_readout("rank", model, tok, task, examples)
    assert [o["output"] for o in single] == [o["output"] for o in rank]
    out = run_readout("permuted", model, tok, task, examples, orders=3, seed=7)
    for e, o in zip(examples, out):
        plan = [list(range(5))] + other_orders(7, e.id, 5, 2)
        shown = run_readout("rank", model, tok, task, [task.reorder(e, p) for p in plan])
        want = [sum(s["probs"]["answer"]["ABCDE"[p.index(i)]] for s, p in zip(shown, plan)) / 3 for i in range(5)]
        assert [o["probs"]["answer"][x] for x in "ABCDE"] == pytest.approx(want, abs=1e-5)
        assert (
            len(o["order_choices"]) == 3
            and json.loads(o["output"])["answer"] == "ABCDE"[max(range(5), key=want.__getitem__)]
        )
        for p, _s in zip(plan, shown):  # the same option text carries the same gold under every order
            r = task.reorder(e, p)
            assert (
                task.options(r)["ABCDE".index(r.target["answer"])] == task.options(e)["ABCDE".index(e.target["answer"])]
            )
    m = score(task, examples, out, {"task": task.name}, resamples=10).metrics
    same = [len(set(o["order_choices"])) == 1 for o in out]
    assert m["consistency"] == {"rate": pytest.approx(sum(same) / 3), "n": 3, "orders": 3}
    by_gold = m["positions"]["accuracy_by_gold"]
    for k, letter in enumerate("ABCDE"):
        at = [
            (json.loads(o["output"])["answer"] == letter) for e, o in zip(examples, out) if e.target["answer"] == letter
        ]
        assert by_gold[k] == (sum(at) / len(at) if at else None)


def test_permutation_training_adds_k_reordered_copies_of_train_examples_only():
    from mcqa.train.recipe import permuted_copies

    task = get_task("recipe_mpr")
    train_ex = load_split(task, "train", "split")[:4]
    copies = permuted_copies(task, train_ex, 2, 0)
    assert len(copies) == 8 and len({c.id for c in copies}) == 8
    for c in copies:
        e = next(x for x in train_ex if c.id.startswith(x.id + "#"))
        assert sorted(c.input["options"]) == sorted(e.input["options"]) and c.input["options"] != e.input["options"]
        assert task.options(c)["ABCDE".index(c.target["answer"])] == task.options(e)["ABCDE".index(e.target["answer"])]
    with pytest.raises(McqaError, match="reorder"):
        permuted_copies(get_task("notification"), load_split(get_task("notification"), "train")[:1], 1, 0)


def test_one_pmi_run_holds_every_rule(tiny):
    from mcqa.eval.calibration import with_option_rule

    model, tok = tiny
    task = get_task("recipe_mpr")
    examples = load_split(task, "test", "split")[:4]
    pmi = run_readout("options", model, tok, task, examples)
    for rule in ("sum", "mean", "char"):
        direct = run_readout("options", model, tok, task, examples, rule=rule)
        again = with_option_rule(task, pmi, rule)
        assert [o["output"] for o in again] == [o["output"] for o in direct]
        for a, d in zip(again, direct):
            assert [a["probs"]["answer"][x] for x in "ABCDE"] == pytest.approx(
                [d["probs"]["answer"][x] for x in "ABCDE"], abs=1e-6
            )


@pytest.mark.parametrize("task_name,protocol", [("recipe_mpr", "split"), ("mmlu_pro_answer", "seed")])
def test_content_mode_trains_exactly_what_the_options_readout_reads(tiny, task_name, protocol):
    """A content-mode row's loss is minus the options readout's log-likelihood of the gold
    option's text, per token: the mode trains the very score the readout ranks by."""
    model, tok = tiny
    task = get_task(task_name)
    examples = load_split(task, "train", protocol)[:3]
    rows = get_mode("content").encode(tok, task, examples)
    scores = run_readout("options", model, tok, task, examples, rule="sum")
    letters = list(task.label_spaces["answer"].values)
    for e, row, o in zip(examples, rows, scores):
        gold = letters.index(e.target["answer"])
        target = [t for t in row["labels"] if t != -100]
        assert tok.decode(target) == task.options(e)[gold] + end_of_turn(tok)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits
        loss = float(target_loss({"logits": logits}, torch.tensor([row["labels"]])))
        assert loss == pytest.approx(-o["option_scores"]["sum"][gold] / len(target), abs=TOL)
    assert get_mode("content").default_readout == get_mode("content").eval_readout == "options"


@pytest.mark.parametrize("task_name,protocol", [("recipe_mpr", "split"), ("mmlu_pro_answer", "seed")])
def test_listwise_mode_trains_the_softmax_over_the_pmi_the_options_readout_reads(tiny, task_name, protocol):
    """Listwise rows (question and neutral prompt, each with every option under a tree mask)
    give each option the options readout's PMI, and the loss is the cross-entropy of their
    softmax on the gold; its gradient lowers the loss."""
    model, tok = tiny
    task = get_task(task_name)
    examples = load_split(task, "train", protocol)[:3]
    rows = get_mode("listwise").encode(tok, task, examples)
    batch = ListwiseCollator(tok.pad_token_id)(rows)
    readout = run_readout("options", model, tok, task, examples, rule="pmi")
    with torch.no_grad():
        loss, out = listwise_loss(model, batch)
    letters = list(task.label_spaces["answer"].values)
    expected = 0.0
    for i, (e, o) in enumerate(zip(examples, readout)):
        pmi = o["option_scores"]["pmi"]
        n = len(pmi)
        assert [float(x) for x in out["logits"][i, :n]] == pytest.approx(pmi, abs=TOL)
        assert torch.isinf(out["logits"][i, n:]).all()  # an example with fewer options than the widest
        gold = letters.index(e.target["answer"])
        assert int(batch["choice_labels"][i]) == gold
        expected -= float(torch.log_softmax(torch.tensor(pmi), 0)[gold])
    assert float(loss) == pytest.approx(expected / len(examples), abs=TOL)
    # Through PEFT's wrapper (as Trainer calls it) the loss is the same: LoRA starts as a no-op.
    wrapped = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        assert float(listwise_loss(wrapped, batch)[0]) == pytest.approx(float(loss), abs=TOL)

    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    loss, _ = listwise_loss(model, batch)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p -= 1e-3 * g / (g.norm() + 1e-12)
        after, _ = listwise_loss(model, batch)
        for p, s in zip(params, saved):  # the fixture is shared: put it back exactly
            p.copy_(s)
    assert float(after) < float(loss)
    assert get_mode("listwise").default_readout == get_mode("listwise").eval_readout == "options"


def test_a_model_that_scales_its_logits_after_the_head_is_refused_by_the_readouts_that_skip_it(tiny):
    """The prefix-cached readouts (options, rank, constrained) read lm_head(decoder(...)); Cohere
    multiplies its logits by logit_scale after the head (Granite divides, Gemma softcaps), which
    would read every option at another temperature. A four-token probe through the model's own
    forward finds it, so the readout and the listwise mode (read out by options) refuse in one line."""
    _, tok = tiny
    task = get_task("recipe_mpr")
    examples = load_split(task, "train", "split")[:2]
    config = CohereConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        logit_scale=0.25,
        pad_token_id=tok.pad_token_id,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    cohere = CohereForCausalLM(config).eval()
    with pytest.raises(McqaError, match="changes its logits after its LM head"):
        run_readout("options", cohere, tok, task, examples, rule="pmi")
    with pytest.raises(McqaError, match="changes its logits after its LM head"):
        get_mode("listwise").build(cohere, tok, task)
    cohere.logit_scale = 1.0  # the same model with the scale a no-op reads out
    assert len(run_readout("options", cohere, tok, task, examples, rule="pmi")) == 2


def test_a_listwise_run_trains_saves_and_reads_out_by_options(tmp_path):
    config = load_config(
        None,
        {
            "task": "recipe_mpr",
            "protocol": "split",
            "model": "tiny-qwen3",
            "mode": "listwise",
            "epochs": 1,
            "max_train_examples": 16,
            "max_eval_examples": 8,
            "micro_batch_size": 4,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "patience": None,
            "logging_steps": 1,
            "output_dir": str(tmp_path / "run"),
        },
    )
    run = train(config)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in r and r["loss"] > 0 for r in log)
    before = {r["id"]: r for r in map(json.loads, (run / "test" / "predictions.jsonl").read_text().splitlines())}
    out = tmp_path / "again.jsonl"
    done = run_cli(
        ["predict", "--task", "recipe_mpr", "--adapter", run, "--split", "test", "--out", out], tmp_path, cli_env()
    )
    assert done.rc == 0, done.err[-2000:]
    after = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(after) == len(before) and all(a["output"] == before[a["id"]]["raw"] for a in after)
