"""What every training mode and readout needs from a causal LM, and the one place that knows
model families: the text config, the decoder and LM head (and that logits come straight from
the head), what the layers are (full attention, a sliding window of W tokens, or layers that
carry a state: linear attention, convolutions, Mamba), attention masks for tree-shaped inputs,
new caches, a prefix's cache or state copied to N rows, and the default LoRA targets.

Two exact ways to run many rows that share a prompt, chosen from the layers:
- every layer attends (full or sliding window): one row may hold a tree of tokens under an
  explicit 4D mask, and a shared prefix's keys and values serve every row. A sliding layer
  gets the same mask cut to its window, by position (`attention_mask`), so it stays exact at
  any length.
- some layer carries a state: a token's output depends on every token before it through that
  state, in order, so a tree cannot share one row. Each branch becomes its own row that starts
  from a copy of the state after the prefix (`copy_rows`), through the model's own cache class.
Training shares a prefix only in the first case: a stateful row would need its copy of the
prefix state to carry gradients back into the prefix, and rows of other lengths padded after it,
where a gate still decays the state; plain left-padded rows (the model's own padding handling,
which leaves a zero state at zero) are exact and cost the prefix once per row.
A mode or readout asks `capabilities(model)`; none of them names a family or reads
`layer_types` or cache internals."""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from mcqa.errors import McqaError

FULL = frozenset({"full_attention", "attention"})
SLIDING = frozenset({"sliding_attention"})
PROBE_TOKENS = 4  # the forward that checks a model's logits come straight from its head (check_head_is_last)


def base_model(model):
    """The transformers model inside a PEFT wrapper (and DDP's .module)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def text_config(model_or_config):
    config = getattr(model_or_config, "config", model_or_config)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@dataclass(frozen=True)
class Capabilities:
    """What a model's decoder layers are, as far as sharing a prompt goes."""

    model_type: str
    layer_types: tuple[str, ...]
    window: int | None  # the sliding window of its sliding layers, in tokens
    attn_implementation: str

    @property
    def stateful(self) -> tuple[str, ...]:
        """The kinds of layer that carry a state from token to token (linear attention, conv, mamba)."""
        return tuple(sorted({t for t in self.layer_types if t not in FULL | SLIDING}))

    @property
    def takes_4d_mask(self) -> bool:
        """Whether the attention takes the 4D mask mcqa builds (sdpa or eager)."""
        return self.attn_implementation in ("sdpa", "eager")

    @property
    def trees(self) -> bool:
        """Whether a row may hold a tree of tokens under one mask (and a prefix's keys and
        values be shared by rows): every layer attends, and the mask is ours to give."""
        return not self.stateful and self.takes_4d_mask

    @property
    def bool_mask(self) -> bool:
        return self.attn_implementation != "eager"  # sdpa takes "may attend" booleans; eager adds a float mask

    def prefix_shared(self, longest: int) -> tuple[bool, str]:
        """Whether training rows of up to `longest` tokens may share their prefix's cache under
        the model's own masks, and why not. Those masks count a sliding window over cache
        columns, padding included, so rows must fit the window for it never to bite."""
        if self.stateful:
            return False, f"the model has {'/'.join(self.stateful)} layers, which carry a state"
        if self.window is not None and longest > self.window:
            return False, f"rows of up to {longest} tokens pass its sliding window of {self.window}"
        if not self.takes_4d_mask:
            return False, f"attention '{self.attn_implementation}' takes no cache-aware 4D mask"
        return True, ""

    def describe(self) -> str:
        n = len(self.layer_types)
        parts = []
        for kind in sorted(set(self.layer_types)):
            count = self.layer_types.count(kind)
            name = kind.replace("_", " ") + (f" ({self.window} tokens)" if kind in SLIDING else "")
            parts.append(name if count == n else f"{count} of {n} {name}")
        return ", ".join(parts)


def capabilities(model) -> Capabilities:
    """A loaded model's, or a config's (before any weights load)."""
    base = base_model(model)
    outer = getattr(base, "config", base)
    config = text_config(outer)
    n = getattr(config, "num_hidden_layers", 0) or 0
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", True) is False:
        window = None
    types = tuple(getattr(config, "layer_types", None) or ())
    if not types:  # no per-layer list: one kind for every layer (Llama: full; Mistral: its window)
        types = ("sliding_attention" if window else "full_attention",) * n
    if not any(t in SLIDING for t in types):
        window = None
    impl = getattr(outer, "_attn_implementation", None) or "sdpa"  # what transformers picks when loading
    return Capabilities(getattr(config, "model_type", "?"), types, window, impl)


