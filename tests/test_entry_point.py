"""Tasks from outside the repository: a package exposing the "mcqa.tasks" entry point is listed
and scored with no change to mcqa; a task module that breaks the contract is refused with exit
code 2 and a message naming its file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO, CliRuns, assert_user_error, cli_env

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mcqa-demo-task"
version = "0.0.1"

[project.entry-points."mcqa.tasks"]
sentiment = "mcqa_demo_task:TASK"

[tool.setuptools]
py-modules = ["mcqa_demo_task"]
"""

DEMO_TASK = '''\
"""sentiment: a review -> {"sentiment": "pos" | "neg"} (6 inline examples)."""
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mcqa.task import Example, Task


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sentiment: Literal["pos", "neg"]


ROWS = [("r1", "great", "pos"), ("r2", "awful", "neg"), ("r3", "lovely", "pos"),
        ("r4", "bad", "neg"), ("r5", "fine, I liked it", "pos"), ("r6", "boring and too long", "neg")]
SPLITS = {"train": ["r1", "r2"], "validation": ["r3", "r4"], "test": ["r5", "r6"]}


def from_record(r):
    if not isinstance(r.get("text"), str):
        raise ValueError("field 'text' must be a string")
    target = {"sentiment": r["sentiment"]} if "sentiment" in r else None
    return Example(id=r["id"], input={"text": r["text"]}, target=target)


def load(split, protocol):
    by_id = {i: from_record({"id": i, "text": t, "sentiment": s}) for i, t, s in ROWS}
    return [by_id[i] for i in SPLITS[split]]


def messages(e):
    return [{"role": "system", "content": 'Reply {"sentiment": "pos"} or {"sentiment": "neg"}.'},
            {"role": "user", "content": e.input["text"]}]


TASK = Task(name="sentiment", output=Output, load=load, from_record=from_record, messages=messages,
            description="review -> sentiment (demo plug-in)")
'''

