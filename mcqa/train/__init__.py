"""Training: the typed config (config), the recipe in named stages (recipe), the model it trains
(lora), Trainer's callbacks and what the terminal shows while it runs (callbacks, progress),
starting a run folder (start), reading run folders back without loading anything (folder),
loading a finished run (runs) and finding runs on disk (index)."""
