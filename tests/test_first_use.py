"""What a first-time user meets: `mcqa score --task T` as the usage line writes it (the test
split, the newest finished run), run folders found on disk, damaged ones said in one line."""

from __future__ import annotations

import json

import pytest
from helpers import CliRuns, assert_user_error, fake_run, gold_rows, load, synth_env, write_jsonl

from mcqa.registry import get_task
from mcqa.train.index import find_runs, latest_run

pytestmark = pytest.mark.usefixtures("synth_tasks")  # conftest: the `synth` task is discoverable
SYNTH_RUN = {"task": "synth", "protocol": "default"}  # what helpers.fake_run's runs are of here


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    d = tmp_path_factory.mktemp("first")
    empty, with_runs = d / "empty", d / "with_runs"
    empty.mkdir()
    runs_root = with_runs / "runs" / "train"
    fake_run(runs_root / "synth-old", **SYNTH_RUN, finished_at=1_000_000)
    fake_run(runs_root / "synth-new", **SYNTH_RUN, finished_at=2_000_000)
    fake_run(runs_root / "synth-newest-damaged", **SYNTH_RUN, finished_at=3_000_000)
    (runs_root / "synth-newest-damaged" / "run.json").write_text("{not json")
    gold = write_jsonl(d / "gold.jsonl", gold_rows("synth", "test", "default"))
    r = CliRuns(d)
    env = synth_env()
    r.start(
        "no_split", ["score", "--task", "synth", "--predictions", gold, "--out", d / "out", "--resamples", "20"], env
    )
    r.start(
        "limit",
        [
            "score",
            "--task",
            "synth",
            "--model",
            "tiny-qwen3",
            "--readout",
            "constrained",
            "--limit",
            "5",
            "--out",
            d / "out_limit",
            "--resamples",
            "20",
        ],
        synth_env(OMP_NUM_THREADS="1"),
    )
    r.start("limit_with_predictions", ["score", "--task", "synth", "--predictions", gold, "--limit", "5"], env)
    r.cwd = empty
    r.start("nothing_to_score", ["score", "--task", "synth"], env)
    r.cwd = with_runs
    r.start("latest_run", ["score", "--task", "synth"], env)
    r.cwd = d
    # A real first run, in its own folder: train a small head run, list it, score it by name alone.
    work = d / "work"
    (work / "runs" / "train" / "damaged").mkdir(parents=True)
    (work / "runs" / "train" / "damaged" / "run.json").write_text("{")
    chain = CliRuns(work, workers=1)
    chain.chain(
        [
            (
                "train",
                [
                    "train",
                    "--task",
                    "synth",
                    "--model",
                    "tiny-qwen3",
                    "--mode",
                    "generate",
                    "epochs=2",
                    "max_train_examples=32",
                    "max_eval_examples=8",
                    "max_test_examples=10",
                    "micro_batch_size=16",
                    "batch_size=16",
                    "logging_steps=2",
                    "output_dir=runs/train/smoke",
                ],
            ),
            ("runs", ["runs", "--wide"]),  # the run folders, every metric
            ("score_latest", ["score", "--task", "synth", "--out", "scored", "--resamples", "20"]),
            *[
                (
                    f"rank_{i}",
                    [
                        "score",
                        "--task",
                        "synth",
                        "--adapter",
                        "runs/train/smoke",
                        "--readout",
                        "rank",
                        "--limit",
                        "5",
                        "--calibration-examples",
                        "10",
                        "--out",
                        f"rank_{i}",
                        "--resamples",
                        "20",
                    ],
                )
                for i in (1, 2)
            ],
            ("baseline", ["baseline", "--task", "synth", "--baseline", "majority"]),
            ("compare", ["compare", "--task", "synth", "--baselines", "majority,tfidf"]),
        ],
        synth_env(OMP_NUM_THREADS="1", COLUMNS="200"),
    )
    r.chained = chain
    yield r
    chain.close()
    r.close()


