"""Batched decoding over a shared prompt prefix, with tree-shaped inputs, for the readouts.

Every prompt of a run starts with the same text (system message, instructions, few-shot turns).
That common token prefix is encoded once; each cache row of a batch starts from a copy of its
KV cache, and each example then feeds only its own suffix.

Examples differ in length, several share a cache row (packed back to back, see Streams), and a
readout may feed a *tree* of tokens at once (every candidate label continuation, sharing their
common tokens), so the attention mask is built here, explicitly, as a 4D mask: a new token sees
the cache columns its example has kept visible plus its own ancestors in the fed tree.
Positions are explicit too (the example's next position + depth in the tree), so each example
computes exactly what a plain forward over its own prompt and path would, whatever other
examples, padding or sibling branches sit beside it in the cache. transformers hands a 4D mask
to the attention unchanged (masking_utils returns it as-is), so no model is patched.
Hand-written because transformers' generate has neither tree inputs nor shared-prefix batching.

Vocabulary-wide logits are computed only for the nodes a readout reads: the decoder gives hidden
states, and the LM head is applied to the selected positions alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from mcqa.errors import McqaError


PROBE_TOKENS = 4  # the forward that checks a model's logits come straight from its head (check_head_is_last)


class CausalLM:
    """The decoder and LM head of a causal LM (a PEFT model included: its LoRA layers live inside
    the base model's modules, so calling them directly keeps the adapter active)."""

    def __init__(self, model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
        impl = getattr(base.config, "_attn_implementation", "eager")
        if impl not in ("sdpa", "eager"):
            raise McqaError(f"the prefix-cached readouts build their own attention masks, which needs attention "
                            f"'sdpa' or 'eager' (the model uses '{impl}'); load it with attn_implementation='sdpa'")
        if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or ())):
            raise McqaError("the prefix-cached readouts support full-attention decoders only (this model has "
                            "sliding-window or linear layers); use the 'generate' readout")
        model.eval()
        self.decoder = base.get_decoder()
        self.lm_head = base.get_output_embeddings()
        self.bool_mask = impl == "sdpa"  # sdpa takes "may attend" booleans; eager adds a float mask
        param = next(self.decoder.parameters())
        self.device, self.dtype = param.device, param.dtype
        check_head_is_last(base)
        self.vocab_size = self.lm_head.weight.shape[0]

        # How many (query, key) attention pairs cost as much as one token through the weights:
        # a token costs ~2 FLOPs per decoder weight, a pair ~4 per query dimension and layer.
        heads = getattr(config, "num_attention_heads", 1)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        layers = getattr(config, "num_hidden_layers", 1)
        embed = base.get_input_embeddings()
        weights = sum(p.numel() for p in self.decoder.parameters()) - (embed.weight.numel() if embed is not None else 0)
        self.pairs_per_token = max(1.0, 2 * weights / (4 * heads * head_dim * layers))

    def logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.lm_head(hidden).float(), dim=-1)


@torch.inference_mode()
def check_head_is_last(base) -> None:
    """These readouts read log-probabilities as lm_head(decoder(...)). A model that changes its
    logits after the head (Cohere's logit_scale, Granite's logits_scaling, a softcap) would be
    read at another temperature, which reorders sums of log-probabilities; one forward of four
    tokens through the model's own forward tells, whatever the transform is called."""
    ids = torch.arange(PROBE_TOKENS, device=base.get_output_embeddings().weight.device)[None]
    training = base.training
    base.eval()  # dropout would part the two paths
    try:
        full = base(input_ids=ids).logits.float()
        own = base.get_output_embeddings()(base.get_decoder()(input_ids=ids).last_hidden_state).float()
    finally:
        base.train(training)
    if full.shape != own.shape or not torch.allclose(full, own, rtol=1e-3, atol=1e-3):
        raise McqaError(f"model type '{base.config.model_type}' changes its logits after its LM head (a scale or a "
                        "softcap), which the prefix-cached readouts (rank, options, constrained) and the listwise "
                        "mode do not reproduce; use the 'generate' readout and --mode generate, head or choice")


