"""Every training mode on every family (tests/families.py), against the plain thing: the loss
and LoRA gradients of a batch as training builds it (the prompt prefix shared, tree-masked
option rows, or the fallback the model's layers call for) equal those of one ordinary forward
per example (per option for the multiple-choice modes)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from families import FAMILIES, family_model
from helpers import load, messages_ids
from peft import LoraConfig, get_peft_model

from mcqa.model.choice_rows import cloze_messages
from mcqa.model.encoding import IGNORE
from mcqa.model.lm import capabilities, lora_targets
from mcqa.modes import get_mode
from mcqa.prompting import neutral_messages
from mcqa.registry import get_task
from mcqa.train.recipe import permuted_copies
from mcqa.train.trainer import batch_loss, collator_for

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param, *family_model(request.param)


MODES = [
    ("generate", "notification"),
    ("head", "notification"),
    ("content", "recipe_mpr"),
    ("choice", "recipe_mpr"),
    ("listwise", "recipe_mpr"),
    ("permutations", "recipe_mpr"),
]


def plain_loss(peft, mode: str, tok, task, rows, examples) -> torch.Tensor:
    """The loss of one ordinary forward per example (per option for the multiple-choice modes),
    averaged as the mode's batch loss averages."""
    inner = peft.get_base_model()
    if mode in ("generate", "content"):
        nll, n = 0.0, 0
        for r in rows:
            k = sum(t != IGNORE for t in r["labels"])  # logits where the targets are (all of them: the same loss)
            logits = peft(input_ids=torch.tensor([r["input_ids"]]), logits_to_keep=k + 1).logits[0, :-1].float()
            gold = torch.tensor(r["labels"][-k:])
            nll = nll + torch.nn.functional.cross_entropy(logits, gold, ignore_index=IGNORE, reduction="sum")
            n += int((gold != IGNORE).sum())
        return nll / n
    if mode in ("head", "permutations"):
        return sum(
            peft(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["field_labels"]]))["loss"]
            for r in rows
        ) / len(rows)
    losses = []
    for r, e in zip(rows, examples):
        p = r["prompt_length"]
        starts = np.cumsum([p] + r["option_lengths"][:-1])
        options = [r["input_ids"][s : s + m] for s, m in zip(starts, r["option_lengths"])]
        if mode == "choice":
            scores = torch.stack(
                [
                    inner.choice_head(
                        inner.backbone(input_ids=torch.tensor([r["input_ids"][:p] + o])).last_hidden_state[0, -1]
                    )[0]
                    for o in options
                ]
            )
        else:
            neutral = messages_ids(tok, neutral_messages(cloze_messages(task, e)))

            def loglik(prompt, o):
                lp = torch.log_softmax(
                    peft(input_ids=torch.tensor([prompt + o]), logits_to_keep=len(o) + 1).logits[0].float(), -1
                )
                return sum(lp[k, t] for k, t in enumerate(o))

            scores = torch.stack([loglik(r["input_ids"][:p], o) - loglik(neutral, o) for o in options])
        losses.append(torch.nn.functional.cross_entropy(scores.float()[None], torch.tensor([r["choice_label"]])))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("mode_name,task_name", MODES, ids=[m for m, _ in MODES])
def test_every_mode_trains_on_a_batch_exactly_as_on_plain_rows(family, mode_name, task_name):
    name, model, tok = family
    task = get_task(task_name)
    mode = get_mode("head" if mode_name == "permutations" else mode_name)
    if task_name == "notification":
        examples = [e for e in load("notification", "train", "split")[:3]]
    else:
        examples = list(load("recipe_mpr", "train", "split")[:2])
        if mode_name == "permutations":
            mode = get_mode("head")
            task = get_task("recipe_mpr")
            examples = examples[:1] + permuted_copies(task, examples[:1], 2, 0)
    rows = mode.encode(tok, task, examples)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        base = copy.deepcopy(model)
        peft = get_peft_model(
            mode.build(base, tok, task),
            LoraConfig(r=4, lora_alpha=8, target_modules=lora_targets(base), **mode.peft_kwargs(task)),
        )
        for n, p in peft.named_parameters():
            if p.requires_grad and ("lora_B" in n or "head" in n):
                torch.nn.init.normal_(p, std=0.05)
    peft.train()
    caps = capabilities(base)
    collate = collator_for(mode, caps, rows, tok.pad_token_id)
    batch = collate([{k: r[k] for k in ("input_ids", *mode.columns, "length")} for r in rows])
    if mode.shares == "prefix":  # the path the model allows: a shared prefix only where it is exact
        assert ("prefix_ids" in batch) == caps.prefix_shared(max(r["length"] for r in rows))[0]
    else:
        assert ("attention_mask" in batch) == caps.trees
    loss = batch_loss(peft, mode, batch)[0]
    loss.backward()
    got = {n: p.grad.clone() for n, p in peft.named_parameters() if p.requires_grad}
    peft.zero_grad()
    want_loss = plain_loss(peft, mode_name, tok, task, rows, examples)
    want_loss.backward()
    assert float(loss) == pytest.approx(float(want_loss), abs=1e-5)
    for n, p in peft.named_parameters():
        if p.requires_grad:
            scale = float(p.grad.abs().max()) + 1e-8
            assert float((got[n] - p.grad).abs().max()) <= 1e-3 * scale + 1e-6, n
