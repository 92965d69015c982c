"""Readout throughput (and accuracy) against the published loop, on CPU, in one run.

The published loop: HF `generate`, greedy, batch 1, the full prompt every time (no prefix
cache), max_new_tokens=10, then the scorer's parser. Each readout runs on the same model,
prompts and examples, timed end to end (tokenizing, the shared prefix, batching, decoding).

(a) a Qwen3-0.6B-shaped model with random float32 weights (Qwen3Config at the real 0.6B
    dimensions, the real Qwen3 tokenizer), few-shot MMLU-Pro-subject prompts: the task's
    instructions and a few TRAIN questions with their answers (~250 shared tokens), then the
    question. Outputs are meaningless; only speed is read.
(b) smollm2-135m (real weights) on notification and mmlu_pro with the same kind of few-shot
    prompts; accuracy of every readout through the scorer, and rank's temperature fitted on
    validation examples with ECE before and after on the test examples. The published loop
    gets max_new_tokens = max(10, the longest target + 4), since a notification answer is
    longer than 10 tokens.

(c) smollm2-135m (real weights) on recipe_mpr, zero-shot multiple choice: the letter readout
    mcqa had (rank over the answer letters, the task's lettered prompt) against the option-text
    readout (options: each option's text scored as the answer to the cloze prompt, rule sum,
    and pmi, which adds a second pass under a neutral prompt). Same model and examples; the
    token counts say what the shared question prefix saves: a forward per (question, option)
    pair would feed every option its own copy of the prompt.

    python bench/readout_throughput.py                      # all parts, defaults below
    python bench/readout_throughput.py --part a --n 12      # quicker
    python bench/readout_throughput.py --part c --n-choice 60

Writes bench/readout_throughput.{md,json}. The CPU may be shared: the load average is
recorded around every measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcqa.eval.calibration import apply_temperature, fit_temperature  # noqa: E402
from mcqa.eval.scoring import score  # noqa: E402
from mcqa.io import atomic_write_text, write_json  # noqa: E402
from mcqa.model.encoding import stop_token_ids  # noqa: E402
from mcqa.prompting import render_prompt, serialize_target  # noqa: E402
from mcqa.readouts import default_max_new_tokens, run_readout  # noqa: E402
from mcqa.registry import get_task  # noqa: E402
from mcqa.task import Example, Task  # noqa: E402

OUT = ROOT / "bench"
PUBLISHED_MAX_NEW_TOKENS = 10
SHOTS_BUDGET = 250  # tokens of instructions + few-shot turns shared by every prompt


def few_shot(task: Task, tokenizer, budget: int = SHOTS_BUDGET, seed: int = 0) -> Task:
    """The task with TRAIN examples as earlier chat turns (user question, assistant answer),
    added in a seeded order while the shared part of the prompt stays within `budget` tokens."""
    train = list(task.load("train", task.default_protocol))
    random.Random(seed).shuffle(train)
    shots: list[dict[str, str]] = []

    def shared_len(turns) -> int:
        return len(
            tokenizer(render_prompt(tokenizer, task.messages(train[0])[:1] + turns), add_special_tokens=False)[
                "input_ids"
            ]
        )

    for e in train[:200]:
        msgs = task.messages(e)
        turn = [msgs[-1], {"role": "assistant", "content": serialize_target(task.output, e.target)}]
        if shared_len(shots + turn) <= budget:
            shots += turn
        if shared_len(shots) > budget - 40:
            break

    def messages(e: Example) -> list[dict[str, str]]:
        msgs = task.messages(e)
        return msgs[:-1] + shots + msgs[-1:]

    return dataclasses.replace(task, messages=messages)


@torch.no_grad()
def published_loop(model, tokenizer, task: Task, examples: list[Example], max_new_tokens: int) -> list[dict]:
    """The loop mcqa replaces: one example at a time, the whole prompt, HF generate."""
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    out = []
    for e in examples:
        enc = tokenizer(render_prompt(tokenizer, task.messages(e)), return_tensors="pt", add_special_tokens=False)
        gen = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=pad
        )
        new = gen[0, enc["input_ids"].shape[1] :].tolist()
        end = next((i for i, t in enumerate(new) if t in stops), None)
        out.append({"id": e.id, "output": tokenizer.decode(new[:end]), "truncated": end is None})
    return out


def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed(name: str, fn, n: int) -> tuple[list[dict], dict]:
    """Wall-clock and process CPU seconds. With one torch thread the CPU seconds are the work
    done, whatever else runs on the machine; the wall clock also counts waiting for a core."""
    before = load()
    wall, cpu = time.perf_counter(), time.process_time()
    outputs = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row = {
        "readout": name,
        "n": n,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "examples_per_s": round(n / wall, 3),
        "examples_per_cpu_s": round(n / cpu, 3),
        "load_before": before,
        "load_after": load(),
    }
    print(
        f"  {name:<26} {wall:7.1f} s wall {cpu:7.1f} s cpu  "
        f"{n / cpu:7.3f} ex/cpu-s  (load {before} -> {row['load_after']})",
        flush=True,
    )
    return outputs, row


def sample(task: Task, split: str, n: int, seed: int = 0) -> list[Example]:
    examples = list(task.load(split, task.default_protocol))
    return random.Random(seed).sample(examples, min(n, len(examples)))


def prompt_stats(tokenizer, task: Task, examples: list[Example]) -> dict:
    from mcqa.model.encoding import common_prefix_len, prompt_ids

    ids = [prompt_ids(tokenizer, task, e) for e in examples]
    shared = common_prefix_len(ids)
    return {
        "prompt_tokens_mean": round(sum(map(len, ids)) / len(ids), 1),
        "shared_prefix_tokens": shared,
        "suffix_tokens_mean": round(sum(len(x) - shared for x in ids) / len(ids), 1),
    }


def run_readouts(
    model, tokenizer, task: Task, examples: list[Example], published_tokens: int, batch_size: int, heads: bool = True
) -> tuple[list[dict], dict[str, list[dict]]]:
    rows, outputs = [], {}
    outputs["published loop"], row = timed(
        "published loop (HF generate)",
        lambda: published_loop(model, tokenizer, task, examples, published_tokens),
        len(examples),
    )
    rows.append(row)
    base = row
    plan = [
        ("generate", {"max_new_tokens": published_tokens, "batch_size": batch_size}),
        ("constrained", {}),  # their own defaults: 16 examples a batch, packed into rows of ~512 tokens
        ("rank", {}),
    ]
    for name, opts in plan:
        outputs[name], row = timed(
            name, lambda n=name, o=opts: run_readout(n, model, tokenizer, task, examples, **o), len(examples)
        )
        rows.append(row)
    if heads:  # heads initialised from the LM-head rows of each label's first token (untrained)
        from mcqa.modes.head import build_head_model

        head_model = build_head_model(model, tokenizer, task).eval()
        outputs["head"], row = timed(
            "head (untrained heads)",
            lambda: run_readout("head", head_model, tokenizer, task, examples, batch_size=batch_size),
            len(examples),
        )
        rows.append(row)
    for row in rows:
        row["speedup_cpu"] = round(base["cpu_s"] / row["cpu_s"], 2)
        row["speedup_wall"] = round(base["wall_s"] / row["wall_s"], 2)
        row["same_output_as_constrained"] = round(
            sum(a["output"] == b["output"] for a, b in zip(outputs[_key(row)], outputs["constrained"])) / len(examples),
            3,
        )
    return rows, outputs


def _key(row: dict) -> str:
    return "published loop" if row["readout"].startswith("published") else row["readout"].split()[0]


def accuracy(task: Task, examples: list[Example], outputs: list[dict]) -> dict:
    m = score(task, examples, outputs, {"task": task.name}, resamples=200).metrics
    out = {"joint": round(m["joint"]["accuracy"], 3), "parse_failure_rate": round(m["parse"]["failure_rate"], 3)}
    for f, fm in m["fields"].items():
        out[f] = round(fm["accuracy"], 3)
        if "calibration" in fm:
            out[f"{f}_ece"] = round(fm["calibration"]["ece"], 3)
    return out


def qwen3_06b_shaped():
    """Qwen3-0.6B's architecture (Qwen/Qwen3-0.6B config.json) with random weights."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
    )
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config).eval()


