"""Shared test helpers: cached split loading (the mmlu 'full' protocol has ~11.6k examples, so
each split is loaded once per session), the files a test hands to mcqa (JSONL, gold predictions,
a finished run folder), the reference forwards the fast paths are checked against, and running
cli.py as a user runs it.

A CLI run happens inside the test process by default: `cli.main(argv)` with the run's
environment, working folder, stdout, stderr, warnings and terminal width swapped in and put
back afterwards. A fresh process pays 3 s (scikit-learn) to 12 s (torch, transformers, PEFT)
of imports before it does anything, and the suite makes about ninety runs. A run goes to a
real subprocess when it must: `fresh=True` (what a test checks is a new process: imports,
start-up output), another checkout's cli.py, or an environment that changes what Python
imports (PYTHONPATH)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import traceback
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import yaml

from mcqa.model import cache_root
from mcqa.prompting import render_prompt, serialize_target
from mcqa.registry import get_task
from mcqa.task import SPLITS, Example

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / "cli.py"
SYNTH = REPO / "tests" / "synthetic_tasks"  # the `synth` trainer task
# The user's own mcqa cache, read before conftest points MCQA_CACHE at the session's cache (a
# pytest-xdist worker inherits the original through MCQA_TEST_USER_CACHE). Only the tests of the
# GGUF aliases read it, and only what a user installed there: installing takes minutes.
USER_CACHE = Path(os.environ.get("MCQA_TEST_USER_CACHE") or cache_root())


@cache
def load(task_name: str, split: str, protocol: str) -> tuple[Example, ...]:
    return tuple(get_task(task_name).load(split, protocol))


def load_all(task_name: str, protocol: str) -> dict[str, tuple[Example, ...]]:
    return {s: load(task_name, s, protocol) for s in SPLITS}


def jsonl(rows) -> str:
    """Rows as the text of a JSONL file: one JSON object a line, each line ended."""
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text(jsonl(rows), encoding="utf-8")
    return path


def gold_rows(task_name: str = "notification", split: str = "test", protocol: str = "seed") -> list[dict]:
    """Predictions that are the gold answers, as a predictions file holds them."""
    task = get_task(task_name)
    return [{"id": e.id, "output": serialize_target(task.output, e.target)} for e in load(task_name, split, protocol)]


def fake_run(
    folder: Path,
    *,
    task: str = "notification",
    protocol: str = "seed",
    model: str = "tiny-qwen3",
    mode: str = "generate",
    config: dict | None = None,
    summary: dict | None = None,
    test: dict | None = None,
    records=None,
    finished_at: float | None = None,
) -> Path:
    """A finished run folder as someone else might hand it over, with no adapter (nothing here
    loads a model): config.yaml written as given, unchecked, so a test can hand over hostile
    settings (`config` overrides the task, protocol, model and mode); run.json naming the same
    four, with the test scores (`test`, default joint 0.5) and `summary` over them; test/ with
    an empty metrics.json and, given `records`, predictions.jsonl. `finished_at` is run.json's
    modification time, which orders finished runs."""
    folder.mkdir(parents=True)
    cfg = {"task": task, "model": model, "mode": mode, "protocol": protocol, **(config or {})}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    s = {k: cfg[k] for k in ("task", "protocol", "model", "mode")}
    (folder / "run.json").write_text(
        json.dumps({**s, "test": {"joint": 0.5} if test is None else test, **(summary or {})})
    )
    (folder / "test").mkdir()
    (folder / "test" / "metrics.json").write_text("{}")
    if records is not None:
        write_jsonl(folder / "test" / "predictions.jsonl", records)
    if finished_at is not None:
        os.utime(folder / "run.json", (finished_at, finished_at))
    return folder


def tree(root: Path) -> set[str]:
    """Every path under root, relative to it: what a refused command must leave unchanged."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def messages_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids of a chat as the model reads it: the template's text, no special tokens added."""
    return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]


def plain_logprobs(model, ids: list[int], last: int = 0) -> torch.Tensor:
    """Log-probs from one ordinary forward over the whole sequence, the reference every batched,
    cached or tree-shaped path is checked against; the LM head on the last `last` positions (all: 0).
    Row -1 is the distribution of the token after `ids`."""
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids]), logits_to_keep=last).logits[0].float(), dim=-1)


def plain_loglik(model, prompt: list[int], cont: list[int]) -> float:
    """The log-likelihood of `cont` after `prompt`, from one ordinary forward."""
    lp = plain_logprobs(model, prompt + cont, last=len(cont) + 1)  # lp[k]: the distribution of cont[k]
    return sum(float(lp[k, t]) for k, t in enumerate(cont))


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


