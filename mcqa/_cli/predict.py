"""`mcqa predict`: a model, trained run or server on a split or the user's own file, written
as JSONL with a .json summary; labeled examples are also scored into a run folder."""

from __future__ import annotations

from pathlib import Path

from mcqa._cli.common import limit, model_args, out_file, run_model
from mcqa.console import console
from mcqa.eval.request import examples_of, predict_split, scored_run
from mcqa.eval.scoring import score
from mcqa.io import check_out_folder, write_json, write_jsonl
from mcqa.model import check_model
from mcqa.paths import predictions_file
from mcqa.registry import get_task
from mcqa.train.index import run_protocol


def add_arguments(s) -> None:
    s.add_argument("--task", required=True)
    s.add_argument("--split", help="train, validation or test")
    s.add_argument("--protocol", help="split protocol (default: the task's first, or the run's)")
    s.add_argument("--data", type=Path, help="new examples in the task's input format (JSONL, labels optional)")
    model_args(s)
    s.add_argument("--out", type=Path, help="predictions file (default: runs/predict/<task>-<readout>-<time>.jsonl)")


def run(args) -> None:
    task = get_task(args.task)
    predict_split(args.split, args.data)
    where = out_file(args.out or predictions_file(task.name, args.readout))
    examples, source = examples_of(task, args.split, args.data, args.protocol or run_protocol(args.adapter, task.name))
    if args.model is not None:  # a model that is no causal LM: one line before anything is sampled or loaded
        check_model(args.model, args.trust_remote_code)
    # Labeled examples are also scored, into a run folder named like the predictions file,
    # checked now so that a clash is found before the model runs.
    scored_dir = (
        check_out_folder(where.with_suffix("")) if examples and all(e.target is not None for e in examples) else None
    )
    examples, sample = limit(examples, args.limit)
    outputs, info = run_model(task, args, examples, args.protocol, journal=where)
    if sample:
        info["sample"] = sample
    write_jsonl(where, outputs)
    write_json(where.with_suffix(".json"), info)
    console.print(f"{len(outputs)} predictions ({info['examples_per_second']} examples/s): [bold]{where}[/]")
    if scored_dir is not None:
        score(task, examples, outputs, scored_run(task, source, info, predictions=str(where)), folder=scored_dir)
        console.print(
            f"the examples have labels: scored in [bold]{scored_dir}[/] (report.html, report.md, metrics.json)"
        )
