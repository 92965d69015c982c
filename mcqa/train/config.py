"""Typed training config, declared once. A YAML file and `key=value` overrides (dotted for
nested keys, `lora.r=8`) are merged, overrides winning; unknown keys are rejected, and every
error is reported at once. The resolved config is saved beside every run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mcqa.errors import McqaError, UnknownTaskError, did_you_mean
from mcqa.io import read_text, validation_problems
from mcqa.model import DEFAULT_MODEL
from mcqa.registry import get_task

# transformers' own scheduler names, checked here rather than by TrainingArguments after the model has loaded.
# transformers' SchedulerType values, written out so that reading a run's config imports no
# transformers (`mcqa runs` stays light); a test checks they are still the same.
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
Scheduler = Literal[SCHEDULERS]  # type: ignore[valid-type]


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r)")
    # 0, as in LLaMA-Factory and Unsloth: on a CPU, PEFT's dropout masks were 29% of a forward
    # pass (smollm2-135m, head mode); set 0.05 or 0.1 for long runs that overfit.
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="module names that get LoRA adapters; none: every linear projection in the "
        "decoder layers, whatever the family calls them (Qwen3: q/k/v/o and gate/up/down; Qwen3.5 adds its "
        "linear-attention projections)",
    )
    layers: int | None = Field(
        None,
        ge=1,
        description="LoRA on the last N decoder layers only: the backward pass stops "
        "there (faster on a CPU); none: every layer",
    )


# A setting marked so changes how fast a run goes, how much memory it takes or what it may run,
# not what it learns: `mcqa compare` pools runs that differ only in these (and in fold and folder).
_SPEED = {"incidental": True}


class TrainConfig(BaseModel):
    """Defaults follow the published recipes: LoRA r=16, alpha=32, no dropout, on every
    projection, lr 3e-4, cosine schedule, 10% warmup, effective batch 16. A task may set its
    own (Task.train_defaults); a config file and key=value overrides win over both."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task: str
    protocol: str | None = Field(None, description="split protocol; default: the task's first")
    model: str = Field(DEFAULT_MODEL, description="hub id, local folder, or an alias from `mcqa models`")
    mode: str = Field(
        "generate",
        pattern=r"^[A-Za-z0-9_]+$",
        description="training mode (`mcqa train --help` lists them; "
        "checked against the registry before a run folder is made)",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(3e-4, gt=0)
    lr_scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1, description="effective batch: micro batch x accumulation x processes")
    micro_batch_size: int = Field(
        8, ge=1, description="examples per forward pass on one process", json_schema_extra=_SPEED
    )
    max_batch_tokens: int | None = Field(
        1024,
        ge=16,
        json_schema_extra=_SPEED,
        description="tokens per forward pass (rows x padded width, plus the "
        "shared prefix once): a bigger micro batch runs as row chunks with the same "
        "gradient; bounds memory (bench/train_memory.md); null: no bound",
    )
    epochs: float = Field(3, gt=0, le=10_000)
    max_steps: int | None = Field(
        None,
        ge=1,
        description="stop after N optimizer steps (a smoke run or a memory probe: the "
        "first batch holds the longest example); validation and test still run",
    )
    max_length: int = Field(1024, ge=16, description="longer examples are dropped from training, with a count")
    permutations: int = Field(
        0,
        ge=0,
        description="multiple choice: also train on each example with this many other "
        "option orders (the gold letter follows the gold option)",
    )
    max_train_examples: int | None = Field(None, ge=1, description="train on a seeded sample (quick runs)")
    max_eval_examples: int | None = Field(
        None, ge=1, description="validate on a seeded sample of N validation examples (quick runs)"
    )
    max_test_examples: int | None = Field(
        None,
        ge=1,
        description="test on a seeded sample of N test examples (quick runs; run.json and the test report say so)",
    )
    group_by_length: bool = Field(True, description="batch examples of similar length together (less padding)")
    share_prefix: bool = Field(
        True, description="encode the prompt prefix all examples share once per batch", json_schema_extra=_SPEED
    )
    eval_batch_size: int = Field(16, ge=1, json_schema_extra=_SPEED)
    eval_max_new_tokens: int | None = Field(None, ge=1, description="default: longest target + 16")
    best_metric: str = Field("joint", description="joint, parse_failure_rate, <field>_accuracy or <field>_macro_f1")
    patience: int | None = Field(3, ge=1, description="stop after this many epochs without improvement")
    seed: int = Field(0, ge=0, lt=2**32, description="numpy and torch take 0 .. 2**32-1")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    gradient_checkpointing: bool = Field(False, json_schema_extra=_SPEED)
    qlora: bool = Field(False, description="load the base model in 4 bits (bitsandbytes, CUDA only)")
    trust_remote_code: bool = Field(False, json_schema_extra=_SPEED)
    logging_steps: int = Field(5, ge=1, json_schema_extra=_SPEED)
    output_dir: str | None = Field(
        None, description="run folder; default runs/train/<task>-<mode>-<time>", json_schema_extra=_SPEED
    )

    @model_validator(mode="after")
    def _check_batch(self) -> "TrainConfig":
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size}"
            )
        return self


INCIDENTAL = frozenset(
    name for name, f in TrainConfig.model_fields.items() if (f.json_schema_extra or {}).get("incidental")
)


