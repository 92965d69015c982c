"""Is the LLM worth it: the cheap baselines (baselines, embeddings, finetuned) and their cache,
zero-shot readouts and their cache, one table on the same examples and scorer (table, view),
paired differences (paired) and stacking (stack)."""
