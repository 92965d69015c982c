"""Training throughput: mcqa's trainer against the plain published recipe, in one run.

Both LoRA-train the same Qwen3-0.6B-shaped random model (real dimensions, random weights,
float32) on the same notification training examples, on this machine:
- published: HF Trainer + PEFT, the model's own loss (full-sequence logits, prompt tokens
  masked with -100), DataCollatorForSeq2Seq padding to the longest, batch 1 with
  gradient accumulation 16;
- mcqa: mcqa's Trainer (McqaTrainer + PEFT): batches of 8 grouped by length, left-padded,
  the prompt prefix all examples share encoded once per batch, logits only at the target
  positions (mcqa.model.encoding), accumulation 2.
Same effective batch (16), learning rate, LoRA settings and seed. Tokens per second counts
the real (non-pad) tokens of the examples. Writes bench/train_throughput.{json,md}.

    python bench/train_throughput.py [--examples 32] [--layers 28]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcqa.examples import load_split  # noqa: E402
from mcqa.io import atomic_write_text, write_json  # noqa: E402
from mcqa.model import load_tokenizer  # noqa: E402
from mcqa.model.encoding import LeftPadCollator, end_of_turn, shared_prefix  # noqa: E402
from mcqa.modes.generate import GENERATE, encode_generative  # noqa: E402
from mcqa.registry import get_task  # noqa: E402

LORA = dict(
    r=16,
    lora_alpha=32,
    lora_dropout=0.0,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)


def qwen3_06b_shaped(layers: int, vocab: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config).float()


def run(method: str, rows: list[dict], tokenizer, layers: int, out: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model = get_peft_model(qwen3_06b_shaped(layers, 151936), LoraConfig(**LORA, task_type="CAUSAL_LM"))
    common = dict(
        output_dir=str(out / method),
        learning_rate=3e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        num_train_epochs=1,
        report_to=[],
        seed=0,
        data_seed=0,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        use_cpu=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    if method == "published":
        ds = Dataset.from_list(
            [
                {"input_ids": r["input_ids"], "attention_mask": [1] * len(r["input_ids"]), "labels": r["labels"]}
                for r in rows
            ]
        )
        args = TrainingArguments(per_device_train_batch_size=1, gradient_accumulation_steps=16, **common)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=ds,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100),
        )
    else:
        ds = Dataset.from_list([{k: r[k] for k in ("input_ids", "labels", "length")} for r in rows])
        args = TrainingArguments(
            per_device_train_batch_size=8,
            gradient_accumulation_steps=2,
            train_sampling_strategy="group_by_length",
            label_names=["labels"],
            **common,
        )
        from mcqa.train.recipe import McqaTrainer

        trainer = McqaTrainer(
            model=model,
            args=args,
            train_dataset=ds,
            data_collator=LeftPadCollator(tokenizer.pad_token_id, prefix=shared_prefix(rows)),
            compute_loss_func=GENERATE.loss,
            mcqa_eval={"mode": GENERATE},
        )  # as mcqa.train.recipe builds it
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = sum(len(r["input_ids"]) for r in rows)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "method": method,
        "seconds": round(seconds, 1),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2),
        "step_losses": [round(x, 4) for x in losses],
        "mean_loss": round(sum(losses) / len(losses), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=32, help="training examples (a multiple of 16)")
    p.add_argument("--layers", type=int, default=28, help="decoder layers (Qwen3-0.6B has 28)")
    p.add_argument("--out", type=Path, default=ROOT / "bench")
    a = p.parse_args()
    torch.manual_seed(0)
    tokenizer = load_tokenizer()  # the real Qwen3 tokenizer and chat template
    task = get_task("notification")
    examples = load_split(task, "train")[: a.examples]
    rows = encode_generative(tokenizer, task, examples, end_of_turn(tokenizer))
    scratch = Path("/tmp/mcqa-bench-train")
    results = [run(m, rows, tokenizer, a.layers, scratch) for m in ("published", "mcqa")]
    pub, ours = results
    ratio = ours["tokens_per_second"] / pub["tokens_per_second"]
    summary = {
        "model": f"Qwen3-0.6B-shaped random ({a.layers} layers, hidden 1024, vocab 151936), float32, LoRA r=16",
        "task": "notification (train split)",
        "examples": a.examples,
        "effective_batch": 16,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "results": results,
        "speedup": round(ratio, 2),
        "target": 1.3,
        "loss_gap": round(abs(ours["mean_loss"] - pub["mean_loss"]), 4),
        "command": f"python bench/train_throughput.py --examples {a.examples} --layers {a.layers}",
    }
    write_json(a.out / "train_throughput.json", summary)
    lines = [
        "# Training throughput: mcqa vs the published recipe",
        "",
        f"`{summary['command']}`",
        "",
        f"{summary['model']}; {a.examples} notification examples, effective batch 16; {summary['machine']}.",
        "",
        "| method | seconds | tokens | tokens/s | mean loss | step losses |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['method']} | {r['seconds']} | {r['tokens']} | "
            f"{r['tokens_per_second']} | {r['mean_loss']} | {r['step_losses']} |"
        )
    lines += ["", f"Speed-up: **{ratio:.2f}x** (target 1.3x); mean loss gap {summary['loss_gap']}.", ""]
    atomic_write_text(a.out / "train_throughput.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