class CausalLM:
    """The decoder and LM head of a causal LM (a PEFT model included: its LoRA layers live inside
    the base model's modules, so calling them directly keeps the adapter active)."""

    def __init__(self, model):
        base = base_model(model)
        self.caps = capabilities(base)
        if not self.caps.takes_4d_mask:
            raise McqaError(
                f"the prefix-cached readouts build their own attention masks, which needs attention 'sdpa' or "
                f"'eager' (the model uses '{self.caps.attn_implementation}'); load it with attn_implementation='sdpa'"
            )
        model.eval()
        self.config = text_config(base)
        self.decoder = base.get_decoder()
        self.cache_kw = next(iter(cache_kwargs(self.decoder, None)))  # the decoder's name for its cache argument
        self.lm_head = base.get_output_embeddings()
        param = next(self.decoder.parameters())
        self.device, self.dtype = param.device, param.dtype
        check_head_is_last(base)
        self.vocab_size = self.lm_head.weight.shape[0]

        # How many (query, key) attention pairs cost as much as one token through the weights:
        # a token costs ~2 FLOPs per decoder weight, a pair ~4 per query dimension and layer.
        heads = getattr(self.config, "num_attention_heads", 1)
        head_dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // heads
        layers = getattr(self.config, "num_hidden_layers", 1)
        embed = base.get_input_embeddings()
        weights = sum(p.numel() for p in self.decoder.parameters()) - (embed.weight.numel() if embed is not None else 0)
        self.pairs_per_token = max(1.0, 2 * weights / (4 * heads * head_dim * layers))

    def logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.lm_head(hidden).float(), dim=-1)

    def new_cache(self):
        """An empty cache: plain key/value layers for tree decoding (a sliding layer keeps every
        column; the mask applies the window), the model's own cache class for stateful layers."""
        return DynamicCache() if self.caps.trees else DynamicCache(config=self.config)

    def attention_mask(self, allow: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor):
        """The decoder's attention mask for queries that may attend where `allow` (B, Q, K) says:
        as is for full layers, cut to the window by position for sliding ones; one mask, or one
        per layer type when they differ (the form transformers' hybrid models take)."""
        return layer_masks(self.caps, allow, q_pos, k_pos, self.dtype)


def layer_masks(caps: Capabilities, allow: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor, dtype: torch.dtype):
    """See CausalLM.attention_mask; also the choice and listwise modes' tree rows."""
    masks = {}
    for kind in set(caps.layer_types):
        m = allow
        if kind in SLIDING:
            m = allow & ((q_pos[:, :, None] - k_pos[:, None, :]) < caps.window)
        m = m[:, None]
        masks[kind] = m if caps.bool_mask else additive_mask(m, dtype)
    return next(iter(masks.values())) if len(masks) == 1 else masks


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A "may attend" boolean mask as eager attention takes it: 0 where allowed, the dtype's minimum elsewhere."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def cache_kwargs(model, cache) -> dict:
    """How a forward takes a cache: `cache=` (transformers 5.2x names it so) or `past_key_values=`."""
    params = inspect.signature(base_model(model).forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache, "use_cache": True}


def output_cache(outputs):
    return outputs["cache"] if "cache" in outputs else outputs["past_key_values"]


def expand_cache(cache, batch_size: int):
    """A batch-of-one key/value cache seen by `batch_size` rows (views; a forward concatenates onto them)."""
    return DynamicCache(
        [(x.keys.expand(batch_size, -1, -1, -1), x.values.expand(batch_size, -1, -1, -1)) for x in cache.layers]
    )


def copy_rows(cache, rows: int):
    """A batch-of-one cache of any kind (keys and values, convolution and recurrent states)
    copied to `rows` independent rows, through the cache's own reorder."""
    out = copy.deepcopy(cache)
    out.reorder_cache(torch.zeros(rows, dtype=torch.long))
    return out


def prefix_cache(model, prefix_ids: torch.Tensor, batch_size: int, lm_head: bool = True):
    """Encode a training batch's shared prefix once (with gradients: LoRA acts on it too) and
    give every row a view of its keys and values; only for a model whose capabilities allow it
    (Capabilities.prefix_shared). Plain key/value layers, so a sliding layer keeps every column."""
    kwargs = {"logits_to_keep": 1} if lm_head else {}
    out = model(input_ids=prefix_ids, **cache_kwargs(model, DynamicCache()), **kwargs)
    return expand_cache(output_cache(out), batch_size)


@torch.inference_mode()
def check_head_is_last(model) -> None:
    """The readouts that score tokens read log-probabilities as lm_head(decoder(...)). A model
    that changes its logits after the head (Cohere's logit_scale, Granite's logits_scaling, a
    softcap) would be read at another temperature, which reorders sums of log-probabilities; one
    forward of four tokens through the model's own forward tells, whatever the transform is called."""
    base = base_model(model)
    ids = torch.arange(PROBE_TOKENS, device=base.get_output_embeddings().weight.device)[None]
    training = base.training
    base.eval()  # dropout would part the two paths
    try:
        full = base(input_ids=ids).logits.float()
        own = base.get_output_embeddings()(base.get_decoder()(input_ids=ids).last_hidden_state).float()
    finally:
        base.train(training)
    if full.shape != own.shape or not torch.allclose(full, own, rtol=1e-3, atol=1e-3):
        raise McqaError(
            f"model type '{base.config.model_type}' changes its logits after its LM head (a scale or a "
            "softcap), which the prefix-cached readouts (rank, options, constrained) and the listwise "
            "mode do not reproduce; use the 'generate' readout and --mode generate, head or choice"
        )


def lora_targets(model) -> list[str]:
    """The default LoRA targets: every linear projection inside the decoder layers, by its
    last name (Qwen3: q/k/v/o and gate/up/down; Qwen3.5 adds its linear-attention projections;
    LFM2 its convolution blocks' in/out projections), never the embeddings or the LM head."""
    decoder = base_model(model).get_decoder()
    names = {
        name.rsplit(".", 1)[-1]
        for name, mod in decoder.named_modules()
        if isinstance(mod, nn.Linear) and ".layers." in f".{name}"
    }
    return sorted(names)


def hidden_size(model) -> int:
    return text_config(base_model(model)).hidden_size