def best_metric_names(task: Any) -> list[str]:
    """The names `best_metric` may take: what the scorer reports each epoch (mcqa.train.recipe.flat_metrics)."""
    names = ["joint", "parse_failure_rate"]
    for f, space in task.label_spaces.items():
        names += [f"{f}_accuracy"] + ([f"{f}_macro_f1"] if space is not None else [])
    return names


def settings_problems(config: TrainConfig, task: Any, weight_names: set[str] | None) -> list[str]:
    """What transformers or PEFT would refuse only once work has begun, found now: a protocol
    the task lacks, a best_metric the scorer never reports, LoRA target modules the model does
    not have (checked against its parameter names, when its files are here)."""
    problems = []
    if config.protocol is not None and config.protocol not in task.protocols:
        problems.append(
            f"protocol: task '{task.name}' has no split protocol '{config.protocol}'; "
            f"choose one of: {', '.join(task.protocols)}"
        )
    metrics = best_metric_names(task)
    name = config.best_metric.removeprefix("eval_")
    if name not in metrics:
        problems.append(
            f"best_metric: '{config.best_metric}' is not reported for task '{task.name}'{did_you_mean(name, metrics)} "
            f"(choose from: {', '.join(metrics)})"
        )
    if weight_names is not None:
        # PEFT matches a target against a module's full name or its last parts; LoRA needs a weight matrix.
        layers = {n.rsplit(".", 1)[0] for n in weight_names if n.endswith(".weight")}
        have = sorted({m.rsplit(".", 1)[-1] for m in layers} | {"lm_head"})
        blocks = {m.group(1) for n in weight_names if (m := re.search(r"\.layers\.(\d+)\.", n))}
        if config.lora.layers is not None and blocks and config.lora.layers > len(blocks):
            problems.append(
                f"lora.layers: {config.lora.layers}, but the model '{config.model}' has {len(blocks)} decoder layers; "
                f"use at most {len(blocks)}"
            )
        for t in config.lora.target_modules or ():
            if t != "lm_head" and not any(m == t or m.endswith(f".{t}") for m in layers):
                problems.append(
                    f"lora.target_modules: the model '{config.model}' has no module '{t}'{did_you_mean(t, have)} "
                    f"(its modules: {', '.join(have)})"
                )
    return problems


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise McqaError(f"override '{key}': '{p}' is not a section")
    d[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict:
    """["lora.r=8", "epochs=2"] -> {"lora": {"r": 8}, "epochs": 2}; values are read as YAML."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise McqaError(f"override '{item}' is not key=value (for example epochs=2 or lora.r=8)")
        _set_dotted(out, key.strip(), yaml.safe_load(raw) if raw else "")
    return out


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """The task's train_defaults, then the YAML file (optional), then overrides -> TrainConfig,
    later ones winning; all problems in one message."""
    data = _merge(read_config_file(path) if path is not None else {}, overrides or {})
    data = _merge(task_defaults(data.get("task")), data)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        problems = validation_problems(e, root="config")
        where = f"{path}: " if path else ""
        n = len(e.errors())
        raise McqaError(f"{where}invalid config ({n} problem{'s' if n > 1 else ''}): {problems}") from None


def read_config_file(path: str | Path) -> dict:
    """A YAML config file as a dict, or one clear error."""
    path = Path(path)
    if not path.exists():
        raise McqaError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        raise McqaError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise McqaError(f"{path}: YAML nested too deeply to read") from None
    if not isinstance(data, dict):
        raise McqaError(f"{path}: a config file must be a mapping of key: value")
    return data


def defaults_used(task_name: str, path: str | Path | None, overrides: dict) -> dict[str, Any]:
    """The task's train_defaults (flat, as key=value names them) that the config file and the
    overrides leave in force."""
    mine = flat_settings(_merge(read_config_file(path) if path is not None else {}, overrides))
    return {
        k: v
        for k, v in flat_settings(task_defaults(task_name)).items()
        if k not in mine and not any(k.startswith(g + ".") for g in mine)
    }


def defaults_note(task_name: str, path: str | Path | None, overrides: dict) -> str | None:
    """One line naming the settings that came from the task's train_defaults (what the user did
    not set in a config file or on the command line); said once the run is set up."""
    used = defaults_used(task_name, path, overrides)
    if not used:
        return None
    return (
        f"task '{task_name}' defaults: "
        + " ".join(f"{k}={v}" for k, v in used.items())
        + " (a config file or key=value overrides win)"
    )


def task_defaults(name: Any) -> dict:
    """A task's train_defaults, checked on their own so that a bad one names the task. An
    unknown task name is left for the caller to refuse (with its did-you-mean)."""
    if not isinstance(name, str):
        return {}
    try:
        task = get_task(name)
    except UnknownTaskError:
        return {}
    defaults = dict(task.train_defaults)
    try:
        TrainConfig.model_validate({**defaults, "task": name})
    except ValidationError as e:
        raise McqaError(
            f"{task.source or name}: task '{name}' has invalid train_defaults ({validation_problems(e)})"
        ) from None
    return defaults


def flat_settings(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"lora": {"r": 8}, "epochs": 2} -> {"lora.r": 8, "epochs": 2}, as key=value overrides name them."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_settings(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
