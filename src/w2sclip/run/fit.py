"""Fit every method of one run on hold_fit and evaluate it once on D_test (docs/protocol.md).

Students see weak soft labels only (hold_fit to train, hold_val to stop and to tune); the
ceilings see the ground truth of D_hold; D_test labels are read once, after every fit, by
:func:`evaluate`.

Tuning (``tuning="grid"``, the default): every trained method fits each candidate of its
``grid`` (the same number of candidates for every method, centred on its recipe's published
values; docs/methods.md) and keeps the one the label-free rule picks on hold_val
(:func:`weak_rule_score`: argmax agreement with the weak labels, ties broken by the lower
cross-entropy against them, then by the grid's order, published values first). A ceiling tunes
the same grid by the ground truth of hold_val (accuracy, then cross-entropy), over the recipe of
every method of the run that trains its head, and keeps the strongest. ``tuning="none"`` fits the
published defaults only.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from w2sclip.data.splits import protocol_splits
from w2sclip.eval.metrics import accuracy, agreement, expected_calibration_error, pgr, topk_accuracy
from w2sclip.methods import METHODS, get_method
from w2sclip.methods.training import optim_kwargs

TUNINGS = ("grid", "none")
"""``grid``: each method's grid, picked by the label-free rule on hold_val; ``none``: published defaults."""


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


def candidates(name: str, fixed: dict, tuning: str = "grid") -> list[dict]:
    """The grid points of method ``name`` (dicts of its ``grid`` keys), the one equal to its
    defaults first; keys the user fixed (``fixed``) are not tuned. ``[{}]`` without a grid."""
    grid = {k: v for k, v in METHODS[name].grid.items() if k not in fixed} if tuning == "grid" else {}
    keys = sorted(grid)
    points = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]
    defaults = METHODS[name].defaults
    return sorted(points, key=lambda c: any(defaults.get(k) != v for k, v in c.items())) or [{}]


def _cross_entropy(z: np.ndarray, target: np.ndarray) -> float:
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-(target * logp).sum(1).mean())


def weak_rule_score(z_val: np.ndarray, target_val: np.ndarray) -> tuple[float, float]:
    """The tuning rule on hold_val, lower is better: ``(-argmax agreement with the targets'
    argmax, cross-entropy against them)``. For a student the targets are hold_val's weak soft
    labels (the best label-free rule of the selection study that does not collapse to
    zero-shot: docs/protocol.md); for a ceiling, hold_val's one-hot ground truth (accuracy)."""
    return -float((z_val.argmax(1) == target_val.argmax(1)).mean()), _cross_entropy(z_val, target_val)


def _tune(name: str, x: FitInputs, base: dict, points: list[dict], rows, y_fit, y_val, t_val) -> tuple:
    """Fit ``name`` with ``{**base, **point}`` for every point; the best by ``weak_rule_score``
    against ``t_val`` (probabilities on hold_val). Returns (fitted, chosen point, its score, scores)."""
    best, scores = None, []
    for point in points:
        m = _fit_one(name, x, {**base, **point}, rows, y_fit, y_val)
        score = weak_rule_score(m.decision_function(x.features[rows[1]]), t_val)
        scores.append({**point, "agreement": -score[0], "cross_entropy": score[1]})
        if best is None or score < best[0]:
            best = (score, m, point)
    return best[1], best[2], best[0], scores


def ceiling_recipes(head: str, methods: tuple[str, ...], method_params: dict) -> list[tuple[str, dict]]:
    """(recipe, params) of the ceiling of ``head``: the head's method with the optimiser, budget
    and schedule of every method of the run that trains this head (its own first), duplicates
    dropped. Early stopping on the loss becomes early stopping on accuracy (``val_acc``: the
    ground truth of hold_val is the ceiling's to use)."""
    out, seen = [], []
    for m in dict.fromkeys((head, *[m for m in methods if head_of(m) == head and METHODS[m].trains])):
        p = {**METHODS[m].defaults, **method_params.get(m, {})}
        recipe = {k: v for k, v in optim_kwargs(p).items() if k in METHODS[head].defaults and k != "seed"}
        # the user's settings of the head itself (templates, learn_scale, seed...) hold under every
        # recipe; under its own recipe they also override its optimiser keys
        head_user = method_params.get(head, {})
        recipe = {**recipe, **head_user} if m == head else {**head_user, **recipe}
        if {**METHODS[head].defaults, **recipe}.get("selection") == "val_loss":
            recipe["selection"] = "val_acc"
        if recipe not in seen:
            seen.append(recipe)
            out.append((m, recipe))
    return out


