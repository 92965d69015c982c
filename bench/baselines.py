"""Every baseline on every shipped task, scored by the real scorer on the test split(s):
writes bench/baselines.json (everything) and bench/baselines.md (the tables).

    python bench/baselines.py                     # all of it (about an hour on 2 CPU cores)
    python bench/baselines.py --tasks notification --baselines majority tfidf
    python bench/baselines.py --resume            # keep the results already in the JSON

recipe_mpr is cross-validated over its 5 folds (cv5-0 .. cv5-4): each fold is fitted on its own
train split and scored on its own test fold; the table gives the mean and the per-fold accuracy,
and the 95% interval of the pooled 500 test predictions (each example is in one test fold).

Timings are wall-clock on this machine. The embedding baselines' fit time includes encoding
train and validation and their predict time includes encoding the test split: embeddings go to a
fresh temporary cache unless --reuse-cache, and a cache hit is timed at its recorded encoding cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for the hub

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The mcqa imports come after the path insert (and the HF_HUB_OFFLINE default) above.
from mcqa.compare.baselines import BASELINES, BaselineNotApplicable, run_baseline  # noqa: E402
from mcqa.eval.scoring import score, score_records  # noqa: E402
from mcqa.examples import load_split  # noqa: E402
from mcqa.io import atomic_write_text, write_json  # noqa: E402
from mcqa.registry import get_task  # noqa: E402

# (task, the name shown, the protocols pooled under it)
RUNS = [
    ("notification", "seed", ["seed"]),
    ("mmlu_pro", "seed", ["seed"]),
    ("mmlu_pro", "full", ["full"]),
    ("mmlu_pro_answer", "seed", ["seed"]),
    ("recipe_mpr", "cv5", [f"cv5-{k}" for k in range(5)]),
]
OUT_JSON = ROOT / "bench" / "baselines.json"
OUT_MD = ROOT / "bench" / "baselines.md"


def summarize(metrics: dict) -> dict:
    fields = {}
    for f, fm in metrics["fields"].items():
        fields[f] = {"accuracy": fm["accuracy"], "accuracy_ci": fm["ci"]["accuracy"]}
        if "macro_f1" in fm:
            fields[f].update(macro_f1=fm["macro_f1"], macro_f1_ci=fm["ci"]["macro_f1"])
        if "calibration" in fm:
            fields[f]["ece"] = fm["calibration"]["ece"]
    return {
        "n": metrics["n"],
        "fields": fields,
        "joint": {"accuracy": metrics["joint"]["accuracy"], "ci": metrics["joint"]["ci"]},
        "parse_failure_rate": metrics["parse"]["failure_rate"],
    }


def run_one(task_name: str, shown: str, protocols: list[str], name: str, resamples: int) -> dict:
    task = get_task(task_name)
    entry = {"task": task_name, "protocol": shown, "baseline": name}
    records, folds = [], []
    for protocol in protocols:
        try:
            result = run_baseline(name, task, protocol)
        except BaselineNotApplicable as e:
            return {**entry, "status": "n/a", "reason": str(e)}
        fold = score(task, load_split(task, "test", protocol), result["predictions"], entry, resamples=resamples)
        records += fold.records
        timing = ("n_train", "n_validation", "fit_seconds", "predict_seconds", "examples_per_second", "n_params")
        folds.append(
            {
                "protocol": protocol,
                **summarize(fold.metrics),
                **{k: result[k] for k in timing},
                "info": result["fields"],
            }
        )
    pooled = summarize(score_records(task, records, entry, resamples=resamples).metrics)
    out = {
        **entry,
        "status": "ok",
        **pooled,
        "fit_seconds": statistics.mean(f["fit_seconds"] for f in folds),
        "predict_seconds": statistics.mean(f["predict_seconds"] for f in folds),
        "examples_per_second": statistics.mean(f["examples_per_second"] for f in folds),
        "n_params": statistics.mean(f["n_params"] for f in folds),
        "n_train": statistics.mean(f["n_train"] for f in folds),
        "info": folds[0]["info"] if len(folds) == 1 else [f["info"] for f in folds],
    }
    if len(folds) > 1:
        out["folds"] = folds
        out["fold_accuracy"] = {
            f: {
                "mean": statistics.mean(x["fields"][f]["accuracy"] for x in folds),
                "std": statistics.stdev(x["fields"][f]["accuracy"] for x in folds),
                "per_fold": [x["fields"][f]["accuracy"] for x in folds],
            }
            for f in task.fields
        }
    return out


def device() -> str:
    import torch

    return f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ci(c: list[float]) -> str:
    return f"[{pct(c[0])}, {pct(c[1])}]"


def rate(x: float) -> str:
    return ">100k" if x > 1e5 else f"{x:,.0f}"  # a constant predictor's rate is timer noise


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Baselines",
        "",
        f"Generated by `{meta['command']}` on {meta['generated']} ({meta['machine']}).",
        (
            "Test split of each protocol, scored by `mcqa.eval.scoring` (accuracy and macro-F1 in %, 95% percentile "
            f"bootstrap intervals over {meta['resamples']} resamples). Fit time includes choosing C on validation and, "
            "for the embedding baselines, encoding train and validation; predict time includes encoding the test "
            "split. Params: numbers learned from train (weights, class frequencies, a temperature); the frozen MiniLM "
            "encoder (22.7M) is not counted. Timings are wall-clock on the machine named above, indicative only when "
            "it is shared."
        ),
        "",
    ]
    for task_name, shown, _ in RUNS:
        rows = [r for r in results if r["task"] == task_name and r["protocol"] == shown]
        if not rows:
            continue
        task = get_task(task_name)
        cv = shown.startswith("cv")
        n = next((r["n"] for r in rows if r["status"] == "ok"), "?")
        lines += [f"## {task_name} / {shown} (test n={n}{', pooled over 5 folds' if cv else ''})", ""]
        head = ["baseline"]
        for f in task.fields:
            head += [f"{f} acc [95% CI]", f"{f} macro-F1 [95% CI]"] + ([f"{f} acc per fold (mean ± sd)"] if cv else [])
        head += (["joint [95% CI]"] if len(task.fields) > 1 else []) + ["fit s", "predict s", "ex/s", "params"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            if r["status"] != "ok":
                lines.append(f"| {r['baseline']} | n/a: {r['reason'].split(': ', 1)[-1]} |" + " |" * (len(head) - 2))
                continue
            cells = [r["baseline"]]
            for f in task.fields:
                fm = r["fields"][f]
                cells += [
                    f"{pct(fm['accuracy'])} {ci(fm['accuracy_ci'])}",
                    f"{pct(fm['macro_f1'])} {ci(fm['macro_f1_ci'])}",
                ]
                if cv:
                    fa = r["fold_accuracy"][f]
                    cells.append(
                        " / ".join(pct(a) for a in fa["per_fold"]) + f" ({pct(fa['mean'])} ± {pct(fa['std'])})"
                    )
            if len(task.fields) > 1:
                cells.append(f"{pct(r['joint']['accuracy'])} {ci(r['joint']['ci'])}")
            cells += [
                f"{r['fit_seconds']:.1f}",
                f"{r['predict_seconds']:.2f}",
                rate(r["examples_per_second"]),
                f"{r['n_params']:,.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", help="only these tasks")
    p.add_argument("--baselines", nargs="+", choices=list(BASELINES), help="only these baselines")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--resume", action="store_true", help="keep results already in bench/baselines.json")
    p.add_argument(
        "--reuse-cache",
        action="store_true",
        help="use $MCQA_CACHE (a cache hit is timed at its recorded encoding cost)",
    )
    p.add_argument("--markdown-only", action="store_true", help="rewrite bench/baselines.md from the JSON; run nothing")
    args = p.parse_args(argv)
    if args.markdown_only:
        saved = json.loads(OUT_JSON.read_text())
        atomic_write_text(OUT_MD, markdown(saved["results"], saved["meta"]))
        print(OUT_MD.read_text())
        return 0
    if not args.reuse_cache:
        os.environ["MCQA_CACHE"] = tempfile.mkdtemp(prefix="mcqa-bench-cache-")
    results = json.loads(OUT_JSON.read_text())["results"] if args.resume and OUT_JSON.is_file() else []
    done = {(r["task"], r["protocol"], r["baseline"]) for r in results}
    meta = {
        "command": " ".join(["python bench/baselines.py", *(argv if argv is not None else sys.argv[1:])]),
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {device()}",
        "resamples": args.resamples,
    }
    for task_name, shown, protocols in RUNS:
        if args.tasks and task_name not in args.tasks:
            continue
        for name in args.baselines or BASELINES:
            if (task_name, shown, name) in done:
                continue
            results.append(run_one(task_name, shown, protocols, name, args.resamples))
            write_json(OUT_JSON, {"meta": meta, "results": results})  # after each run: never lose work
            atomic_write_text(OUT_MD, markdown(results, meta))
    atomic_write_text(OUT_MD, markdown(results, meta))
    print(OUT_MD.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
