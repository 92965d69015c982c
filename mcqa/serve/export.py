"""`mcqa export RUN --to vllm OUT/`: a finished run as a bundle a serving engine takes as is.

The bundle holds the PEFT adapter (or, with `merge`, the base model with the adapter merged
in), the run's tokenizer with its chat template, the task's JSON Schema and label lists, the
structured-output request mcqa's endpoint readout sends, `serve.sh` with the vLLM flags that
matter, and a README saying how to serve it and read it out. The run folder is untrusted
input: it is checked by mcqa.train.runs, only plain files with the expected names are copied, and
nothing is written outside OUT.

vLLM flags, and why:
- `--enable-lora --lora-modules NAME=adapter --max-lora-rank R`: R is the smallest rank vLLM
  accepts that holds the run's `lora.r`;
- `--max-logprobs N`: at least the number of labels of the largest field (and the 20
  alternatives the endpoint readout asks for);
- `--logprobs-mode processed_logprobs`: returned log-probabilities are those after the grammar
  mask, i.e. over the allowed labels;
- `--generation-config vllm`: the checkpoint's generation_config (top-k, top-p) cannot drop
  labels from the distribution;
- `--dtype float32` by default on a CPU (bf16 is much slower there); DTYPE overrides.
A head- or choice-mode run has no LM head to serve: it is refused in one line.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from mcqa.errors import McqaError
from mcqa.io import atomic_write_text, check_out_folder, write_json
from mcqa.model import resolve_model
from mcqa.readouts.endpoint import TOP_LOGPROBS, build_request
from mcqa.registry import get_task
from mcqa.train.runs import load_run, read_config, read_summary
from mcqa.schema import task_schema

ENGINES = ("vllm",)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")


def lora_rank_flag(r: int) -> int:
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise McqaError(f"lora.r {r} is above the largest rank vLLM serves ({VLLM_LORA_RANKS[-1]}); export with --merge")


def _copy_plain(src: Path, dst: Path, names: list[str]) -> list[str]:
    """Regular files only (no links, no folders), by the names given; returns what was copied."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        f = src / name
        if f.is_symlink() or not f.is_file():
            continue
        shutil.copyfile(f, dst / name)
        copied.append(name)
    return copied


def export(run_dir: str | Path, out: str | Path, engine: str = "vllm", merge: bool = False, name: str | None = None) -> Path:
    if engine not in ENGINES:
        raise McqaError(f"--to {engine}: mcqa exports for {', '.join(ENGINES)}")
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)  # finished, and run.json agrees with config.yaml
    config = read_config(run_dir)
    if config.mode in ("content", "listwise"):
        raise McqaError(f"{run_dir}: a {config.mode}-mode run is read out by option-text likelihood (the options readout), "
                        "which mcqa does not read through a server; export a generate-mode run (mcqa train mode=generate)")
    if config.mode != "generate":
        raise McqaError(f"{run_dir}: a {config.mode}-mode run scores with its own head, which a serving engine has no "
                        "counterpart for; export a generate-mode run (mcqa train mode=generate)")
    task = get_task(config.task)
    final = check_out_folder(Path(out))
    out = final.parent / f".{final.name}.partial-{os.getpid()}"  # filled, then renamed: never half a bundle
    if out.exists():
        shutil.rmtree(out)
    try:
        _fill(run_dir, summary, config, task, out, merge, name)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if final.is_dir():
        final.rmdir()  # empty (check_out_folder)
    out.rename(final)
    return final


