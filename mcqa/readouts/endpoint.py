"""endpoint: the answer read out of any OpenAI-compatible server (vLLM, SGLang, a hosted API).

Each example's chat messages go to `/chat/completions` with thinking off
(`chat_template_kwargs`), greedy, with log-probabilities of the top alternatives at every
generated token, and with structured outputs built from the task's schema:
- when every field has a label space and their product is small (`joint_limit`, as the
  constrained readout's joint trie), a `choice` among the serialized answers, so the reply is
  exactly the text mcqa trains and scores, with no free whitespace to loop on;
- otherwise the task's JSON Schema (`json`).
Label probabilities are read from the returned log-probabilities: walking the generated
tokens from where a label starts, each alternative token consistent with some label takes
its share of the mass; the branch that was generated is followed, a branch that was not is
shared evenly among the labels it leads to (the server reveals nothing deeper). Alternatives
that fit no label are dropped, so the probabilities are renormalised over the allowed labels
whatever the server's logprobs mode (with vLLM, `--logprobs-mode processed_logprobs` makes
them the grammar-masked ones). They travel as rank's scores (mcqa.eval.records.RankGroup), so a
temperature (`temperature`, e.g. the one `mcqa export` wrote) rescales them the same way.

Requests are sent by the `openai` client (retries with backoff on 408/409/429/5xx, connection
errors and timeouts), at most `max_in_flight` at a time. With `journal` (a JSONL file; `mcqa
predict --out` passes its own file), each finished example is appended as it arrives and an
interrupted run resumes where it stopped. The API key is read from the environment variable
named by `api_key_env`, never from a file or a flag.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from pydantic import Field

from mcqa.console import track
from mcqa.errors import McqaError
from mcqa.eval.calibration import group_probs
from mcqa.eval.records import Prediction, RankGroup
from mcqa.prompting import serialize_target
from mcqa.readouts.base import Options, register_readout
from mcqa.readouts.trie import JOINT_LIMIT
from mcqa.schema import task_schema
from mcqa.task import Example, Task

TOP_LOGPROBS = 20  # the most the OpenAI API (and vLLM's default --max-logprobs) returns


class EndpointOptions(Options):
    url: str = Field(description="the server's OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    served_model: str = Field(description="the model (or LoRA module) name the server serves")
    api_key_env: str = "OPENAI_API_KEY"
    max_in_flight: int = Field(8, ge=1, le=256)
    max_retries: int = Field(5, ge=0, le=20)
    timeout: float = Field(120.0, gt=0)
    max_tokens: int = Field(256, ge=1)
    top_logprobs: int = Field(TOP_LOGPROBS, ge=0, le=TOP_LOGPROBS)
    joint_limit: int = Field(JOINT_LIMIT, ge=1)
    temperature: float = Field(1.0, gt=0)
    journal: str | None = None


# ---------------------------------------------------------------- requests


def answer_choices(task: Task, joint_limit: int = JOINT_LIMIT) -> list[str] | None:
    """Every serialized answer, when every field is a label field and there are at most
    `joint_limit` combinations; None otherwise."""
    spaces = task.label_spaces
    if any(s is None for s in spaces.values()):
        return None
    if math.prod(len(s.values) for s in spaces.values()) > joint_limit:
        return None
    return [
        serialize_target(task.output, dict(zip(spaces, combo)))
        for combo in itertools.product(*(s.values for s in spaces.values()))
    ]


def structured_outputs(task: Task, joint_limit: int = JOINT_LIMIT) -> dict[str, Any]:
    choices = answer_choices(task, joint_limit)
    return {"choice": choices} if choices is not None else {"json": task_schema(task)}


def build_request(
    task: Task,
    e: Example,
    served_model: str,
    max_tokens: int = 256,
    top_logprobs: int = TOP_LOGPROBS,
    joint_limit: int = JOINT_LIMIT,
) -> dict[str, Any]:
    """The body of one /chat/completions request (vLLM's extensions under their own keys)."""
    return {
        "model": served_model,
        "messages": task.messages(e),
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "logprobs": top_logprobs > 0,
        **({"top_logprobs": top_logprobs} if top_logprobs > 0 else {}),
        "structured_outputs": structured_outputs(task, joint_limit),
        "chat_template_kwargs": {"enable_thinking": False},
    }


# ---------------------------------------------------------------- probabilities from logprobs


def branch_probs(steps: list[tuple[str, dict[str, float]]], start: int, candidates: list[str]) -> dict[str, float]:
    """Probabilities of `candidates` (strings the reply could hold from character `start` on),
    from the generated tokens and their alternatives' log-probabilities (`steps`: one
    (token, {alternative: logprob}) per generated token). Renormalised over the candidates;
    empty when the reply at `start` is none of them."""
    offsets = list(itertools.accumulate((len(t) for t, _ in steps), initial=0))
    i = next((k for k in range(len(steps)) if offsets[k] <= start < offsets[k + 1]), None)
    if i is None:
        return {}
    pre = "".join(t for t, _ in steps)[offsets[i] : start]  # the token's text before the label starts
    probs = dict.fromkeys(candidates, 0.0)
    alive, consumed, mass = list(candidates), "", 1.0
    while alive and i < len(steps):
        token, alts = steps[i]
        alts = {**alts, token: alts.get(token, max(alts.values(), default=0.0))}  # the generated one is always there
        fits: dict[str, list[str]] = {}
        for a in alts:
            if not a.startswith(pre):
                continue
            text = consumed + a[len(pre) :]
            cs = [c for c in alive if c.startswith(text) or text.startswith(c)]
            if cs:
                fits[a] = cs
        if token not in fits:
            break  # the reply left the candidates: what was shared so far is all we know
        weights = {a: math.exp(alts[a]) for a in fits}
        total = sum(weights.values())
        for a, cs in fits.items():
            if a != token:
                for c in cs:
                    probs[c] += mass * weights[a] / total / len(cs)
        mass *= weights[token] / total
        consumed += token[len(pre) :]
        pre, alive, i = "", fits[token], i + 1
        done = [c for c in alive if len(consumed) >= len(c)]
        if done or len(alive) == 1:
            for c in done or alive:
                probs[c] += mass / len(done or alive)
            mass = 0.0
            break
    total = sum(probs.values())
    return {c: p / total for c, p in probs.items()} if total > 0 else {}


def _value_start(text: str, field: str) -> int | None:
    m = re.search(r'"' + re.escape(field) + r'"\s*:\s*', text)
    return m.end() if m else None


def score_groups(
    task: Task, text: str, steps: list[tuple[str, dict[str, float]]], joint_limit: int = JOINT_LIMIT
) -> list[RankGroup]:
    """rank-style scores (log-probabilities of candidate labels) read from a reply."""
    if not steps:
        return []
    spaces, choices = task.label_spaces, answer_choices(task, joint_limit)
    if choices is not None:
        p = branch_probs(steps, 0, choices)
        combos = list(itertools.product(*(s.values for s in spaces.values())))
        if not p:
            return []
        return [
            {
                "fields": list(spaces),
                "values": [list(c) for c in combos],
                "loglik": [math.log(max(p[s], 1e-300)) for s in choices],
            }
        ]
    groups: list[RankGroup] = []
    for f, space in spaces.items():
        start = _value_start(text, f) if space is not None else None
        if start is None:
            continue
        serial = [json.dumps(v, ensure_ascii=False) for v in space.values]
        p = branch_probs(steps, start, serial)
        if p:
            groups.append(
                {
                    "fields": [f],
                    "values": [[v] for v in space.values],
                    "loglik": [math.log(max(p[s], 1e-300)) for s in serial],
                }
            )
    return groups


def read_reply(
    task: Task, eid: str, reply: dict[str, Any], temperature: float = 1.0, joint_limit: int = JOINT_LIMIT
) -> Prediction:
    """One /chat/completions reply (a JSON object) -> a Prediction. A reply of the wrong shape
    is the server's error, named with the example."""
    try:
        choice = reply["choices"][0]
        text = choice["message"]["content"] or ""
        content = ((choice.get("logprobs") or {}).get("content")) or []
        steps = [
            (
                c["token"],
                {a["token"]: float(a["logprob"]) for a in (c.get("top_logprobs") or [])}
                or {c["token"]: float(c["logprob"])},
            )
            for c in content
        ]
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise McqaError(
            f"example '{eid}': the server's reply is not a chat completion with a message "
            f"({json.dumps(reply)[:200]}); check --endpoint and --served-model"
        ) from None
    groups = score_groups(task, text, steps, joint_limit)
    out: Prediction = {"id": eid, "output": text, "truncated": finish == "length"}
    if groups:
        out.update(probs=group_probs(groups, temperature), scores=groups, temperature=temperature)
    return out


# ---------------------------------------------------------------- the journal (resume)


def read_journal(path: Path, ids: set[str], served_model: str) -> dict[str, Prediction]:
    """Predictions an interrupted run already appended. A last line cut off by a kill is
    dropped; any other bad line is an error naming the file and line."""
    if path.is_symlink():  # appended to with O_NOFOLLOW, so never read through a link either
        raise McqaError(
            f"{path}: --out is a symbolic link; an endpoint run appends to its own file only, give another --out"
        )
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    done: dict[str, Prediction] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # no newline after it: the write was cut off
                break
            raise McqaError(
                f"{path}:{n}: not a JSON line; this file is not an interrupted endpoint run's; give another --out"
            ) from None
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("output"), str)):
            raise McqaError(f"{path}:{n}: not a prediction ({{id, output}}); give another --out")
        if row["id"] not in ids:
            raise McqaError(
                f"{path}:{n}: id '{row['id'][:80]}' is not among the examples being predicted; "
                "this file belongs to another run; give another --out"
            )
        if not isinstance(row.get("endpoint"), dict):
            raise McqaError(
                f"{path}:{n}: this file holds finished predictions, not an interrupted endpoint run; "
                "give another --out or delete it"
            )
        served = row["endpoint"].get("model")
        if served != served_model:
            raise McqaError(f"{path}:{n}: written by served model {served!r}, not '{served_model}'; give another --out")
        done[row["id"]] = row
    return done


