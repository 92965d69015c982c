"""`mcqa export RUN --to ENGINE OUT/`: a finished run as a bundle a serving engine takes as is.

The bundle holds the PEFT adapter (or, with `merge`, the base model with the adapter merged
in), the run's tokenizer with its chat template, the task's JSON Schema and label lists, the
structured-output request mcqa's endpoint readout sends, and the engine's own files (its launch
script and a README; mcqa.serve.engines, one file per engine such as mcqa.serve.vllm). The run
folder is untrusted input: it is checked by mcqa.train.runs, only plain files with the expected
names are copied, and nothing is written outside OUT.

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
from mcqa.schema import task_schema
from mcqa.serve import ENGINES
from mcqa.serve.engines import Bundle, Engine
from mcqa.train.folder import read_config, read_summary
from mcqa.train.runs import load_run

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")


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


def export(
    run_dir: str | Path, out: str | Path, engine: str = "vllm", merge: bool = False, name: str | None = None
) -> Path:
    serving = ENGINES.resolve(engine)  # a wrong name: one line with its did-you-mean, before anything is read
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)  # finished, and run.json agrees with config.yaml
    config = read_config(run_dir)
    if config.mode in ("content", "listwise"):
        raise McqaError(
            f"{run_dir}: a {config.mode}-mode run is read out by option-text likelihood (the options readout), "
            "which mcqa does not read through a server; export a generate-mode run (mcqa train mode=generate)"
        )
    if config.mode != "generate":
        raise McqaError(
            f"{run_dir}: a {config.mode}-mode run scores with its own head, which a serving engine has no "
            "counterpart for; export a generate-mode run (mcqa train mode=generate)"
        )
    task = get_task(config.task)
    final = check_out_folder(Path(out))
    out = final.parent / f".{final.name}.partial-{os.getpid()}"  # filled, then renamed: never half a bundle
    if out.exists():
        shutil.rmtree(out)
    try:
        _fill(run_dir, summary, config, task, out, merge, name, serving)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if final.is_dir():
        final.rmdir()  # empty (check_out_folder)
    out.rename(final)
    return final


def _fill(run_dir: Path, summary, config, task, out: Path, merge: bool, name: str | None, serving: Engine) -> None:
    served = name or f"{task.name}-{run_dir.name}"[:64]
    if not served.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise McqaError(
            f"--name {served!r}: use letters, digits, '-', '_' and '.' only (it goes on serve.sh's command line)"
        )
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
        model, _, _, _ = load_run(
            run_dir, task=task.name
        )  # every file of the run checked: it loads, as a server would load it
        copied = _copy_plain(run_dir / "adapter", out / "adapter", list(ADAPTER_FILES))
        if copied != list(ADAPTER_FILES):
            raise McqaError(
                f"{run_dir / 'adapter'}: needs {' and '.join(ADAPTER_FILES)} (safetensors; vLLM loads no pickles); "
                "retrain or re-copy the run"
            )
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
    write_json(
        out / "mcqa.json",
        {
            "task": task.name,
            "protocol": summary.protocol,
            "mode": config.mode,
            "base_model": config.model,
            "base_model_path": str(base) if base is not None else None,
            "served_model": served,
            "merged": merge,
            "lora_r": config.lora.r,
            "max_logprobs": most,
            "temperature": None,
            "temperature_note": (
                "a generate-mode run fits no temperature; pass --readout-opt temperature=T to apply one"
            ),
            "run": str(run_dir.resolve()),
            "engine": serving.name,
            "exported_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    bundle = Bundle(task.name, summary.protocol, served, base, merge, config.lora.r, most)
    for file_name, text in serving.files(bundle).items():
        atomic_write_text(out / file_name, text)
        if file_name == "serve.sh":
            (out / file_name).chmod(0o755)
