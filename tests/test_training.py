"""Trainer tests on tiny-qwen3 (a random 2-layer Qwen3 with the real Qwen3 tokenizer), offline.

The synthetic task (tests/synthetic_tasks/synth.py) hides one keyword among filler words; a
model that reaches high accuracy on it has really learned through the masked loss and the loop.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import CLI, CliRuns, assert_user_error, load, run_cli, synth_env
from safetensors.torch import load_file

from mcqa.errors import McqaError
from mcqa.model.encoding import prompt_ids
from mcqa.modes.head import build_head_model
from mcqa.prompting import serialize_target
from mcqa.registry import get_task
from mcqa.train.config import load_config, parse_overrides

TINY = "tiny-qwen3"
# Small and fast, with learning rates high enough for a random 2-layer model to learn in minutes.
# Generation learns slower than a head (the label must be routed to frozen, random output
# embeddings), so it gets smaller batches and more epochs.
BASE = {
    "task": "synth",
    "model": TINY,
    "micro_batch_size": 16,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "eval_batch_size": 40,
    "patience": None,
    "logging_steps": 1,
}
# generate: 120 examples in batches of 4 learn as fast in steps as 240 in batches of 8, at half the
# vocabulary-wide logits (151k Qwen3 tokens: the LM head is most of a tiny model's step).
PER_MODE = {
    "head": {"epochs": 4},
    "generate": {"epochs": 8, "learning_rate": 5e-3, "micro_batch_size": 4, "batch_size": 4, "max_train_examples": 120},
}


pytestmark = pytest.mark.usefixtures("synth_tasks")  # conftest: the `synth` task is discoverable


# ------------------------------------------------------------------ config


def test_config_rejects_unknown_keys_and_lists_every_error(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("task: notification\nlearning_rat: 0.1\nlora:\n  rank: 4\nepochs: -1\n")
    with pytest.raises(McqaError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert "3 problems" in msg and "learning_rat" in msg and "lora.rank" in msg and "epochs" in msg
    assert "\n" not in msg


def test_command_line_overrides_beat_the_yaml_file(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("task: synth\nepochs: 5\nlora:\n  r: 4\n  alpha: 8\n")  # synth declares no train_defaults
    c = load_config(cfg, parse_overrides(["epochs=2", "lora.r=8"]))
    assert (c.epochs, c.lora.r, c.lora.alpha) == (2, 8, 8)
    assert (c.learning_rate, c.lora.dropout, c.batch_size) == (3e-4, 0.0, 16)  # published defaults


@pytest.fixture
def task_with_defaults(monkeypatch):
    """synth, declaring train_defaults; load_config finds it through the registry."""
    import dataclasses

    import mcqa.train.config as C
    from mcqa.registry import get_task

    def use(defaults: dict):
        task = dataclasses.replace(get_task("synth"), train_defaults=defaults)
        monkeypatch.setattr(C, "get_task", lambda name: task if name == "synth" else get_task(name))
        return task

    return use


def test_a_tasks_train_defaults_sit_under_the_file_and_the_overrides(task_with_defaults, tmp_path):
    task_with_defaults({"mode": "head", "epochs": 2, "learning_rate": 1e-3, "lora": {"dropout": 0.1, "r": 4}})
    c = load_config(None, {"task": "synth"})
    assert (c.mode, c.epochs, c.learning_rate, c.lora.dropout, c.lora.r, c.lora.alpha) == ("head", 2, 1e-3, 0.1, 4, 32)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("task: synth\nepochs: 5\nlora:\n  r: 8\n")
    c = load_config(cfg, parse_overrides(["learning_rate=2e-4"]))
    assert (c.mode, c.epochs, c.learning_rate, c.lora.dropout, c.lora.r) == ("head", 5, 2e-4, 0.1, 8)


def test_invalid_train_defaults_are_one_error_that_names_the_task(task_with_defaults):
    task_with_defaults({"lr_scheduler": "cosin", "epochs": -1})
    with pytest.raises(McqaError) as e:
        load_config(None, {"task": "synth", "epochs": 2})  # an override does not hide a broken default
    msg = str(e.value)
    assert (
        "task 'synth' has invalid train_defaults" in msg
        and "lr_scheduler" in msg
        and "epochs" in msg
        and "\n" not in msg
    )


def test_an_unknown_mode_is_refused_with_its_did_you_mean_before_a_run_folder(tmp_path, monkeypatch):
    """The config reads without the modes registry (reading a run folder loads no torch); the
    mode's name is checked against it with the other settings, before anything is made."""
    from mcqa.train.start import check_settings

    monkeypatch.chdir(tmp_path)
    with pytest.raises(McqaError, match="unknown training mode 'heads'.*did you mean 'head'"):
        check_settings(load_config(None, {"task": "synth", "mode": "heads", "model": "tiny-qwen3"}))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("defaults", [["mode", "head"], {"task": "other"}, {"output_dir": "/tmp/x"}])