def part_a(n: int, batch_size: int) -> dict:
    from mcqa.model import load_tokenizer

    print("(a) Qwen3-0.6B-shaped random model, few-shot mmlu_pro prompts", flush=True)
    tokenizer = load_tokenizer("tiny-qwen3")  # the real Qwen3 tokenizer and chat template
    model = qwen3_06b_shaped()
    task = few_shot(get_task("mmlu_pro"), tokenizer)
    examples = sample(task, "test", n)
    stats = prompt_stats(tokenizer, task, examples)
    print(f"  {stats}", flush=True)
    rows, _ = run_readouts(model, tokenizer, task, examples, PUBLISHED_MAX_NEW_TOKENS, batch_size)
    return {
        "model": "Qwen3-0.6B-shaped, random float32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "task": "mmlu_pro (few-shot)",
        "max_new_tokens": PUBLISHED_MAX_NEW_TOKENS,
        **stats,
        "rows": rows,
    }


def part_b(n: int, n_val: int, batch_size: int) -> list[dict]:
    from mcqa.model import load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer("smollm2-135m"), load_causal_lm("smollm2-135m")
    results = []
    for name in ("notification", "mmlu_pro"):
        print(f"(b) smollm2-135m, few-shot {name}", flush=True)
        task = few_shot(get_task(name), tokenizer)
        examples, validation = sample(task, "test", n), sample(task, "validation", n_val)
        stats = prompt_stats(tokenizer, task, examples)
        print(f"  {stats}", flush=True)
        tokens = max(PUBLISHED_MAX_NEW_TOKENS, default_max_new_tokens(tokenizer, task))
        rows, outputs = run_readouts(model, tokenizer, task, examples, tokens, batch_size)
        for row in rows:
            row["accuracy"] = accuracy(task, examples, outputs[_key(row)])
            print(f"  {row['readout']:<26} {row['accuracy']}", flush=True)
        val_outputs = run_readout("rank", model, tokenizer, task, validation)
        fit = fit_temperature(task, validation, val_outputs)
        calibrated = apply_temperature(task, outputs["rank"], fit.temperature)
        test_ece = {"before": accuracy(task, examples, outputs["rank"]), "after": accuracy(task, examples, calibrated)}
        print(
            f"  temperature {fit.temperature:.3f}: validation NLL {fit.nll_before:.3f} -> {fit.nll_after:.3f}",
            flush=True,
        )
        results.append(
            {
                "model": "smollm2-135m",
                "task": f"{name} (few-shot)",
                "max_new_tokens": tokens,
                **stats,
                "rows": rows,
                "temperature": {**dataclasses.asdict(fit), "n_validation": len(validation), "test": test_ece},
            }
        )
    return results


