"""Fit every method of one run on hold_fit and evaluate it once on D_test (PROTOCOL.md 1-5).

Students see weak soft labels only (hold_fit to train, hold_val to stop); the ceilings see the
ground truth of D_hold; D_test labels are read once, after every fit, by :func:`evaluate`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from w2sclip.data.splits import protocol_splits
from w2sclip.eval.metrics import accuracy, agreement, expected_calibration_error, pgr, topk_accuracy
from w2sclip.methods import METHODS, get_method


def head_of(method: str) -> str:
    """The method whose head ``method`` trains (``Method.head``; e.g. logconf trains CPL's head)."""
    return getattr(METHODS[method], "head", None) or method


def ceiling_name(method: str) -> str:
    """``ceiling_<head>``: the ground-truth ceiling a method's PGR is measured against."""
    return f"ceiling_{head_of(method)}"


def softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax of logits (N, C)."""
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass
class FitInputs:
    """What the fits of one run see: features and weak logits of the readable test-split images,
    their ground truth (ceilings on D_hold and the final evaluation only), and the strong model's
    text side."""

    features: np.ndarray
    """(N, D) image features of the official test split's readable images."""
    weak_logits: np.ndarray
    """(N, C) the weak supervisor's logits on the same images."""
    labels: np.ndarray
    """(N,) ground truth."""
    text: Callable[[str], np.ndarray]
    """Template-set name -> class text weights (C, D)."""
    logit_scale: float
    prompt_encoder: Callable[[], object] | None = None
    """Builds the CoOp prompt encoder of the classes (called only for methods that need it)."""


@dataclass
class FitResult:
    """Records (one per method, ceilings and the weak model) and what the run folder keeps."""

    records: list[dict]
    fitted: dict = field(default_factory=dict)
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    """Name -> D_test probabilities (N_test, C), ``weak`` included."""
    splits: dict[str, np.ndarray] = field(default_factory=dict)


def _metrics(probs: np.ndarray, y: np.ndarray, weak_pred: np.ndarray) -> dict:
    return {"accuracy": accuracy(probs, y), "top5": topk_accuracy(probs, y, 5),
            "agreement": agreement(probs, weak_pred), "ece": expected_calibration_error(probs, y)}


def _fit_one(name: str, x: FitInputs, params: dict, rows: tuple[np.ndarray, np.ndarray], y_fit, y_val):
    m = get_method(name, **params)
    extra = {}
    if m.needs_prompt_encoder:
        if x.prompt_encoder is None:
            raise ValueError(f"method {name!r} trains through the text encoder: give FitInputs a prompt_encoder")
        extra["prompt_encoder"] = x.prompt_encoder()
    fit, val = rows
    return m.fit(x.features[fit], y_fit, text_weights=x.text(m.params.get("templates", "dataset")),
                 logit_scale=x.logit_scale, X_val=x.features[val], y_val=y_val, **extra)


def fit_methods(x: FitInputs, splits: dict[str, np.ndarray], *, seed: int, methods: tuple[str, ...],
                method_params: dict | None = None) -> dict:
    """Every method on weak soft labels, and the ceiling of each head they train: the head's
    method with the same hyper-parameters on the ground truth of D_hold. All on hold_fit,
    stopped on hold_val (weak labels for students, ground truth for ceilings)."""
    method_params = method_params or {}
    rows = (splits["hold_fit"], splits["hold_val"])
    p_weak = softmax(x.weak_logits)
    fitted = {}
    for head in dict.fromkeys(head_of(m) for m in methods):
        fitted[f"ceiling_{head}"] = _fit_one(head, x, {"seed": seed, **method_params.get(head, {})}, rows,
                                             x.labels[rows[0]], x.labels[rows[1]])
    for name in methods:
        fitted[name] = _fit_one(name, x, {"seed": seed, **method_params.get(name, {})}, rows,
                                p_weak[rows[0]], p_weak[rows[1]])
    return fitted


def evaluate(x: FitInputs, splits: dict[str, np.ndarray], fitted: dict, ids: dict) -> FitResult:
    """The only place D_test labels are read: one record per fitted head and the weak model."""
    test = splits["test"]
    y_test, p_weak = x.labels[test], softmax(x.weak_logits[test])
    weak_pred = p_weak.argmax(1)
    weak_acc = accuracy(weak_pred, y_test)
    probs = {"weak": p_weak, **{name: m.predict_proba(x.features[test]) for name, m in fitted.items()}}
    results = {name: _metrics(p, y_test, weak_pred) for name, p in probs.items()}
    base = {**ids, "n_classes": int(x.weak_logits.shape[1]), "n_fit": len(splits["hold_fit"]),
            "n_val": len(splits["hold_val"]), "n_test": len(test)}
    records = []
    best_ceiling = max((r["accuracy"] for n, r in results.items() if n.startswith("ceiling_")), default=None)
    for name, r in results.items():
        own = name if name.startswith("ceiling_") else ceiling_name(name) if name in METHODS else None
        ceil = results[own]["accuracy"] if own in results else None
        m = fitted.get(name)
        hist = getattr(m, "history_", {}) if m is not None else {}
        records.append({**base, "method": name, **r, "weak_accuracy": weak_acc, "ceiling": own,
                        "ceiling_accuracy": ceil, "best_ceiling_accuracy": best_ceiling,
                        "pgr": pgr(r["accuracy"], weak_acc, ceil) if ceil is not None else None,
                        "labels": "ground_truth" if name.startswith("ceiling_") else "weak",
                        "criterion": hist.get("selection", "none"), "best_step": hist.get("best_step"),
                        "stop_step": hist.get("stop_step"), "hit_cap": hist.get("hit_cap"),
                        "max_steps": hist.get("max_steps"),
                        "hparams": json.dumps(m.get_params() if m is not None else {}, sort_keys=True)})
    return FitResult(records, fitted, probs, splits)


def make_splits(x: FitInputs, seed: int, fractions: tuple[float, float] = (0.5, 0.8)) -> dict[str, np.ndarray]:
    """Indices into the rows of ``x``: ``hold``, ``hold_fit``, ``hold_val``, ``test`` (PROTOCOL.md 1;
    ``data.splits.protocol_splits`` with the weak supervisor's argmax)."""
    return protocol_splits(x.labels, x.weak_logits.argmax(1), seed, *fractions)


def fit_and_evaluate(x: FitInputs, *, seed: int, methods: tuple[str, ...], ids: dict,
                     method_params: dict | None = None, fractions: tuple[float, float] = (0.5, 0.8)) -> FitResult:
    """Split the test split (PROTOCOL.md 1), fit every method, evaluate on D_test.

    ``ids`` are the fields every record carries (dataset, domain, strong, weak, seed, protocol);
    ``fractions`` are (hold_fraction, fit_fraction)."""
    splits = make_splits(x, seed, fractions)
    fitted = fit_methods(x, splits, seed=seed, methods=methods, method_params=method_params)
    return evaluate(x, splits, fitted, ids)
