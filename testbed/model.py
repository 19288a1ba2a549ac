"""The batching around a backbone: tokenizing, predicting, scoring."""

from __future__ import annotations

import numpy as np
import torch


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Pad to the longest text of the batch, not to max_length: short texts cost less."""
    return dict(tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"))


@torch.no_grad()
def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    """Class probabilities [N, C] in eval mode; batches texts of similar length together."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    probs = [None] * len(texts)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        logits = model(**tokenize(tokenizer, [texts[i] for i in idx], max_length)).logits
        for i, row in zip(idx, logits.softmax(-1).numpy()):
            probs[i] = row
    model.train(was_training)
    return np.stack(probs) if probs else np.zeros((0, 0))


def accuracy_and_macro_f1(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, float]:
    predicted = probs.argmax(-1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_pos = np.diag(confusion).astype(float)
    precision = np.divide(true_pos, confusion.sum(0), out=np.zeros(num_classes), where=confusion.sum(0) > 0)
    recall = np.divide(true_pos, confusion.sum(1), out=np.zeros(num_classes), where=confusion.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes), where=(precision + recall) > 0)
    present = (confusion.sum(0) + confusion.sum(1)) > 0  # as sklearn: classes in labels or predictions
    return float(true_pos.sum() / max(len(labels), 1)), float(f1[present].mean()) if present.any() else 0.0
