"""cli.py as a user runs it: listing, schema, show, scoring (gold, partly wrong, a subset, a
user's own data file), and every user error: exit code 2, one line on stderr starting with
"error:", no traceback. All runs start in a module fixture, in this process (helpers.run_cli);
the last tests check that such a run prints and exits exactly as `python cli.py` does."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from helpers import REPO, CliRuns, assert_user_error, cli_env, gold_rows, load, run_cli, synth_env, write_jsonl

from mcqa.eval.scoring import parser_for
from mcqa.model import qwen3_tokenizer_dir
from mcqa.prompting import render_prompt, serialize_target
from mcqa.registry import get_task
from mcqa.schema import schema_file

BUILTIN = ("mmlu_pro", "mmlu_pro_answer", "notification", "recipe_mpr")
FOLDERS = ["Work", "Personal", "Promotions", "Alerts"]
WIDE = cli_env(COLUMNS="250")


def partial_output(i: int, target: dict) -> str:
    """A deterministic mix: unparseable, wrong folder, wrong priority, fenced/prose-wrapped gold."""
    if i % 5 == 0:
        return "I am not sure about this one."
    if i % 4 == 0:
        return json.dumps(
            {"folder": FOLDERS[(FOLDERS.index(target["folder"]) + 1) % 4], "priority": target["priority"]}
        )
    if i % 7 == 0:
        return json.dumps({"folder": target["folder"], "priority": 1 if target["priority"] != 1 else 3})
    if i % 3 == 0:
        return f"```json\n{json.dumps(target)}\n```"
    return f"Answer: {json.dumps(target)}"


def with_probs(i: int, target: dict) -> dict:
    """A prediction with probabilities: folder right 2 times in 3 at confidences 0.4-0.85;
    priority probabilities on even examples only."""
    folder = target["folder"] if i % 3 else FOLDERS[(FOLDERS.index(target["folder"]) + 1) % 4]
    c = 0.4 + 0.05 * (i * 7 % 10)
    rec = {
        "id": None,
        "output": json.dumps({"folder": folder, "priority": target["priority"]}),
        "probs": {"folder": {f: c if f == folder else (1 - c) / 3 for f in FOLDERS}},
    }
    if i % 2 == 0:
        rec["probs"]["priority"] = {str(p): 0.7 if p == target["priority"] else 0.15 for p in (1, 2, 3)}
    return rec


def ece_and_brier(probs: list[dict], gold: list, labels: list[str]) -> tuple[float, float]:
    """By hand: 15 equal-width bins on the top probability; Brier summed over the labels."""
    bins: dict[int, list[tuple[float, bool]]] = {}
    brier = 0.0
    for p, g in zip(probs, gold):
        top = max(labels, key=lambda lab: p.get(lab, 0.0))
        bins.setdefault(min(int(p[top] * 15), 14), []).append((p[top], top == str(g)))
        brier += sum((p.get(lab, 0.0) - (lab == str(g))) ** 2 for lab in labels)
    n = len(probs)
    ece = sum(abs(np.mean([c for c, _ in b]) - np.mean([r for _, r in b])) * len(b) / n for b in bins.values())
    return ece, brier / n


USER_DATA = [
    {
        "id": "u1",
        "app": "Slack",
        "title": "Boss",
        "body": "Can you join the incident call now?",
        "folder": "Work",
        "priority": 3,
    },
    {"id": "u2", "app": "WhatsApp", "title": "Mom", "body": "Dinner on Sunday?", "folder": "Personal", "priority": 1},
    {"id": "u3", "app": "Shop", "title": "SALE", "body": "50% off today only", "folder": "Promotions", "priority": 1},
    {"id": "u4", "app": "Bank", "title": "Login", "body": "New sign-in from Berlin", "folder": "Alerts", "priority": 3},
    {
        "id": "u5",
        "app": "Jira",
        "title": "PROJ-12",
        "body": "You were assigned a ticket",
        "folder": "Work",
        "priority": 2,
    },
    {
        "id": "u6",
        "app": "Gmail",
        "title": "Newsletter",
        "body": "This week in tech",
        "folder": "Promotions",
        "priority": 1,
    },
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
    test = load("notification", "test", "seed")
    gold = write_jsonl(d / "gold.jsonl", gold_rows("notification", "test", "seed"))
    partial = write_jsonl(
        d / "partial.jsonl", [{"id": e.id, "output": partial_output(i, e.target)} for i, e in enumerate(test)]
    )
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
    unlabeled = write_jsonl(
        d / "unlabeled.jsonl", [{k: v for k, v in r.items() if k not in ("folder", "priority")} for r in USER_DATA]
    )

    probs = write_jsonl(d / "probs.jsonl", [{**with_probs(i, e.target), "id": e.id} for i, e in enumerate(test)])
    # A copy of the code with one schema file missing and one stale, for `schema --write`.
    repo = d / "repo"
    for part in ("mcqa", "tasks", "schemas"):
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "cli.py", repo / "cli.py")
    (repo / "schemas" / "notification.schema.json").unlink()
    (repo / "schemas" / "mmlu_pro.schema.json").write_text("{}")

    # A tokenizer folder whose chat template differs from Qwen3's, for `show --tokenizer`.
    tok = d / "tok"
    shutil.copytree(qwen3_tokenizer_dir(), tok)
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config["chat_template"] = "CUSTOM TEMPLATE " + config["chat_template"]
    (tok / "tokenizer_config.json").write_text(json.dumps(config))

    score = ["score", "--task", "notification", "--resamples", "50"]
    runs = CliRuns(d)
    # Runs that need a model, one after another: an empty model cache gets tiny-qwen3 installed,
    # verified and listed; then the test run's cache (conftest), where tiny-qwen3 is built on first use.
    # One intra-op thread each: several model runs at once on a busy machine otherwise spin
    # OpenMP threads against each other.
    models = cli_env(MCQA_CACHE=str(d / "cache"), OMP_NUM_THREADS="1")
    runs.chain(
        [
            ("models_install", ["models", "install", "tiny-qwen3"]),
            ("models_verify", ["models", "verify", "tiny-qwen3"]),
            ("models_list", ["models", "list"]),
        ],
        models | {"COLUMNS": "250"},
    )
    synth_score = ["score", "--task", "synth", "--split", "test", "--resamples", "50"]  # 80 short examples
    runs.chain(
        [
            (
                "predict_data",
                [
                    "predict",
                    "--task",
                    "notification",
                    "--data",
                    unlabeled,
                    "--model",
                    "tiny-qwen3",
                    "--readout",
                    "constrained",
                    "--out",
                    d / "pred_data.jsonl",
                ],
            ),
            ("score_rank", [*synth_score, "--model", "tiny-qwen3", "--readout", "rank", "--out", d / "out_rank"]),
            (
                "score_rank_uncalibrated",
                [
                    *synth_score,
                    "--model",
                    "tiny-qwen3",
                    "--readout",
                    "rank",
                    "--no-calibrate",
                    "--out",
                    d / "out_rank_nocal",
                ],
            ),
        ],
        synth_env(OMP_NUM_THREADS="1"),
    )
    runs.start("show_tokenizer", ["show", "--task", "notification", "-n", "1", "--tokenizer", tok], WIDE)
    runs.start("score_probs", [*score, "--split", "test", "--predictions", probs, "--out", d / "out_probs"])
    runs.start(
        "baseline", ["baseline", "--task", "notification", "--baseline", "majority", "--out", d / "majority.jsonl"]
    )
    runs.start("schema_write", ["schema", "--write"], cli=repo / "cli.py")
    # The slow ones first, so the error runs fill the gaps.
    runs.start("show", ["show", "--task", "notification", "--split", "train", "-n", "2"])
    runs.start("score_gold", [*score, "--split", "test", "--predictions", gold, "--out", d / "out_gold"])
    runs.start("score_partial", [*score, "--split", "test", "--predictions", partial, "--out", d / "out_partial"])
    runs.start(
        "score_subset", [*score, "--split", "test", "--predictions", first10, "--subset", "--out", d / "out_subset"]
    )
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
        "train_unknown_protocol": [
            "train",
            "--task",
            "notification",
            "--model",
            "tiny-qwen3",
            "--protocol",
            "cv9",
            f"output_dir={d / 'never'}",
        ],
        "baseline_unknown": ["baseline", "--task", "notification", "--baseline", "tfdif"],
        "schema_nothing": ["schema"],
        "predict_no_model": ["predict", "--task", "notification", "--data", unlabeled],
        "score_model_and_predictions": [*score, "--data", data, "--model", "tiny-qwen3", "--predictions", data_preds],
        "show_missing_tokenizer": ["show", "--task", "notification", "--tokenizer", d / "no-such-tokenizer"],
    }
    model_errors = {
        "models_install_unknown": ["models", "install", "tiny-qwen"],
        "models_verify_no_alias": ["models", "verify"],
        "models_verify_not_installed": ["models", "verify", "smollm2-135m"],
    }
    for name, args in model_errors.items():
        runs.start(name, args, models)
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
        ("baseline_unknown", ["tfdif", "did you mean 'tfidf'"]),
        ("schema_nothing", ["--task", "--write"]),
        ("predict_no_model", ["--model", "--adapter"]),
        ("score_model_and_predictions", ["--predictions", "--model"]),
        ("show_missing_tokenizer", ["no-such-tokenizer", "does not exist"]),
        ("models_install_unknown", ["tiny-qwen", "did you mean 'tiny-qwen3'"]),
        ("models_verify_no_alias", ["needs an alias"]),
        ("models_verify_not_installed", ["smollm2-135m", "mcqa models install smollm2-135m"]),
    ],
)
def test_user_errors_exit_2_with_one_line(cli, name, fragments):
    assert_user_error(cli[name], *fragments)


SAME_IN_A_PROCESS = {
    "listing": ["tasks"],
    "schema": ["schema", "--task", "notification"],
    "unknown_task": ["score", "--task", "notifcation"],
    "usage_error": ["score", "--task", "notification", "--frobnicate"],
    "missing_file": ["score", "--task", "notification", "--predictions", "nope.jsonl"],
    "help": ["tasks", "--help"],
}


@pytest.mark.parametrize("name", sorted(SAME_IN_A_PROCESS))
def test_a_run_in_the_test_process_prints_and_exits_as_a_new_process_does(name, tmp_path):
    """The suite's CLI runs happen in its own process; this pins that nothing (a warning, a
    terminal width, an exit code, a usage message) differs from `python cli.py`."""
    args = SAME_IN_A_PROCESS[name]
    inside = run_cli(args, tmp_path)
    fresh = run_cli(args, tmp_path, fresh=True)
    assert (inside.rc, inside.out, inside.err) == (fresh.rc, fresh.out, fresh.err)


def test_data_record_with_a_label_outside_the_label_set_names_its_line(cli):
    assert_user_error(cli["data_bad_label"], "data_bad_label.jsonl:2")


def test_unlabeled_data_file_is_one_line_error(cli):
    assert_user_error(cli["data_unlabeled"], "no gold label")


# --- probabilities in a predictions file -> calibration in metrics.json and report.md ------------


def test_probs_in_a_predictions_file_give_ece_and_brier_in_metrics_and_report(cli):
    r = cli["score_probs"]
    assert r.rc == 0, r.err
    out = cli.cwd / "out_probs"
    m = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    test = load("notification", "test", "seed")
    rows = [with_probs(i, e.target) for i, e in enumerate(test)]
    for f, labels in (("folder", FOLDERS), ("priority", ["1", "2", "3"])):
        have = [(row["probs"][f], e.target[f]) for row, e in zip(rows, test) if f in row["probs"]]
        ece, brier = ece_and_brier([p for p, _ in have], [g for _, g in have], labels)
        c = m["fields"][f]["calibration"]
        assert c["n"] == len(have) == (240 if f == "folder" else 120)
        assert c["ece"] == pytest.approx(ece, abs=1e-9) and c["brier"] == pytest.approx(brier, abs=1e-9)
        assert f"ECE {ece:.3f}, Brier {brier:.3f} over {len(have)} examples with probabilities" in report
    assert m["fields"]["folder"]["calibration"]["ece"] > 0.05  # a case where calibration is off


# --- the other commands' success paths ----------------------------------------------------------


def test_baseline_writes_predictions_the_scorer_reads(cli):
    r = cli["baseline"]
    assert r.rc == 0, r.err
    rows = [json.loads(x) for x in (cli.cwd / "majority.jsonl").read_text().splitlines()]
    test, train = load("notification", "test", "seed"), load("notification", "train", "seed")
    assert [row["id"] for row in rows] == [e.id for e in test]
    mode = {f: Counter(e.target[f] for e in train).most_common(1)[0][0] for f in ("folder", "priority")}
    assert all(json.loads(row["output"]) == mode for row in rows)
    info = json.loads((cli.cwd / "majority.json").read_text())
    assert info["protocol"] == "seed"


def test_models_install_verify_and_list_in_an_empty_cache(cli):
    installed, verified, listed = (cli[n] for n in ("models_install", "models_verify", "models_list"))
    for r in (installed, verified, listed):
        assert r.rc == 0, r.err
    assert (cli.cwd / "cache" / "models" / "tiny-qwen3" / "model.safetensors").is_file()
    assert "installed tiny-qwen3" in installed.err + installed.out
    assert "'eos': '<|im_end|>'" in verified.out + verified.err
    row = {
        alias: next(line for line in listed.out.splitlines() if f" {alias} " in line)
        for alias in ("tiny-qwen3", "smollm2-135m")
    }
    assert "│ yes " in row["tiny-qwen3"]
    assert "│ no " in row["smollm2-135m"]


def test_show_renders_with_the_named_tokenizers_template(cli):
    from transformers import AutoTokenizer

    r = cli["show_tokenizer"]
    assert r.rc == 0, r.err
    e = load("notification", "train", "seed")[0]
    prompt = render_prompt(AutoTokenizer.from_pretrained(cli.cwd / "tok"), get_task("notification").messages(e))
    assert prompt.startswith("CUSTOM TEMPLATE") and prompt in r.out


def test_predict_on_unlabeled_rows_of_a_users_file(cli):
    r = cli["predict_data"]
    assert r.rc == 0, r.err
    rows = [json.loads(x) for x in (cli.cwd / "pred_data.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [u["id"] for u in USER_DATA]
    parser = parser_for(get_task("notification"))
    assert all(parser.parse(row["output"]).status == "ok" for row in rows)  # constrained: always valid


def test_score_a_model_with_the_rank_readout_calibrated_or_not(cli):
    cal, raw = cli["score_rank"], cli["score_rank_uncalibrated"]
    assert cal.rc == 0, cal.err
    assert raw.rc == 0, raw.err
    m_cal = json.loads((cli.cwd / "out_rank" / "metrics.json").read_text())
    m_raw = json.loads((cli.cwd / "out_rank_nocal" / "metrics.json").read_text())
    assert m_cal["run"]["readout"] == m_raw["run"]["readout"] == "rank" and m_cal["n"] == 80
    fit = m_cal["calibration_fit"]
    assert fit["n"] == 80 and fit["temperature"] > 0  # fitted on synth's validation split
    assert "calibration_fit" not in m_raw
    recs = {
        name: [json.loads(x) for x in (cli.cwd / name / "predictions.jsonl").read_text().splitlines()]
        for name in ("out_rank", "out_rank_nocal")
    }
    # The temperature changes the probabilities, never the answers.
    assert [x["raw"] for x in recs["out_rank"]] == [x["raw"] for x in recs["out_rank_nocal"]]
    assert m_cal["joint"]["accuracy"] == m_raw["joint"]["accuracy"]
    assert m_cal["fields"]["label"]["calibration"]["n"] == m_raw["fields"]["label"]["calibration"]["n"] == 80
    if fit["temperature"] != pytest.approx(1.0):
        assert recs["out_rank"][0]["probs"] != recs["out_rank_nocal"][0]["probs"]


def test_schema_write_regenerates_missing_and_stale_schema_files(cli):
    r = cli["schema_write"]
    assert r.rc == 0, r.err
    written = cli.cwd / "repo" / "schemas"
    for name in BUILTIN:
        assert json.loads((written / f"{name}.schema.json").read_text()) == json.loads(
            schema_file(get_task(name)).read_text()
        ), name
        assert f"{name}.schema.json" in r.out + r.err


def test_train_names_the_settings_it_took_from_the_task_and_not_the_users(tmp_path):
    """notification declares train_defaults (mode, learning_rate, epochs); `mcqa train` names
    the ones the user left to it, and none the user set in a file or on the command line."""
    from mcqa.train.config import defaults_note as note

    assert note("notification", None, {}) == (
        "task 'notification' defaults: mode=head learning_rate=0.001 epochs=2 "
        "(a config file or key=value overrides win)"
    )
    cfg = tmp_path / "run.yaml"
    cfg.write_text("task: notification\nmode: generate\n")
    assert (
        note("notification", cfg, {"epochs": 3})
        == "task 'notification' defaults: learning_rate=0.001 (a config file or key=value overrides win)"
    )
    assert note("notification", None, {"mode": "head", "learning_rate": 1e-4, "epochs": 1}) is None
    assert note("recipe_mpr", None, {}) is None  # no train_defaults


def test_predict_on_labeled_examples_also_scores_them_into_a_run_folder(tmp_path):
    """`mcqa predict` on a split (labeled) writes the predictions and a scored run folder named
    like them, report.html included; that folder is checked before the model runs."""
    cmd = [
        "predict",
        "--task",
        "synth",
        "--split",
        "test",
        "--model",
        "tiny-qwen3",
        "--readout",
        "constrained",
        "--limit",
        "8",
    ]
    done = run_cli(cmd + ["--out", tmp_path / "p.jsonl"], tmp_path, synth_env(OMP_NUM_THREADS="1"))
    assert done.rc == 0, done.err[-2000:]
    metrics = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert metrics["n"] == 8 and metrics["run"]["predictions"] == str(tmp_path / "p.jsonl")
    assert (tmp_path / "p" / "report.html").is_file() and (tmp_path / "p.jsonl").is_file()
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "x").write_text("")
    refused = run_cli(cmd + ["--out", tmp_path / "q.jsonl"], tmp_path, synth_env())
    assert_user_error(refused, "folder is not empty")
    assert "scoring" not in refused.err and not (tmp_path / "q.jsonl").exists()
