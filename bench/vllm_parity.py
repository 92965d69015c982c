"""Parity and speed of a real vLLM server against mcqa's own readouts, in one run.

A trained generate-mode run is exported (`mcqa export --to vllm`), served by vLLM on
127.0.0.1 (the bundle's serve.sh, in the serving environment scripts/vllm-serve.sh makes), and
read out through the endpoint readout with 1 and with 8 requests in flight. The server is then
stopped (its idle engine busy-polls a core) and the same model and adapter are read out by
mcqa's constrained and rank readouts. Written to bench/vllm_parity.{json,md}: the share of
identical labels (every disagreement listed with both outputs), the largest difference in
label probabilities (endpoint against rank), and examples per second of each path.

    python bench/vllm_parity.py --run runs/train/smollm2-notification-gen \\
        --vllm-python ~/.cache/mcqa/vllm-env/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcqa.examples import load_split  # noqa: E402
from mcqa.io import atomic_write_text, write_json  # noqa: E402
from mcqa.readouts import run_readout  # noqa: E402
from mcqa.serve.export import export  # noqa: E402
from mcqa.train.folder import read_summary  # noqa: E402
from mcqa.train.runs import load_run  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def serve(bundle: Path, python: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHON": python,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
    }
    log = open(bundle / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(bundle / "serve.sh")], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError as e:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"vLLM did not start; see {bundle / 'server.log'}") from e
            time.sleep(2)


def kill_and_resume(task: str, url: str, served: str, folder: Path, cut_after: int) -> dict:
    """`mcqa predict --endpoint` as a user runs it: once whole, once killed with SIGKILL after
    `cut_after` answers and run again; the two predictions files must be byte-identical."""
    cli = [
        sys.executable,
        str(ROOT / "cli.py"),
        "predict",
        "--task",
        task,
        "--split",
        "test",
        "--endpoint",
        url,
        "--served-model",
        served,
        "--readout-opt",
        "max_in_flight=8",
    ]
    whole, cut = folder / "whole.jsonl", folder / "cut.jsonl"
    for f in (whole, cut, whole.with_suffix(".json"), cut.with_suffix(".json")):
        f.unlink(missing_ok=True)
    subprocess.run([*cli, "--out", str(whole)], check=True, capture_output=True)
    proc = subprocess.Popen([*cli, "--out", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (cut.is_file() and cut.read_text().count("\n") >= cut_after) and proc.poll() is None:
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.kill()
    proc.wait()
    kept = cut.read_text().count("\n") if cut.is_file() else 0
    again = subprocess.run([*cli, "--out", str(cut)], check=True, capture_output=True, text=True)
    return {
        "killed_after_lines": kept,
        "killed_mid_run": killed,
        "resumed": "resumed" in again.stderr,
        "identical_file": cut.read_bytes() == whole.read_bytes(),
    }


def labels(task, output: str) -> dict | None:
    try:
        return task.output.model_validate_json(output).model_dump(mode="json")
    except ValueError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished generate-mode run")
    ap.add_argument("--vllm-python", required=True, help="the Python of an environment with vLLM")
    ap.add_argument("--bundle", type=Path, help="export folder (default: runs/export/<run name>)")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="serve the base model with the adapter merged in (no LoRA "
        "kernels: vLLM's CPU LoRA path generated ~2 tokens/s for smollm2-135m)",
    )
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--n", type=int, help="the first N test examples (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "vllm_parity"))
    args = ap.parse_args()
    summary = read_summary(args.run)
    bundle = args.bundle or Path("runs") / "export" / (args.run.name + ("-merged" if args.merge else ""))
    if not (bundle / "serve.sh").is_file():
        export(args.run, bundle, name="served", merge=args.merge)
    served = json.loads((bundle / "mcqa.json").read_text())["served_model"]
    model, tokenizer, task, _ = load_run(args.run)
    examples = load_split(task, "test", summary.protocol)[: args.n]
    rows, outputs = [], {}
    proc = serve(bundle, args.vllm_python, args.port)
    try:
        for k in (1, 8):
            name = f"vLLM endpoint, {k} in flight"
            outputs[name], s = timed(
                lambda k=k: run_readout(
                    "endpoint",
                    None,
                    None,
                    task,
                    examples,
                    url=f"http://127.0.0.1:{args.port}/v1",
                    served_model=served,
                    max_in_flight=k,
                )
            )
            rows.append({"readout": name, "seconds": round(s, 2), "examples_per_second": round(len(examples) / s, 3)})
            print(rows[-1], flush=True)
        resume = kill_and_resume(
            task.name, f"http://127.0.0.1:{args.port}/v1", served, bundle, cut_after=min(60, len(examples) // 2)
        )
        print("kill -9 and resume:", resume, flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    for name in ("constrained", "rank"):
        outputs[name], s = timed(lambda n=name: run_readout(n, model, tokenizer, task, examples))
        rows.append(
            {"readout": f"mcqa {name}", "seconds": round(s, 2), "examples_per_second": round(len(examples) / s, 3)}
        )
        print(rows[-1], flush=True)
    served_out, mine = outputs["vLLM endpoint, 8 in flight"], outputs["constrained"]
    agree = [labels(task, a["output"]) == labels(task, b["output"]) for a, b in zip(served_out, mine)]
    disagreements = [
        {"id": e.id, "vllm": a["output"], "mcqa_constrained": b["output"]}
        for e, a, b, ok in zip(examples, served_out, mine, agree)
        if not ok
    ]
    gap = max(
        (
            abs(a["probs"][f].get(v, 0.0) - p)
            for a, b in zip(served_out, outputs["rank"])
            if "probs" in a
            for f, dist in b["probs"].items()
            for v, p in dist.items()
        ),
        default=None,
    )
    report = {
        "run": str(args.run),
        "merged": args.merge,
        "task": task.name,
        "examples": len(examples),
        "identical_labels": sum(agree) / len(agree),
        "largest_probability_gap_vs_rank": gap,
        "kill_and_resume": resume,
        "rows": rows,
        "disagreements": disagreements,
        "command": "python bench/vllm_parity.py " + " ".join(sys.argv[1:]),
    }
    write_json(f"{args.out}.json", report)
    lines = [
        "# vLLM parity",
        "",
        f"`{report['command']}`",
        "",
        f"{task.name} test, {len(examples)} examples; identical labels (endpoint, 8 in flight, against mcqa "
        f"constrained): **{100 * report['identical_labels']:.1f}%**; largest label-probability gap against rank: "
        f"{gap}.",
        "",
        f"`mcqa predict --endpoint` killed (SIGKILL) after {resume['killed_after_lines']} answers and run again: "
        f"resumed {resume['resumed']}, predictions file byte-identical to an uninterrupted run: "
        f"{resume['identical_file']}.",
        "",
        "| readout | seconds | examples / s |",
        "|---|---|---|",
    ]
    lines += [f"| {r['readout']} | {r['seconds']} | {r['examples_per_second']} |" for r in rows]
    lines += ["", "Disagreements:", ""] + [
        f"- {d['id']}: vLLM `{d['vllm']}`, mcqa `{d['mcqa_constrained']}`" for d in disagreements
    ]
    atomic_write_text(f"{args.out}.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out}.md and .json")


if __name__ == "__main__":
    main()