def plan_chunks(lengths: list[int], prefix: int, max_streams: int, pairs_per_token: float, overhead: float = 16.0) -> list[tuple[int, int]]:
    """Split streams, sorted longest first, into consecutive chunks (start, end) decoded
    together, each in cache rows as wide as its longest stream (shorter ones packed back to
    back), at the least estimated cost. One forward computes rows x width tokens, padding
    included, and every one of them attends to the prefix and the whole row, masked pairs
    included; so a chunk's cost is rows x width x (1 + (prefix + width) / pairs_per_token)
    tokens, plus `overhead` tokens for a forward call. Mixing a 300-token question with
    20-token ones pads or packs (quadratic attention over the row); splitting them costs a
    forward call; dynamic programming over the cut points picks the cheapest plan."""
    n = len(lengths)
    if any(lengths[i] < lengths[i + 1] for i in range(n - 1)):
        raise ValueError("plan_chunks needs lengths sorted longest first")
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for i in range(n):  # best[i] is final here: every chunk ending at i starts before it
        width = max(lengths[i], 1)
        loads: list[int] = []  # first-fit decreasing, as Streams packs them, one stream at a time
        for j in range(i, min(n, i + max_streams)):
            x = max(lengths[j], 1)
            r = next((r for r, load in enumerate(loads) if load + x <= width), None)
            if r is None:
                loads.append(x)
            else:
                loads[r] += x
            cost = best[i] + len(loads) * width * (1 + (prefix + width) / pairs_per_token) + overhead
            if cost < best[j + 1]:
                best[j + 1], cut[j + 1] = cost, i
    chunks, j = [], n
    while j > 0:
        chunks.append((cut[j], j))
        j = cut[j]
    return chunks[::-1]


@dataclass
class SharedPrefix:
    ids: list[int]
    cache: DynamicCache | None  # batch of one; never modified after encoding

    @classmethod
    @torch.inference_mode()
    def encode(cls, lm: CausalLM, ids: list[int]) -> SharedPrefix:
        if not ids:
            return cls([], None)
        cache = DynamicCache()
        lm.decoder(input_ids=torch.tensor([ids], device=lm.device), past_key_values=cache, use_cache=True)
        return cls(list(ids), cache)


@dataclass
class Tree:
    """Tokens to append to one stream. parents[j] is the index of token j's parent among the fed
    tokens (always < j), or -1 for "the stream's current end". `read` lists the tokens whose
    next-token log-probs are wanted; `commit` is the token whose path becomes the stream's new
    end (None: the end stays where it was; `Streams.commit` can move it once the log-probs are
    read); every other fed token is hidden from later feeds."""

    tokens: list[int]
    parents: list[int]
    read: list[int]
    commit: int | None

    @classmethod
    def chain(cls, tokens: list[int], read_last: bool = True) -> Tree:
        n = len(tokens)
        return cls(list(tokens), list(range(-1, n - 1)), [n - 1] if read_last and n else [], n - 1 if n else None)


