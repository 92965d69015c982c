"""`mcqa score`: predictions from anywhere (a JSONL file), a model or run mcqa reads out, or a
server, scored against a split or the user's labeled file into a run folder. With nothing
named, the newest finished run of the task. Scoring a file never imports torch."""

from __future__ import annotations

from pathlib import Path

from mcqa._cli.common import count, limit, model_args, run_model, uses_model
from mcqa.console import console, out
from mcqa.eval.report import tables
from mcqa.eval.request import examples_of, score_split, scored_run
from mcqa.eval.scoring import match_ids, read_predictions, score
from mcqa.io import check_out_folder
from mcqa.model import check_model
from mcqa.paths import score_dir
from mcqa.registry import get_task
from mcqa.train.index import latest_run_to_score, run_protocol


def add_arguments(s) -> None:
    s.add_argument("--task", required=True)
    s.add_argument("--split", help="train, validation or test (default: test, unless --data is given)")
    s.add_argument("--protocol", help="split protocol (default: the task's first)")
    s.add_argument("--data", type=Path, help="your own labeled examples, in the task's input format (JSONL)")
    s.add_argument(
        "--predictions",
        type=Path,
        help="raw outputs to score (or run a model with --model/--adapter; "
        "with none of the three, the most recent finished run of the task under runs/)",
    )
    model_args(s)
    s.add_argument("--out", type=Path, help="run folder (default: runs/score/<task>-<split>-<time>)")
    s.add_argument("--subset", action="store_true", help="score only the examples that have a prediction")
    s.add_argument("--resamples", type=count(1), default=1000, help="bootstrap resamples for the intervals")


def run(args) -> None:
    task = get_task(args.task)
    split = score_split(args.split, args.data, args.predictions, uses_model(args), args.limit)
    if args.predictions is None and not uses_model(args):
        args.adapter = latest_run_to_score(task.name)
    where = check_out_folder(args.out or score_dir(task.name, split))
    examples, source = examples_of(task, split, args.data, args.protocol or run_protocol(args.adapter, task.name))
    if args.model is not None:  # a model that is no causal LM: one line before anything is sampled or loaded
        check_model(args.model, args.trust_remote_code)
    examples, sample = limit(examples, args.limit)
    if sample:
        source["sample"] = sample
    info: dict = {}
    if args.predictions is not None:
        preds = read_predictions(args.predictions, task)
        examples = match_ids(examples, preds, str(args.predictions), subset=args.subset)
        info["predictions"] = str(args.predictions)
    else:
        outputs, info = run_model(task, args, examples, source.get("protocol"))
        preds = {o["id"]: o for o in outputs}
    extra = {"calibration_fit": info["calibration"]} if "calibration" in info else None
    scored = score(
        task,
        examples,
        preds,
        scored_run(task, source, info, subset=args.subset),
        folder=where,
        resamples=args.resamples,
        extra=extra,
    )
    for t in tables(scored.metrics):
        out.print(t)
    console.print(f"run folder: [bold]{scored.folder}[/]")
