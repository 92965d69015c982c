"""Shared test helpers: cached split loading (the mmlu 'full' protocol has ~11.6k examples, so
each split is loaded once per session) and running cli.py in subprocesses, several at a time
(each process pays ~1.5 s of imports; running them together keeps the suite fast)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mcqa.registry import get_task
from mcqa.task import SPLITS, Example

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / "cli.py"
SYNTH = REPO / "tests" / "synthetic_tasks"  # the `synth` trainer task


@cache
def load(task_name: str, split: str, protocol: str) -> tuple[Example, ...]:
    return tuple(get_task(task_name).load(split, protocol))


def load_all(task_name: str, protocol: str) -> dict[str, tuple[Example, ...]]:
    return {s: load(task_name, s, protocol) for s in SPLITS}


def split_digest(examples) -> str:
    """A digest of a split as a model meets it: ids, targets and each example's option order."""
    rows = [json.dumps([e.id, e.target, e.input.get("options")], sort_keys=True, ensure_ascii=False) for e in examples]
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def leak_text(example: Example) -> str:
    """The text two splits must never share: the question/query/body, else every string input."""
    for key in ("question", "query", "body"):
        if isinstance(example.input.get(key), str):
            return normalize(example.input[key])
    return normalize(" ".join(v for v in example.input.values() if isinstance(v, str)))


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


def cli_env(**extra: str) -> dict[str, str]:
    """The user's environment, offline, at the default terminal width unless a test asks."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "MCQA_TASKS_PATH")}
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.update(extra)
    return env


def synth_env(**extra: str) -> dict[str, str]:
    """cli_env with the synthetic trainer task discoverable (MCQA_TASKS_PATH)."""
    return cli_env(MCQA_TASKS_PATH=str(SYNTH), PYTHONUNBUFFERED="1", **extra)


def run_cli(args: list, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180, cli: Path = CLI) -> Result:
    """cli.py (or another checkout's, `cli`) run as a user runs it."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, str(cli), *map(str, args)], cwd=cwd, env=env or cli_env(),
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if os.environ.get("MCQA_TEST_CLI_LOG"):  # where the suite's time goes: one line per CLI run
        with open(os.environ["MCQA_TEST_CLI_LOG"], "a") as f:
            f.write(json.dumps({"s": round(time.perf_counter() - t0, 2), "rc": p.returncode, "args": list(map(str, args))[:6]}) + "\n")
    return Result(p.returncode, p.stdout, p.stderr)


class CliRuns:
    """Starts CLI runs at once and hands each result to the test that asks for it."""

    def __init__(self, cwd: Path, workers: int = 4):
        self.cwd = cwd
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.futures: dict[str, Future] = {}

    def start(self, name: str, args: list, env: dict[str, str] | None = None, cli: Path = CLI) -> None:
        self.futures[name] = self.pool.submit(run_cli, args, self.cwd, env, cli=cli)

    def chain(self, steps: list[tuple[str, list]], env: dict[str, str] | None = None) -> None:
        """Runs that depend on each other (install, then verify), one after another on one worker."""
        futures = {name: Future() for name, _ in steps}
        self.futures.update(futures)

        def run_all() -> None:
            for name, args in steps:
                try:
                    futures[name].set_result(run_cli(args, self.cwd, env))
                except Exception as e:  # a timeout: this run and the ones waiting on it fail
                    for f in futures.values():
                        if not f.done():
                            f.set_exception(e)
                    return

        self.pool.submit(run_all)

    def __getitem__(self, name: str) -> Result:
        return self.futures[name].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def assert_user_error(r: Result, *fragments: str) -> str:
    """Exit code 2, exactly one line on stderr starting with 'error:', no traceback."""
    assert r.rc == 2, f"exit code {r.rc}, stderr:\n{r.err}"
    assert "Traceback" not in r.err, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{r.err}"
    assert lines[0].startswith("error:"), lines[0]
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
    return lines[0]