def test_score_without_split_scores_the_test_split(first):
    r = first["no_split"]
    assert r.rc == 0, r.err
    m = json.loads((first.cwd / "out" / "metrics.json").read_text())
    assert m["run"]["split"] == "test"
    assert m["n"] == len(load("synth", "test", "default"))


def test_score_with_nothing_named_and_no_run_says_what_to_pass(first):
    assert_user_error(first["nothing_to_score"], "--predictions", "--model", "--adapter", "runs/", "'synth'")


def test_score_with_nothing_named_scores_the_newest_finished_run(first):
    r = first["latest_run"]
    lines = r.err.strip().splitlines()
    assert "most recent finished run of 'synth'" in lines[0] and "synth-new" in lines[0], r.err
    assert "synth-newest-damaged" not in lines[0] and "synth-old" not in lines[0]
    # the fake run has no adapter: loading it is refused in one line naming that run
    assert r.rc == 2 and "Traceback" not in r.err, r.err
    assert lines[-1].startswith("error:") and "synth-new" in lines[-1], r.err


def test_find_runs_lists_finished_newest_first_and_damaged_in_one_line(tmp_path):
    fake_run(tmp_path / "train" / "a", **SYNTH_RUN, finished_at=1_000_000, test={"joint": 0.25, "label_accuracy": 0.25})
    fake_run(tmp_path / "train" / "b", **SYNTH_RUN, finished_at=2_000_000)
    bad = fake_run(tmp_path / "train" / "c", **SYNTH_RUN, finished_at=3_000_000)
    (bad / "run.json").write_text(
        json.dumps({"task": "synth", "protocol": "nope", "model": "tiny-qwen3", "mode": "generate"})
    )
    unfinished = tmp_path / "train" / "d"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("task: synth\n")
    found = find_runs(tmp_path)
    assert [r.folder.name for r in found] == ["b", "a", "c", "d"]
    assert found[1].test == {"joint": 0.25, "label_accuracy": 0.25}
    assert found[2].summary is None and found[2].problem.startswith("damaged:") and "nope" in found[2].problem
    assert "\n" not in found[2].problem
    assert found[3].problem.startswith("unfinished:")
    assert latest_run("synth", tmp_path) == tmp_path / "train" / "b"
    assert latest_run("notification", tmp_path) is None


def test_limit_runs_the_model_on_a_seeded_sample_and_says_so(first):
    r = first["limit"]
    assert r.rc == 0, r.err
    m = json.loads((first.cwd / "out_limit" / "metrics.json").read_text())
    assert m["n"] == 5
    assert m["run"]["sample"] == "a seeded sample of 5 of 80 examples (--limit 5, seed 0)"
    assert "running on a seeded sample of 5 of 80 examples" in r.err
    assert "sample" in (first.cwd / "out_limit" / "report.md").read_text()
    # stderr is a pipe here, not a terminal: progress still comes as plain lines
    assert any(line.startswith("constrained decoding (5 examples") and "1/1" in line for line in r.err.splitlines()), (
        r.err
    )
    assert "parsing outputs: 5/5 (" in r.err


def test_limit_with_predictions_points_at_subset(first):
    assert_user_error(first["limit_with_predictions"], "--limit", "--subset")


def test_track_prints_plain_progress_lines_when_not_a_terminal(monkeypatch):
    import io

    from rich.console import Console

    import mcqa.console as C

    buf = io.StringIO()
    monkeypatch.setattr(C, "console", Console(file=buf, force_terminal=False, width=200))
    assert list(C.track(range(100), "scoring", total=100)) == list(range(100))
    lines = buf.getvalue().splitlines()
    assert lines[0] == "scoring: 0/100"
    assert lines[-1].startswith("scoring: 100/100 (")
    assert 10 <= len(lines) <= 12, lines  # about every tenth of the way, not every item
    buf.truncate(0)
    buf.seek(0)
    assert list(C.track(iter(range(7)), "reading")) == list(range(7))
    assert buf.getvalue().splitlines()[-1].startswith("reading: 7 done")


