"""Bad input, as a hostile or a careless user would give it, for every command: each case must
end in exit code 2 with one line on stderr (what, where, what to do), no traceback, and
nothing written outside the folder the user named (for an error: nothing written at all),
or, for a model output, in the right parse status. Every input is generated here, in tmp_path.

The commands run in-process through cli.main (imports are paid once, so the whole corpus
takes seconds); the few cases that need a process of their own (a file-size limit) run cli.py
in a subprocess. Each test's docstring names the bad input it gives.

What is covered, section by section: a received run folder or run.json cannot turn on remote
code or name a path outside --out; --out must be new; training settings are checked before a
run folder is claimed; damaged run folders, checkpoints, models and manifests are one line
naming the file; bytes and JSON the decoder refuses (not UTF-8, gzip, deep nesting, huge
integers, lone surrogates, NaN); prediction fields checked where the file enters; --data
records held to the output contract; counts out of range and OS errors on paths; errors found
before output and before the model loads; JSON extraction in linear time; leftover temporary
files cleaned up.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    CLI,
    SYNTH,
    Result,
    assert_user_error,
    cli_env,
    cli_module,
    fake_run,
    gold_rows,
    jsonl,
    load,
    tree,
    write_jsonl,
)

from mcqa.registry import get_task

# ---------------------------------------------------------------- helpers


@pytest.fixture
def run(capsys, monkeypatch, tmp_path):
    """Run the CLI in-process in tmp_path; return its Result."""
    monkeypatch.chdir(tmp_path)

    def go(*args) -> Result:
        capsys.readouterr()
        try:
            rc = cli_module().main([str(a) for a in args])
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


def refused(r: Result, root: Path, before: set[str], *fragments: str) -> str:
    """A user error, and nothing written under root."""
    line = assert_user_error(r, *fragments)
    assert tree(root) == before, f"files written: {tree(root) - before}"
    return line


SCORE = ["score", "--task", "notification", "--split", "test", "--resamples", "20"]


# ---------------------------------------------------------------- remote code, paths from run folders, --out


@pytest.mark.parametrize(
    "command",
    [
        ["score", "--task", "notification", "--split", "test"],
        ["predict", "--task", "notification", "--split", "test"],
    ],
)
def test_a_run_folder_cannot_turn_on_remote_code(run, tmp_path, command):
    """trust_remote_code comes only from the user's command line; a run asking for it is
    refused, naming the flag, before any model is loaded."""
    fake_run(tmp_path / "run", config={"trust_remote_code": True})
    before = tree(tmp_path)
    refused(
        run(*command, "--adapter", "run", "--out", "o.jsonl" if command[0] == "predict" else "o"),
        tmp_path,
        before,
        "trust_remote_code",
        "--trust-remote-code",
    )


def test_resume_of_a_received_run_cannot_turn_on_remote_code(run, tmp_path):
    """`train --resume` reads config.yaml from the folder: the same rule."""
    folder = fake_run(tmp_path / "run", config={"trust_remote_code": True})
    (folder / "run.json").unlink()
    before = tree(tmp_path)
    refused(run("train", "--resume", "run"), tmp_path, before, "--trust-remote-code")


@pytest.mark.parametrize(
    ("summary", "fragment"),
    [
        ({"mode": "../../X"}, "mode"),
        ({"task": "../../x"}, "unknown task"),
        ({"protocol": "../../seed"}, "protocol"),
        ({"model": ["x"]}, "model"),
    ],
)
def test_values_in_run_json_are_validated_before_use(run, tmp_path, summary, fragment):
    """Names read from run.json are checked against the registries before anything uses them."""
    run_dir = fake_run(tmp_path / "run")
    s = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**s, **summary}))
    (run_dir / "config.yaml").unlink()
    before = tree(tmp_path)
    refused(
        run("compare", "--task", "notification", "--runs", "run", "--baselines", "", "--out", "out"),
        tmp_path,
        before,
        "run.json",
        fragment,
    )


def test_a_hostile_model_name_never_builds_a_path_outside_out(run, tmp_path, synth):
    """A model name of ../../evil in pooled fold runs: every file compare writes stays in --out."""
    from mcqa.eval.scoring import make_records

    runs = []
    for k in range(3):
        test = load("synth", "test", f"cv3-{k}")
        records = make_records(synth, list(test), {r["id"]: r for r in gold_rows("synth", "test", f"cv3-{k}")})
        runs.append(
            fake_run(
                tmp_path / f"fold{k}",
                config={"task": "synth", "protocol": f"cv3-{k}", "model": "../../evil", "mode": "head"},
                records=records,
            )
        )
    (tmp_path / "deep" / "er").mkdir(parents=True)
    before = tree(tmp_path)
    r = run(
        "compare", "--task", "synth", "--protocol", "cv3", "--baselines", "", "--runs", *runs, "--out", "deep/er/out"
    )
    assert r.rc == 0, r.err
    written = tree(tmp_path) - before
    assert written and all(w.startswith("deep/er/out") for w in written), written


@pytest.mark.parametrize("out", ["/dev/null", "afile", "scored"])
def test_score_out_must_be_a_new_or_empty_folder(run, tmp_path, out):
    """--out naming a device or a file is refused, and an existing scoring run is not overwritten."""
    preds = write_jsonl(tmp_path / "p.jsonl", gold_rows())
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "scored").mkdir()
    (tmp_path / "scored" / "metrics.json").write_text("{}")
    before = tree(tmp_path)
    refused(run(*SCORE, "--predictions", preds, "--out", out), tmp_path, before, out)
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("out", ["/dev/null", "/dev/full", "folder"])
def test_predict_out_must_be_a_regular_file(run, tmp_path, out):
    """predict --out (a file) naming a device or a folder is refused before any model loads."""
    (tmp_path / "folder").mkdir()
    before = tree(tmp_path)
    refused(
        run("predict", "--task", "notification", "--split", "test", "--model", "tiny-qwen3", "--out", out),
        tmp_path,
        before,
        out,
    )


# ---------------------------------------------------------------- training settings, the run folder

TRAIN = ["train", "--task", "notification", "--model", "tiny-qwen3"]


def test_settings_transformers_would_check_late_are_all_refused_at_once(run, tmp_path):
    """An unknown scheduler, a negative seed, infinite epochs: refused together, before
    anything loads, and no run folder is left behind."""
    before = tree(tmp_path)
    line = refused(
        run(*TRAIN, "lr_scheduler=cosin", "seed=-1", "epochs=.inf", "output_dir=run"),
        tmp_path,
        before,
        "3 problems",
        "lr_scheduler",
        "seed",
        "epochs",
    )
    assert "cosine" in line


def test_best_metric_and_lora_targets_are_checked_against_the_task_and_model(run, tmp_path):
    """A best_metric the scorer never reports (which failed after a whole epoch) and LoRA
    target modules the model lacks, checked from the task and the model's weight names."""
    before = tree(tmp_path)
    refused(
        run(*TRAIN, "best_metric=folder_acc", "lora.target_modules=[q_proj,qkv_proj]", "output_dir=run"),
        tmp_path,
        before,
        "2 problems",
        "did you mean 'folder_accuracy'",
        "'qkv_proj'",
    )


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_the_next(tmp_path):
    """A folder holding only what a run writes before its first checkpoint is started
    over; one with a checkpoint says how to resume; anything else is refused."""
    from mcqa.errors import McqaError
    from mcqa.train.config import load_config
    from mcqa.train.start import claim_run_dir, open_run

    started = tmp_path / "started"
    (started / "tokenizer").mkdir(parents=True)
    (started / "config.yaml").write_text("task: notification\n")
    config = load_config(None, {"task": "notification", "model": "tiny-qwen3", "output_dir": str(started)})
    assert open_run(config, None)[0] == started and (started / "config.yaml").exists()  # checked, not yet touched
    claim_run_dir(started, fresh=True)
    assert not (started / "config.yaml").exists()
    ckpt = tmp_path / "cut" / "checkpoints" / "checkpoint-5"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    with pytest.raises(McqaError, match="--resume"):
        open_run(config.model_copy(update={"output_dir": str(tmp_path / "cut")}), None)


