"""Label candidates and their token trie, for the constrained and rank readouts.

A candidate is a whole serialized target (`serialize_target` + the chat template's end of turn)
tokenized as one string, exactly as encoding.encode_generative builds a training target: the
token boundaries are the ones a trained model saw, including where a label meets the JSON
around it (a BPE tokenizer writes "computer science" as `computer` + ` science` and "Promotions" as
`Prom` + `otions`, between `":"` and `"}`). No per-label tokenization is ever glued together.

Fields are taken together (one group: every combination of their labels) when the product of
their label spaces is at most `joint_limit`, else one group per field, in schema order: a
group's candidates have the earlier groups' chosen values and hold the later fields at their
first value, which never matters because only the tokens up to where the group's value is told
apart are read. A task that declares its allowed combinations (Task.allowed) gets only those
as candidates, so constrained and rank never produce an inconsistent target.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from mcqa.errors import McqaError
from mcqa.model.encoding import end_of_turn
from mcqa.prompting import serialize_target
from mcqa.readouts.decoding import Tree
from mcqa.task import Task, completion, consistent

JOINT_LIMIT = 64


@dataclass(frozen=True)
class Candidate:
    values: dict[str, Any]  # the group's fields only
    ids: tuple[int, ...]  # the whole serialized target + end of turn


class LabelCandidates:
    """The label candidates of a task, group by group (one group when ranked jointly)."""

    def __init__(self, tokenizer, task: Task, joint_limit: int = JOINT_LIMIT):
        spaces = task.label_spaces
        free = [f for f, s in spaces.items() if s is None]
        if free:
            raise McqaError(
                f"task '{task.name}' has free fields ({', '.join(free)}); rank needs a label space for "
                "every field: use the 'constrained' or 'generate' readout"
            )
        self.task, self.tokenizer, self.spaces = task, tokenizer, spaces
        self.eot = end_of_turn(tokenizer)
        size = math.prod(len(s.values) for s in spaces.values())
        self.groups = [list(task.fields)] if size <= joint_limit else [[f] for f in task.fields]
        self._memo: dict[tuple, list[Candidate]] = {}

    def candidates(self, fixed: dict[str, Any], group: list[str]) -> list[Candidate]:
        key = (tuple(fixed.items()), tuple(group))
        if key not in self._memo:
            out = []
            for combo in itertools.product(*(self.spaces[f].values for f in group)):
                chosen = dict(zip(group, combo))
                if not consistent(self.task, fixed | chosen):  # a combination the task does not allow
                    continue
                # later fields are held at a value that keeps the target allowed
                values = (
                    {f: self.spaces[f].values[0] for f in self.task.fields}
                    | completion(self.task, fixed | chosen)
                    | fixed
                    | chosen
                )
                text = serialize_target(self.task.output, values) + self.eot
                out.append(Candidate(chosen, tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])))
            self._memo[key] = out
        return self._memo[key]

    def forced_start(self) -> int:
        """How many answer tokens every candidate of the first group starts with (the JSON
        skeleton before the first label): fed with the prompt suffix in the first forward."""
        seqs = [c.ids for c in self.candidates({}, self.groups[0])]
        n = min(len(x) for x in seqs)
        return next((i for i in range(n) if len({x[i] for x in seqs}) > 1), n)

    def consistent(self, fixed: dict[str, Any], group: list[str], path: list[int]) -> list[Candidate]:
        n = len(path)
        out = [c for c in self.candidates(fixed, group) if list(c.ids[:n]) == path]
        if not out:
            raise McqaError(
                f"task '{self.task.name}': the tokens of field(s) {', '.join(group)} depend on the fields "
                f"after them; rank them jointly (raise joint_limit)"
            )
        return out


class Trie:
    """Token trie of candidate sequences; node 0 is the root (the row's current end)."""

    def __init__(self, seqs: list[tuple[int, ...]]):
        self.token, self.parent, self.depth = [-1], [-1], [0]
        self.children: list[dict[int, int]] = [{}]
        self.count = [len(seqs)]  # candidates below each node
        self.leaf: list[int] = []  # each sequence's last node
        for seq in seqs:
            node = 0
            for tok in seq:
                nxt = self.children[node].get(tok)
                if nxt is None:
                    nxt = len(self.token)
                    self.children[node][tok] = nxt
                    self.token.append(tok)
                    self.parent.append(node)
                    self.depth.append(self.depth[node] + 1)
                    self.children.append({})
                    self.count.append(0)
                self.count[nxt] += 1
                node = nxt
            self.leaf.append(node)
        if any(self.children[leaf] for leaf in self.leaf):
            raise McqaError("a label candidate's tokens are a prefix of another's; the candidates cannot be told apart")

    def path(self, node: int) -> list[int]:
        out = []
        while node > 0:
            out.append(node)
            node = self.parent[node]
        return out[::-1]

    def stop(self, i: int, score: str) -> int:
        """The last node scored for sequence i: where it is told apart ("prefix") or its end ("full")."""
        if score == "full":
            return self.leaf[i]
        return next(n for n in self.path(self.leaf[i]) if self.count[n] == 1)

    def needed(self, score: str) -> list[int]:
        """Non-root nodes whose next-token log-probs the scores read, parents before children."""
        if score == "full":
            return [n for n in range(1, len(self.token)) if self.children[n]]
        return [n for n in range(1, len(self.token)) if self.count[n] >= 2]

    def tree(self, chain: list[int], needed: list[int]) -> tuple[Tree, dict[int, int], list[int]]:
        """One feed of a stream: `chain` (a prompt suffix, possibly empty), then the `needed`
        nodes under their parents, the root being the chain's last token (or the stream's end).
        Returns the Tree, each node's index among the fed tokens (-1: the stream's end) and the
        nodes read, in the order their log-probs come back."""
        index = {0: len(chain) - 1} | {n: len(chain) + k for k, n in enumerate(needed)}
        parents = list(range(-1, len(chain) - 1)) + [index[self.parent[n]] for n in needed]
        read = [0] * bool(chain) + needed
        return Tree(list(chain) + [self.token[n] for n in needed], parents, [index[n] for n in read], None), index, read
