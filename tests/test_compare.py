"""`mcqa compare` end to end on tiny data, offline: baselines and a trained tiny-qwen3 run in one
table, and every number in it traced back to a scorer metrics.json."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers import CliRuns, assert_user_error, cli_env, fake_run, load, run_cli, synth_env

from mcqa.compare.paired import mcnemar_exact
from mcqa.compare.table import compare
from mcqa.errors import McqaError
from mcqa.eval.scoring import make_records
from mcqa.model import resolve_model
from mcqa.prompting import serialize_target
from mcqa.registry import get_task


def test_compare_runs_end_to_end_and_every_number_comes_from_the_scorer(tmp_path):
    run = tmp_path / "run"
    trained = run_cli(
        [
            "train",
            "--task",
            "synth",
            "--model",
            "tiny-qwen3",
            "--mode",
            "head",
            "epochs=1",
            "micro_batch_size=16",
            f"output_dir={run}",
        ],
        tmp_path,
        synth_env(),
    )
    assert trained.rc == 0, trained.err[-2000:]
    out = tmp_path / "cmp"
    done = run_cli(
        [
            "compare",
            "--task",
            "synth",
            "--baselines",
            "majority,tfidf",
            "--runs",
            run,
            "--zero-shot",
            "tiny-qwen3",
            "--out",
            out,
        ],
        tmp_path,
        synth_env(),
    )
    assert done.rc == 0, done.err[-2000:]
    result = json.loads((out / "compare.json").read_text())
    assert [r["kind"] for r in result["rows"]] == ["baseline", "baseline", "trained", "zero-shot", "zero-shot"]
    assert [r["name"].split()[0] for r in result["rows"]] == [
        "majority",
        "tfidf",
        "tiny-qwen3",
        "tiny-qwen3",
        "tiny-qwen3",
    ]
    assert result["rows"][3]["parse_failure_rate"] == result["rows"][4]["parse_failure_rate"] == 0  # constrained, rank
    assert (out / "compare.png").stat().st_size > 1000
    table = (out / "compare.md").read_text()
    for row in result["rows"]:
        metrics = json.loads((Path(row["folder"]) / "metrics.json").read_text())  # the scorer's own output
        assert metrics["n"] == row["n"] == 80
        assert row["joint"] == metrics["joint"]["accuracy"] and row["joint_ci"] == metrics["joint"]["ci"]
        assert row["parse_failure_rate"] == metrics["parse"]["failure_rate"]
        fm = metrics["fields"]["label"]
        assert row["fields"]["label"]["accuracy"] == fm["accuracy"]
        assert row["fields"]["label"]["macro_f1"] == fm["macro_f1"]
        assert (
            f"{100 * fm['accuracy']:.1f} [{100 * fm['ci']['accuracy'][0]:.1f}, {100 * fm['ci']['accuracy'][1]:.1f}]"
            in table
        )
        # and the scorer's numbers agree with its own per-example records
        records = [json.loads(line) for line in (Path(row["folder"]) / "predictions.jsonl").read_text().splitlines()]
        assert fm["accuracy"] == pytest.approx(sum(r["correct"]["label"] for r in records) / len(records))
    majority, tfidf = result["rows"][0], result["rows"][1]
    assert majority["fields"]["label"]["accuracy"] < 0.5 < tfidf["fields"]["label"]["accuracy"]
    assert f"| {int(tfidf['trained_parameters']):,} |" in table  # a count, shown without a decimal point


def test_compare_refuses_a_run_of_another_task(tmp_path):
    run = tmp_path / "run"
    (run / "test").mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps({"task": "notification", "protocol": "seed", "model": "m", "mode": "head"})
    )
    (run / "test" / "metrics.json").write_text("{}")
    assert_user_error(
        run_cli(["compare", "--task", "recipe_mpr", "--runs", run], tmp_path, cli_env()), "notification/seed"
    )


def test_compare_pools_the_folds_of_a_cross_validated_task(tmp_path):
    """`--protocol cv3` runs each baseline on every fold and pools one trained run per fold: each
    of the 400 examples is scored once, and the pooled numbers are the scorer's on the union."""
    runs = [tmp_path / f"fold{k}" for k in range(3)]
    cmp = ["compare", "--task", "synth", "--protocol", "cv3", "--baselines", "majority,tfidf"]
    # The three folds train side by side, one intra-op thread each, beside a refusal that needs no run.
    cli = CliRuns(tmp_path, workers=4)
    for k, run in enumerate(runs):
        cli.start(
            f"fold{k}",
            [
                "train",
                "--task",
                "synth",
                "--model",
                "tiny-qwen3",
                "--mode",
                "head",
                "--protocol",
                f"cv3-{k}",
                "epochs=1",
                "max_train_examples=32",
                "micro_batch_size=16",
                f"output_dir={run}",
            ],
            synth_env(OMP_NUM_THREADS="1"),
        )
    cli.start(
        "unknown",
        ["compare", "--task", "synth", "--protocol", "cv9", "--baselines", "majority", "--out", tmp_path / "bad"],
        synth_env(),
    )
    for k in range(3):
        assert cli[f"fold{k}"].rc == 0, cli[f"fold{k}"].err[-2000:]
    assert_user_error(
        run_cli(cmp + ["--runs", *runs[:2], "--out", tmp_path / "bad"], tmp_path, synth_env()), "no run on fold cv3-2"
    )
    assert_user_error(cli["unknown"], "'cv9'", "or cv3 to pool all its folds")
    cli.close()

    out = tmp_path / "cmp"
    done = run_cli(cmp + ["--runs", *runs, "--out", out], tmp_path, synth_env())
    assert done.rc == 0, done.err[-2000:]
    result = json.loads((out / "compare.json").read_text())
    assert result["protocol"] == "cv3" and result["folds"] == ["cv3-0", "cv3-1", "cv3-2"]
    assert [r["kind"] for r in result["rows"]] == ["baseline", "baseline", "trained"]
    fold_records = [
        json.loads(line) for run in runs for line in (run / "test" / "predictions.jsonl").read_text().splitlines()
    ]
    for row in result["rows"]:
        records = [json.loads(line) for line in (Path(row["folder"]) / "predictions.jsonl").read_text().splitlines()]
        assert row["n"] == len(records) == 400 and len({r["id"] for r in records}) == 400  # every example once
        metrics = json.loads((Path(row["folder"]) / "metrics.json").read_text())
        assert (
            row["fields"]["label"]["accuracy"]
            == metrics["fields"]["label"]["accuracy"]
            == pytest.approx(sum(r["correct"]["label"] for r in records) / 400)
        )
    trained = result["rows"][2]
    assert trained["fields"]["label"]["accuracy"] == pytest.approx(
        sum(r["correct"]["label"] for r in fold_records) / 400
    )
    per_fold = [json.loads((run / "run.json").read_text())["train_seconds"] for run in runs]
    assert trained["train_seconds"] == pytest.approx(sum(per_fold) / 3)
    assert "pooled" in (out / "compare.md").read_text()

    # Runs of another recipe (the same model and mode, another setting) are another row, named
    # by the setting that tells them apart; a run's fold is never pooled into another recipe's row.
    variant = [tmp_path / f"variant{k}" for k in range(3)]
    for run, var in zip(runs, variant):
        shutil.copytree(run, var)
        config = (var / "config.yaml").read_text()
        assert "\nepochs: 1.0\n" in config
        (var / "config.yaml").write_text(config.replace("\nepochs: 1.0\n", "\nepochs: 2.0\n"))
    both = run_cli(cmp + ["--runs", *runs, *variant, "--out", tmp_path / "both"], tmp_path, synth_env())
    assert both.rc == 0, both.err[-2000:]
    rows = json.loads((tmp_path / "both" / "compare.json").read_text())["rows"]
    assert [r["name"] for r in rows if r["kind"] == "trained"] == [
        "tiny-qwen3 head epochs=1 (3 folds)",
        "tiny-qwen3 head epochs=2 (3 folds)",
    ]
    assert rows[2]["folder"] != rows[3]["folder"]
    for row, folders in zip(rows[2:], (runs, variant)):  # each row pools its own recipe's runs
        assert json.loads((Path(row["folder"]) / "metrics.json").read_text())["run"]["runs"] == [
            str(f) for f in folders
        ]
    assert_user_error(
        run_cli(cmp + ["--runs", *runs[:2], variant[2], "--out", tmp_path / "bad"], tmp_path, synth_env()),
        "tiny-qwen3 head epochs=1: no run on fold cv3-2",
    )
    assert_user_error(
        run_cli(cmp + ["--runs", *runs, variant[0], variant[0], "--out", tmp_path / "bad"], tmp_path, synth_env()),
        "a second tiny-qwen3 head epochs=2 run on fold cv3-0",
    )

    # A received run's setting that names its row can neither add cells or rows to the table nor
    # break the chart (a '$' starts matplotlib's mathtext).
    for run, var in zip(runs, variant):
        config = (run / "config.yaml").read_text()
        assert "\nbest_metric: joint\n" in config
        (var / "config.yaml").write_text(
            config.replace("\nbest_metric: joint\n", '\nbest_metric: "joint $\\\\nosuch$ |\\n| forged"\n')
        )
    hostile = run_cli(cmp + ["--runs", *runs, *variant, "--out", tmp_path / "hostile"], tmp_path, synth_env())
    assert hostile.rc == 0, hostile.err[-2000:]
    table = (tmp_path / "hostile" / "compare.md").read_text()
    main_table = table.split("## Paired differences")[0]  # the table of rows; the paired one follows it
    assert len([line for line in main_table.splitlines() if line.startswith("| ")]) == 1 + 4  # the header and four rows
    assert "\\| forged" in table  # escaped, on the row's own line
    assert (tmp_path / "hostile" / "compare.png").stat().st_size > 1000


