"""What a readout is: a registered function from (model, tokenizer, task, examples) to one
Prediction per example, in order (mcqa.eval.records), with typed options and a declaration of
what it needs from the model: an LM head ("lm"), classification heads ("heads"), option scores
("choice"), or no local model at all ("none": the endpoint readout asks a server). A model
says what it offers through an `offers` attribute (mcqa.modes.head.HeadModel: "heads"; any
causal LM: "lm"), so no decoding code imports a training mode's model class."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mcqa.errors import McqaError, did_you_mean
from mcqa.eval.records import Prediction
from mcqa.io import validation_problems
from mcqa.model.encoding import end_of_turn
from mcqa.names import Registry
from mcqa.prompting import serialize_target
from mcqa.task import Example, Task

FREE_MAX_NEW_TOKENS = 256
BATCH_SIZE = 16  # examples decoded together


class Options(BaseModel):
    """A readout's options; each readout declares its own subclass."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Readout:
    name: str
    fn: Callable[..., list[Prediction]]
    description: str
    needs: str  # "lm", "heads", "choice" or "none"
    options: type[Options]
    calibrated: bool = False  # its probabilities come from scores that a temperature fitted on validation rescales

    def help(self) -> str:
        names = ", ".join(self.options.model_fields) or "none"
        return f"{self.name}: {self.description} (options: {names})"


READOUTS: Registry[Readout] = Registry("readout")
_REFUSALS = {  # what the model offers -> why a readout that needs something else cannot run on it
    "heads": "this is a head-mode run (classification heads, no LM head); use the 'head' readout",
    "choice": "this is a choice-mode run (option scores, no LM head); use the 'choice' readout",
}
_NEEDS = {
    "lm": "the '{name}' readout needs a causal LM with its LM head",
    "heads": (
        "the '{name}' readout needs a head-mode run (mcqa train mode=head); this model has no classification heads"
    ),
    "choice": (
        "the '{name}' readout needs a choice-mode run (mcqa train mode=choice); this model has no option-score head"
    ),
    "none": "",  # a server does the work: no local model is read
}


def register_readout(name: str, description: str, needs: str, options: type[Options], calibrated: bool = False):
    """Decorator: register `fn(model, tokenizer, task, examples, **options)` under `name`."""
    if needs not in _NEEDS:
        raise ValueError(f"readout '{name}': needs must be one of {', '.join(_NEEDS)}")

    def wrap(fn):
        READOUTS.register(name, Readout(name, fn, description, needs, options, calibrated))
        return fn

    return wrap


def get_readout(name: str) -> Readout:
    return READOUTS.resolve(name)


def offers(model) -> str:
    """What a model offers readouts: "heads" for a head-mode model, else "lm"."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "offers", "lm")


def check_options(readout: Readout, opts: dict[str, Any]) -> Options:
    known = list(readout.options.model_fields)
    for key in opts:
        if key not in known:
            raise McqaError(
                f"readout '{readout.name}' has no option '{key}'{did_you_mean(key, known)} (its options: "
                f"{', '.join(known) or 'none'})"
            )
    try:
        return readout.options(**opts)
    except ValidationError as e:
        raise McqaError(f"readout '{readout.name}': {validation_problems(e)}") from None


def run_readout(name: str, model, tokenizer, task: Task, examples: list[Example], **opts) -> list[Prediction]:
    """Run a readout by name: its options checked (an unknown one is an error that lists those
    it takes), and the model checked to offer what the readout needs."""
    readout = get_readout(name)
    options = check_options(readout, opts)
    has = offers(model)
    if readout.needs != "none" and has != readout.needs:
        raise McqaError(
            (_REFUSALS[has] if readout.needs == "lm" and has in _REFUSALS else _NEEDS[readout.needs]).format(name=name)
        )
    return readout.fn(model, tokenizer, task, examples, **options.model_dump())


def default_max_new_tokens(tokenizer, task: Task) -> int:
    """The one rule for how long an answer may run (validation during training, generate and
    constrained): room for the longest label combination and the end of turn, a few tokens
    spare; a task with free fields gets FREE_MAX_NEW_TOKENS."""
    spaces = task.label_spaces
    if any(s is None for s in spaces.values()):
        return FREE_MAX_NEW_TOKENS
    longest = {f: max(s.values, key=lambda v: len(json.dumps(v))) for f, s in spaces.items()}
    text = serialize_target(task.output, longest) + end_of_turn(tokenizer)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 4


def parse_options(items: list[str], where: str) -> dict[str, Any]:
    """["rule=sum", "batch_size=8"] -> {"rule": "sum", "batch_size": 8}: readout options typed
    on a command line (values read as YAML); `where` names them in the error."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise McqaError(f"{where}: '{item}' is not key=value (for example rule=sum)")
        out[key.strip()] = yaml.safe_load(raw) if raw else ""
    return out