def option_token_stats(tokenizer, task: Task, examples: list[Example]) -> dict:
    """Tokens the options readout feeds with its sharing (the run's common prefix once, each
    question's suffix once, a trie of its options) against one forward per (question, option)."""
    from mcqa.model.encoding import common_prefix_len, end_of_turn
    from mcqa.readouts.options import option_texts, question_messages
    from mcqa.readouts.trie import Trie

    eot = end_of_turn(tokenizer)
    prompts = [
        tokenizer(render_prompt(tokenizer, question_messages(task, e, "cloze")), add_special_tokens=False)["input_ids"]
        for e in examples
    ]
    options = [
        [tuple(tokenizer(t + eot, add_special_tokens=False)["input_ids"]) for t in option_texts(task, e)]
        for e in examples
    ]
    shared = common_prefix_len(prompts)
    trie_nodes = sum(len(Trie(o).needed("full")) for o in options)
    fed = shared + sum(len(p) - shared for p in prompts) + trie_nodes
    pairs = sum(len(p) * len(o) + sum(map(len, o)) for p, o in zip(prompts, options))
    return {
        "cloze_prompt_tokens_mean": round(sum(map(len, prompts)) / len(prompts), 1),
        "shared_prefix_tokens": shared,
        "options_per_example": round(sum(map(len, options)) / len(options), 2),
        "option_tokens_mean": round(sum(sum(map(len, o)) for o in options) / len(options), 1),
        "tokens_fed_shared": fed,
        "tokens_fed_per_pair": pairs,
        "pair_over_shared": round(pairs / fed, 2),
    }