def test_the_task_contract_refuses_train_defaults_that_are_not_settings(defaults):
    import dataclasses

    from mcqa.errors import TaskContractError
    from mcqa.registry import get_task
    from mcqa.task import check_task

    with pytest.raises(TaskContractError, match="train_defaults"):
        check_task(dataclasses.replace(get_task("synth"), train_defaults=defaults), "synth", "synth.py")


def test_the_schedulers_the_config_accepts_are_transformers_own():
    """The config lists the scheduler names itself, so that reading a run's config imports no
    transformers; they must stay the names transformers' Trainer takes."""
    from transformers import SchedulerType

    from mcqa.train.config import SCHEDULERS

    assert SCHEDULERS == tuple(s.value for s in SchedulerType)


def test_batch_must_divide_into_micro_batches():
    with pytest.raises(McqaError, match="not a multiple"):
        load_config(None, {"task": "synth", "batch_size": 16, "micro_batch_size": 6})


# ------------------------------------------------------------------ loss on targets only


def test_only_target_tokens_carry_labels(tiny):
    from mcqa.examples import load_split
    from mcqa.model.encoding import IGNORE, end_of_turn
    from mcqa.modes.generate import encode_generative
    from mcqa.prompting import serialize_target
    from mcqa.registry import get_task

    _, tok = tiny
    task = get_task("notification")
    examples = load_split(task, "train")[:5]
    eot = end_of_turn(tok)
    assert eot == "<|im_end|>"
    for row, e in zip(encode_generative(tok, task, examples, eot), examples):
        target = [t for t in row["labels"] if t != IGNORE]
        assert tok.decode(target) == serialize_target(task.output, e.target) + eot
        n_prompt = len(row["input_ids"]) - len(target)
        assert row["labels"][:n_prompt] == [IGNORE] * n_prompt  # every prompt token is masked
        assert tok.decode(row["input_ids"][:n_prompt]).endswith("<think>\n\n</think>\n\n")  # thinking off


def test_kept_logits_loss_equals_full_sequence_loss(tiny):
    """The loss from logits at the last K positions of a left-padded batch equals the plain
    full-logits loss computed one unpadded example at a time."""
    from mcqa.examples import load_split
    from mcqa.model.encoding import IGNORE, LeftPadCollator, end_of_turn
    from mcqa.modes.generate import encode_generative, target_loss
    from mcqa.registry import get_task

    model, tok = tiny
    task = get_task("notification")
    rows = encode_generative(tok, task, load_split(task, "train")[:4], end_of_turn(tok))
    batch = LeftPadCollator(tok.pad_token_id)(rows)
    labels = batch.pop("labels")
    with torch.no_grad():
        kept = model(**batch)
        assert kept.logits.shape[1] == batch["logits_to_keep"] < batch["input_ids"].shape[1]
        loss = target_loss(kept, labels)
        total, count = 0.0, 0
        for r in rows:
            logits = model(input_ids=torch.tensor([r["input_ids"]])).logits[0, :-1]
            gold = torch.tensor(r["labels"][1:])
            total += torch.nn.functional.cross_entropy(logits, gold, ignore_index=IGNORE, reduction="sum").item()
            count += int((gold != IGNORE).sum())
    assert loss.item() == pytest.approx(total / count, rel=1e-4)


