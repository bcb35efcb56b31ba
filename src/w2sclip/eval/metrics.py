"""Metrics of PROTOCOL.md section 5: accuracy, PGR, agreement, calibration, seed statistics."""

from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np


def _pred(x) -> np.ndarray:
    x = np.asarray(x)
    return x.argmax(1) if x.ndim == 2 else x


def accuracy(pred_or_scores, labels) -> float:
    """Top-1 accuracy in [0, 1]; accepts predicted indices (N,) or scores (N, C)."""
    pred, labels = _pred(pred_or_scores), np.asarray(labels)
    if len(pred) != len(labels):
        raise ValueError(f"{len(pred)} predictions for {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((pred == labels).mean())


def topk_accuracy(scores, labels, k: int = 5) -> float:
    """Fraction of samples whose label is among the ``k`` highest scores (N, C)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(1).mean())


def pgr(student: float, weak: float, ceiling: float) -> Optional[float]:
    """Performance gap recovered, (student - weak) / (ceiling - weak).

    Returns ``None`` (undefined) when ``ceiling <= weak``: there is no gap to recover, and a
    number there would be meaningless or of the wrong sign.
    """
    if not all(map(math.isfinite, (student, weak, ceiling))):
        raise ValueError(f"pgr needs finite accuracies, got {student}, {weak}, {ceiling}")
    if ceiling <= weak:
        return None
    return (student - weak) / (ceiling - weak)


def agreement(pred_a, pred_b) -> float:
    """Fraction of samples on which two classifiers' argmax agree."""
    a, b = _pred(pred_a), _pred(pred_b)
    if len(a) != len(b):
        raise ValueError(f"agreement needs equal lengths, got {len(a)} and {len(b)}")
    return float((a == b).mean())


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (Guo et al. 2017)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == labels).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def mean_std(values: Iterable[Optional[float]]) -> tuple[Optional[float], Optional[float], int]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and count of defined values."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None, 0
    arr = np.asarray(vals, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, len(arr)
