"""Peak memory of training, per task and model: does max_batch_tokens keep every shipped task
within 6 GB with smollm2-135m and within 10 GB with qwen2.5-0.5b?

Each row is one real `mcqa train` process (cli.py, so everything a user's run holds: model,
LoRA, optimizer, Trainer, validation and test readouts) stopped after `--steps` optimizer
steps. Trainer's length-grouped sampler puts the batch holding the longest training example
first, so the first step is the heaviest one the run would meet; max_batch_tokens cuts any
micro batch over the budget into row chunks (same gradient). Peak RSS and wall time come from
`/usr/bin/time -v`. Run it alone on the machine. Writes bench/train_memory.{json,md}; rows
already measured are kept, so an interrupted bench resumes.

    python bench/train_memory.py [--models smollm2-135m qwen2.5-0.5b] [--tasks ...] [--mode head]
                                 [--budget 2048] [--steps 2] [--also-unbounded TASK ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcqa.io import atomic_write_text, write_json  # noqa: E402

LIMITS_GB = {"smollm2-135m": 6.0, "qwen2.5-0.5b": 10.0}
TASKS = ("notification", "recipe_mpr", "mmlu_pro", "mmlu_pro_answer")


def measure(task: str, model: str, mode: str, budget: int | None, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            str(ROOT / "cli.py"),
            "train",
            "--task",
            task,
            "--model",
            model,
            "--mode",
            mode,
            f"max_steps={steps}",
            "max_eval_examples=8",
            "max_test_examples=8",
            "logging_steps=1",
            f"max_batch_tokens={'null' if budget is None else budget}",
            f"output_dir={Path(d) / 'run'}",
        ]
        started = time.time()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.time() - started
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        if p.returncode != 0 or rss is None:
            tail = p.stderr.strip().splitlines()[-3:]
            raise SystemExit(f"{task} / {model}: `mcqa train` failed (exit {p.returncode}): {' | '.join(tail)}")
        log = [json.loads(x) for x in (Path(d) / "run" / "train_log.jsonl").read_text().splitlines()]
        step_s = [r for r in log if "train_runtime" in r]
    return {
        "task": task,
        "model": model,
        "mode": mode,
        "max_batch_tokens": budget,
        "steps": steps,
        "peak_rss_gb": round(int(rss.group(1)) / 1024**2, 2),
        "wall_s": round(wall, 1),
        "train_s": round(step_s[0]["train_runtime"], 1) if step_s else None,
        "limit_gb": LIMITS_GB.get(model),
        "command": " ".join(cmd[2:]).replace(str(ROOT) + "/", ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(LIMITS_GB))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--mode", default="head")
    ap.add_argument("--budget", type=int, default=None, help="max_batch_tokens (default: the config's default)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument(
        "--also-unbounded",
        nargs="*",
        default=[],
        metavar="TASK",
        help="also measure these tasks with max_batch_tokens=null (no bound), smollm2-135m only",
    )
    a = ap.parse_args()
    from mcqa.train.config import TrainConfig

    budget = a.budget if a.budget is not None else TrainConfig.model_fields["max_batch_tokens"].default
    out = ROOT / "bench" / "train_memory.json"
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []
    plan = [(t, m, budget) for m in a.models for t in a.tasks] + [(t, "smollm2-135m", None) for t in a.also_unbounded]
    for task, model, b in plan:
        if any(
            (r["task"], r["model"], r["mode"], r["max_batch_tokens"], r["steps"]) == (task, model, a.mode, b, a.steps)
            for r in rows
        ):
            continue
        print(f"{task} / {model} / {a.mode} / max_batch_tokens={b} ...", flush=True)
        row = measure(task, model, a.mode, b, a.steps)
        print(f"  peak RSS {row['peak_rss_gb']} GB, {row['wall_s']} s", flush=True)
        rows.append(row)
        write_json(out, {"machine": f"{platform.machine()}, {platform.node()}", "rows": rows})
    lines = [
        "# Training peak memory per task and model",
        "",
        "`python bench/train_memory.py` (one `mcqa train` process per row, stopped after the first optimizer steps, "
        "which hold the longest training example; peak RSS from `/usr/bin/time -v`).",
        "",
        "| task | model | mode | max_batch_tokens | steps | peak RSS (GB) | limit (GB) | within | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        within = "" if r["limit_gb"] is None else ("yes" if r["peak_rss_gb"] <= r["limit_gb"] else "**no**")
        lines.append(
            f"| {r['task']} | {r['model']} | {r['mode']} | {r['max_batch_tokens'] or 'none'} | {r['steps']} | "
            f"{r['peak_rss_gb']} | {r['limit_gb'] or ''} | {within} | {r['wall_s']} |"
        )
    atomic_write_text(ROOT / "bench" / "train_memory.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