def test_a_second_compare_reuses_the_zero_shot_predictions_of_every_model(tmp_path):
    """Two base models in one table (--zero-shot A B); a second compare reads neither out again
    (no temperature fitted, a reuse line per readout), gives the same rows, and a damaged cache
    file is ignored with a line and read out again."""
    copy = tmp_path / "tiny-copy"
    shutil.copytree(resolve_model("tiny-qwen3"), copy)
    cmp = ["compare", "--task", "synth", "--baselines", "", "--zero-shot", "tiny-qwen3", copy]
    first = run_cli(cmp + ["--out", tmp_path / "a"], tmp_path, synth_env())
    assert first.rc == 0, first.err[-2000:]
    rows = json.loads((tmp_path / "a" / "compare.json").read_text())["rows"]
    assert [r["name"] for r in rows] == [
        "tiny-qwen3 zero-shot constrained",
        "tiny-qwen3 zero-shot rank",
        "tiny-copy zero-shot constrained",
        "tiny-copy zero-shot rank",
    ]
    assert (first.out + first.err).count("fitting the rank temperature") == 2

    second = run_cli(cmp + ["--out", tmp_path / "b"], tmp_path, synth_env())
    assert second.rc == 0, second.err[-2000:]
    said = second.out + second.err
    assert said.count("reusing ") == 4 and "fitting" not in said
    again = json.loads((tmp_path / "b" / "compare.json").read_text())["rows"]
    keep = ("name", "n", "joint", "joint_ci", "fields", "parse_failure_rate")
    assert [{k: r[k] for k in keep} for r in again] == [{k: r[k] for k in keep} for r in rows]

    entries = sorted((tmp_path / "runs" / "cache" / "zero_shot").glob("*.json"))
    assert len(entries) == 4
    entries[0].write_text('{"key": "x"}')
    third = run_cli(cmp + ["--out", tmp_path / "c"], tmp_path, synth_env())
    assert third.rc == 0, third.err[-2000:]
    said = third.out + third.err
    assert "ignoring the zero-shot cache file" in said and said.count("reusing ") == 3
    assert [r["joint"] for r in json.loads((tmp_path / "c" / "compare.json").read_text())["rows"]] == [
        r["joint"] for r in rows
    ]