def _fill(run_dir: Path, summary, config, task, out: Path, merge: bool, name: str | None) -> None:
    served = name or f"{task.name}-{run_dir.name}"[:64]
    if not served.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise McqaError(f"--name {served!r}: use letters, digits, '-', '_' and '.' only (it goes on serve.sh's command line)")
    tok_src = run_dir / "tokenizer"
    if not tok_src.is_dir():
        raise McqaError(f"{tok_src}: missing from the run folder; retrain or re-copy the whole run")
    tok_names = sorted(f.name for f in tok_src.iterdir() if f.name.endswith(TOKENIZER_SUFFIXES))
    if merge:
        model, tokenizer, _, _ = load_run(run_dir, task=task.name)
        merged = model.merge_and_unload()
        merged.save_pretrained(out / "model", safe_serialization=True)
        _copy_plain(tok_src, out / "model", tok_names)
        base = None
    else:
        model, _, _, _ = load_run(run_dir, task=task.name)  # every file of the run checked: it loads, as a server would load it
        copied = _copy_plain(run_dir / "adapter", out / "adapter", list(ADAPTER_FILES))
        if copied != list(ADAPTER_FILES):
            raise McqaError(f"{run_dir / 'adapter'}: needs {' and '.join(ADAPTER_FILES)} (safetensors; vLLM loads no pickles); "
                            "retrain or re-copy the run")
        base = resolve_model(config.model)
    _copy_plain(tok_src, out / "tokenizer", tok_names)
    # vLLM reads a --tokenizer folder's config.json for the model type (else two ERROR lines and
    # retries at start-up); the model's own config, nothing more.
    model.config.to_json_file(out / "tokenizer" / "config.json")
    labels = {f: (list(s.values) if s is not None else None) for f, s in task.label_spaces.items()}
    write_json(out / "schema.json", task_schema(task))
    write_json(out / "labels.json", labels)
    example = next(iter(task.load("test", summary.protocol)), None)
    if example is not None:
        write_json(out / "request.json", build_request(task, example, served))
    most = max([len(v) for v in labels.values() if v] + [TOP_LOGPROBS])
    write_json(out / "mcqa.json", {
        "task": task.name, "protocol": summary.protocol, "mode": config.mode, "base_model": config.model,
        "base_model_path": str(base) if base is not None else None, "served_model": served, "merged": merge,
        "lora_r": config.lora.r, "max_logprobs": most, "temperature": None,
        "temperature_note": "a generate-mode run fits no temperature; pass --readout-opt temperature=T to apply one",
        "run": str(run_dir.resolve()), "exported_at": time.strftime("%Y-%m-%d %H:%M:%S")})
    atomic_write_text(out / "serve.sh", serve_script(served, base, merge, config.lora.r, most))
    (out / "serve.sh").chmod(0o755)
    atomic_write_text(out / "README.md", readme(task.name, served, summary.protocol))


def serve_script(served: str, base: Path | str | None, merge: bool, r: int, max_logprobs: int) -> str:
    if not merge and any(c in str(base) for c in '"$`\\\n'):
        raise McqaError(f"base model path {str(base)!r} holds characters a shell script cannot quote plainly; move it")
    model = '"$HERE/model"' if merge else f'"${{MODEL:-{base}}}"'
    lora = [] if merge else ["--served-model-name", "base", "--enable-lora", f'--lora-modules "{served}=$HERE/adapter"',
                             f"--max-lora-rank {lora_rank_flag(r)}"]
    served_flag = [f"--served-model-name {served}"] if merge else []
    flags = [f"--model {model}", '--tokenizer "$HERE/tokenizer"', *served_flag, *lora, f"--max-logprobs {max_logprobs}",
             "--logprobs-mode processed_logprobs", "--generation-config vllm", '--dtype "${DTYPE:-float32}"',
             '--host "${HOST:-127.0.0.1}"', '--port "${PORT:-8000}"']
    return ("#!/bin/sh\n"
            "# Serve this bundle with vLLM's OpenAI-compatible server (exported by `mcqa export`).\n"
            "# PYTHON: the Python of an environment with vLLM; MODEL: the base model (a folder or hub id);\n"
            "# extra arguments go to the server (e.g. --tensor-parallel-size 2 on GPUs).\n"
            "set -e\n"
            'HERE="$(cd "$(dirname "$0")" && pwd)"\n'
            'exec "${PYTHON:-python}" -m vllm.entrypoints.openai.api_server \\\n    '
            + " \\\n    ".join(flags) + ' \\\n    "$@"\n')


def readme(task: str, served: str, protocol: str) -> str:
    return f"""# {served}: an mcqa run served by vLLM

Serve it (an environment with vLLM; `scripts/vllm-serve.sh` in mcqa makes one on a CPU):

    PYTHON=/path/to/vllm-env/bin/python ./serve.sh

Read it out and score it with mcqa (structured outputs from the task's schema, label
probabilities from the server's logprobs; the request is in request.json):

    mcqa score --task {task} --protocol {protocol} --split test --endpoint http://127.0.0.1:8000/v1 --served-model {served}
    mcqa predict --task {task} --data new.jsonl --endpoint http://127.0.0.1:8000/v1 --served-model {served} --out preds.jsonl

An interrupted `predict --out` resumes where it stopped. On GPUs the same bundle serves with
tensor parallelism (`./serve.sh --tensor-parallel-size 2`) or data parallelism
(`./serve.sh --data-parallel-size 2`), and `--dtype bfloat16` (DTYPE=bfloat16).
"""

