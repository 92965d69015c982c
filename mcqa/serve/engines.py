"""Serving engines `mcqa export` writes for, registered by name like a readout: a new engine is
one file in mcqa/serve/ that calls `register_engine`, plus its import in mcqa/serve/__init__.py.
An engine turns what the bundle holds (a Bundle) into its own files: the launch script and a
README saying how to serve it and read it out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mcqa.names import Registry


@dataclass(frozen=True)
class Bundle:
    """What an exported bundle holds, as an engine needs it: the adapter in adapter/ (or, merged,
    the model in model/), the tokenizer in tokenizer/, schema.json, labels.json, request.json."""

    task: str
    protocol: str
    served: str  # the model name the server serves
    base: Path | str | None  # the base model (a folder or hub id); None when merged
    merged: bool
    lora_r: int
    max_logprobs: int  # log-probabilities per token the server must return: the largest field's labels at least


@dataclass(frozen=True)
class Engine:
    name: str
    description: str
    files: Callable[[Bundle], dict[str, str]]  # file name -> text; serve.sh, if given, is made executable


ENGINES: Registry[Engine] = Registry("serving engine")


def register_engine(engine: Engine) -> Engine:
    return ENGINES.register(engine.name, engine)