class Journal:
    def __init__(self, path: Path | None):
        self.path, self.lock = path, threading.Lock()

    def append(self, p: Prediction) -> None:
        if self.path is None:
            return
        line = (json.dumps(p, ensure_ascii=False) + "\n").encode("utf-8", errors="backslashreplace")
        with self.lock:
            try:  # never through a link: the journal is the user's --out file, nothing else
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                raise McqaError(f"{self.path}: cannot append to it ({e.strerror}); pick another --out") from None
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


# ---------------------------------------------------------------- the readout


def client(url: str, api_key_env: str, max_retries: int, timeout: float):
    try:
        import openai
    except ImportError:
        raise McqaError(
            "the endpoint readout needs the openai client: pip install 'openai>=1.40' (or mcqa[serve])"
        ) from None
    return openai.OpenAI(
        base_url=url, api_key=os.environ.get(api_key_env) or "EMPTY", max_retries=max_retries, timeout=timeout
    )


def ask(api, task: Task, e: Example, o: EndpointOptions) -> Prediction:
    import openai

    body = build_request(task, e, o.served_model, o.max_tokens, o.top_logprobs, o.joint_limit)
    standard = {
        k: body.pop(k)
        for k in ("model", "messages", "temperature", "max_tokens", "logprobs", "top_logprobs")
        if k in body
    }
    started = time.perf_counter()
    try:
        raw = api.chat.completions.with_raw_response.create(**standard, extra_body=body)
    except openai.APIStatusError as err:
        raise McqaError(
            f"{o.url}: example '{e.id}': the server answered {err.status_code} ({str(err)[:200]}); "
            "check --endpoint, --served-model and the server's log"
        ) from None
    except openai.APIConnectionError as err:
        raise McqaError(
            f"{o.url}: example '{e.id}': no answer after {o.max_retries} retries ({type(err).__name__}); "
            "is the server running?"
        ) from None
    try:
        reply = json.loads(raw.http_response.text)
    except ValueError:
        raise McqaError(
            f"{o.url}: example '{e.id}': the reply is not JSON; is --endpoint an OpenAI-compatible /v1 URL?"
        ) from None
    p = read_reply(task, e.id, reply, o.temperature, o.joint_limit)
    p["endpoint"] = {
        "server": o.url,
        "model": o.served_model,
        "latency_s": round(time.perf_counter() - started, 4),
        "retries": int(getattr(raw, "retries_taken", 0) or 0),
        "finish_reason": reply["choices"][0].get("finish_reason"),
    }
    return p


