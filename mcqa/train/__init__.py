"""Training: the typed config (config), the recipe in named stages (recipe), what the terminal
shows while it runs (progress), starting a run folder (start), reading run folders back (runs)
and finding them on disk (index)."""