def test_shared_prefix_gives_the_same_loss_and_gradients(tiny):
    """Encoding the shared system prompt once per batch (its KV cache expanded to every row)
    changes nothing but the cost: same loss, same gradients, prefix included."""
    from mcqa.examples import load_split
    from mcqa.model.encoding import end_of_turn, shared_prefix
    from mcqa.model.lm import cache_kwargs, prefix_cache
    from mcqa.modes.generate import encode_generative, target_loss
    from mcqa.registry import get_task

    model, tok = tiny
    task = get_task("notification")
    rows = encode_generative(tok, task, load_split(task, "train")[:4], end_of_turn(tok))
    prefix = shared_prefix(rows)
    assert tok.decode(prefix).startswith("<|im_start|>system\nSort the phone notification") and len(prefix) > 50
    weight = model.model.layers[0].self_attn.q_proj.weight  # acts on the prefix tokens too

    def loss(batch):
        labels = batch.pop("labels")
        ids = batch.pop("prefix_ids", None)
        cache = prefix_cache(model, ids, len(rows)) if ids is not None else None
        return target_loss(model(**batch, **(cache_kwargs(model, cache) if cache is not None else {})), labels)

    _assert_shared_prefix_changes_nothing(model, weight, rows, prefix, tok.pad_token_id, loss)


@pytest.mark.parametrize("mode_name, count_items", [("head", False), ("generate", False), ("generate", True)])
def test_a_micro_batch_over_the_token_budget_runs_in_chunks_with_the_same_loss_and_gradient(
    mode_name, count_items, tmp_path
):
    """max_batch_tokens: six rows cut into three chunks of two, each its own forward and backward
    (McqaTrainer.training_step), give the loss and gradient of the six at once; with the target
    count of the whole batch given (num_items_in_batch) or not."""
    from transformers import TrainingArguments

    import mcqa.train.recipe as T
    from mcqa.examples import load_split
    from mcqa.model import load_tokenizer
    from mcqa.model.encoding import IGNORE, batch_tokens, row_chunks, shared_prefix
    from mcqa.modes import get_mode
    from mcqa.registry import get_task

    task, tok, mode = get_task("notification"), load_tokenizer(TINY), get_mode(mode_name)
    rows = mode.encode(tok, task, load_split(task, "train")[:6])
    features = [{k: r[k] for k in ("input_ids", *mode.columns, "length")} for r in rows]
    collate = mode.collator(tok.pad_token_id, prefix=shared_prefix(rows))
    config = load_config(None, {"task": "notification", "model": TINY, "mode": mode_name})
    model = T.build_model(config, task, tok)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to=[],
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=True,
    )
    batch = collate(features)
    width, prefix = batch["input_ids"].shape[1], batch["prefix_ids"].shape[1]
    assert batch_tokens(batch) == 6 * width + prefix

    def step(max_tokens):
        trainer = T.McqaTrainer(
            model=model,
            args=args,
            data_collator=collate,
            compute_loss_func=mode.loss,
            mcqa_eval={"mode": mode, "config": config.model_copy(update={"max_batch_tokens": max_tokens})},
        )
        trainer.current_gradient_accumulation_steps = 1
        batch = collate(features)
        n = int((batch["labels"] != IGNORE).sum()) if count_items else None
        model.zero_grad()
        loss = trainer.training_step(model, batch, n).item()
        return loss, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    assert [c["input_ids"].shape[0] for c in row_chunks(batch, 2 * width + prefix)] == [2, 2, 2]
    assert [c["input_ids"].shape[0] for c in row_chunks(batch, 4 * width + prefix)] == [3, 3]  # near-equal halves
    assert row_chunks(batch, 6 * width + prefix) == [batch]
    whole_loss, whole = step(None)
    split_loss, split = step(2 * width + prefix)
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    assert whole and whole.keys() == split.keys()
    assert any(g.abs().sum() > 0 for g in whole.values())
    for k in whole:
        torch.testing.assert_close(split[k], whole[k], rtol=1e-3, atol=1e-7)


def test_lora_layers_puts_adapters_on_the_last_layers_only(tmp_path):
    """lora.layers=N: LoRA weights only in the last N decoder layers (tiny-qwen3 has 2), so the
    backward pass stops there; more layers than the model has is one clear error."""
    from mcqa.model import load_tokenizer
    from mcqa.registry import get_task
    from mcqa.train.recipe import build_model

    task, tok = get_task("synth"), load_tokenizer(TINY)

    def lora_layers(overrides):
        model = build_model(load_config(None, {"task": "synth", "model": TINY, **overrides}), task, tok)
        return {
            int(n.split("layers.")[1].split(".")[0])
            for n, p in model.named_parameters()
            if "lora_" in n and p.requires_grad
        }

    assert lora_layers({}) == {0, 1}
    assert lora_layers({"lora": {"layers": 1}}) == {1}
    with pytest.raises(McqaError, match="lora.layers=3, but the model has 2 decoder layers"):
        lora_layers({"lora": {"layers": 3}})
    # `mcqa train` refuses it before it makes the run folder
    r = run_cli(
        ["train", "--task", "synth", "--model", TINY, "lora.layers=3", f"output_dir={tmp_path / 'run'}"],
        tmp_path,
        synth_env(),
    )
    assert_user_error(r, "lora.layers: 3, but the model 'tiny-qwen3' has 2 decoder layers")
    assert not (tmp_path / "run").exists()