def test_train_starts_with_a_header_shows_validation_tables_and_ends_with_the_test_table(first):
    r = first.chained["train"]
    assert r.rc == 0, r.err
    err = r.err
    header = err.index("mcqa train")
    for fragment in (
        "synth (protocol default)",
        "tiny-qwen3",
        "generate",
        "train 32, validation 8, test 10 of 80",
        "4 optimizer steps over 2 epochs",
        "16 (micro batch 16)",
        "runs/train/smoke",
    ):
        assert fragment in err[header : err.index("validation after epoch 1")], fragment
    epoch2 = err[err.index("validation after epoch 2") :]
    assert "joint" in epoch2 and "label_accuracy" in epoch2
    assert len([line for line in epoch2.splitlines() if line.startswith("│")]) >= 2  # epochs 1 and 2 as rows
    assert "deprecated" not in (r.err + r.out).lower()  # past_key_values, is_gradient_checkpointing: not shown
    assert "per class" in r.out and "joint exact match" in r.out  # the test table at the end
    # Progress in mcqa's words: a line per logging step and one for the fit, not Trainer's tqdm
    # bar, its dicts of strings ({'loss': '2.41', ...}) or transformers' "Loading weights" bar.
    lines = err.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps] == ["step 2/4 (epoch 1.00)", "step 4/4 (epoch 2.00)"], steps
    assert "loss " in steps[0] and "lr " in steps[0] and "left" in steps[0] and "left" not in steps[1]
    assert any(line.startswith("trained 4 optimizer steps in ") for line in lines)
    for noise in ("{'loss'", "'train_runtime'", "it/s]", "s/it]", "Loading weights"):
        assert noise not in r.err + r.out, noise


def test_max_test_examples_tests_on_a_seeded_sample_and_says_so(first):
    assert first.chained["train"].rc == 0, first.chained["train"].err
    summary = json.loads((first.chained.cwd / "runs" / "train" / "smoke" / "run.json").read_text())
    assert summary["test_examples"] == 10 and summary["test_split_examples"] == 80  # max_test_examples
    m = json.loads((first.chained.cwd / "runs" / "train" / "smoke" / "test" / "metrics.json").read_text())
    assert m["n"] == 10 and m["run"]["sample"] == "a seeded sample of 10 of 80 examples"


def test_runs_lists_finished_runs_and_damaged_ones_in_one_line(first):
    r = first.chained["runs"]
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err
    assert "runs/train/smoke" in r.out and "synth" in r.out and "tiny-qwen3" in r.out and "joint" in r.out
    (damaged,) = [line for line in r.out.splitlines() if line.startswith("damaged")]
    assert "runs/train/damaged" in damaged and "run.json" in damaged


def test_score_by_task_alone_scores_the_newest_real_run(first):
    r = first.chained["score_latest"]
    assert r.rc == 0, r.err
    assert "most recent finished run of 'synth': runs/train/smoke" in r.err
    m = json.loads((first.chained.cwd / "scored" / "metrics.json").read_text())
    assert m["run"]["split"] == "test" and m["run"]["adapter"] == "runs/train/smoke" and m["n"] == 80


def test_foreign_deprecations_are_hidden_and_mcqas_own_are_not():
    import warnings

    from mcqa.console import quiet_foreign_deprecations

    def raised_in(module: str, category=FutureWarning):
        g = {"__name__": module, "warnings": warnings}
        exec(f"def f():\n    warnings.warn('from {module}', {category.__name__}, stacklevel=2)\n", g)
        return g["f"]

    shown = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: shown.append(str(message))  # what would reach stderr
        quiet_foreign_deprecations()
        raised_in("transformers.modeling_utils")()  # blames this caller (stacklevel=2), raised in transformers
        raised_in("peft.tuners")()
        raised_in("mcqa.something")()
        raised_in("transformers.x", UserWarning)()  # not a deprecation: shown
    err = "\n".join(shown)
    assert "from transformers.modeling_utils" not in err and "from peft.tuners" not in err
    assert "from mcqa.something" in err and "from transformers.x" in err


