"""What several commands share: the parser that reports a refusal in one line, number
arguments, the model and trust flags, and the help listings read from the registries."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from mcqa.console import console
from mcqa.errors import McqaError
from mcqa.examples import sample_examples
from mcqa.io import check_out_file

USER_ERROR = 2
LIMIT_SEED = 0


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not a usage dump
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(USER_ERROR)


def count(minimum: int):
    """An argparse type: a whole number >= minimum (argparse reports a refusal as one line)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"number >= {minimum}"
    return parse


HELP_RUN = [False]  # set by main: this run prints a --help


# kind -> (the registry's module, its name there, the command whose --help lists it)
_REGISTRIES = {
    "readouts": ("mcqa.readouts", "READOUTS", "score"),
    "modes": ("mcqa.modes", "MODES", "train"),
    "baselines": ("mcqa.compare.baselines", "BASELINES", "baseline"),
}


def listing(kind: str) -> str:
    """Names (and readout options) for --help, read from the registries. Those import torch,
    which costs seconds, so only a --help run reads them; a wrong name in a normal run is
    refused by the registry itself, with "did you mean"."""
    module, name, command = _REGISTRIES[kind]
    if not HELP_RUN[0]:
        return f"see `mcqa {command} --help`"
    registry = getattr(importlib.import_module(module), name)
    if kind == "readouts":
        return "; ".join(r.help() for r in registry.values())
    return "; ".join(f"{e.name}: {e.description}" for e in registry.values())


def trust_arg(s) -> None:
    s.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a model run its own Python code (never turned on by a run folder; only if you trust it)",
    )


def model_args(s) -> None:
    s.add_argument("--model", help="base model: hub id, folder or alias (zero-shot, or the base of --adapter)")
    s.add_argument("--adapter", type=Path, help="a finished `mcqa train` run folder")
    s.add_argument(
        "--readout",
        help="how the answer is read out (default: the run's mode's, else constrained): " + listing("readouts"),
    )
    s.add_argument(
        "--readout-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the readout (repeatable), e.g. --readout-opt rule=sum for options",
    )
    s.add_argument(
        "--no-calibrate", action="store_true", help="rank, options: skip the temperature fitted on validation"
    )
    s.add_argument(
        "--endpoint",
        metavar="URL",
        help="read out an OpenAI-compatible server instead (vLLM, SGLang, ...), "
        "e.g. http://127.0.0.1:8000/v1; the API key comes from $OPENAI_API_KEY (see --readout-opt api_key_env=...)",
    )
    s.add_argument(
        "--served-model", metavar="NAME", help="with --endpoint: the model (or LoRA module) name the server serves"
    )
    s.add_argument(
        "--calibration-examples",
        type=count(0),
        metavar="N",
        help="rank, options: fit the temperature on a seeded sample of N validation examples (0: all; default 200); "
        "a trained run keeps the fit in its folder",
    )
    s.add_argument(
        "--limit",
        type=count(1),
        metavar="N",
        help="run the model on a seeded sample of N examples (a quick look; the output says so)",
    )
    trust_arg(s)


def uses_model(args) -> bool:
    return any(getattr(args, k) is not None for k in ("model", "adapter", "endpoint", "served_model"))


def limit(examples: list, n: int | None) -> tuple[list, str | None]:
    """--limit N: a seeded sample of N examples (a quick look), said in one line and in the outputs."""
    sampled = sample_examples(examples, n, LIMIT_SEED)
    if len(sampled) == len(examples):
        return examples, None
    sample = f"a seeded sample of {len(sampled)} of {len(examples)} examples (--limit {n}, seed {LIMIT_SEED})"
    console.print(f"running on {sample}", markup=False, highlight=False)
    return sampled, sample


def out_file(path: Path) -> Path:
    """A predictions file and its .json summary beside it: both must be regular files (or new)."""
    if path.suffix == ".json":
        raise McqaError(
            f"{path}: --out names the predictions file, which gets a .json summary beside it; give it a .jsonl name"
        )
    check_out_file(path.with_suffix(".json"))
    return check_out_file(path)


def run_model(task, args, examples: list, protocol: str | None, journal: Path | None = None):
    """The model path of score and predict: the flags as a ModelRequest, read out by
    mcqa.predicting. That module imports torch, so it is imported here by name, only when a
    model runs: `mcqa score --predictions` stays light."""
    predicting = importlib.import_module("mcqa.predicting")
    request = predicting.ModelRequest(
        model=args.model,
        adapter=args.adapter,
        readout=args.readout,
        readout_options=args.readout_opt,
        endpoint=args.endpoint,
        served_model=args.served_model,
        calibrate=not args.no_calibrate,
        calibration_examples=args.calibration_examples,
        trust_remote_code=args.trust_remote_code,
    )
    return predicting.run_model(task, request, examples, protocol, journal=journal)