def _assert_shared_prefix_changes_nothing(module, weight, rows, prefix, pad, loss) -> None:
    """`loss(batch)` on plain left-padded rows and on rows cut after `prefix`: the shared batch
    is narrower by the prefix, and loss and the gradient of `weight` are the same."""
    from mcqa.model.encoding import LeftPadCollator

    def loss_and_grad(batch):
        module.zero_grad()
        value = loss(batch)
        value.backward()
        return value.item(), weight.grad.clone()

    plain_loss, plain_grad = loss_and_grad(LeftPadCollator(pad)(rows))
    shared_batch = LeftPadCollator(pad, prefix=prefix)(rows)
    assert shared_batch["input_ids"].shape[1] + len(prefix) == max(len(r["input_ids"]) for r in rows)
    shared_loss, shared_grad = loss_and_grad(shared_batch)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    torch.testing.assert_close(shared_grad, plain_grad, rtol=1e-3, atol=1e-6)


def test_head_mode_shared_prefix_gives_the_same_loss_gradients_and_probabilities(tiny):
    """Head mode encodes the shared prompt prefix once per batch too (HeadModel takes
    prefix_ids): same loss and gradients in training, same head probabilities when reading out."""
    from mcqa.examples import load_split
    from mcqa.model.encoding import encode_head, shared_prefix
    from mcqa.modes.head import build_head_model
    from mcqa.readouts.head import head_outputs
    from mcqa.registry import get_task

    model, tok = tiny
    task = get_task("notification")
    examples = load_split(task, "train")[:5]
    heads = build_head_model(model, tok, task)
    rows = encode_head(tok, task, examples)
    prefix = shared_prefix(rows)
    assert len(prefix) > 50
    weight = heads.backbone.layers[0].self_attn.q_proj.weight  # acts on the prefix tokens too

    _assert_shared_prefix_changes_nothing(
        heads, weight, rows, prefix, tok.pad_token_id, lambda batch: heads(**batch)["loss"]
    )
    plain = head_outputs(heads, tok, task, examples, batch_size=2, share_prefix=False)
    shared = head_outputs(heads, tok, task, examples, batch_size=2)
    assert [o["output"] for o in shared] == [o["output"] for o in plain]
    for a, b in zip(shared, plain):
        for f in task.fields:
            assert a["probs"][f] == pytest.approx(b["probs"][f], abs=1e-5)


def test_max_eval_examples_samples_validation_across_classes_not_its_first_rows():
    """mmlu_pro's validation file is ordered by subject: its first 150 rows hold 7 of the 14."""
    from mcqa.examples import load_split
    from mcqa.examples import sample_examples as _sample
    from mcqa.registry import get_task

    val = load_split(get_task("mmlu_pro"), "validation", "seed")
    sample = _sample(val, 150, 0)
    assert len(sample) == 150 and len({e.id for e in sample}) == 150
    assert len({e.target["category"] for e in sample}) == 14
    assert _sample(val, 150, 0) == sample and _sample(val, 150, 1) != sample


def _label_first_token(tok, task, field: str, value) -> int:
    """The first token of `value` where it sits in the serialized JSON target."""
    target = {f: s.values[0] for f, s in task.label_spaces.items()} | {field: value}
    text = serialize_target(task.output, target)
    at = text.index(f'"{field}":') + len(field) + 3 + isinstance(value, str)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [i for i, (a, _) in enumerate(enc["offset_mapping"]) if a == at]
    assert starts, f"no token starts where {value!r} does in {text}"
    return enc["input_ids"][starts[0]]


