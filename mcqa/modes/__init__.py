"""Training modes, one file each, registered by name: generate (the answer's JSON text is the
target) and head (classification heads). A new mode is one file here that calls
`register_mode`, plus its import below."""

from mcqa.modes import generate, head  # noqa: F401  (each registers itself)
from mcqa.modes.base import MODES, Mode, get_mode, register_mode

__all__ = ["MODES", "Mode", "get_mode", "register_mode"]