def part_c(n: int) -> dict:
    from mcqa.model import load_causal_lm, load_tokenizer

    print("(c) smollm2-135m, zero-shot recipe_mpr: letters (rank) against option text (options)", flush=True)
    tokenizer, model = load_tokenizer("smollm2-135m"), load_causal_lm("smollm2-135m")
    task = get_task("recipe_mpr")
    examples = sample(task, "test", n)
    stats = {**prompt_stats(tokenizer, task, examples), "options": option_token_stats(tokenizer, task, examples)}
    print(f"  {stats}", flush=True)
    rows, outputs = [], {}
    for name, readout, opts in [
        ("rank (letters)", "rank", {}),
        ("options rule=sum", "options", {"rule": "sum"}),
        ("options rule=pmi", "options", {"rule": "pmi"}),
    ]:
        outputs[name], row = timed(
            name, lambda r=readout, o=opts: run_readout(r, model, tokenizer, task, examples, **o), n
        )
        row["accuracy"] = accuracy(task, examples, outputs[name])
        print(f"  {name:<26} {row['accuracy']}", flush=True)
        rows.append(row)
    for row in rows:
        row["speedup_cpu"] = round(rows[0]["cpu_s"] / row["cpu_s"], 2)
        row["speedup_wall"] = round(rows[0]["wall_s"] / row["wall_s"], 2)
    return {
        "model": "smollm2-135m",
        "task": "recipe_mpr (zero-shot)",
        "split": f"test split (protocol {task.default_protocol})",
        **stats,
        "rows": rows,
    }


def token_ratio(part: dict) -> float:
    n = part["rows"][0]["n"]
    return n * part["prompt_tokens_mean"] / (part["shared_prefix_tokens"] + n * part["suffix_tokens_mean"])


