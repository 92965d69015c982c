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

from mcqa.model.lm import CausalLM, copy_rows, expand_cache


def plan_chunks(
    lengths: list[int], prefix: int, max_streams: int, pairs_per_token: float, overhead: float = 16.0
) -> list[tuple[int, int]]:
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
        cache = lm.new_cache()
        lm.decoder(input_ids=torch.tensor([ids], device=lm.device), **{lm.cache_kw: cache}, use_cache=True)
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
    def chain(cls, tokens: list[int]) -> Tree:
        n = len(tokens)
        return cls(list(tokens), list(range(-1, n - 1)), [n - 1] if n else [], n - 1 if n else None)


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
        if not lm.caps.trees:
            raise ValueError(
                "Streams feeds token trees under one mask; a model with stateful layers needs StateStreams"
            )
        self.visible = torch.ones(n, p, dtype=torch.bool)  # per stream: the columns of its row it sees
        self.next_pos = [p] * n
        self.row: list[int] | None = None  # each stream's cache row, set by the first feed
        self.n_rows = 0
        self._k0 = p
        self.cache: DynamicCache | None = None
        self.col_pos = np.zeros((0, p), dtype=np.int64)  # per cache row: each column's position (sliding windows)
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
        self.col_pos = np.tile(np.arange(len(self.prefix.ids), dtype=np.int64), (k, 1))
        # Views of the prefix's keys and values; concatenation makes the per-row copies.
        self.cache = expand_cache(self.prefix.cache, k) if self.prefix.cache is not None else self.lm.new_cache()

    @torch.inference_mode()
    def finish(self, streams) -> None:
        """These streams are done: rows left with none are dropped from the cache."""
        self._done |= set(streams)
        if self.row is None:
            return
        rows = sorted({self.row[s] for s in range(self.n) if s not in self._done})
        if rows and len(rows) < self.n_rows:
            self.cache.batch_select_indices(torch.tensor(rows, device=self.lm.device))
            self.col_pos = self.col_pos[rows]
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
                ids[r, off : off + m] = t.tokens
                pos[r, off : off + m] = at
                allow[r, off : off + m, :k0] = visible[s]
                allow[r, off : off + m, k0 + off : k0 + off + m] = anc
                self._last[s] = (off, anc, at)
            for j in range(fill[r], q):  # padding sees itself only (no empty softmax rows)
                allow[r, j, k0 + j] = True
        dev = self.lm.device
        k_pos = np.concatenate([self.col_pos, pos], axis=1)
        mask = self.lm.attention_mask(
            torch.from_numpy(allow).to(dev), torch.from_numpy(pos).to(dev), torch.from_numpy(k_pos).to(dev)
        )
        self.col_pos = k_pos
        hidden = self.lm.decoder(
            input_ids=torch.from_numpy(ids).to(dev),
            attention_mask=mask,
            position_ids=torch.from_numpy(pos).to(dev),
            **{self.lm.cache_kw: self.cache},
            use_cache=True,
        ).last_hidden_state
        order = [(s, t) for s, t in trees.items()]
        rows = [self.row[s] for s, t in order for _ in t.read]
        cols = [self._last[s][0] + j for s, t in order for j in t.read]
        lp = self.lm.logprobs(hidden[rows, cols]).cpu() if rows else torch.empty(0, self.lm.vocab_size)
        out, start = {}, 0
        for s, t in order:
            out[s] = lp[start : start + len(t.read)]
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
        self.visible[stream, self._k0 :] = False
        if index is None:
            self.next_pos[stream] = int(at[0]) if len(at) else self.next_pos[stream]
        else:
            self.visible[stream, self._k0 + off : self._k0 + off + len(anc)] = torch.from_numpy(anc[index])
            self.next_pos[stream] = int(at[index]) + 1


