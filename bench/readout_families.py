"""Readout speed per model family: the prompt prefix shared (and, where every layer attends, a
tree of candidates per row) against plain rows (no prefix shared), same model, same examples.

Each family is a random float32 model at one mid-sized shape (hidden 512, 8 layers, MLP 1536,
8 heads of 64, the real Qwen3 tokenizer), built from transformers' own config class with the
family's layer mix (Qwen3.5: linear attention in 3 of every 4 layers; Gemma 3: a 512-token
sliding window in 5 of every 6 layers; LFM2: convolutions around attention layers). Outputs
are meaningless; only speed is read. The two settings must agree: the largest difference in
any score between them is written beside the speeds.

    python bench/readout_families.py            # every family, 16 examples per readout
    python bench/readout_families.py --families qwen3 qwen3_5 --n 8

Writes bench/readout_families.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import transformers as tf

from mcqa.examples import load_split
from mcqa.io import atomic_write_text, write_json
from mcqa.model import load_tokenizer
from mcqa.model.lm import capabilities
from mcqa.readouts import run_readout
from mcqa.registry import get_task

OUT = Path(__file__).resolve().parent
FAMILIES = ("qwen3", "qwen3_5", "gemma3", "llama", "qwen2", "lfm2")
READOUTS = (("rank", "notification", None), ("constrained", "notification", None), ("options", "recipe_mpr", "split"))


def build(family: str, tok):
    eos, pad = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    common = dict(
        vocab_size=-(-len(tok) // 128) * 128,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=True,
    )
    config = {
        "qwen3": lambda: tf.Qwen3Config(**common, head_dim=64),
        "qwen3_5": lambda: tf.Qwen3_5TextConfig(
            **common,
            head_dim=64,
            layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 2,
            linear_num_key_heads=4,
            linear_num_value_heads=8,
            linear_key_head_dim=64,
            linear_value_head_dim=64,
        ),
        "gemma3": lambda: tf.Gemma3TextConfig(
            **common,
            head_dim=64,
            sliding_window=512,
            layer_types=["sliding_attention"] * 5 + ["full_attention"] + ["sliding_attention"] * 2,
        ),
        "llama": lambda: tf.LlamaConfig(**common, head_dim=64),
        "qwen2": lambda: tf.Qwen2Config(**common),
        "lfm2": lambda: tf.Lfm2Config(
            **common, layer_types=["conv", "conv", "full_attention"] * 2 + ["conv", "full_attention"]
        ),
    }[family]()
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def scores(outputs) -> list[float]:
    out = []
    for o in outputs:
        for g in o.get("scores", []):
            out += g["loglik"]
        for v in o.get("option_scores", {}).values():
            out += v
    return out


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--n", type=int, default=16, help="examples per readout")
    args = ap.parse_args()
    tok = load_tokenizer()
    rows = []
    for family in args.families:
        model = build(family, tok)
        caps = capabilities(model)
        for readout, task_name, protocol in READOUTS:
            task = get_task(task_name)
            examples = load_split(task, "test", protocol)[: args.n]
            shared, ws, cs = timed(lambda: run_readout(readout, model, tok, task, examples, prefix_cache=True))
            plain, wp, cp = timed(lambda: run_readout(readout, model, tok, task, examples, prefix_cache=False))
            same = [o["output"] for o in shared] == [o["output"] for o in plain]
            a, b = scores(shared), scores(plain)
            diff = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
            rows.append(
                {
                    "family": family,
                    "layers": caps.describe(),
                    "trees": caps.trees,
                    "readout": readout,
                    "task": task_name,
                    "examples": len(examples),
                    "shared_wall_s": round(ws, 2),
                    "shared_cpu_s": round(cs, 2),
                    "plain_wall_s": round(wp, 2),
                    "plain_cpu_s": round(cp, 2),
                    "shared_examples_per_s": round(len(examples) / ws, 3),
                    "plain_examples_per_s": round(len(examples) / wp, 3),
                    "speedup": round(wp / ws, 2),
                    "same_outputs": same,
                    "max_score_diff": diff,
                }
            )
            print(rows[-1], flush=True)
    env = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": tf.__version__,
        "threads": torch.get_num_threads(),
    }
    write_json(OUT / "readout_families.json", {"env": env, "rows": rows})
    lines = [
        "# Readout speed per model family",
        "",
        f"`python bench/readout_families.py --n {args.n}`",
        "",
        f"{env['machine']}, {env['cpus']} CPUs, torch {env['torch']}, transformers {env['transformers']}, "
        f"{env['threads']} torch threads. Random float32 models of one shape per family (hidden 512, 8 layers; module "
        "docstring). 'shared': the prompt prefix every example shares encoded once, its cache (keys and values, or the "
        "recurrent and convolution state) copied to every row; where every layer attends, each example's candidates "
        "also share its prompt as one tree-masked row, else they are unrolled to a row each from a copied state. "
        "'plain': no prefix shared. Both read the same examples and must agree: 'max score diff' is the largest "
        "difference of any log-likelihood between them.",
        "",
        "| family | layers | readout | examples | shared: examples/s | plain: examples/s | "
        "speedup | same outputs | max score diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['layers']} | {r['readout']} ({r['task']}) | {r['examples']} | "
            f"{r['shared_examples_per_s']} | {r['plain_examples_per_s']} | {r['speedup']}x | "
            f"{'yes' if r['same_outputs'] else 'no'} | {r['max_score_diff']:.1e} |"
        )
    atomic_write_text(OUT / "readout_families.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