def fit_methods(x: FitInputs, splits: dict[str, np.ndarray], *, seed: int, methods: tuple[str, ...],
                method_params: dict | None = None, tuning: str = "grid") -> tuple[dict, dict]:
    """Every method on weak soft labels, and the ceiling of each head they train, all on
    hold_fit, tuned on hold_val (module docstring). Returns (fitted, tuning info by name)."""
    if tuning not in TUNINGS:
        raise ValueError(f"unknown tuning {tuning!r}; valid: {', '.join(TUNINGS)}")
    method_params = method_params or {}
    rows = (splits["hold_fit"], splits["hold_val"])
    p_weak = softmax(x.weak_logits)
    gt = np.eye(x.weak_logits.shape[1], dtype=np.float32)[x.labels]
    fitted, info = {}, {}
    for head in dict.fromkeys(head_of(m) for m in methods):
        best = None
        for recipe, params in ceiling_recipes(head, methods, method_params):
            points = candidates(recipe, method_params.get(recipe, {}), tuning)
            m, point, score, scores = _tune(head, x, {"seed": seed, **params}, points, rows, x.labels[rows[0]],
                                            x.labels[rows[1]], gt[rows[1]])
            if best is None or score < best[0]:
                best = (score, m, {"tuned": point, "recipe": recipe})
            info.setdefault(f"ceiling_{head}", {}).setdefault("scores", []).extend(
                {"recipe": recipe, **s} for s in scores)
        fitted[f"ceiling_{head}"] = best[1]
        info[f"ceiling_{head}"].update(best[2])
    for name in methods:
        user = method_params.get(name, {})
        m, point, _, scores = _tune(name, x, {"seed": seed, **user}, candidates(name, user, tuning), rows,
                                    p_weak[rows[0]], p_weak[rows[1]], p_weak[rows[1]])
        fitted[name], info[name] = m, {"tuned": point, "scores": scores, "recipe": name}
    return fitted, info


def evaluate(x: FitInputs, splits: dict[str, np.ndarray], fitted: dict, ids: dict,
             tuning: dict | None = None) -> FitResult:
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
        tuned = (tuning or {}).get(name, {})
        records.append({**base, "method": name, **r, "weak_accuracy": weak_acc, "ceiling": own,
                        "ceiling_accuracy": ceil, "best_ceiling_accuracy": best_ceiling,
                        "pgr": pgr(r["accuracy"], weak_acc, ceil) if ceil is not None else None,
                        "labels": "ground_truth" if name.startswith("ceiling_") else "weak",
                        "criterion": hist.get("selection", "none"), "best_step": hist.get("best_step"),
                        "stop_step": hist.get("stop_step"), "hit_cap": hist.get("hit_cap"),
                        "max_steps": hist.get("max_steps"),
                        "hparams": json.dumps(m.get_params() if m is not None else {}, sort_keys=True),
                        "tuned": json.dumps(tuned.get("tuned", {}), sort_keys=True),
                        "recipe": tuned.get("recipe"),
                        "search": json.dumps({k: hist[k] for k in ("alpha", "beta")}) if "alpha" in hist else None,
                        "tuning_scores": json.dumps(tuned.get("scores", []), sort_keys=True)})
    return FitResult(records, fitted, probs, splits)


def make_splits(x: FitInputs, seed: int, fractions: tuple[float, float] = (0.5, 0.8)) -> dict[str, np.ndarray]:
    """Indices into the rows of ``x``: ``hold``, ``hold_fit``, ``hold_val``, ``test`` (PROTOCOL.md 1;
    ``data.splits.protocol_splits`` with the weak supervisor's argmax)."""
    return protocol_splits(x.labels, x.weak_logits.argmax(1), seed, *fractions)


def fit_and_evaluate(x: FitInputs, *, seed: int, methods: tuple[str, ...], ids: dict,
                     method_params: dict | None = None, fractions: tuple[float, float] = (0.5, 0.8),
                     tuning: str = "grid") -> FitResult:
    """Split the test split (docs/protocol.md), fit and tune every method, evaluate on D_test.

    ``ids`` are the fields every record carries (dataset, domain, strong, weak, seed, protocol);
    ``fractions`` are (hold_fraction, fit_fraction); ``tuning`` one of ``TUNINGS``."""
    splits = make_splits(x, seed, fractions)
    fitted, info = fit_methods(x, splits, seed=seed, methods=methods, method_params=method_params, tuning=tuning)
    return evaluate(x, splits, fitted, {**ids, "tuning": tuning}, info)