def test_a_second_train_into_a_locked_folder_is_refused(run, tmp_path):
    """While one `mcqa train` holds a run folder, another into it is refused."""
    import fcntl

    from mcqa.io import unique_name
    from mcqa.train.folder import LOCK_FILE

    (tmp_path / "run").mkdir()
    fd = os.open(tmp_path / "run" / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the first command holds it
    try:
        before = tree(tmp_path)
        refused(run(*TRAIN, "output_dir=run"), tmp_path, before, "another `mcqa train`")
    finally:
        os.close(fd)
    assert len({unique_name("synth-head") for _ in range(50)}) == 50  # folds launched in one second


# ---------------------------------------------------------------- corrupt files


def adapter_run(tmp_path: Path) -> Path:
    folder = fake_run(tmp_path / "run")
    (folder / "tokenizer").mkdir()
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return folder


def _truncated_safetensors(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:-100])


def _unsafe_pickle(path: Path) -> None:
    import torch

    torch.save({"state": Path("x")}, path)  # an object that is not a tensor: weights_only refuses it


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (
            lambda f: _truncated_safetensors(f / "adapter" / "adapter_model.safetensors"),
            "adapter_model.safetensors: truncated",
        ),
        (lambda f: (f / "adapter" / "adapter_config.json").write_text("{peft"), "adapter_config.json"),
        (lambda f: (f / "tokenizer").rmdir(), "tokenizer"),
        (lambda f: (f / "run.json").write_text(""), "run.json"),
        (lambda f: _unsafe_pickle(f / "adapter" / "adapter_model.bin"), "adapter_model.bin: refused"),
    ],
)
def test_a_damaged_run_folder_is_one_line_naming_the_file(run, tmp_path, damage, fragment):
    """A truncated adapter, malformed adapter_config.json, no tokenizer/, an empty
    run.json, a pickle weights_only refuses: one line naming the file, before the model loads."""
    damage(adapter_run(tmp_path))
    before = tree(tmp_path)
    refused(run(*SCORE, "--adapter", "run", "--out", "o"), tmp_path, before, fragment)


