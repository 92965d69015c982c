"""Typed errors. The library raises them with a message that says what to do; only cli.py
turns them into an exit code."""

import difflib
from typing import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the closest known names, or ""."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class McqaError(Exception):
    """A problem the user can fix (bad name, missing file, malformed input)."""

    exit_code = 2


class UnknownTaskError(McqaError):
    pass


class TaskContractError(McqaError):
    """A task module that does not follow the Task contract; the message names its file."""


class DataError(McqaError):
    """A malformed data or predictions file; the message names the file and line."""
