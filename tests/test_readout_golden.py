"""The readouts give the outputs and probabilities they gave before the model side was staged
into modes/ and readouts/: values recorded on tiny-qwen3 (random weights, seed 0,
real Qwen3 tokenizer) with the code as it was, and compared here to 1e-5.

Regenerate only on purpose (a deliberate change of what a readout computes):
    MCQA_RECORD_GOLDEN=1 python -m pytest tests/test_readout_golden.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from mcqa.examples import load_split
from mcqa.modes import get_mode
from mcqa.readouts import run_readout
from mcqa.registry import get_task

GOLDEN = Path(__file__).parent / "data" / "readouts_golden.json"
TOL = 1e-5
CASES = [  # (task, protocol, examples, readout, options)
    ("notification", None, 6, "generate", {"max_new_tokens": 12}),
    ("notification", None, 6, "constrained", {}),
    ("notification", None, 6, "rank", {}),
    ("notification", None, 6, "rank", {"score": "full"}),
    ("notification", None, 6, "head", {}),
    ("recipe_mpr", "split", 4, "rank", {}),
    ("recipe_mpr", "split", 4, "constrained", {}),
    ("mmlu_pro", "seed", 4, "rank", {}),
    ("mmlu_pro", "seed", 4, "head", {}),
]


def _key(task: str, readout: str, opts: dict) -> str:
    return f"{task}/{readout}" + "".join(f"/{k}={v}" for k, v in sorted(opts.items()))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny inputs, one intra-op thread


def _run(tiny, task_name, protocol, n, readout, opts) -> list[dict]:
    model, tok = tiny
    task = get_task(task_name)
    examples = load_split(task, "test", protocol)[:n]
    if readout == "head":
        torch.manual_seed(0)
        model = get_mode("head").build(model, tok, task)
    out = run_readout(readout, model, tok, task, examples, **opts)
    return [{k: o[k] for k in ("id", "output", "truncated", "probs", "scores") if k in o} for o in out]


def _close(a, b, where: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=TOL, abs_tol=TOL), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_readouts_give_the_recorded_outputs_and_probabilities(tiny):
    got = {_key(t, r, o): _run(tiny, t, p, n, r, o) for t, p, n, r, o in CASES}
    if os.environ.get("MCQA_RECORD_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert sorted(got) == sorted(want)
    for key in want:
        _close(json.loads(json.dumps(got[key])), want[key], key)