@pytest.mark.parametrize("content", ["", "[1, 2", '"just a string"'])
def test_compare_refuses_an_empty_or_corrupt_run_json(run, tmp_path, content):
    folder = fake_run(tmp_path / "run")
    (folder / "run.json").write_text(content)
    before = tree(tmp_path)
    refused(
        run("compare", "--task", "notification", "--runs", "run", "--baselines", "", "--out", "o"),
        tmp_path,
        before,
        "run.json",
    )


def test_a_truncated_base_model_is_one_line(run, tmp_path):
    import shutil

    from mcqa.model import resolve_model

    shutil.copytree(resolve_model("tiny-qwen3"), tmp_path / "model")  # installed into the test run's cache on first use
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    before = tree(tmp_path)
    refused(
        run(*SCORE, "--model", "model", "--readout", "rank", "--out", "o"), tmp_path, before, "safetensors", "truncated"
    )


def test_a_corrupt_model_manifest_is_one_line(run, tmp_path, monkeypatch):
    import shutil

    from mcqa.model import MANIFEST, resolve_model

    shutil.copytree(resolve_model("tiny-qwen3"), tmp_path / "cache" / "models" / "tiny-qwen3")
    (tmp_path / "cache" / "models" / "tiny-qwen3" / MANIFEST).write_text('{"alias": ')
    monkeypatch.setenv("MCQA_CACHE", str(tmp_path / "cache"))
    before = tree(tmp_path)
    refused(run("models", "verify", "tiny-qwen3"), tmp_path, before, MANIFEST)


