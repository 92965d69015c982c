"""cli.py as a user runs it, in subprocesses: listing, schema, show, scoring (gold, partly
wrong, a subset, a user's own data file), and every user error: exit code 2, one line on
stderr starting with "error:", no traceback. All runs start together in a module fixture."""

from __future__ import annotations

import json

import pytest
from helpers import CliRuns, assert_user_error, cli_env, load

from mcqa.prompting import render_prompt, serialize_target
from mcqa.registry import get_task
from mcqa.schema import schema_file

BUILTIN = ("mmlu_pro", "mmlu_pro_answer", "notification", "recipe_mpr")
FOLDERS = ["Work", "Personal", "Promotions", "Alerts"]
WIDE = cli_env(COLUMNS="250")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def partial_output(i: int, target: dict) -> str:
    """A deterministic mix: unparseable, wrong folder, wrong priority, fenced/prose-wrapped gold."""
    if i % 5 == 0:
        return "I am not sure about this one."
    if i % 4 == 0:
        return json.dumps({"folder": FOLDERS[(FOLDERS.index(target["folder"]) + 1) % 4], "priority": target["priority"]})
    if i % 7 == 0:
        return json.dumps({"folder": target["folder"], "priority": 1 if target["priority"] != 1 else 3})
    if i % 3 == 0:
        return f"```json\n{json.dumps(target)}\n```"
    return f"Answer: {json.dumps(target)}"


