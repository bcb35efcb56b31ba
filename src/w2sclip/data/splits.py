"""Splits of PROTOCOL.md section 1: pure functions of (labels, seed, fractions)."""

from __future__ import annotations

import hashlib

import numpy as np


def stratified_split(labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class: ``fraction`` of each class (rounded) to the first part.

    Classes with a single sample go to the first part. Both parts are sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = max(1, int(round(fraction * len(idx)))) if len(idx) > 1 else len(idx)
        first.append(idx[:k])
        second.append(idx[k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


BENCHMARK_SPLIT_SEED = 0
"""The seed of the D_hold / D_test split: the same for every run of a (dataset, domain)."""


def protocol_splits(test_labels, weak_pred, seed: int, hold_fraction: float = 0.5,
                    fit_fraction: float = 0.8) -> dict[str, np.ndarray]:
    """Indices into the official test split: ``hold``, ``hold_fit``, ``hold_val``, ``test``.

    D_hold / D_test: stratified by class with the fixed ``BENCHMARK_SPLIT_SEED`` (every run of a
    (dataset, domain) evaluates on the same D_test). hold_fit / hold_val: D_hold stratified by the
    weak supervisor's predicted class ``weak_pred`` with the run's ``seed``, so no ground truth
    of D_hold is read."""
    hold, test = stratified_split(test_labels, hold_fraction, BENCHMARK_SPLIT_SEED)
    fit_local, val_local = stratified_split(np.asarray(weak_pred)[hold], fit_fraction, seed)
    return {"hold": hold, "hold_fit": hold[fit_local], "hold_val": hold[val_local], "test": test}


def subsample_per_class(labels, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``per_class`` samples of each class (the weak labelled budget)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def hashed_train_test(keys, labels, test_fraction: float = 0.5, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test split for datasets without an official one.

    ``keys`` identify the files (paths relative to the dataset root). Within each class the files
    are ranked by ``sha256(seed, key)`` and the first ``round(test_fraction * n)`` go to test
    (a class with one file keeps it in train). The result depends only on the file list and the
    seed, not on listing order, and adding or removing a file moves at most one other file.
    Returns sorted (train, test) indices.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must lie strictly between 0 and 1")
    labels = np.asarray(labels)
    rank = np.array([hashlib.sha256(f"{seed}:{k}".encode()).hexdigest() for k in keys])
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.argsort(rank[idx], kind="stable")]
        k = min(round(test_fraction * len(idx)), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    cat = (lambda parts: np.sort(np.concatenate(parts)).astype(int) if parts else np.zeros(0, int))
    return cat(train), cat(test)
