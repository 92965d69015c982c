"""Models: which one `--model` names and how it loads (loading), the offline aliases and their
install (aliases, sources), and `mcqa models verify` (verify)."""

from mcqa.model.aliases import ALIASES, MANIFEST, Alias, ModelStatus, alias_dir, cache_root, get_alias, install, is_installed, list_models, offline_choices
from mcqa.model.loading import DEFAULT_MODEL, load_causal_lm, load_tokenizer, offline_message, resolve_model
from mcqa.model.sources import Piece, check_chat_template, join_and_check, qwen3_tokenizer_dir, sha256_file
from mcqa.model.verify import generate_sample, verify

__all__ = ["ALIASES", "DEFAULT_MODEL", "MANIFEST", "Alias", "ModelStatus", "Piece", "alias_dir", "cache_root", "check_chat_template",
           "generate_sample", "get_alias", "install", "is_installed", "join_and_check", "list_models", "load_causal_lm",
           "load_tokenizer", "offline_choices", "offline_message", "qwen3_tokenizer_dir", "resolve_model", "sha256_file", "verify"]