def test_resume_falls_back_past_a_damaged_checkpoint_and_says_so(tmp_path, capsys):
    """A truncated optimizer.pt, a truncated trainer_state.json, an unsafe pickle:
    each newer checkpoint is set aside with a line naming its file; the newest whole one is used."""
    import torch

    from mcqa.train.runs import complete_checkpoint

    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        c = root / f"checkpoint-{step}"
        c.mkdir(parents=True)
        (c / "trainer_state.json").write_text('{"global_step": %d}' % step)
        torch.save({"state": {}, "param_groups": []}, c / "optimizer.pt")
        _unsafe_pickle(c / "training_args.bin")  # as Trainer writes it: a pickle it never loads back
    opt = root / "checkpoint-2" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:-200])
    (root / "checkpoint-3" / "trainer_state.json").write_text('{"global_st')
    _unsafe_pickle(root / "checkpoint-4" / "optimizer.pt")
    assert complete_checkpoint(root) == str(root / "checkpoint-1")
    err = capsys.readouterr()
    said = err.out + err.err
    for name in ("checkpoint-4/optimizer.pt", "checkpoint-3/trainer_state.json", "checkpoint-2/optimizer.pt"):
        assert name in said, said
    assert sorted(p.name for p in root.iterdir()) == [
        "checkpoint-1",
        "damaged-checkpoint-2",
        "damaged-checkpoint-3",
        "damaged-checkpoint-4",
    ]


def test_the_scheduler_names_are_transformers_own():
    from transformers.trainer_utils import SchedulerType

    from mcqa.train.config import SCHEDULERS

    assert set(SCHEDULERS) == {s.value for s in SchedulerType}


# ---------------------------------------------------------------- bytes and JSON the decoder refuses

GOLD_LINE = json.dumps({"id": "x", "output": "{}"})


def _bad_file(tmp_path: Path, kind: str) -> Path:
    f = tmp_path / "in.jsonl"
    rows = jsonl(gold_rows())
    data = {
        "latin1": rows.encode() + '{"id": "é", "output": "x"}\n'.encode("latin-1"),
        "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "truncated_gzip": gzip.compress(rows.encode())[:-30],
        "deep": ("[" * 10_000 + "]" * 10_000 + "\n").encode(),
        "huge_int": ('{"id": "x", "output": "a", "n": ' + "9" * 5000 + "}\n").encode(),
        "nan": rows.encode() + b'{"id": "y", "output": "a", "probs": {"folder": {"Work": NaN}}}\n',
        "surrogate": rows.encode() + b'{"id": "z", "output": "\\ud800"}\n',
        "empty": b"\n\n",
    }[kind]
    f.write_bytes(data)
    return f


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("latin1", "in.jsonl:241: not UTF-8"),
        ("png", "binary file"),
        ("truncated_gzip", "gzip"),
        ("deep", "in.jsonl:1: JSON nested too deeply"),
        ("huge_int", "in.jsonl:1: not valid JSON"),
        ("nan", "NaN is not valid JSON"),
        ("surrogate", "lone surrogate"),
        ("empty", "no predictions"),  # no progress bar before the error
    ],
)
def test_predictions_files_the_decoder_refuses(run, tmp_path, kind, fragment):
    """Bytes that are not UTF-8 text, a damaged gzip file, an empty --subset file, JSON
    Python's parser refuses without a JSONDecodeError, a lone surrogate, NaN."""
    f = _bad_file(tmp_path, kind)
    before = tree(tmp_path)
    r = run(*SCORE, "--predictions", f, "--subset", "--out", "o")
    refused(r, tmp_path, before, fragment)
    assert r.out == ""


def test_gzip_predictions_are_read(run, tmp_path):
    f = tmp_path / "p.jsonl.gz"
    f.write_bytes(gzip.compress(jsonl(gold_rows()).encode()))
    r = run(*SCORE, "--predictions", f, "--out", "o")
    assert r.rc == 0, r.err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["joint"]["accuracy"] == 1.0