LOOSE_TASK = """\
from typing import Literal

from pydantic import BaseModel

from mcqa.task import Task


class Output(BaseModel):  # no extra="forbid": breaks the contract
    label: Literal["a", "b"]


TASK = Task(name="loose", output=Output, load=lambda s, p: [], from_record=lambda r: None, messages=lambda e: [])
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    pkg, site = root / "pkg", root / "site"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "mcqa_demo_task.py").write_text(DEMO_TASK)
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(pkg),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    preds = root / "preds.jsonl"
    preds.write_text(
        json.dumps({"id": "r5", "output": '{"sentiment": "pos"}'})
        + "\n"  # right
        + json.dumps({"id": "r6", "output": "pos"})
        + "\n"  # a bare label, wrong
    )
    bad = {name: root / name for name in ("loose", "notask", "broken")}
    for d in bad.values():
        d.mkdir()
    (bad["loose"] / "loose.py").write_text(LOOSE_TASK)
    (bad["notask"] / "notask.py").write_text("X = 1  # forgot TASK\n")
    (bad["broken"] / "broken.py").write_text("import mcqa_no_such_module_xyz\n")

    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = cli_env(PYTHONPATH=path, COLUMNS="250")
    runs = CliRuns(root)
    runs.start("tasks", ["tasks"], env)
    runs.start(
        "score",
        [
            "score",
            "--task",
            "sentiment",
            "--split",
            "test",
            "--predictions",
            preds,
            "--out",
            root / "out",
            "--resamples",
            "50",
        ],
        env,
    )
    runs.start("loose", ["show", "--task", "loose"], cli_env(MCQA_TASKS_PATH=str(bad["loose"])))
    # every broken module at once, beside the installed plugin: `tasks` lists the rest
    broken_path = os.pathsep.join(str(d) for d in bad.values())
    runs.start("tasks_with_broken", ["tasks"], cli_env(PYTHONPATH=path, COLUMNS="250", MCQA_TASKS_PATH=broken_path))
    runs.start(
        "notask",
        ["score", "--task", "notask", "--split", "test", "--predictions", preds],
        cli_env(MCQA_TASKS_PATH=str(bad["notask"])),
    )
    runs.start("broken", ["show", "--task", "broken"], cli_env(MCQA_TASKS_PATH=str(bad["broken"])))
    runs.bad = bad

    # Schemas and conformance for tasks outside the project tree: the plugin passes `check`
    # without a file written anywhere; a task folder shipping a stale schema file, and a task
    # whose prompt reads the gold and whose splits overlap, fail by name.
    repo = root / "repo"  # a copy of the project, so `schema --write` cannot touch the real one
    for part in ("mcqa", "tasks", "schemas"):
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "cli.py", repo / "cli.py")
    (root / "stale").mkdir()
    (root / "stale" / "stale.py").write_text(DEMO_TASK.replace('name="sentiment"', 'name="stale"'))
    (root / "stale" / "stale.schema.json").write_text("{}")
    (root / "leaky").mkdir()
    (root / "leaky" / "leaky.py").write_text(
        DEMO_TASK.replace('name="sentiment"', 'name="leaky"')
        .replace('"test": ["r5", "r6"]', '"test": ["r5", "r1"]')
        .replace('"content": e.input["text"]}', '"content": e.input["text"] + str(e.target)}')
    )
    folders = cli_env(PYTHONPATH=path, MCQA_TASKS_PATH=os.pathsep.join([str(root / "stale"), str(root / "leaky")]))
    runs.start("schema_write", ["schema", "--write"], folders, cli=repo / "cli.py")
    runs.start("check_plugin", ["check", "--task", "sentiment"], env)
    runs.start("check_stale", ["check", "--task", "stale"], folders)
    runs.start("check_leaky", ["check", "--task", "leaky"], folders)
    runs.repo, runs.site = repo, site
    yield runs
    runs.close()


def test_installed_plugin_task_is_listed(plugin):
    r = plugin["tasks"]
    assert r.rc == 0, r.err
    assert "sentiment" in r.out
    assert "2/2/2" in r.out
    assert "notification" in r.out  # the built-in tasks are still there


def test_installed_plugin_task_is_scored(plugin):
    r = plugin["score"]
    assert r.rc == 0, r.err
    out = plugin.cwd / "out"
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "sentiment" and m["n"] == 2
    assert m["fields"]["sentiment"]["accuracy"] == pytest.approx(0.5)
    assert m["parse"]["notes"] == {"bare_label": 1}
    assert (out / "confusion_sentiment.png").is_file()


def test_tasks_lists_the_others_and_warns_of_each_broken_task_in_one_line(plugin):
    r = plugin["tasks_with_broken"]
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err
    assert "sentiment" in r.out and "notification" in r.out and "recipe_mpr" in r.out
    warnings = r.err.strip().splitlines()
    assert len(warnings) == 3, r.err
    for name, fragment in (("broken", "mcqa_no_such_module_xyz"), ("loose", 'extra="forbid"'), ("notask", "TASK")):
        (line,) = [w for w in warnings if f"task '{name}'" in w]
        assert line.startswith("warning:") and str(plugin.bad[name]) in line and fragment in line, line
        assert f"│ {name} " not in r.out  # not in the table


def test_plugin_is_not_visible_without_its_path():
    # The entry point comes from the installed package, not from anything left in mcqa.
    from mcqa.registry import task_names

    assert "sentiment" not in task_names()


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("loose", ["loose.py", 'extra="forbid"']),
        ("notask", ["notask.py", "TASK"]),
        ("broken", ["broken.py", "mcqa_no_such_module_xyz"]),
    ],
)
def test_task_module_breaking_the_contract_is_refused(plugin, name, fragments):
    line = assert_user_error(plugin[name], *fragments)
    assert str(plugin.bad[name]) in line, "the message must name the module's file"


def test_schema_write_says_what_it_did_for_each_task_and_writes_nothing_for_a_plugin(plugin):
    r = plugin["schema_write"]
    assert r.rc == 0, r.err
    lines = r.err.strip().splitlines()
    for name in ("notification", "recipe_mpr", "mmlu_pro", "mmlu_pro_answer"):
        assert any(x.startswith(f"{name}: ") and "up to date" in x for x in lines), r.err
    (sentiment,) = [x for x in lines if x.startswith("sentiment: ")]
    assert "not a built-in task" in sentiment and "nothing written" in sentiment
    (stale,) = [x for x in lines if x.startswith("stale: ")]
    assert "nothing written" in stale and "stale.schema.json" in stale and "out of date" in stale
    assert (plugin.cwd / "stale" / "stale.schema.json").read_text() == "{}"  # a plugin's file is never rewritten
    written = {p.name for p in (plugin.repo / "schemas").iterdir()}
    assert written == {p.name for p in (REPO / "schemas").iterdir()}  # nothing new in mcqa's own schemas/
    assert not list(plugin.site.rglob("*.schema.json"))


def test_check_passes_a_correct_plugin_without_a_schema_file(plugin):
    r = plugin["check_plugin"]
    assert r.rc == 0, r.err
    assert "passes all 7 conformance rules" in r.out
    assert "FAIL" not in r.out


def test_check_names_each_failed_rule_in_one_line_and_exits_2(plugin):
    line = assert_user_error(plugin["check_leaky"], "'leaky'", "prompt_ignores_gold", "splits_sound")
    out = plugin["check_leaky"].out
    fails = [x for x in out.splitlines() if x.startswith("FAIL")]
    assert len(fails) == 2, out
    assert any("prompt_ignores_gold: r" in x and "example.target" in x for x in fails), out
    assert any("splits_sound:" in x and "ids in both train and test" in x for x in fails), out
    assert "2 of 7" in line
    stale = assert_user_error(plugin["check_stale"], "schema_up_to_date")
    assert (
        "FAIL schema_up_to_date:" in plugin["check_stale"].out and "stale.schema.json" in plugin["check_stale"].out
    ), stale
