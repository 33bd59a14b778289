"""Attribute (VAR) and classification (VFR) metrics."""

from __future__ import annotations

import numpy as np
import torch


def _predictions(logits_or_preds: torch.Tensor) -> np.ndarray:
    values = torch.as_tensor(logits_or_preds)
    return (values.argmax(1) if values.ndim == 2 else values).cpu().numpy()


def top1_accuracy(logits_or_preds: torch.Tensor, labels: torch.Tensor) -> float:
    return float((_predictions(logits_or_preds) == np.asarray(labels)).mean())


def attribute_metrics(
    logits_or_preds: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """mA, instance accuracy and macro F1 of one multi-class attribute; labels −1 are ignored.

    mA is the pedestrian-attribute convention applied one-vs-rest: per class, the mean of the
    true-positive rate and the true-negative rate, averaged over the classes present in the
    labels (a class with no positive sample has no TPR and is left out). Macro F1 averages the
    per-class F1 over the same classes.
    """
    preds, labels = _predictions(logits_or_preds), np.asarray(labels)
    known = labels >= 0
    preds, labels = preds[known], labels[known]
    balanced, f1 = [], []
    for c in range(num_classes):
        positive, predicted = labels == c, preds == c
        if not positive.any():
            continue
        tp = (positive & predicted).sum()
        tpr = tp / positive.sum()
        negative = ~positive
        tnr = (negative & ~predicted).sum() / negative.sum() if negative.any() else 1.0
        balanced.append((tpr + tnr) / 2)
        precision = tp / predicted.sum() if predicted.any() else 0.0
        f1.append(2 * precision * tpr / (precision + tpr) if precision + tpr > 0 else 0.0)
    return {
        "mA": float(np.mean(balanced)),
        "accuracy": float((preds == labels).mean()),
        "f1": float(np.mean(f1)),
    }
