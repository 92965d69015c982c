"""Models: which one `--model` names and how it loads (loading), the offline aliases and their
install (aliases, sources), and `mcqa models verify` (verify).

The names below load on first use (PEP 562): loading and verify import torch and transformers,
seconds a command that only lists aliases or refuses a wrong one should not pay."""

from __future__ import annotations

from mcqa.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "mcqa.model.aliases": (
            "ALIASES",
            "DEFAULT_MODEL",
            "MANIFEST",
            "Alias",
            "ModelStatus",
            "alias_dir",
            "cache_root",
            "get_alias",
            "install",
            "is_installed",
            "list_models",
            "offline_choices",
        ),
        "mcqa.model.loading": (
            "check_causal_lm",
            "check_model",
            "load_chat_template",
            "load_causal_lm",
            "load_model_config",
            "load_tokenizer",
            "offline_message",
            "parameter_count",
            "resolve_model",
            "weight_shapes",
        ),
        "mcqa.model.sources": ("Piece", "check_chat_template", "join_and_check", "qwen3_tokenizer_dir", "sha256_file"),
        "mcqa.model.verify": ("generate_sample", "verify"),
    },
)