class Streams:
    """Independent token sequences (one per example) decoding over one shared prefix.

    Streams are packed several to a cache row, back to back (first-fit by the length of their
    first feed, up to `capacity` tokens a row), instead of one padded row each: prompt suffixes
    vary a lot (MMLU-Pro questions run from 20 to 300+ tokens) and left padding to the longest
    one in a batch would double the work. The mask keeps the streams of a row apart; they all
    see the prefix columns, which is why one copy of the prefix serves a whole row."""

    def __init__(self, lm: CausalLM, prefix: SharedPrefix, n: int, capacity: int = 512):
        self.lm, self.prefix, self.n, self.capacity = lm, prefix, n, capacity
        p = len(prefix.ids)
        self.visible = torch.ones(n, p, dtype=torch.bool)  # per stream: the columns of its row it sees
        self.next_pos = [p] * n
        self.row: list[int] | None = None  # each stream's cache row, set by the first feed
        self.n_rows = 0
        self._k0 = p
        self.cache: DynamicCache | None = None
        self._last: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # stream -> (offset, ancestors, positions)
        self._done: set[int] = set()

    def _assign(self, lengths: dict[int, int]) -> None:
        if set(lengths) != set(range(self.n)):
            raise ValueError("the first feed must give every stream its tokens")
        loads: list[int] = []
        self.row = [0] * self.n
        # Rows are padded to the longest one: a stream longer than `capacity` sets the width.
        capacity = max(self.capacity, *lengths.values())
        for s in sorted(lengths, key=lambda s: -lengths[s]):
            r = next((r for r, load in enumerate(loads) if load + lengths[s] <= capacity), len(loads))
            if r == len(loads):
                loads.append(0)
            loads[r] += lengths[s]
            self.row[s] = r
        k = self.n_rows = len(loads)
        if self.prefix.cache is not None:
            layers = [(x.keys.expand(k, -1, -1, -1), x.values.expand(k, -1, -1, -1)) for x in self.prefix.cache.layers]
            self.cache = DynamicCache(layers)  # concatenation makes the per-row copies
        else:
            self.cache = DynamicCache()

    @torch.inference_mode()
    def finish(self, streams) -> None:
        """These streams are done: rows left with none are dropped from the cache."""
        self._done |= set(streams)
        if self.row is None:
            return
        rows = sorted({self.row[s] for s in range(self.n) if s not in self._done})
        if rows and len(rows) < self.n_rows:
            self.cache.batch_select_indices(torch.tensor(rows, device=self.lm.device))
            remap = {r: i for i, r in enumerate(rows)}
            self.row = [remap.get(r, -1) for r in self.row]
            self.n_rows = len(rows)

    @torch.inference_mode()
    def feed(self, trees: dict[int, Tree]) -> dict[int, torch.Tensor]:
        """Append a tree to each given stream, all in one forward; return, per stream, the
        log-probs (len(read), vocab) at its `read` tokens."""
        if self.row is None:
            self._assign({s: len(t.tokens) for s, t in trees.items()})
        n_rows, k0 = self.n_rows, self.visible.shape[1]
        self._k0 = k0
        blocks: list[list[tuple[int, Tree, int]]] = [[] for _ in range(n_rows)]
        fill = [0] * n_rows
        for s, t in trees.items():
            r = self.row[s]
            blocks[r].append((s, t, fill[r]))
            fill[r] += len(t.tokens)
        q = max(1, max(fill))
        ids = np.zeros((n_rows, q), dtype=np.int64)
        pos = np.zeros((n_rows, q), dtype=np.int64)
        allow = np.zeros((n_rows, q, k0 + q), dtype=bool)
        visible = self.visible.numpy()
        self._last = {}
        for r, row in enumerate(blocks):
            for s, t, off in row:
                anc, at = _ancestors(t.parents, self.next_pos[s])
                m = len(t.tokens)
                ids[r, off:off + m] = t.tokens
                pos[r, off:off + m] = at
                allow[r, off:off + m, :k0] = visible[s]
                allow[r, off:off + m, k0 + off:k0 + off + m] = anc
                self._last[s] = (off, anc, at)
            for j in range(fill[r], q):  # padding sees itself only (no empty softmax rows)
                allow[r, j, k0 + j] = True
        mask = torch.from_numpy(allow)[:, None]
        if not self.lm.bool_mask:
            mask = torch.zeros(mask.shape, dtype=self.lm.dtype).masked_fill_(~mask, torch.finfo(self.lm.dtype).min)
        dev = self.lm.device
        hidden = self.lm.decoder(
            input_ids=torch.from_numpy(ids).to(dev), attention_mask=mask.to(dev), position_ids=torch.from_numpy(pos).to(dev),
            past_key_values=self.cache, use_cache=True,
        ).last_hidden_state
        order = [(s, t) for s, t in trees.items()]
        rows = [self.row[s] for s, t in order for _ in t.read]
        cols = [self._last[s][0] + j for s, t in order for j in t.read]
        lp = self.lm.logprobs(hidden[rows, cols]).cpu() if rows else torch.empty(0, self.lm.vocab_size)
        out, start = {}, 0
        for s, t in order:
            out[s] = lp[start:start + len(t.read)]
            start += len(t.read)
        self.visible = torch.cat([self.visible, torch.zeros(self.n, q, dtype=torch.bool)], dim=1)
        for s, t in order:
            self.commit(s, t.commit)
        return out

    @torch.inference_mode()
    def commit(self, stream: int, index: int | None) -> None:
        """Make the path to token `index` of the stream's last feed its new end (None: its end
        stays where it was before that feed); every other token of that feed is hidden from
        later ones. A readout that picks a path after reading the log-probs calls this again."""
        off, anc, at = self._last[stream]
        self.visible[stream, self._k0:] = False
        if index is None:
            self.next_pos[stream] = int(at[0]) if len(at) else self.next_pos[stream]
        else:
            self.visible[stream, self._k0 + off:self._k0 + off + len(anc)] = torch.from_numpy(anc[index])
            self.next_pos[stream] = int(at[index]) + 1


def _ancestors(parents: list[int], base: int) -> tuple[np.ndarray, np.ndarray]:
    """For a fed tree: which fed tokens each token sees (its ancestors and itself), and positions."""
    m = len(parents)
    anc = np.zeros((m, m), dtype=bool)
    at = np.zeros(m, dtype=np.int64)
    if parents == list(range(-1, m - 1)):  # a chain: the usual causal triangle
        return np.tril(np.ones((m, m), dtype=bool)), base + np.arange(m)
    for j, par in enumerate(parents):
        if par >= 0:
            anc[j] = anc[par]
            at[j] = at[par] + 1
        else:
            at[j] = base
        anc[j, j] = True
    return anc, at