def test_heads_start_as_the_lm_heads_rows_of_each_labels_first_token(tiny):
    """At step 0, head mode ranks labels as the language model ranks their first tokens."""
    model, tok = tiny
    task = get_task("notification")
    heads = build_head_model(model, tok, task)
    e = load("notification", "train", "seed")[0]
    ids = torch.tensor([prompt_ids(tok, task, e)])
    with torch.no_grad():
        head_logits = heads(input_ids=ids)["logits"]
        lm_logits = model(input_ids=ids).logits[0, -1]
    for f, logits in zip(task.fields, head_logits):
        rows = [_label_first_token(tok, task, f, v) for v in task.label_spaces[f].values]
        torch.testing.assert_close(logits[0], lm_logits[rows].float(), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ learning, reload


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained run per mode, shared by the tests below."""
    from mcqa.train.recipe import train

    runs = {}
    for mode in ("head", "generate"):
        out = tmp_path_factory.mktemp(f"run-{mode}")
        config = load_config(None, {**BASE, "mode": mode, **PER_MODE[mode], "output_dir": str(out / "run")})
        runs[mode] = train(config)
    return runs


@pytest.mark.parametrize("mode", ["head", "generate"])
def test_training_lifts_validation_accuracy_from_chance_to_90_percent(trained, mode):
    run = trained[mode]
    history = [json.loads(line) for line in (run / "val_metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "run.json").read_text())
    assert len(history) == PER_MODE[mode]["epochs"]
    assert summary["best_value"] == max(h["eval_joint"] for h in history)  # the best epoch was kept
    assert summary["best_value"] >= 0.9, history
    assert summary["test"]["joint"] >= 0.85  # four classes: chance is 25%
    assert summary["test"]["parse_failure_rate"] <= 0.05
    for name in (
        "config.yaml",
        "schema.json",
        "tokenizer/tokenizer_config.json",
        "train_log.jsonl",
        "adapter/adapter_config.json",
        "test/metrics.json",
        "test/report.md",
        "test/report.html",
    ):
        assert (run / name).is_file(), name
    page = (run / "test" / "report.html").read_text(
        encoding="utf-8"
    )  # with the run's own curves, its kept epoch marked
    assert 'alt="training loss by epoch"' in page and page.count('<tr class="kept">') == 1


@pytest.mark.parametrize("mode", ["head", "generate"])
def test_saved_and_reloaded_run_predicts_identically(trained, mode):
    from mcqa.examples import load_split
    from mcqa.modes import get_mode
    from mcqa.train.recipe import read_out
    from mcqa.train.runs import load_run

    run = trained[mode]
    before = {r["id"]: r for r in map(json.loads, (run / "test" / "predictions.jsonl").read_text().splitlines())}
    model, tok, task, config = load_run(run)
    examples = load_split(task, "test")
    after = read_out(model, tok, task, get_mode(config.mode), examples, config)
    for a in after:
        assert a["output"] == before[a["id"]]["raw"]
        if mode == "head":  # the heads came back, not re-initialised
            for f, dist in a["probs"].items():
                for label, p in dist.items():
                    assert p == pytest.approx(before[a["id"]]["probs"][f][label], abs=1e-5)


def test_cli_reads_out_a_trained_run_on_a_split_and_on_new_data(trained, tmp_path):
    """`mcqa predict --adapter RUN --readout rank` keeps probabilities, raw scores and the fitted
    temperature; `mcqa score --adapter RUN` (head run, default readout) scores it like the run did."""
    head_run, gen_run = trained["head"], trained["generate"]
    preds, out = tmp_path / "rank.jsonl", tmp_path / "head-score"
    env = synth_env(OMP_NUM_THREADS="1")  # three independent runs side by side
    cli = CliRuns(tmp_path, workers=3)
    cli.start(
        "rank",
        ["predict", "--task", "synth", "--adapter", gen_run, "--readout", "rank", "--split", "test", "--out", preds],
        env,
    )
    cli.start("score", ["score", "--task", "synth", "--adapter", head_run, "--split", "test", "--out", out], env)
    cli.start(
        "refused", ["predict", "--task", "synth", "--adapter", head_run, "--readout", "rank", "--split", "test"], env
    )
    proc = cli["rank"]
    assert proc.rc == 0, proc.err
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert rows and all(set(r) >= {"id", "output", "probs", "scores", "temperature"} for r in rows)
    assert all(sum(d.values()) == pytest.approx(1.0) for r in rows for d in r["probs"].values())
    proc = cli["score"]
    assert proc.rc == 0, proc.err
    scored = json.loads((out / "metrics.json").read_text())
    assert scored["joint"]["accuracy"] == pytest.approx(
        json.loads((head_run / "run.json").read_text())["test"]["joint"]
    )
    proc = cli["refused"]
    cli.close()
    # Not assert_user_error: cli.py loads the run before it checks the readout, and transformers'
    # "Loading weights" bar reaches stderr first, so the error is the last line, not the only one.
    assert proc.rc == 2 and "Traceback" not in proc.err
    last = proc.err.strip().splitlines()[-1]
    assert last.startswith("error:") and "'head' readout" in last


# ------------------------------------------------------------------ best epoch, early stopping, leakage

SABOTAGE_FROM = 2  # epochs from the third on start from weights drowned in noise: worse than any before
SCRIPTED_FAILURE_RATES = [0.5, 0.1, 0.3]  # validation parse failure rate of epochs 1-3 in the lower-is-better run


def _sabotaging_log(sabotage_from: int | None):
    """train() builds its callbacks itself; JsonlLog is the one it always adds, so a subclass
    that also wrecks the trainable weights at the start of late epochs stands in for it."""
    from mcqa.train.recipe import JsonlLog

    class Sabotage(JsonlLog):
        def on_epoch_begin(self, args, state, control, model=None, **kwargs):
            if sabotage_from is not None and state.epoch >= sabotage_from:
                g = torch.Generator().manual_seed(int(state.epoch))
                with torch.no_grad():
                    for p in model.parameters():
                        if p.requires_grad:
                            p.add_(torch.randn(p.shape, generator=g).to(p.dtype))

    return Sabotage


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    """Two small in-process head runs, with spies on what reaches the trainer and the model:
    "early": real validation, weights wrecked from epoch 3 on, patience 2 of 5 epochs;
    "lower": best_metric=parse_failure_rate with scripted validation failure rates."""
    import dataclasses

    import mcqa.train.recipe as T
    import mcqa.train.trainer as TR
    from mcqa.modes import MODES

    runs, seen = {}, {}
    small = {**BASE, "mode": "head", "max_train_examples": 96, "max_eval_examples": 40, "learning_rate": 1e-2}
    settings = {
        "early": ({**small, "epochs": 5, "patience": 2}, SABOTAGE_FROM, None),
        "lower": (
            {**small, "epochs": 3, "max_train_examples": 32, "best_metric": "parse_failure_rate"},
            None,
            SCRIPTED_FAILURE_RATES,
        ),
    }
    for name, (overrides, sabotage_from, script) in settings.items():
        out = tmp_path_factory.mktemp(f"run-{name}") / "run"
        spy = {"encoded": [], "predicted": []}
        real_mode, real_read_out, real_score = MODES["head"], T.read_out, T.score
        rates = list(script or [])

        def encode(tokenizer, task, examples, *a, **k):
            spy["encoded"].append([e.id for e in examples])
            return real_mode.encode(tokenizer, task, examples, *a, **k)

        def read_out(model, tokenizer, task, mode, examples, *a, **k):
            spy["predicted"].append(([e.id for e in examples], (out / "adapter").is_dir()))
            return real_read_out(model, tokenizer, task, mode, examples, *a, **k)

        def score(task, examples, outputs, run, *a, resamples=1000, **k):
            scored = real_score(task, examples, outputs, run, *a, resamples=resamples, **k)
            if rates and resamples == TR.VAL_RESAMPLES:  # validation only; the test scoring stays real
                scored.metrics["parse"]["failure_rate"] = rates.pop(0)
            return scored

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(T, "JsonlLog", _sabotaging_log(sabotage_from))
            mp.setitem(MODES, "head", dataclasses.replace(real_mode, encode=encode))
            for module in (T, TR):  # the test pass (the recipe) and validation (its Trainer) read out and score
                mp.setattr(module, "read_out", read_out)
                mp.setattr(module, "score", score)
            runs[name] = T.train(load_config(None, {**overrides, "output_dir": str(out)}))
        seen[name] = spy
    return runs, seen


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "val_metrics.jsonl").read_text().splitlines()]


def _same_adapter(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _rescore_validation(run: Path) -> float:
    from mcqa.eval.scoring import score
    from mcqa.examples import load_split
    from mcqa.examples import sample_examples as _sample
    from mcqa.modes import get_mode
    from mcqa.train.recipe import flat_metrics, read_out
    from mcqa.train.runs import load_run

    model, tok, task, config = load_run(run)
    val = _sample(load_split(task, "validation", config.protocol), config.max_eval_examples, config.seed)
    m = score(task, val, read_out(model, tok, task, get_mode(config.mode), val, config), {}, resamples=50).metrics
    return flat_metrics(task, m, prefix="")[config.best_metric]


def test_the_saved_adapter_is_the_best_epoch_and_rescores_to_best_value(selection):
    run = selection[0]["early"]
    history, summary = _history(run), json.loads((run / "run.json").read_text())
    joint = [h["eval_joint"] for h in history]
    assert max(joint[:SABOTAGE_FROM]) > max(joint[SABOTAGE_FROM:]), joint  # the wrecked epochs are worse
    assert summary["best_value"] == max(joint) and joint[-1] < max(joint)
    best_step = history[joint.index(max(joint))]["step"]
    assert summary["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert _same_adapter(run / "adapter", Path(summary["best_checkpoint"]))
    assert _rescore_validation(run) == pytest.approx(summary["best_value"], abs=1e-12)


def test_patience_stops_after_that_many_epochs_without_improvement(selection):
    run = selection[0]["early"]
    joint = [h["eval_joint"] for h in _history(run)]
    summary = json.loads((run / "run.json").read_text())
    last_improvement = joint.index(max(joint))  # later ties are not improvements
    assert len(joint) == last_improvement + 1 + 2 < 5, joint  # patience=2 of epochs=5
    assert summary["epochs_run"] == pytest.approx(len(joint))


def test_lower_is_better_best_metric_keeps_the_lowest_parse_failure_epoch(selection):
    run = selection[0]["lower"]
    history, summary = _history(run), json.loads((run / "run.json").read_text())
    assert [h["eval_parse_failure_rate"] for h in history] == SCRIPTED_FAILURE_RATES
    assert summary["best_metric"] == "parse_failure_rate" and summary["best_value"] == min(SCRIPTED_FAILURE_RATES)
    best_step = history[SCRIPTED_FAILURE_RATES.index(min(SCRIPTED_FAILURE_RATES))]["step"]
    assert summary["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert _same_adapter(run / "adapter", Path(summary["best_checkpoint"]))
    last = run / "checkpoints" / f"checkpoint-{history[-1]['step']}"
    assert not _same_adapter(run / "adapter", last)


@pytest.mark.parametrize("name", ["early", "lower"])
def test_the_trainer_never_sees_test_examples(selection, name):
    """Training encodes train examples only; until the adapter is saved, the model predicts the
    validation sample only (model selection); the test split comes after, once, and then the
    whole validation split (what a stack is fitted on)."""
    from mcqa.examples import load_split
    from mcqa.registry import get_task

    spy = selection[1][name]
    task = get_task("synth")
    ids = {s: {e.id for e in load_split(task, s)} for s in ("train", "validation", "test")}
    assert spy["encoded"] and all(set(batch) <= ids["train"] for batch in spy["encoded"])
    before = [set(batch) for batch, saved in spy["predicted"] if not saved]
    after = [set(batch) for batch, saved in spy["predicted"] if saved]
    assert before and all(b <= ids["validation"] for b in before)
    assert after == [ids["test"], ids["validation"]]


def test_rank_temperature_is_fitted_on_validation_never_on_the_split_being_scored(tiny, monkeypatch):
    """Scoring the test split (or a user's file) with rank fits the temperature on the
    validation split: the fit sees validation ids only, and its T is what a fit on the
    validation outputs gives."""
    import mcqa.predicting as P
    import mcqa.readouts as R
    from mcqa.examples import load_split
    from mcqa.predicting import Loaded, predict
    from mcqa.registry import get_task

    model, tok = tiny
    task = get_task("synth")
    val, test = load_split(task, "validation"), load_split(task, "test")
    fitted_on, real_fit = [], P.fit_temperature

    def spy(task, examples, outputs, *a, **k):
        fitted_on.append({e.id for e in examples})
        return real_fit(task, examples, outputs, *a, **k)

    monkeypatch.setattr(P, "fit_temperature", spy)
    outputs, info = predict(task, Loaded(model, tok, "generate", {"model": TINY}), test, "rank", None)
    assert fitted_on == [{e.id for e in val}] and not fitted_on[0] & {e.id for e in test}
    want = real_fit(task, val, R.run_readout("rank", model, tok, task, val)).temperature
    assert info["calibration"]["temperature"] == pytest.approx(want, rel=1e-6)
    assert all(o["temperature"] == info["calibration"]["temperature"] for o in outputs)


# ------------------------------------------------------------------ resume after kill -9


def _train_cmd(out: Path, *extra: str) -> list[str]:
    settings = [
        f"{k}={'null' if v is None else v}"
        for k, v in {
            **BASE,
            "mode": "head",
            "epochs": 3,
            "max_train_examples": 96,
            "max_eval_examples": 40,
            "output_dir": out,
        }.items()
        if k not in ("task", "model")
    ]
    return ["train", "--task", "synth", "--model", TINY, *settings, *extra]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


def test_resume_after_kill_ends_with_the_same_adapter(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    env = synth_env(OMP_NUM_THREADS="1")  # the uninterrupted run goes on beside the one that is cut
    first = CliRuns(tmp_path, workers=1)
    first.start("whole", _train_cmd(whole), env)

    proc = subprocess.Popen(
        [sys.executable, str(CLI), *map(str, _train_cmd(cut))],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list(cut.glob("checkpoints/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "run.json").exists()  # an interrupted run never looks complete

    assert_user_error(run_cli(_train_cmd(cut), tmp_path, env), "--resume")  # no silent overwrite
    done = run_cli(["train", "--resume", cut], tmp_path, env)
    assert done.rc == 0, done.err[-2000:]
    assert "resuming from" in done.err
    assert first["whole"].rc == 0, first["whole"].err[-2000:]
    first.close()
    a, b = _adapter(whole), _adapter(cut)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ two processes (DDP, gloo)


def free_port() -> int:
    """A port nothing listens on now (a fixed one fails when two suites share a machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("task,mode", [("synth", "generate"), ("recipe_mpr", "listwise")])
def test_two_process_ddp_loss_matches_one_process(tmp_path, task, mode):
    """torchrun with 2 CPU processes (micro batch 8 each) logs the same losses as 1 process
    with micro batch 8 and 2 accumulation steps: the same 16 examples per optimizer step. The
    listwise mode runs its own loss (Mode.compute): its gradients must still go through DDP."""
    common = [
        f"{k}={v}"
        for k, v in {
            "micro_batch_size": 8,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "epochs": 1,
            "max_train_examples": 32,
            "max_eval_examples": 4,
            "max_test_examples": 4,
            "group_by_length": False,
            "lora.dropout": 0.0,
            "logging_steps": 1,
            "patience": "null",
        }.items()
    ]
    protocol = ["--protocol", "split"] if task == "recipe_mpr" else []
    args = ["train", "--task", task, "--model", TINY, "--mode", mode, *protocol, *common]
    # The one-process run goes on beside the two (torchrun gives each of those one thread too).
    first = CliRuns(tmp_path, workers=1)
    first.start("one", [*args, f"output_dir={tmp_path / 'one'}"], synth_env(OMP_NUM_THREADS="1"))
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(CLI),
            *args,
            f"output_dir={tmp_path / 'two'}",
        ],
        cwd=tmp_path,
        env=synth_env(),
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = first["one"]
    first.close()
    assert one.rc == 0, one.err[-2000:]

    def losses(run: Path) -> list[float]:
        return [r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in r]

    l1, l2 = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(l1) == len(l2) == 2
    # Step 1 sees the same 16 examples before any update: equal to float precision. Later steps
    # follow Adam updates, which amplify the last-bit differences of a gloo all-reduce.
    assert l1[0] == pytest.approx(l2[0], rel=1e-5)
    assert l1 == pytest.approx(l2, rel=1e-2)
    # The adapters agree too: without the all-reduce each process would step on its own half
    # batch, and Adam's first steps (about lr x the gradient's sign) would part them everywhere.
    a1, a2 = (load_file(tmp_path / r / "adapter" / "adapter_model.safetensors") for r in ("one", "two"))
    apart = sum(int(((a1[k] - a2[k]).abs() > 1e-3).sum()) for k in a1) / sum(a1[k].numel() for k in a1)
    assert apart < 0.01
