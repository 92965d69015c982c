"""Serving: `mcqa export` writes a finished run as a bundle a serving engine takes as is
(export), one file per engine, registered by name (vllm). Reading a server back is the
endpoint readout (mcqa.readouts.endpoint)."""