def markdown(report: dict) -> str:
    lines = [
        "# Readout throughput",
        "",
        f"`{report['command']}`",
        "",
        f"{report['machine']}; torch {report['torch']}, transformers {report['transformers']}, {report['threads']} "
        f"torch thread(s); load average (1 min) {report['load_start']} at the start, {report['load_end']} at the end. "
        "The CPU is shared with other jobs, so the speedup is given on process CPU seconds (the work done, whatever "
        "else runs) and on wall-clock seconds; speedup = published loop seconds / readout seconds, same examples. "
        "'same as constrained' is the share of examples whose output equals the constrained readout's.",
        "",
    ]
    parts = ([report["a"]] if "a" in report else []) + report.get("b", [])
    for part in parts:
        lines += [
            f"## {part['model']}: {part['task']}",
            "",
            f"{part['rows'][0]['n']} examples; prompts {part['prompt_tokens_mean']} tokens on average, "
            f"{part['shared_prefix_tokens']} shared, {part['suffix_tokens_mean']} per example after that; "
            f"published loop max_new_tokens={part['max_new_tokens']}. Prompt tokens a forward must process: "
            f"{token_ratio(part):.2f}x fewer with the shared prefix encoded once (n x prompt / (shared + n x suffix)); "
            "the published loop also decodes up to max_new_tokens tokens one at a time.",
            "",
        ]
        acc = "accuracy" in part["rows"][0]
        head = (
            "| readout | wall s | CPU s | examples / CPU s | speedup (CPU) | speedup (wall) | load | "
            "same as constrained |"
        )
        lines += [head + (" accuracy |" if acc else ""), "|---" * (8 + acc) + "|"]
        for r in part["rows"]:
            line = (
                f"| {r['readout']} | {r['wall_s']} | {r['cpu_s']} | {r['examples_per_cpu_s']} | {r['speedup_cpu']}x | "
                f"{r['speedup_wall']}x | {r['load_before']}-{r['load_after']} | {r['same_output_as_constrained']} |"
            )
            if acc:
                line += " " + ", ".join(f"{k} {v}" for k, v in r["accuracy"].items()) + " |"
            lines.append(line)
        if "temperature" in part:
            t = part["temperature"]
            ece = lambda d: ", ".join(f"{f} {v:.3f}" for f, v in d.items())  # noqa: E731
            test = lambda d: ", ".join(f"{k} {v}" for k, v in d.items() if k.endswith("_ece"))  # noqa: E731
            lines += [
                "",
                f"rank, temperature fitted on {t['n_validation']} validation examples: T = {t['temperature']:.3f}; "
                f"validation NLL {t['nll_before']:.3f} -> {t['nll_after']:.3f}, validation ECE {ece(t['ece_before'])} "
                f"-> {ece(t['ece_after'])}; test ECE {test(t['test']['before'])} -> {test(t['test']['after'])}.",
            ]
        lines.append("")
    if "c" in report:
        c, o = report["c"], report["c"]["options"]
        lines += [
            f"## {c['model']}: {c['task']}, letters against option text",
            "",
            f"{c['rows'][0]['n']} examples from the {c['split']}. Letter prompt {c['prompt_tokens_mean']} tokens on "
            f"average; cloze prompt {o['cloze_prompt_tokens_mean']} tokens ({o['shared_prefix_tokens']} shared by "
            f"all), {o['options_per_example']} options of {o['option_tokens_mean']} tokens in all per example. The "
            f"options readout feeds {o['tokens_fed_shared']} tokens per pass (shared prefix once, each question once, "
            f"a trie of its options); a forward per (question, option) pair would feed {o['tokens_fed_per_pair']} "
            f"({o['pair_over_shared']}x). pmi runs two passes (the second under a neutral prompt). Speedup is against "
            "the rank (letters) row.",
            "",
            "| readout | wall s | CPU s | examples / CPU s | speedup (CPU) | speedup (wall) | load | accuracy |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in c["rows"]:
            lines.append(
                f"| {r['readout']} | {r['wall_s']} | {r['cpu_s']} | {r['examples_per_cpu_s']} | {r['speedup_cpu']}x | "
                f"{r['speedup_wall']}x | {r['load_before']}-{r['load_after']} | "
                + ", ".join(f"{k} {v}" for k, v in r["accuracy"].items())
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["a", "b", "c", "both", "all"], default="all", help="both: a and b")
    ap.add_argument("--n", type=int, default=16, help="examples in (a)")
    ap.add_argument("--n-real", type=int, default=40, help="test examples per task in (b)")
    ap.add_argument("--n-val", type=int, default=40, help="validation examples per task in (b), for the temperature")
    ap.add_argument("--n-choice", type=int, default=60, help="test examples of recipe_mpr in (c)")
    ap.add_argument("--batch-size", type=int, default=8, help="for generate and head (left-padded batches)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared CPU, OpenMP threads mostly wait on each other)",
    )
    ap.add_argument("--out", default=str(OUT / "readout_throughput"))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json, running nothing")
    args = ap.parse_args()
    if args.markdown_only:
        atomic_write_text(f"{args.out}.md", markdown(json.loads(Path(f"{args.out}.json").read_text(encoding="utf-8"))))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    report: dict = {
        "command": "python " + " ".join(["bench/readout_throughput.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads,
        "load_start": load(),
    }
    if args.part in ("a", "both", "all"):
        report["a"] = part_a(args.n, args.batch_size)
    if args.part in ("b", "both", "all"):
        report["b"] = part_b(args.n_real, args.n_val, args.batch_size)
    if args.part in ("c", "all"):
        report["c"] = part_c(args.n_choice)
    report["load_end"] = load()
    write_json(f"{args.out}.json", report)
    atomic_write_text(f"{args.out}.md", markdown(report))
    print(f"wrote {args.out}.md and .json")


if __name__ == "__main__":
    main()
