"""Bad input, as a hostile or a careless user would give it, for every command: each case must
end in exit code 2 with one line on stderr (what, where, what to do), no traceback, and
nothing written outside the folder the user named (for an error: nothing written at all),
or, for a model output, in the right parse status. Every input is generated here, in tmp_path.

The commands run in-process through cli.main (imports are paid once, so the whole corpus
takes seconds); the few cases that need a process of their own (a file-size limit) run cli.py
in a subprocess. Each class of the bad-input issue (#14) is named in its test's docstring.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CLI, Result, assert_user_error, cli_env, load

from mcqa.prompting import serialize_target
from mcqa.registry import get_task

ROOT = Path(__file__).resolve().parent.parent
SYNTH = ROOT / "tests" / "synthetic_tasks"
_spec = importlib.util.spec_from_file_location("mcqa_cli_under_test", CLI)
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


# ---------------------------------------------------------------- helpers


@pytest.fixture
def run(capsys, monkeypatch, tmp_path):
    """Run the CLI in-process in tmp_path; return its Result."""
    monkeypatch.chdir(tmp_path)

    def go(*args) -> Result:
        capsys.readouterr()
        try:
            rc = cli.main([str(a) for a in args])
        except SystemExit as e:  # argparse
            rc = e.code
        out, err = capsys.readouterr()
        return Result(rc, out, err)
    return go


@pytest.fixture
def synth(monkeypatch):
    monkeypatch.setenv("MCQA_TASKS_PATH", str(SYNTH))
    get_task.cache_clear()
    yield get_task("synth")
    get_task.cache_clear()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(r: Result, root: Path, before: set[str], *fragments: str) -> str:
    """A user error, and nothing written under root."""
    line = assert_user_error(r, *fragments)
    assert tree(root) == before, f"files written: {tree(root) - before}"
    return line


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


NOTIF_TEST = "notification", "test", "seed"


def gold_rows(task_name="notification", split="test", protocol="seed"):
    task = get_task(task_name)
    return [{"id": e.id, "output": serialize_target(task.output, e.target)} for e in load(task_name, split, protocol)]


def fake_run(folder: Path, *, config: dict | None = None, summary: dict | None = None, records=None) -> Path:
    """A run folder as someone else might hand it over: config.yaml, run.json, test/."""
    import yaml

    folder.mkdir(parents=True)
    cfg = {"task": "notification", "model": "tiny-qwen3", "mode": "generate", "protocol": "seed", **(config or {})}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    s = {"task": cfg["task"], "protocol": cfg["protocol"], "model": cfg["model"], "mode": cfg["mode"], **(summary or {})}
    (folder / "run.json").write_text(json.dumps(s))
    (folder / "test").mkdir()
    (folder / "test" / "metrics.json").write_text("{}")
    if records is not None:
        write_jsonl(folder / "test" / "predictions.jsonl", records)
    return folder


SCORE = ["score", "--task", "notification", "--split", "test", "--resamples", "20"]


# ---------------------------------------------------------------- 1-3: security


@pytest.mark.parametrize("command", [
    ["score", "--task", "notification", "--split", "test"],
    ["predict", "--task", "notification", "--split", "test"],
])
def test_1_a_run_folder_cannot_turn_on_remote_code(run, tmp_path, command):
    """#1: trust_remote_code comes only from the user's command line; a run asking for it is
    refused, naming the flag, before any model is loaded."""
    fake_run(tmp_path / "run", config={"trust_remote_code": True})
    before = tree(tmp_path)
    refused(run(*command, "--adapter", "run", "--out", "o.jsonl" if command[0] == "predict" else "o"),
            tmp_path, before, "trust_remote_code", "--trust-remote-code")


def test_1_resume_of_a_received_run_cannot_turn_on_remote_code(run, tmp_path):
    """#1: `train --resume` reads config.yaml from the folder: the same rule."""
    folder = fake_run(tmp_path / "run", config={"trust_remote_code": True})
    (folder / "run.json").unlink()
    before = tree(tmp_path)
    refused(run("train", "--resume", "run"), tmp_path, before, "--trust-remote-code")


@pytest.mark.parametrize(("summary", "fragment"), [
    ({"mode": "../../X"}, "mode"),
    ({"task": "../../x"}, "unknown task"),
    ({"protocol": "../../seed"}, "protocol"),
    ({"model": ["x"]}, "model"),
])
def test_2_values_in_run_json_are_validated_before_use(run, tmp_path, summary, fragment):
    """#2: names read from run.json are checked against the registries before anything uses them."""
    run_dir = fake_run(tmp_path / "run")
    s = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**s, **summary}))
    (run_dir / "config.yaml").unlink()
    before = tree(tmp_path)
    refused(run("compare", "--task", "notification", "--runs", "run", "--baselines", "", "--out", "out"),
            tmp_path, before, "run.json", fragment)


def test_2_a_hostile_model_name_never_builds_a_path_outside_out(run, tmp_path, synth):
    """#2: a model name of ../../evil in pooled fold runs: every file compare writes stays in --out."""
    from mcqa.scoring import make_records

    runs = []
    for k in range(3):
        test = load("synth", "test", f"cv3-{k}")
        records = make_records(synth, list(test), {e.id: {"output": serialize_target(synth.output, e.target)} for e in test})
        runs.append(fake_run(tmp_path / f"fold{k}", config={"task": "synth", "protocol": f"cv3-{k}", "model": "../../evil", "mode": "head"},
                             records=records))
    (tmp_path / "deep" / "er").mkdir(parents=True)
    before = tree(tmp_path)
    r = run("compare", "--task", "synth", "--protocol", "cv3", "--baselines", "", "--runs", *runs, "--out", "deep/er/out")
    assert r.rc == 0, r.err
    written = tree(tmp_path) - before
    assert written and all(w.startswith("deep/er/out") for w in written), written


@pytest.mark.parametrize("out", ["/dev/null", "afile", "scored"])
def test_3_score_out_must_be_a_new_or_empty_folder(run, tmp_path, out):
    """#3: --out naming a device or a file is refused, and an existing scoring run is not overwritten."""
    preds = write_jsonl(tmp_path / "p.jsonl", gold_rows())
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "scored").mkdir()
    (tmp_path / "scored" / "metrics.json").write_text("{}")
    before = tree(tmp_path)
    refused(run(*SCORE, "--predictions", preds, "--out", out), tmp_path, before, out)
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("out", ["/dev/null", "/dev/full", "folder"])
def test_3_predict_out_must_be_a_regular_file(run, tmp_path, out):
    """#3: predict --out (a file) naming a device or a folder is refused before any model loads."""
    (tmp_path / "folder").mkdir()
    before = tree(tmp_path)
    refused(run("predict", "--task", "notification", "--split", "test", "--model", "tiny-qwen3", "--out", out),
            tmp_path, before, out)
