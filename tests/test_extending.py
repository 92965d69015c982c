"""A new training mode and a new readout are each one file plus their registration: the toy
ones in tests/extensions/ are loaded as a plugin author's files would be, and a run trains,
validates, saves, reloads and predicts through them with nothing else in mcqa changed."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from helpers import REPO, SYNTH

from mcqa.modes import MODES
from mcqa.predicting import default_readout, load_predictor, predict
from mcqa.readouts import READOUTS, run_readout
from mcqa.registry import get_task
from mcqa.train.config import load_config
from mcqa.train.recipe import train

EXTENSIONS = REPO / "tests" / "extensions"


def _load(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"mcqa_test_{path.stem}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.fixture(scope="module")
def toys():
    old = os.environ.get("MCQA_TASKS_PATH")
    os.environ["MCQA_TASKS_PATH"] = str(SYNTH)
    get_task.cache_clear()
    _load(EXTENSIONS / "toy_readout.py")
    _load(EXTENSIONS / "toy_mode.py")
    yield
    del MODES["first_token"], READOUTS["first_token"]
    os.environ.pop("MCQA_TASKS_PATH") if old is None else os.environ.update(MCQA_TASKS_PATH=old)
    get_task.cache_clear()


def test_each_toy_is_one_file_and_registers_under_its_name(toys):
    assert sorted(p.name for p in EXTENSIONS.glob("*.py")) == ["toy_mode.py", "toy_readout.py"]
    assert MODES["first_token"].eval_readout == "first_token" and READOUTS["first_token"].needs == "lm"
    with pytest.raises(ValueError, match="registered twice"):
        _load(EXTENSIONS / "toy_readout.py")


def test_a_run_trains_validates_reloads_and_predicts_through_the_toy_mode_and_readout(toys, tmp_path):
    config = load_config(
        None,
        {
            "task": "synth",
            "model": "tiny-qwen3",
            "mode": "first_token",
            "epochs": 1,
            "max_train_examples": 16,
            "max_eval_examples": 8,
            "micro_batch_size": 8,
            "batch_size": 8,
            "patience": None,
            "output_dir": str(tmp_path / "run"),
        },
    )
    run = train(config)
    summary = json.loads((run / "run.json").read_text())
    history = [json.loads(x) for x in (run / "val_metrics.jsonl").read_text().splitlines()]
    assert summary["mode"] == "first_token" and len(history) == 1
    assert summary["test"]["parse_failure_rate"] == 0.0  # the toy readout always writes a valid label

    task = get_task("synth")
    loaded = load_predictor(task, None, run)
    assert default_readout(loaded) == "first_token"
    examples = task.load("test", task.default_protocol)[:5]
    outputs, info = predict(task, loaded, examples, default_readout(loaded), None)
    assert [o["id"] for o in outputs] == [e.id for e in examples] and info["readout"] == "first_token"
    recorded = {
        r["id"]: r["raw"] for r in map(json.loads, (run / "test" / "predictions.jsonl").read_text().splitlines())
    }
    assert all(o["output"] == recorded[o["id"]] for o in outputs)  # reloaded: the same answers as the run gave
    with pytest.raises(Exception, match="has no option 'prefx'.*did you mean 'prefix'"):
        run_readout("first_token", loaded.model, loaded.tokenizer, task, examples, prefx="x")