class StateStreams:
    """Streams for a model with layers that carry a state (linear attention, convolutions): the
    same feeds, commits and reads as Streams, computed without a tree mask. Each stream keeps
    the model's own cache after its committed tokens. A fed tree is split into its trunk (the
    tokens every branch shares, such as the prompt suffix) and its branches: the trunk is fed once
    from a copy of the stream's cache, then every branch becomes its own row starting from a
    copy of the state after the trunk, right-padded (no earlier position of a causal model sees
    the padding). A row is never padded before a state is kept, so every kept state is exact."""

    PAD = 0  # any token: it only ever follows a row's last real one

    def __init__(self, lm: CausalLM, prefix: SharedPrefix, n: int, capacity: int | None = None):
        self.lm, self.prefix, self.n = lm, prefix, n
        self.ends: list = [prefix.cache] * n  # each stream's cache after its committed tokens (None: nothing yet)
        self._last: dict[
            int, tuple[Tree, object, list[int], object]
        ] = {}  # stream -> (tree, start, trunk, cache after it)
        self.n_rows = 0

    @torch.inference_mode()
    def finish(self, streams) -> None:
        for s in streams:
            self.ends[s] = None
            self._last.pop(s, None)

    @torch.inference_mode()
    def feed(self, trees: dict[int, Tree]) -> dict[int, torch.Tensor]:
        out = {s: self._feed(s, t) for s, t in trees.items()}
        for s, t in trees.items():
            self.commit(s, t.commit)
        return out

    def _run(self, rows: list[list[int]], cache) -> torch.Tensor:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.PAD, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
        self.n_rows = max(self.n_rows, len(rows))
        return self.lm.decoder(
            input_ids=ids.to(self.lm.device), **{self.lm.cache_kw: cache}, use_cache=True
        ).last_hidden_state

    def _copy(self, cache, rows: int):
        return copy_rows(cache, rows) if cache is not None else self.lm.new_cache()

    def _feed(self, s: int, t: Tree) -> torch.Tensor:
        start = self.ends[s]
        paths = [_path(t.parents, leaf) for leaf in _leaves(t.parents)]
        trunk = paths[0][
            : next(
                (k for k in range(len(paths[0])) if any(len(p) <= k or p[k] != paths[0][k] for p in paths)),
                len(paths[0]),
            )
        ]
        where: dict[int, torch.Tensor] = {}
        after = start
        if trunk:
            owned = start is not None and start is not self.prefix.cache  # the stream's own, no other stream's
            if owned and t.commit == trunk[-1] and len(paths) == 1:
                after, start = start, _CONSUMED  # a chain whose end becomes the stream's end: fed onto it in place
            else:
                after = self._copy(start, 1)
            hidden = self._run([[t.tokens[j] for j in trunk]], after)
            where |= {j: hidden[0, c] for c, j in enumerate(trunk)}
        branches = [p[len(trunk) :] for p in paths if len(p) > len(trunk)]
        if branches:
            hidden = self._run([[t.tokens[j] for j in b] for b in branches], self._copy(after, len(branches)))
            for r, b in enumerate(branches):
                for c, j in enumerate(b):
                    where.setdefault(j, hidden[r, c])
        self._last[s] = (t, start, trunk, after if trunk else None)
        if not t.read:
            return torch.empty(0, self.lm.vocab_size)
        return self.lm.logprobs(torch.stack([where[j] for j in t.read])).cpu()

    @torch.inference_mode()
    def commit(self, stream: int, index: int | None) -> None:
        """As Streams.commit: the path to token `index` of the last feed becomes the stream's end."""
        t, start, trunk, after = self._last[stream]
        path = _path(t.parents, index) if index is not None else None
        if after is not None and path == trunk:  # the state after the trunk is that end, kept unpadded
            self.ends[stream] = after
            return
        if start is _CONSUMED:
            raise ValueError("this feed extended the stream's end in place; it can only commit to its own end")
        if index is None:
            self.ends[stream] = start
            return
        end = self._copy(start, 1)
        self._run([[t.tokens[j] for j in path]], end)
        self.ends[stream] = end


_CONSUMED = object()  # StateStreams: a feed's start that the feed extended in place


def open_streams(lm: CausalLM, prefix: SharedPrefix, n: int, capacity: int = 512):
    """Streams (one tree-masked forward) where every layer attends, else StateStreams."""
    return Streams(lm, prefix, n, capacity) if lm.caps.trees else StateStreams(lm, prefix, n)


def _leaves(parents: list[int]) -> list[int]:
    inner = {p for p in parents if p >= 0}
    return [j for j in range(len(parents)) if j not in inner]


def _path(parents: list[int], j: int) -> list[int]:
    """The fed tokens from the stream's end to token j, in order."""
    out = []
    while j >= 0:
        out.append(j)
        j = parents[j]
    return out[::-1]


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