@pytest.mark.parametrize("kind", ["latin1", "surrogate"])
def test_data_files_the_decoder_refuses(run, tmp_path, kind):
    """The same reader for --data: a Latin-1 line, a lone surrogate in an input."""
    rows = [{"id": "u1", "app": "Slack", "title": "Boss", "body": "call now", "folder": "Work", "priority": 3}]
    f = write_jsonl(tmp_path / "data.jsonl", rows)
    extra = 'body": "caf\xe9"'.encode("latin-1") if kind == "latin1" else b'body": "\\udc80"'
    f.write_bytes(
        f.read_bytes() + b'{"id": "u2", "app": "a", "title": "t", "folder": "Work", "priority": 1, "' + extra + b"}\n"
    )
    before = tree(tmp_path)
    refused(
        run("score", "--task", "notification", "--data", f, "--predictions", f, "--out", "o"),
        tmp_path,
        before,
        "data.jsonl:2",
    )


def test_a_config_file_that_is_not_utf8(run, tmp_path):
    (tmp_path / "run.yaml").write_bytes("task: notification\n# caf\xe9\n".encode("latin-1"))
    before = tree(tmp_path)
    refused(run("train", "--config", "run.yaml"), tmp_path, before, "run.yaml:2", "UTF-8")


def test_deep_or_huge_model_outputs_are_a_parse_status_not_a_crash(run, tmp_path):
    """An output nested 1,000+ levels deep (which crashed jsonschema) is one example's
    schema_error; the other examples are scored."""
    rows = gold_rows()
    rows[0]["output"] = '{"folder": ' * 900 + '"Work"' + "}" * 900  # decodes; the validators would overflow
    rows[1]["output"] = '{"folder": "Work", "priority": ' + "9" * 5000 + "}"
    rows[2]["output"] = '{"folder": ' * 20_000 + '"Work"' + "}" * 20_000  # the decoder itself gives up
    preds = write_jsonl(tmp_path / "p.jsonl", rows)
    r = run(*SCORE, "--predictions", preds, "--out", "o")
    assert r.rc == 0, r.err
    records = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert records[0]["status"] == "schema_error" and "levels deep" in records[0]["error"]
    assert records[1]["status"] == records[2]["status"] == "invalid_json"
    assert all(x["status"] == "ok" for x in records[3:])


# ---------------------------------------------------------------- prediction fields


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"output": 3}, "'output' must be the model's raw text"),
        ({"output": {"folder": "Work", "priority": 1}}, "'output' must be the model's raw text"),
        ({"truncated": "false"}, "'truncated' must be true or false"),
        ({"truncated": 7}, "'truncated' must be true or false"),
        ({"probs": {"folder": {"Work": "0.9", "Alerts": 0.1}}}, "finite number"),
        ({"probs": {"folder": {"Work": None, "Alerts": 1}}}, "finite number"),
        ({"probs": {"folder": {"Work": [1], "Alerts": 0}}}, "finite number"),
        ({"probs": [0.5, 0.5]}, "'probs' must map each field"),
        ({"probs": {"folder": [0.5, 0.5]}}, "probs['folder'] must map each label"),
        ({"probs": {"folder": {"Work": -0.5, "Alerts": 1.5}}}, "finite number >= 0"),
        ({"probs": {"folder": {"Work": 5}}}, "sums to 5"),
        ({"probs": {"folder": {"Family": 1.0}}}, "label 'Family'"),
        ({"probs": {"urgency": {"high": 1.0}}}, "'urgency'"),
    ],
)
def test_prediction_fields_are_validated_where_the_file_enters(run, tmp_path, change, fragment):
    """Output that is not text, truncated that is not a boolean, probabilities
    that are not a distribution over the task's labels: refused naming the line."""
    rows = gold_rows()
    rows[4].update(change)
    preds = write_jsonl(tmp_path / "p.jsonl", rows)
    before = tree(tmp_path)
    refused(run(*SCORE, "--predictions", preds, "--out", "o"), tmp_path, before, "p.jsonl:5", fragment)


