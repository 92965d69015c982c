"""mcqa: one task definition drives prompting, LoRA training, decoding and honest scoring."""

__version__ = "0.1.0"
