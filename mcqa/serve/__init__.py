"""Serving: `mcqa export` writes a finished run as a bundle a serving engine takes as is
(export); each engine is one file registered by name (engines; vllm). Reading a server back
is the endpoint readout (mcqa.readouts.endpoint)."""

from mcqa.serve import vllm  # noqa: F401  (registers itself; each engine is one import here)
from mcqa.serve.engines import ENGINES, Bundle, Engine, register_engine

__all__ = ["ENGINES", "Bundle", "Engine", "register_engine"]