@register_readout(
    "endpoint",
    "an OpenAI-compatible server (vLLM, SGLang, ...): structured outputs from the task's schema, "
    "label probabilities from its logprobs",
    needs="none",
    options=EndpointOptions,
)
def endpoint(model, tokenizer, task: Task, examples: list[Example], **opts) -> list[Prediction]:
    o = EndpointOptions(**opts)
    journal = Journal(Path(o.journal) if o.journal else None)
    done = read_journal(journal.path, {e.id for e in examples}, o.served_model) if journal.path else {}
    todo = [e for e in examples if e.id not in done]
    resumed = len(done)  # answers an earlier, interrupted run left in the journal
    api = client(o.url, o.api_key_env, o.max_retries, o.timeout)
    if todo:  # one request first, alone: a wrong URL, model or key fails before any progress bar
        p = ask(api, task, todo[0], o)
        journal.append(p)
        done[p["id"]] = p
        todo = todo[1:]
    with ThreadPoolExecutor(max_workers=o.max_in_flight) as pool:
        futures = [pool.submit(ask, api, task, e, o) for e in todo]
        try:
            for fut in _progress(as_completed(futures), f"asking {o.served_model} at {o.url}", len(todo), resumed):
                p = fut.result()
                journal.append(p)
                done[p["id"]] = p
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return [done[e.id] for e in examples]


def _progress(items: Iterable, what: str, total: int, resumed: int) -> Iterable:
    note = f" ({resumed} done before, resumed)" if resumed else ""
    return track(items, f"{what}{note}", total=total)
