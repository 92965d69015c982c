"""options: multiple choice read from what the options say, not from their letters.

Small models cannot bind options to answer letters (Robinson & Wingate 2023; OLMES 2024), so
every serious harness scores the option text: each option is scored as the assistant's whole
reply (its text and the end of turn) to the task's cloze prompt (the question without the
lettered options, `Task.cloze`; the task's own prompt when it has none). The scoring rules
are lm-eval's:
- sum   the log-likelihood of the option's tokens (lm-eval acc)
- mean  the same per token
- char  the same per character of the option text (lm-eval acc_norm)
- pmi   the log-likelihood minus the option's log-likelihood under a neutral prompt, the same
        conversation with the question emptied (lm-eval acc_mutual_info; a second pass)
The question is encoded once and its KV cache shared by its options: each example feeds its
prompt suffix and a token tree of all its options in one forward (mcqa.readouts.decoding);
the prompt prefix every example shares is encoded once for the whole run.

The prediction is the letter of the best option, so the scorer and every report work
unchanged; probabilities over the options are the softmax of the chosen rule's scores, in
the form rank's calibration reads (one temperature fitted on validation, mcqa.eval.calibration).
Every rule's scores travel in "option_scores", so one run shows how the rules compare.
"""

from __future__ import annotations

from typing import Literal

from mcqa.errors import McqaError
from mcqa.eval.calibration import rank_record
from mcqa.eval.records import Prediction
from mcqa.model.choice_rows import cloze_messages
from mcqa.model.encoding import end_of_turn, message_ids
from mcqa.model.lm import CausalLM
from mcqa.prompting import neutral_messages
from mcqa.readouts.base import BATCH_SIZE, Options, register_readout
from mcqa.readouts.batching import prefix_batches
from mcqa.readouts.trie import Trie
from mcqa.task import Example, Task

Rule = Literal["sum", "mean", "char", "pmi"]
RULES = ("sum", "mean", "char", "pmi")


class OptionsOptions(Options):
    rule: Rule = "pmi"
    prompt: Literal["cloze", "task"] = "cloze"  # cloze falls back to the task's prompt when the task has none
    batch_size: int = BATCH_SIZE
    prefix_cache: bool = True
    temperature: float = 1.0


def option_texts(task: Task, e: Example) -> list[str]:
    if task.options is None or task.choice_field is None:
        raise McqaError(
            f"task '{task.name}' declares no options; the 'options' readout needs a multiple-choice task "
            "(Task(options=..., choice_field=...)); use rank or constrained"
        )
    texts = task.options(e)
    if not texts or len(texts) > len(task.label_spaces[task.choice_field].values):
        raise McqaError(
            f"task '{task.name}', example '{e.id}': {len(texts)} options, but the answer field has "
            f"{len(task.label_spaces[task.choice_field].values)} letters"
        )
    return list(texts)


def question_messages(task: Task, e: Example, prompt: str) -> list[dict[str, str]]:
    return cloze_messages(task, e) if prompt == "cloze" else task.messages(e)


def option_logliks(
    model,
    tokenizer,
    task: Task,
    examples: list[Example],
    prompts: list[list[int]],
    options: list[list[list[int]]],
    batch_size: int,
    prefix_cache: bool,
    what: str,
) -> list[list[float]]:
    """Per example, the log-likelihood of each option's tokens after its prompt: the prompt
    suffix and a trie of the options fed as one tree, every non-leaf node read once."""
    lm = CausalLM(model)
    tries = [Trie([tuple(o) for o in opts]) for opts in options]
    needed = [t.needed("full") for t in tries]
    out: dict[int, list[float]] = {}
    for chunk, streams, suffixes in prefix_batches(
        lm,
        tokenizer,
        task,
        examples,
        batch_size,
        None,
        prefix_cache,
        what,
        extra=[len(n) for n in needed],
        prompts=prompts,
    ):
        trees, index = {}, {}
        for r, i in enumerate(chunk):  # every suffix has a token (common_prefix_len), so the root is read
            trees[r], _, read = tries[i].tree(suffixes[r], needed[i])
            index[r] = {n: k for k, n in enumerate(read)}
        lps = streams.feed(trees)
        for r, i in enumerate(chunk):
            trie, lp = tries[i], lps[r]
            out[i] = [
                sum(float(lp[index[r][trie.parent[n]]][trie.token[n]]) for n in trie.path(leaf)) for leaf in trie.leaf
            ]
    return [out[i] for i in range(len(examples))]


def rule_scores(
    loglik: list[float], texts: list[str], lengths: list[int], neutral: list[float] | None
) -> dict[str, list[float]]:
    scores = {
        "sum": list(loglik),
        "mean": [ll / n for ll, n in zip(loglik, lengths)],
        "char": [ll / max(len(t), 1) for ll, t in zip(loglik, texts)],
    }
    if neutral is not None:
        scores["pmi"] = [ll - u for ll, u in zip(loglik, neutral)]
    return scores


@register_readout(
    "options",
    "the likelihood of each option's text as the answer (sum, mean, char or pmi); probabilities over the options",
    needs="lm",
    options=OptionsOptions,
    calibrated=True,
)
def options(
    model,
    tokenizer,
    task: Task,
    examples: list[Example],
    *,
    rule: str = "pmi",
    prompt: str = "cloze",
    batch_size: int = BATCH_SIZE,
    prefix_cache: bool = True,
    temperature: float = 1.0,
) -> list[Prediction]:
    texts = [option_texts(task, e) for e in examples]
    eot = end_of_turn(tokenizer)
    ids = [[tokenizer(t + eot, add_special_tokens=False)["input_ids"] for t in opts] for opts in texts]
    messages = [question_messages(task, e, prompt) for e in examples]
    loglik = option_logliks(
        model,
        tokenizer,
        task,
        examples,
        [message_ids(tokenizer, m) for m in messages],
        ids,
        batch_size,
        prefix_cache,
        "scoring options",
    )
    neutral = None
    if rule == "pmi":
        neutral = option_logliks(
            model,
            tokenizer,
            task,
            examples,
            [message_ids(tokenizer, neutral_messages(m)) for m in messages],
            ids,
            batch_size,
            prefix_cache,
            "scoring options under a neutral prompt",
        )
    field = task.choice_field
    letters = task.label_spaces[field].values  # letters[i] names options(example)[i]
    out = []
    for k, e in enumerate(examples):
        scores = rule_scores(loglik[k], texts[k], [len(x) for x in ids[k]], neutral[k] if neutral else None)
        group = {"fields": [field], "values": [[letters[j]] for j in range(len(texts[k]))], "loglik": scores[rule]}
        out.append({**rank_record(task, e.id, [group], temperature), "truncated": False, "option_scores": scores})
    return out
