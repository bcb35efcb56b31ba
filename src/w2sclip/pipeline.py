"""The weak-to-strong experiment as a few readable functions (no CLI code here).

Per task (dataset x domain): the weak supervisor is trained on D_train; the official test split
is divided into D_hold (hold_fit + hold_val) and D_test (PROTOCOL.md section 1); strong image
features are extracted once per model and cached; every method is fitted on hold_fit with the
weak soft labels (hold_val for stopping) and evaluated once on D_test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from w2sclip.data.manifest import ImageDataset
from w2sclip.data.splits import protocol_splits, subsample_per_class
from w2sclip.eval.metrics import accuracy, agreement, expected_calibration_error, pgr, topk_accuracy
from w2sclip.features.cache import ArrayCache
from w2sclip.methods import get_method
from w2sclip.models.weak.timm_weak import WeakConfig

log = logging.getLogger(__name__)

CEILING_HEAD = {"kd_lp": "ceiling_lp", "ceiling_lp": "ceiling_lp"}
"""Which ceiling a method's PGR is measured against (default: ``ceiling``, the CPL head)."""


class Timer:
    """Accumulates wall time per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@dataclass
class Task:
    """One (dataset, domain): D_train for the weak model, the official test split for the rest."""

    dataset: str
    domain: str
    train: ImageDataset | None
    test: ImageDataset
    key: dict = field(default_factory=dict)
    train_key: dict | None = None
    """Identity of D_train (the weak model's training data), for cache keys."""

    @property
    def classnames(self) -> list[str]:
        return self.test.classnames

    @property
    def test_labels(self) -> np.ndarray:
        return np.asarray(self.test.labels)


def dataset_key(root: str | Path, name: str, domain: str) -> dict:
    """Identity of a manifest dataset's content (for cache keys)."""
    root = Path(root)
    h = hashlib.sha256()
    for fname in ("manifest.csv", "classnames.txt", "templates.txt", "builtin.json"):
        if (root / fname).exists():
            h.update(fname.encode() + (root / fname).read_bytes())
    return {"name": name, "domain": domain, "manifest_sha256": h.hexdigest()[:16]}


def weak_logits(task: Task, cfg: WeakConfig, seed: int, cache: ArrayCache, timer: Timer) -> np.ndarray:
    """Logits (N_test_split, C) of the weak model trained on D_train under ``cfg`` and ``seed``."""
    from w2sclip.features.extract import decode_images
    from w2sclip.models.weak.timm_weak import predict_logits, train_weak

    key = {"kind": "weak_logits", "data": task.key, "split": task.test.split, "n": len(task.test),
           "weak": asdict(cfg), "seed": seed}
    slug = f"{task.dataset}-{task.domain}-{cfg.slug}-s{seed}"
    cached = cache.load(key, slug)
    if cached is not None:
        return cached
    with timer.stage("weak training"):
        labels = np.asarray(task.train.labels)
        idx = subsample_per_class(labels, cfg.labels_per_class, seed)
        train_imgs = decode_images(_subset(task.train, idx), cfg.decode_size)
        model = train_weak(train_imgs, labels[idx], len(task.classnames), cfg, seed)
        logits = predict_logits(model, decode_images(task.test, cfg.decode_size), cfg.input_size)
    cache.save(key, logits, slug)
    return logits


def _subset(ds: ImageDataset, idx) -> ImageDataset:
    return ImageDataset(ds.name, ds.classnames, ds.templates, [ds.samples[i] for i in idx],
                        ds.domain, ds.split)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _metrics(probs: np.ndarray, y: np.ndarray, weak_pred: np.ndarray) -> dict:
    return {"accuracy": accuracy(probs, y), "top5": topk_accuracy(probs, y, 5),
            "agreement": agreement(probs, weak_pred), "ece": expected_calibration_error(probs, y)}


def run_seed(task: Task, strong_name: str, feats: np.ndarray, text_weights,
             logit_scale: float, weak: np.ndarray, weak_name: str, seed: int,
             methods: tuple[str, ...], timer: Timer, prompt_encoder=None, *,
             method_params: dict | None = None, fractions: tuple[float, float] = (0.5, 0.8),
             artifacts: dict | None = None, protocol: str = "in_domain") -> list[dict]:
    """Fit every method for one seed and evaluate on D_test; returns one record per method.

    ``text_weights`` is an array (C, D) built from the dataset's templates, or a callable
    ``text_weights(template_set_name) -> (C, D)`` so that methods with a ``templates``
    hyper-parameter get their own set. ``prompt_encoder`` is a zero-argument callable building
    the CoOp prompt encoder of this task's classes; it is only called for methods that train
    through the text encoder. ``method_params`` overrides hyper-parameters per method name;
    ``fractions`` are (hold_fraction, fit_fraction). When ``artifacts`` is a dict it receives
    ``fitted`` (name -> fitted method), ``probs`` (name -> D_test probabilities) and ``split``.
    """
    text_for = text_weights if callable(text_weights) else (lambda name: text_weights)
    y_all = task.test_labels
    s = protocol_splits(y_all, seed, hold_fraction=fractions[0], fit_fraction=fractions[1])
    method_params = method_params or {}
    fit, val, test = s["hold_fit"], s["hold_val"], s["test"]
    p_weak = softmax(weak)
    base = {"dataset": task.dataset, "domain": task.domain, "strong": strong_name, "weak": weak_name,
            "seed": seed, "protocol": protocol, "n_fit": len(fit), "n_val": len(val), "n_test": len(test)}
    fitted = {}
    with timer.stage("fits"):
        for name in ("ceiling", "ceiling_lp"):  # ground truth of D_hold (never of D_test)
            m = get_method("cpl" if name == "ceiling" else "kd_lp", seed=seed, selection="val_acc")
            fitted[name] = m.fit(feats[fit], y_all[fit], text_weights=text_for("dataset"), logit_scale=logit_scale,
                                 X_val=feats[val], y_val=y_all[val])
        for name in methods:
            m = get_method(name, **{"seed": seed, **method_params.get(name, {})})
            extra = {}
            if m.needs_prompt_encoder:
                if prompt_encoder is None:
                    raise ValueError(f"method {name!r} trains through the text encoder: pass "
                                     f"prompt_encoder to run_seed")
                extra["prompt_encoder"] = prompt_encoder()
            fitted[name] = m.fit(feats[fit], p_weak[fit], text_weights=text_for(m.params.get("templates", "dataset")),
                                 logit_scale=logit_scale, X_val=feats[val], y_val=p_weak[val], **extra)
    # final evaluation: the only place D_test labels are read
    y_test, weak_pred = y_all[test], weak[test].argmax(1)
    weak_acc = accuracy(weak_pred, y_test)
    results = {"weak": _metrics(p_weak[test], y_test, weak_pred)}
    probs = {"weak": p_weak[test]}
    for name, m in fitted.items():
        probs[name] = m.predict_proba(feats[test])
        results[name] = _metrics(probs[name], y_test, weak_pred)
    if artifacts is not None:
        artifacts.update(fitted=fitted, probs=probs, split=s)
    records = []
    for name, r in results.items():
        ceil = results[CEILING_HEAD.get(name, "ceiling")]["accuracy"]
        m = fitted.get(name)
        hist = getattr(m, "history_", {}) if m is not None else {}
        records.append({**base, "method": name, **r, "weak_accuracy": weak_acc, "ceiling_accuracy": ceil,
                        "pgr": pgr(r["accuracy"], weak_acc, ceil),
                        "labels": "ground_truth" if name.startswith("ceiling") else "weak",
                        "criterion": hist.get("selection", "none"), "best_step": hist.get("best_step"),
                        "hparams": json.dumps(m.get_params() if m is not None else {}, sort_keys=True)})
    return records