def test_a_bad_zero_shot_readout_option_fails_before_the_model_is_read(tmp_path):
    done = run_cli(
        [
            "compare",
            "--task",
            "recipe_mpr",
            "--baselines",
            "",
            "--zero-shot",
            "tiny-qwen3",
            "--zero-shot-readouts",
            "options:rule=bogus",
            "--out",
            tmp_path / "c",
        ],
        tmp_path,
        cli_env(),
    )
    assert_user_error(done, "rule", "'pmi'")
    assert "scoring options" not in done.err and not (tmp_path / "c").exists()


def test_compare_pairs_every_row_with_the_best_baseline_on_the_same_examples(tmp_path, synth_tasks):
    """Pooled fold runs right on four test examples in five: each row's paired difference from the
    reference is the one the per-example records give. A fold run tested on a sample of its test
    split, or an --against that names no row, is one line and nothing is written."""
    task = get_task("synth")
    wrong = {"north": "south", "south": "east", "east": "west", "west": "north"}
    runs, fold2, given = [], [], 0
    for k in range(3):
        test = list(load("synth", "test", f"cv3-{k}"))
        outputs = {
            e.id: {"output": serialize_target(task.output, e.target if j % 5 else {"label": wrong[e.target["label"]]})}
            for j, e in enumerate(test)
        }
        fold2 = make_records(task, test, outputs, progress=False)
        given += sum(r["joint"] for r in fold2)
        runs.append(
            fake_run(
                tmp_path / f"fold{k}",
                config={"task": "synth", "protocol": f"cv3-{k}", "model": "m", "mode": "head"},
                records=fold2,
            )
        )
    out = tmp_path / "cmp"
    cmp = ["compare", "--task", "synth", "--protocol", "cv3", "--baselines", "majority,tfidf"]
    done = run_cli(cmp + ["--runs", *runs, "--out", out], tmp_path, synth_env())
    assert done.rc == 0, done.err[-2000:]
    result = json.loads((out / "compare.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert result["reference"] == "tfidf" and rows["tfidf"]["paired"] is None
    right = {
        name: {
            rec["id"]: rec["joint"]
            for line in (Path(r["folder"]) / "predictions.jsonl").read_text().splitlines()
            for rec in [json.loads(line)]
        }
        for name, r in rows.items()
    }
    table = (out / "compare.md").read_text()
    assert "| pair | model | vs | label diff [95% CI], McNemar p | joint diff [95% CI], McNemar p |" in table
    for name in ("majority", "m head (3 folds)"):
        d = rows[name]["paired"]["joint"]
        b = sum(right[name][i] and not right["tfidf"][i] for i in right["tfidf"])
        c = sum(right["tfidf"][i] and not right[name][i] for i in right["tfidf"])
        assert (d["b"], d["c"]) == (b, c) and d["difference"] == pytest.approx(
            rows[name]["joint"] - rows["tfidf"]["joint"]
        )
        assert d["ci"][0] <= d["difference"] <= d["ci"][1] and d["p"] == pytest.approx(mcnemar_exact(b, c))
        assert f"| vs reference | {name} | tfidf | {100 * d['difference']:+.1f} [" in table
    assert rows["m head (3 folds)"]["joint"] == pytest.approx(given / 400)  # the four in five it was given

    # Fold 2's run tested on half its test examples: the pooled row cannot be paired.
    half = fake_run(
        tmp_path / "half",
        config={"task": "synth", "protocol": "cv3-2", "model": "m", "mode": "head"},
        records=fold2[: len(fold2) // 2],
    )
    refused = run_cli(cmp + ["--runs", *runs[:2], half, "--out", tmp_path / "bad"], tmp_path, synth_env())
    assert_user_error(refused, f"{half}: tested on {len(fold2) // 2} of the {len(fold2)} test examples of cv3-2")
    with pytest.raises(McqaError, match=r"^--against: no row 'tfidff'; did you mean 'tfidf'\?"):
        compare(task, "cv3", runs, ["majority", "tfidf"], tmp_path / "bad", against="tfidff")
    assert not (tmp_path / "bad").exists()


def test_the_zero_shot_cache_key_reads_every_file_between_weights_and_predictions(tmp_path, monkeypatch):
    """Each code path the key lists still matches a file (a moved module cannot silently drop
    out of the key), the modules a zero-shot readout runs are all among them, and an edit to
    one of them changes the key."""
    from mcqa.compare import zero_shot_cache as Z

    package = Path(Z.__file__).resolve().parent.parent
    listed = {f.resolve() for pattern in Z._CODE for f in package.glob(pattern)}
    for pattern in Z._CODE:
        assert list(package.glob(pattern)), f"{pattern} matches no file under {package}"
    import mcqa.predicting  # noqa: F401  (what a zero-shot row runs, and all it imports)

    reached = {
        Path(m.__file__).resolve()
        for name, m in list(sys.modules.items())
        if name.startswith(
            (
                "mcqa.readouts",
                "mcqa.model.encoding",
                "mcqa.model.choice_rows",
                "mcqa.model.lm",
                "mcqa.model.loading",
                "mcqa.predicting",
                "mcqa.prompting",
                "mcqa.eval.calibration",
            )
        )
        and getattr(m, "__file__", None)
    }
    assert reached <= listed, f"not in the key: {sorted(str(p) for p in reached - listed)}"
    copy = tmp_path / "mcqa"
    for f in listed:
        (copy / f.relative_to(package)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, copy / f.relative_to(package))
    monkeypatch.setattr(Z, "_PACKAGE", copy)
    task = get_task("notification")
    before = Z.code_digest(task)
    edited = copy / "model" / "encoding.py"
    edited.write_text(edited.read_text() + "\n# an edit\n")
    assert Z.code_digest(task) != before
