"""`mcqa models verify ALIAS`: an installed alias is what its manifest says, loads, ends an
answer with EOS and generates."""

from __future__ import annotations

import time
from typing import Any

import torch

from mcqa.errors import McqaError
from mcqa.io import read_json
from mcqa.model.aliases import MANIFEST, alias_dir, get_alias, is_installed
from mcqa.model.loading import load_causal_lm, load_tokenizer
from mcqa.model.sources import check_chat_template, sha256_file


def verify(alias: str) -> dict[str, Any]:
    """Check an installed alias: its manifest and source hash, its weight files' hashes, that it
    loads, that its chat template ends an answer with EOS, and that it generates. Returns what
    it measured; raises McqaError saying how to repair otherwise."""
    spec = get_alias(alias)
    folder = alias_dir(alias)
    if not is_installed(alias):
        raise McqaError(f"model alias '{alias}' is not installed; run `mcqa models install {alias}`")
    repair = f"reinstall with `mcqa models install {alias} --force`"
    manifest = read_json(folder / MANIFEST)
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("source", {}), dict)
        or not isinstance(manifest.get("files", {}), dict)
    ):
        raise McqaError(f"{folder / MANIFEST}: not a manifest mcqa wrote; {repair}")
    if manifest.get("alias") != alias:
        raise McqaError(f"{folder / MANIFEST} is for '{manifest.get('alias')}', not '{alias}'; {repair}")
    if spec.sha256 and manifest.get("source", {}).get("sha256") != spec.sha256:
        raise McqaError(f"{folder} was not built from the pinned GGUF (sha256 {spec.sha256[:12]}...); {repair}")
    for name, digest in manifest.get("files", {}).items():
        if not (folder / name).is_file() or sha256_file(folder / name, f"hashing {name}") != digest:
            raise McqaError(f"{folder / name} is missing or changed since it was installed; {repair}")
    start = time.perf_counter()
    tokenizer = load_tokenizer(alias)
    model = load_causal_lm(alias)
    load_seconds = time.perf_counter() - start
    check_chat_template(tokenizer)
    sample = generate_sample(model, tokenizer, "Reply with one word: what color is the sky?", max_new_tokens=4)
    return {
        "alias": alias,
        "path": str(folder),
        "load_seconds": round(load_seconds, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "eos": tokenizer.eos_token,
        "pad": tokenizer.pad_token,
        "source_sha256": manifest.get("source", {}).get("sha256"),
        "sample": sample,
    }


def generate_sample(model, tokenizer, question: str, max_new_tokens: int) -> str:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
