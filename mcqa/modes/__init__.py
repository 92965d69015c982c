"""Training modes, one file each, registered by name: generate (the answer's JSON text is the
target), head (classification heads), choice (listwise multiple choice, a linear head on each
option's end state), content (the gold option's text as the generative target) and listwise
(a softmax over the options' PMI, no head). A new mode is one file here that calls
`register_mode`, plus its import below."""

from mcqa.modes import generate, head, choice, content, listwise  # noqa: F401, I001  (each registers itself; this order is the listing order)
from mcqa.modes.base import MODES, Mode, get_mode, register_mode

__all__ = ["MODES", "Mode", "get_mode", "register_mode"]