USER_DATA = [
    {"id": "u1", "app": "Slack", "title": "Boss", "body": "Can you join the incident call now?", "folder": "Work", "priority": 3},
    {"id": "u2", "app": "WhatsApp", "title": "Mom", "body": "Dinner on Sunday?", "folder": "Personal", "priority": 1},
    {"id": "u3", "app": "Shop", "title": "SALE", "body": "50% off today only", "folder": "Promotions", "priority": 1},
    {"id": "u4", "app": "Bank", "title": "Login", "body": "New sign-in from Berlin", "folder": "Alerts", "priority": 3},
    {"id": "u5", "app": "Jira", "title": "PROJ-12", "body": "You were assigned a ticket", "folder": "Work", "priority": 2},
    {"id": "u6", "app": "Gmail", "title": "Newsletter", "body": "This week in tech", "folder": "Promotions", "priority": 1},
]
USER_OUTPUTS = {
    "u1": '{"folder": "Work", "priority": 3}',
    "u2": '{"folder": "Personal", "priority": 2}',  # priority wrong
    "u3": '{"folder": "Promotions", "priority": 1}',
    "u4": '{"folder": "Work", "priority": 3}',  # folder wrong
    "u5": "Work, priority 2",  # no JSON
    "u6": '```json\n{"folder": "Promotions", "priority": 1}\n```',
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    task = get_task("notification")
    test = load("notification", "test", "seed")
    gold = write_jsonl(d / "gold.jsonl", [{"id": e.id, "output": serialize_target(task.output, e.target)} for e in test])
    partial = write_jsonl(d / "partial.jsonl", [{"id": e.id, "output": partial_output(i, e.target)} for i, e in enumerate(test)])
    first10 = write_jsonl(d / "first10.jsonl", [{"id": e.id, "output": json.dumps(e.target)} for e in test[:10]])
    lines = gold.read_text().splitlines()
    (d / "bad.jsonl").write_text("\n".join(lines[:2] + ['{"id": "x", "output": '] + lines[3:]) + "\n")
    write_jsonl(d / "no_output.jsonl", [{"id": test[0].id, "text": "Work"}])
    (d / "unknown.jsonl").write_text("\n".join(lines + ['{"id": "not-a-real-id", "output": "{}"}']) + "\n")
    (d / "dup.jsonl").write_text("\n".join(lines[:2] + [lines[1]] + lines[2:]) + "\n")
    data = write_jsonl(d / "data.jsonl", USER_DATA)
    data_preds = write_jsonl(d / "data_preds.jsonl", [{"id": k, "output": v} for k, v in USER_OUTPUTS.items()])
    two_preds = write_jsonl(d / "two_preds.jsonl", [{"id": k, "output": USER_OUTPUTS[k]} for k in ("u1", "u2")])
    data_bad = write_jsonl(d / "data_bad.jsonl", [USER_DATA[0], {k: v for k, v in USER_DATA[1].items() if k != "body"}])
    data_bad_label = write_jsonl(d / "data_bad_label.jsonl", [USER_DATA[0], {**USER_DATA[1], "folder": "Family"}])
    unlabeled = write_jsonl(d / "unlabeled.jsonl", [{k: v for k, v in r.items() if k not in ("folder", "priority")} for r in USER_DATA])

    score = ["score", "--task", "notification", "--resamples", "50"]
    runs = CliRuns(d)
    # The slow ones first, so the error runs fill the gaps.
    runs.start("show", ["show", "--task", "notification", "--split", "train", "-n", "2"])
    runs.start("score_gold", [*score, "--split", "test", "--predictions", gold, "--out", d / "out_gold"])
    runs.start("score_partial", [*score, "--split", "test", "--predictions", partial, "--out", d / "out_partial"])
    runs.start("score_subset", [*score, "--split", "test", "--predictions", first10, "--subset", "--out", d / "out_subset"])
    runs.start("score_data", [*score, "--data", data, "--predictions", data_preds, "--out", d / "out_data"])
    runs.start("tasks", ["tasks"], WIDE)
    runs.start("tasks_80", ["tasks"])
    runs.start("schema", ["schema", "--task", "notification"])
    errors = {
        "unknown_task": ["score", "--task", "notifcation", "--split", "test", "--predictions", gold],
        "missing_predictions": [*score, "--split", "test", "--predictions", d / "nope.jsonl"],
        "malformed_jsonl": [*score, "--split", "test", "--predictions", d / "bad.jsonl"],
        "no_output_field": [*score, "--split", "test", "--predictions", d / "no_output.jsonl", "--subset"],
        "unknown_ids": [*score, "--split", "test", "--predictions", d / "unknown.jsonl"],
        "duplicated_ids": [*score, "--split", "test", "--predictions", d / "dup.jsonl"],
        "missing_without_subset": [*score, "--split", "test", "--predictions", first10],
        "data_bad_record": [*score, "--data", data_bad, "--predictions", two_preds],
        "data_bad_label": [*score, "--data", data_bad_label, "--predictions", two_preds, "--out", d / "o"],
        "data_unlabeled": [*score, "--data", unlabeled, "--predictions", data_preds, "--out", d / "o2"],
        "unknown_split": [*score, "--split", "dev", "--predictions", gold],
        "unknown_protocol": [*score, "--split", "test", "--protocol", "cv9", "--predictions", gold],
        "split_and_data": [*score, "--split", "test", "--data", data, "--predictions", gold],
        "bad_flag": [*score, "--split", "test", "--predictions", gold, "--frobnicate"],
        "train_unknown_protocol": ["train", "--task", "notification", "--model", "tiny-qwen3", "--protocol", "cv9",
                                   f"output_dir={d / 'never'}"],
    }
    for name, args in errors.items():
        runs.start(name, args)
    yield runs
    runs.close()


def test_tasks_lists_every_task(cli):
    r = cli["tasks"]
    assert r.rc == 0, r.err
    for name in BUILTIN:
        assert name in r.out
    assert "720/240/240" in r.out  # notification's split sizes
    assert "Traceback" not in r.err


def test_tasks_shows_full_names_at_the_default_width(cli):
    r = cli["tasks_80"]
    assert r.rc == 0, r.err
    for name in BUILTIN:
        assert name in r.out


def test_schema_prints_the_schema_file(cli):
    r = cli["schema"]
    assert r.rc == 0, r.err
    assert json.loads(r.out) == json.loads(schema_file(get_task("notification")).read_text(encoding="utf-8"))
    assert r.err == ""


def test_show_prints_the_chat_template_with_an_empty_think_block(cli):
    r = cli["show"]
    assert r.rc == 0, r.err
    task = get_task("notification")
    train = load("notification", "train", "seed")
    assert r.out.count("<|im_start|>system") == 2
    assert r.out.count("<|im_start|>assistant\n<think>\n\n</think>\n") == 2
    for e in train[:2]:
        assert e.id in r.out
        assert serialize_target(task.output, e.target) in r.out
    assert train[2].id not in r.out


def test_show_prints_the_exact_prompt(cli, qwen_tokenizer):
    # At rich's default width of 80 (any pipe), a re-wrapped prompt would differ from what the model sees.
    r = cli["show"]
    task = get_task("notification")
    for e in load("notification", "train", "seed")[:2]:
        assert render_prompt(qwen_tokenizer, task.messages(e)) in r.out


def test_score_gold_writes_the_run_folder_and_is_perfect(cli):
    r = cli["score_gold"]
    assert r.rc == 0, r.err
    out = cli.cwd / "out_gold"
    for name in ("predictions.jsonl", "metrics.json", "report.md", "confusion_folder.png", "confusion_priority.png"):
        assert (out / name).is_file(), name
    for name in ("confusion_folder.png", "confusion_priority.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = json.loads((out / "metrics.json").read_text())
    n = len(load("notification", "test", "seed"))
    assert m["n"] == n == 240
    assert m["fields"]["folder"]["accuracy"] == 1.0
    assert m["fields"]["priority"]["accuracy"] == 1.0
    assert m["joint"]["accuracy"] == 1.0
    assert m["run"]["split"] == "test" and m["run"]["protocol"] == "seed"
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == n and all(rec["status"] == "ok" for rec in records)
    assert "100.0%" in (out / "report.md").read_text()
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def test_score_partly_wrong_predictions(cli):
    r = cli["score_partial"]
    assert r.rc == 0, r.err
    test = load("notification", "test", "seed")
    right = {"folder": 0, "priority": 0, "joint": 0}
    failed = 0
    for i, e in enumerate(test):
        if i % 5 == 0:
            failed += 1
            continue
        pred = {"folder": e.target["folder"], "priority": e.target["priority"]}
        if i % 4 == 0:
            pred["folder"] = None
        elif i % 7 == 0:
            pred["priority"] = None
        right["folder"] += pred["folder"] == e.target["folder"]
        right["priority"] += pred["priority"] == e.target["priority"]
        right["joint"] += pred == e.target
    m = json.loads((cli.cwd / "out_partial" / "metrics.json").read_text())
    n = len(test)
    assert m["fields"]["folder"]["accuracy"] == pytest.approx(right["folder"] / n)
    assert m["fields"]["priority"]["accuracy"] == pytest.approx(right["priority"] / n)
    assert m["joint"]["accuracy"] == pytest.approx(right["joint"] / n)
    assert m["parse"]["failure_rate"] == pytest.approx(failed / n)
    assert m["parse"]["counts"]["no_json"] == failed
    assert set(m["parse"]["notes"]) == {"fenced", "prose"}
    assert 0 < right["joint"] < n


def test_score_subset_scores_only_predicted_examples(cli):
    r = cli["score_subset"]
    assert r.rc == 0, r.err
    m = json.loads((cli.cwd / "out_subset" / "metrics.json").read_text())
    assert m["n"] == 10 and m["run"]["subset"] is True
    assert m["joint"]["accuracy"] == 1.0


def test_score_a_users_own_data_file(cli):
    r = cli["score_data"]
    assert r.rc == 0, r.err
    m = json.loads((cli.cwd / "out_data" / "metrics.json").read_text())
    assert m["n"] == 6
    assert m["run"]["data"].endswith("data.jsonl")
    assert m["fields"]["folder"]["accuracy"] == pytest.approx(4 / 6)  # u4 wrong, u5 unparseable
    assert m["fields"]["priority"]["accuracy"] == pytest.approx(4 / 6)  # u2 wrong, u5 unparseable
    assert m["joint"]["accuracy"] == pytest.approx(3 / 6)
    assert m["parse"]["counts"]["no_json"] == 1


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("unknown_task", ["notifcation", "did you mean 'notification'"]),
        ("missing_predictions", ["nope.jsonl"]),
        ("malformed_jsonl", ["bad.jsonl:3"]),
        ("no_output_field", ["no_output.jsonl:1", "output"]),
        ("unknown_ids", ["not-a-real-id"]),
        ("duplicated_ids", ["dup.jsonl:3", "duplicated"]),
        ("missing_without_subset", ["--subset"]),
        ("data_bad_record", ["data_bad.jsonl:2", "body"]),
        ("unknown_split", ["dev"]),
        ("unknown_protocol", ["cv9"]),
        ("split_and_data", ["--split", "--data"]),
        ("bad_flag", ["--frobnicate"]),
        ("train_unknown_protocol", ["cv9"]),  # train takes --protocol like score and compare
    ],
)
def test_user_errors_exit_2_with_one_line(cli, name, fragments):
    assert_user_error(cli[name], *fragments)


def test_data_record_with_a_label_outside_the_label_set_names_its_line(cli):
    assert_user_error(cli["data_bad_label"], "data_bad_label.jsonl:2")


def test_unlabeled_data_file_is_one_line_error(cli):
    assert_user_error(cli["data_unlabeled"], "no gold label")
