"""The model a run trains: the base model (4-bit for qlora, checkpointed when asked), built into
the training mode's model, with fresh LoRA adapters on the model's projections (or the ones
configured), on every decoder layer or the last lora.layers of them."""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig, set_seed

from mcqa.errors import McqaError
from mcqa.model import load_causal_lm
from mcqa.model.lm import lora_targets, text_config
from mcqa.modes import get_mode
from mcqa.task import Task
from mcqa.train.config import TrainConfig
from mcqa.train.runs import torch_dtype


def build_model(config: TrainConfig, task: Task, tokenizer):
    """The base model, built into the mode's model, with fresh LoRA adapters."""
    set_seed(config.seed)  # LoRA's random init must not depend on what the process did before
    kwargs: dict[str, Any] = {}
    if config.qlora:
        kwargs["quantization_config"] = qlora_config(config)
    base = load_causal_lm(
        config.model, dtype=torch_dtype(config.dtype), trust_remote_code=config.trust_remote_code, **kwargs
    )
    if config.qlora:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.enable_input_require_grads()
    mode = get_mode(config.mode)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules or lora_targets(base),
        **last_layers(base, config.lora.layers),
        **mode.peft_kwargs(task),
    )
    return get_peft_model(mode.build(base, tokenizer, task), lora)


def adapter_line(model) -> str:
    """Which modules got LoRA adapters and how many parameters train (what the header promised)."""
    names = sorted({n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A" in n})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"LoRA adapters on {', '.join(names)}: {trainable:,} trainable parameters of {total:,}"


def last_layers(base, n: int | None) -> dict[str, Any]:
    """LoraConfig arguments that put LoRA on the last n decoder layers (PEFT's layers_to_transform)."""
    if n is None:
        return {}
    total = text_config(base).num_hidden_layers
    if n > total:
        raise McqaError(f"lora.layers={n}, but the model has {total} decoder layers; use at most {total}")
    return {"layers_to_transform": list(range(total - n, total)), "layers_pattern": "layers"}


def qlora_config(config: TrainConfig):
    """4-bit NF4 weights; mcqa.train.start.qlora_problems has checked for CUDA and bitsandbytes
    before any folder was made."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
