"""The vLLM engine of `mcqa export`: serve.sh runs vLLM's OpenAI-compatible server on the bundle,
and the README says how to read it out with mcqa's endpoint readout.

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
"""

from __future__ import annotations

from pathlib import Path

from mcqa.errors import McqaError
from mcqa.serve.engines import Bundle, Engine, register_engine

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts


def lora_rank_flag(r: int) -> int:
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise McqaError(f"lora.r {r} is above the largest rank vLLM serves ({VLLM_LORA_RANKS[-1]}); export with --merge")


def serve_script(served: str, base: Path | str | None, merge: bool, r: int, max_logprobs: int) -> str:
    if not merge and any(c in str(base) for c in '"$`\\\n'):
        raise McqaError(f"base model path {str(base)!r} holds characters a shell script cannot quote plainly; move it")
    model = '"$HERE/model"' if merge else f'"${{MODEL:-{base}}}"'
    lora = (
        []
        if merge
        else [
            "--served-model-name",
            "base",
            "--enable-lora",
            f'--lora-modules "{served}=$HERE/adapter"',
            f"--max-lora-rank {lora_rank_flag(r)}",
        ]
    )
    served_flag = [f"--served-model-name {served}"] if merge else []
    flags = [
        f"--model {model}",
        '--tokenizer "$HERE/tokenizer"',
        *served_flag,
        *lora,
        f"--max-logprobs {max_logprobs}",
        "--logprobs-mode processed_logprobs",
        "--generation-config vllm",
        '--dtype "${DTYPE:-float32}"',
        '--host "${HOST:-127.0.0.1}"',
        '--port "${PORT:-8000}"',
    ]
    return (
        "#!/bin/sh\n"
        "# Serve this bundle with vLLM's OpenAI-compatible server (exported by `mcqa export`).\n"
        "# PYTHON: the Python of an environment with vLLM; MODEL: the base model (a folder or hub id);\n"
        "# extra arguments go to the server (e.g. --tensor-parallel-size 2 on GPUs).\n"
        "set -e\n"
        'HERE="$(cd "$(dirname "$0")" && pwd)"\n'
        'exec "${PYTHON:-python}" -m vllm.entrypoints.openai.api_server \\\n    '
        + " \\\n    ".join(flags)
        + ' \\\n    "$@"\n'
    )


def readme(task: str, served: str, protocol: str) -> str:
    endpoint = f"--endpoint http://127.0.0.1:8000/v1 --served-model {served}"
    return f"""# {served}: an mcqa run served by vLLM

Serve it (an environment with vLLM; `scripts/vllm-serve.sh` in mcqa makes one on a CPU):

    PYTHON=/path/to/vllm-env/bin/python ./serve.sh

Read it out and score it with mcqa (structured outputs from the task's schema, label
probabilities from the server's logprobs; the request is in request.json):

    mcqa score --task {task} --protocol {protocol} --split test {endpoint}
    mcqa predict --task {task} --data new.jsonl {endpoint} --out preds.jsonl

An interrupted `predict --out` resumes where it stopped. On GPUs the same bundle serves with
tensor parallelism (`./serve.sh --tensor-parallel-size 2`) or data parallelism
(`./serve.sh --data-parallel-size 2`), and `--dtype bfloat16` (DTYPE=bfloat16).
"""


def files(b: Bundle) -> dict[str, str]:
    return {
        "serve.sh": serve_script(b.served, b.base, b.merged, b.lora_r, b.max_logprobs),
        "README.md": readme(b.task, b.served, b.protocol),
    }


register_engine(
    Engine(
        "vllm",
        "vLLM's OpenAI-compatible server: the adapter as a LoRA module (or the merged model), "
        "structured outputs and log-probabilities after the grammar mask",
        files,
    )
)