def test_probabilities_close_to_one_are_renormalised_and_metrics_are_strict_json(run, tmp_path):
    """A sum within the tolerance is renormalised; metrics.json is strict JSON (no NaN)."""
    from mcqa.io import dumps

    rows = gold_rows()
    for r in rows:
        folder = json.loads(r["output"])["folder"]
        r["probs"] = {"folder": {folder: 0.999, "Alerts" if folder != "Alerts" else "Work": 0.004}}
    r = run(*SCORE, "--predictions", write_jsonl(tmp_path / "p.jsonl", rows), "--out", "o")
    assert r.rc == 0, r.err
    text = (tmp_path / "o" / "metrics.json").read_text()
    cal = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))["fields"]["folder"][
        "calibration"
    ]
    assert 0 <= cal["ece"] <= 1 and 0 <= cal["brier"] <= 2
    assert dumps({"x": float("nan"), "y": [float("inf")]}) == '{"x": null, "y": [null]}'


# ---------------------------------------------------------------- records in --data


@pytest.mark.parametrize("query_type", [["Specific"], "Specific", {"Specific": "yes"}])
def test_recipe_mpr_query_type_of_the_wrong_shape(run, tmp_path, query_type):
    """query_type as a list or a string crashed from_record; now the line is named."""
    options = {f"o{i}": f"recipe {i}" for i in range(5)}
    f = write_jsonl(
        tmp_path / "d.jsonl",
        [{"id": "r1", "query": "soup", "options": options, "answer": "o0", "query_type": query_type}],
    )
    before = tree(tmp_path)
    refused(
        run("score", "--task", "recipe_mpr", "--data", f, "--predictions", f, "--out", "o"),
        tmp_path,
        before,
        "d.jsonl:1",
        "query_type",
    )


@pytest.mark.parametrize("priority", ["3", 2.0, True])
def test_gold_labels_are_held_to_the_output_contract(run, tmp_path, priority):
    """ "3", 2.0 and true were coerced to labels in --data; they are refused as in outputs."""
    f = write_jsonl(
        tmp_path / "d.jsonl",
        [{"id": "u1", "app": "a", "title": "t", "body": "b", "folder": "Work", "priority": priority}],
    )
    before = tree(tmp_path)
    refused(
        run("score", "--task", "notification", "--data", f, "--predictions", f, "--out", "o"),
        tmp_path,
        before,
        "d.jsonl:1",
        "priority",
    )


# ---------------------------------------------------------------- flags and paths


@pytest.mark.parametrize(
    "args", [[*SCORE[:-1], "0"], [*SCORE[:-1], "-5"], ["show", "--task", "notification", "-n", "-1"]]
)
def test_counts_out_of_range(run, tmp_path, args):
    """--resamples 0 or negative, show -n -1 (which printed all but one example)."""
    before = tree(tmp_path)
    refused(
        run(*args, "--predictions", "p.jsonl") if args[0] == "score" else run(*args),
        tmp_path,
        before,
        "must be at least",
    )


@pytest.mark.parametrize("case", ["folder_as_file", "parent_is_a_file", "unreadable"])
def test_os_errors_on_paths(run, tmp_path, case):
    """A folder given as the predictions file, an --out inside a file, an unreadable file."""
    preds = write_jsonl(tmp_path / "p.jsonl", gold_rows())
    (tmp_path / "dir.jsonl").mkdir()
    (tmp_path / "afile").write_text("x")
    args = {
        "folder_as_file": ["--predictions", "dir.jsonl", "--out", "o"],
        "parent_is_a_file": ["--predictions", preds, "--out", "afile/o"],
        "unreadable": ["--predictions", preds, "--out", "o"],
    }[case]
    if case == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        preds.chmod(0)
    before = tree(tmp_path)
    refused(run(*SCORE, *args), tmp_path, before)