def run_cli(
    args: list, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180, cli: Path = CLI, fresh: bool = False
) -> Result:
    """cli.py (or another checkout's, `cli`) run as a user runs it: in this process unless the
    run needs a new one (module docstring); `timeout` bounds a subprocess only."""
    env = env or cli_env()
    t0 = time.perf_counter()
    if needs_process(env, cli, fresh):
        p = subprocess.run(
            [sys.executable, str(cli), *map(str, args)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result, where = Result(p.returncode, p.stdout, p.stderr), "process"
    else:
        result, where = _in_process(list(map(str, args)), cwd, env), "in-process"
    if os.environ.get("MCQA_TEST_CLI_LOG"):  # where the suite's time goes: one line per CLI run
        with open(os.environ["MCQA_TEST_CLI_LOG"], "a") as f:
            f.write(
                json.dumps(
                    {
                        "s": round(time.perf_counter() - t0, 2),
                        "rc": result.rc,
                        "how": where,
                        "args": list(map(str, args))[:6],
                    }
                )
                + "\n"
            )
    return result


def needs_process(env: dict[str, str] | None, cli: Path = CLI, fresh: bool = False) -> bool:
    """A run that cannot happen in this process (module docstring)."""
    return fresh or Path(cli) != CLI or (env or {}).get("PYTHONPATH", "") != os.environ.get("PYTHONPATH", "")


# Python's own warning filters at start-up (pytest's are in force inside a test), so a warning
# reaches the run's stderr exactly when it would in `python cli.py`.
_STARTUP_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)
_ONE_AT_A_TIME = threading.Lock()  # a run owns the process's environment, folder and streams


@cache
def cli_module():
    """cli.py as a module, loaded once: its main(argv) is what `python cli.py` runs."""
    spec = importlib.util.spec_from_file_location("mcqa_test_cli", CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _show_on_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _in_process(args: list[str], cwd: Path, env: dict[str, str]) -> Result:
    import mcqa.console as terminal
    from mcqa.registry import get_task

    main = cli_module().main
    out, err = io.StringIO(), io.StringIO()
    consoles = (terminal.console, terminal.out)
    columns = env.get("COLUMNS", "")
    # A pipe: rich's width is COLUMNS when set, else 80 (a subprocess of a test has no terminal).
    width = int(columns) if columns.isdigit() else 80
    with _ONE_AT_A_TIME:
        saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
        saved_sizes = [(c._width, c._height) for c in consoles]
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch else None
        handlers = [h for h in logging.getLogger("transformers").handlers if isinstance(h, logging.StreamHandler)]
        streams = [h.stream for h in handlers]
        try:
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
            sys.argv = [str(CLI), *args]
            get_task.cache_clear()  # MCQA_TASKS_PATH may differ from the last run's
            for c in consoles:
                c.size = (width, 25)
            with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                warnings.resetwarnings()
                for action, category, module in reversed(_STARTUP_FILTERS):
                    warnings.filterwarnings(action, category=category, module=module)
                warnings.showwarning = _show_on_stderr
                for h in handlers:
                    h.setStream(err)
                try:
                    rc = main(args)
                except SystemExit as e:  # argparse: --help, a usage error
                    rc = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                    if not isinstance(e.code, (int, type(None))):
                        print(e.code, file=sys.stderr)
                except Exception:  # what `python cli.py` would print before exiting with 1
                    traceback.print_exc()
                    rc = 1
        finally:
            for h, stream in zip(handlers, streams):
                h.setStream(stream)
            for c, (w, h) in zip(consoles, saved_sizes):
                c._width, c._height = w, h
            if threads is not None:
                torch.set_num_threads(threads)
            sys.argv = saved_argv
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            get_task.cache_clear()
    return Result(rc, out.getvalue(), err.getvalue())


class CliRuns:
    """Starts CLI runs at once and hands each result to the test that asks for it."""

    def __init__(self, cwd: Path, workers: int = 4):
        self.cwd = cwd
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.futures: dict[str, Future] = {}

    def start(
        self, name: str, args: list, env: dict[str, str] | None = None, cli: Path = CLI, fresh: bool = False
    ) -> None:
        """A run that needs its own process (run_cli) starts on the pool; one in this process
        runs now, on the calling thread (it owns the process while it runs)."""
        self.futures[name] = (
            self.pool.submit(run_cli, args, self.cwd, env, cli=cli, fresh=True)
            if needs_process(env, cli, fresh)
            else _done(run_cli, args, self.cwd, env)
        )

    def chain(self, steps: list[tuple[str, list]], env: dict[str, str] | None = None) -> None:
        """Runs that depend on each other (install, then verify), one after another: on one
        worker of the pool when they need their own processes, else here and now."""
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

        if needs_process(env):
            self.pool.submit(run_all)
        else:
            run_all()

    def __getitem__(self, name: str) -> Result:
        return self.futures[name].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _done(fn, *args) -> Future:
    f: Future = Future()
    try:
        f.set_result(fn(*args))
    except Exception as e:
        f.set_exception(e)
    return f


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