def test_rank_fits_its_temperature_on_a_sample_and_the_run_folder_keeps_the_fit(first):
    one, two = first.chained["rank_1"], first.chained["rank_2"]
    assert one.rc == 0, one.err
    assert two.rc == 0, two.err
    said = "a seeded sample of 10 of 80 validation examples (seed 0)"
    assert f"fitting the rank temperature on {said}" in one.err
    assert "fitted before" in two.err and "fitting the rank temperature" not in two.err
    fits = list((first.chained.cwd / "runs" / "train" / "smoke" / "calibration").glob("*.json"))
    assert len(fits) == 1
    m1, m2 = (json.loads((first.chained.cwd / f"rank_{i}" / "metrics.json").read_text()) for i in (1, 2))
    assert m1["calibration_fit"]["fitted_on"] == said and m1["calibration_fit"]["n"] == 10
    assert m2["calibration_fit"]["temperature"] == m1["calibration_fit"]["temperature"]
    assert [
        r["probs"]
        for r in map(json.loads, (first.chained.cwd / "rank_2" / "predictions.jsonl").read_text().splitlines())
    ] == [
        r["probs"]
        for r in map(json.loads, (first.chained.cwd / "rank_1" / "predictions.jsonl").read_text().splitlines())
    ]


def test_compare_reuses_the_predictions_mcqa_baseline_made(first):
    b, c = first.chained["baseline"], first.chained["compare"]
    assert b.rc == 0, b.err
    assert c.rc == 0, c.err
    assert "majority on synth/default: reusing its predictions from runs/cache/baselines/" in c.err
    assert "tfidf on synth/default: fit" in c.err  # not asked before: fitted


def test_baseline_cache_is_keyed_by_the_data_and_a_damaged_entry_is_refitted(tmp_path, monkeypatch):
    import mcqa.compare.baselines as B

    task = get_task("synth")
    first = B.run_baseline("majority", task, cache=tmp_path)
    (entry,) = tmp_path.glob("*.json")
    again = B.run_baseline("majority", task, cache=tmp_path)
    assert again["cached"] == str(entry) and again["predictions"] == first["predictions"]
    other = B.run_baseline("majority", task, examples=load("synth", "validation", "default"), cache=tmp_path)
    assert "cached" not in other and len(list(tmp_path.glob("*.json"))) == 2  # other data: another entry
    entry.write_text(json.dumps({"key": entry.stem, "result": {"predictions": {"s000": {"id": "s000", "output": 3}}}}))
    refit = B.run_baseline("majority", task, cache=tmp_path)
    assert "cached" not in refit and refit["predictions"] == first["predictions"]
    assert B.run_baseline("majority", task, cache=tmp_path)["cached"] == str(entry)  # rewritten whole
    monkeypatch.setattr(B, "code_digest", lambda fn: "the baseline's file was edited")
    assert "cached" not in B.run_baseline("majority", task, cache=tmp_path)


def test_a_cached_temperature_is_used_only_when_every_value_checks_out(tmp_path):
    from mcqa.predicting import _read_fit

    good = {
        "temperature": 1.5,
        "validation_nll": [1.2, 1.1],
        "validation_ece_before": {"label": 0.1},
        "validation_ece_after": {"label": 0.05},
        "n": 10,
        "fitted_on": "all 10 validation examples",
        "key": "k",
    }
    path = tmp_path / "k.json"
    path.write_text(json.dumps(good))
    assert _read_fit(path, "k") == good
    assert _read_fit(path, "other") is None  # another readout, sample or protocol
    for bad in (
        {**good, "temperature": -1},
        {**good, "temperature": "1.5"},
        {**good, "validation_nll": [1.0]},
        {**good, "validation_ece_after": {"label": "x"}},
        [good],
    ):
        path.write_text(json.dumps(bad))
        assert _read_fit(path, "k") is None, bad
    path.write_text('{"temperature": NaN')
    assert _read_fit(path, "k") is None