def test_a_read_only_output_folder(run, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    preds = write_jsonl(tmp_path / "p.jsonl", gold_rows())
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(stat.S_IRUSR | stat.S_IXUSR)
    before = tree(tmp_path)
    refused(run(*SCORE, "--predictions", preds, "--out", "ro/o"), tmp_path, before, "permission denied")


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path):
    """A file-size limit (ulimit -f) stands in for a full disk: the write fails with one
    line, and neither a half-written file nor a temporary one is left."""
    import resource

    preds = write_jsonl(tmp_path / "p.jsonl", gold_rows())
    limit = 64 * 1024
    p = subprocess.run(
        [sys.executable, str(CLI), *SCORE, "--predictions", str(preds), "--out", "o"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    # the progress bar of the work done before the write may precede the error line
    last = p.stderr.strip().splitlines()[-1]
    assert_user_error(Result(p.returncode, p.stdout, last), "could not write", "predictions.jsonl")
    assert p.stderr.count("error:") == 1 and "Traceback" not in p.stderr
    assert not any(f.stat().st_size >= limit for f in (tmp_path / "o").rglob("*"))
    assert not list((tmp_path / "o").glob(".*.tmp"))


# ---------------------------------------------------------------- errors before output and before loading


def test_wrong_task_or_readout_is_refused_before_the_model_loads(run, tmp_path, monkeypatch):
    """A wrong-task adapter, a wrong base model and an unknown --readout are read from
    config.yaml and the registries, before any weights load."""
    import mcqa.train.runs

    monkeypatch.setattr(mcqa.train.runs, "load_causal_lm", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr(mcqa.train.runs, "get_mode", lambda *a, **k: pytest.fail("the model was built"))
    adapter_run(tmp_path)
    before = tree(tmp_path)
    refused(
        run("score", "--task", "recipe_mpr", "--split", "test", "--adapter", "run", "--out", "o"),
        tmp_path,
        before,
        "trained on task 'notification'",
    )
    refused(run(*SCORE, "--adapter", "run", "--model", "other", "--out", "o"), tmp_path, before, "drop --model")
    refused(run(*SCORE, "--adapter", "run", "--readout", "rnk", "--out", "o"), tmp_path, before, "did you mean 'rank'")


def test_an_unfinished_run_is_advised_resume_only_when_it_can_resume(run, tmp_path):
    fake_run(tmp_path / "started")
    (tmp_path / "started" / "run.json").unlink()
    (tmp_path / "empty").mkdir()
    before = tree(tmp_path)
    refused(run(*SCORE, "--adapter", "started", "--out", "o"), tmp_path, before, "--resume started")
    line = refused(run(*SCORE, "--adapter", "empty", "--out", "o"), tmp_path, before, "not a training run folder")
    assert "--resume" not in line


# ---------------------------------------------------------------- parsing time, leftovers


def test_json_extraction_is_linear_and_bounded():
    """1 MB of '{' took 185 s (quadratic); now well under a second, and the answer after
    junk is still found."""
    import time

    from mcqa.eval.parsing import OutputParser

    parser = OutputParser(get_task("notification").output)
    started = time.perf_counter()
    for raw in ["{" * 1_000_000, '{"{"' * 250_000, "{ " * 500_000]:
        assert parser.parse(raw).status == "invalid_json"
    assert time.perf_counter() - started < 5
    hedged = "{oops} " * 10 + '{"folder": "Work", "priority": 2}'
    assert parser.parse(hedged).status == "ok"


def test_leftover_temporary_files_are_cleaned_up(tmp_path):
    """A hidden .tmp file left by a killed write is removed by the next write there."""
    import time

    from mcqa.io import STALE_TMP_S, write_json

    stale, fresh = tmp_path / ".metrics.json.abc.tmp", tmp_path / ".report.md.def.tmp"
    stale.write_text("half")
    fresh.write_text("being written")
    old = time.time() - STALE_TMP_S - 60
    os.utime(stale, (old, old))
    write_json(tmp_path / "metrics.json", {"ok": 1})
    assert not stale.exists() and fresh.exists()  # a recent one may be another process's write
