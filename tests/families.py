"""Tiny random models of every family mcqa claims, each built in the test process from
transformers' own config class (no download) with the real Qwen3 tokenizer: 4 layers, hidden
size 64, the family's layer mix kept (Qwen3.5: 3 linear-attention + 1 full-attention layers;
Gemma 3: 3 sliding + 1 global with a 16-token window, shorter than every prompt, so the window
matters; LFM2: convolution blocks around an attention layer)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
import transformers as tf

from mcqa.model import load_tokenizer

FAMILIES = ("qwen3", "qwen3_5", "gemma3", "llama", "qwen2", "lfm2")
WINDOW = 16


def config(family: str, tokenizer):
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    common = dict(
        vocab_size=-(-len(tokenizer) // 128) * 128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=True,
    )
    if family == "qwen3":
        return tf.Qwen3Config(**common, head_dim=16)
    if family == "qwen3_5":
        return tf.Qwen3_5TextConfig(
            **common,
            head_dim=16,
            layer_types=["linear_attention"] * 3 + ["full_attention"],
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            linear_conv_kernel_dim=4,
        )
    if family == "gemma3":
        return tf.Gemma3TextConfig(
            **common, head_dim=16, sliding_window=WINDOW, layer_types=["sliding_attention"] * 3 + ["full_attention"]
        )
    if family == "llama":
        return tf.LlamaConfig(**common, head_dim=16)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "lfm2":
        return tf.Lfm2Config(**common, layer_types=["conv", "conv", "full_attention", "conv"])
    raise ValueError(family)


@cache
def family_model(family: str):
    """(model, tokenizer), eval mode, float32, seeded; shared by a process's tests, which may
    hook or backpropagate through it but never change its weights."""
    tokenizer = load_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tf.AutoModelForCausalLM.from_config(config(family, tokenizer), attn_implementation="sdpa")
    return model.eval(), tokenizer


def save_family(family: str, folder: Path) -> Path:
    """The model as a local folder (safetensors, config and tokenizer) for the CLI."""
    model, tokenizer = family_model(family)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
