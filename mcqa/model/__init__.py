"""Models: which one `--model` names and how it loads (loading), the offline aliases and their
install (aliases, sources), and `mcqa models verify` (verify).

The names below load on first use (PEP 562): loading and verify import torch and transformers,
seconds a command that only lists aliases or refuses a wrong one should not pay."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "aliases": ("ALIASES", "DEFAULT_MODEL", "MANIFEST", "Alias", "ModelStatus", "alias_dir", "cache_root", "get_alias", "install",
                "is_installed", "list_models", "offline_choices"),
    "loading": ("load_causal_lm", "load_tokenizer", "offline_message", "resolve_model"),
    "sources": ("Piece", "check_chat_template", "join_and_check", "qwen3_tokenizer_dir", "sha256_file"),
    "verify": ("generate_sample", "verify"),
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE)


def __getattr__(name: str) -> Any:
    if name not in _MODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_MODULE[name]}")
    # Bind all of that module's names at once: a submodule's import binds its own name here
    # (mcqa.model.verify, the module), which the function of the same name must then replace.
    globals().update({n: getattr(module, n) for n in _WHERE[_MODULE[name]]})
    return globals()[name]


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
