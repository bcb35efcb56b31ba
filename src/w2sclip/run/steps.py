"""The cached steps of one run: weak predictions, the strong model, image features, text weights.

Weak logits live in an :class:`~w2sclip.features.cache.ArrayCache` under ``<cache>/arrays``,
image features in the sharded feature store under ``<cache>/features``; both keys hold the
content identity of the data (``w2sclip.data.identity``), never its path, so every run path
(``w2sclip run``, ``sweep``, ``demo``, ``selection-study``) shares the same entries.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from w2sclip.config import RunConfig
from w2sclip.features.cache import ArrayCache
from w2sclip.features.extract import extract
from w2sclip.fileio import FileLock
from w2sclip.models.strong.openclip import load_strong, template_set
from w2sclip.run.task import Task


def weak_key(cfg: RunConfig, task: Task, weak, cache_dir: Path) -> dict:
    """What decides the weak logits: the weak model's identity, the target split's content, and
    for trained kinds the content of D_train and the seed."""
    memo = cache_dir / "identity"
    trains = weak.needs_training
    return {"kind": "weak_logits", "weak": weak.identity(), "split": "test", "n": len(task.test),
            "target": {"name": cfg.dataset, "domain": task.domain, "content": task.test.content_id(memo)},
            "train": {"domain": task.train.domain, "content": task.train.content_id(memo)} if trains else None,
            "seed": cfg.seed if trains else None}


def weak_logits(cfg: RunConfig, task: Task, cache_dir: Path) -> np.ndarray:
    """Weak logits (N_test_split, C) on the target's official test split, through the array cache.

    The weak supervisor is trained on D_train (of the source domain for cross-domain) with the
    run's seed; weak-CLIP and bring-your-own predictions use no labels at all. One process
    trains a given weak model; others (sweep workers, Ray tasks) wait for it and reuse it.
    """
    from w2sclip.models.weak import get_weak, weak_options

    valid = weak_options(cfg.weak.partition(":")[0])
    execution = {k: getattr(cfg, k) for k in ("device", "num_workers") if k in valid}
    weak = get_weak(cfg.weak, **{**execution, **cfg.weak_options})
    key = weak_key(cfg, task, weak, cache_dir)
    cache = ArrayCache(cache_dir / "arrays")
    slug = f"{cfg.dataset}-{cfg.domain}-{cfg.weak}" + (f"-s{cfg.seed}" if weak.needs_training else "")
    locks = cache_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(locks / f"{cache.path(key, slug).name}.lock"):
        logits = cache.load(key, slug)
        if logits is None:
            if weak.needs_training:
                weak.fit(task.train, seed=cfg.seed)
            logits = np.asarray(weak.predict_logits(task.test), dtype=np.float32)
            check_weak(logits, task)
            cache.save(key, logits, slug)
            logits = cache.load(key, slug)
    check_weak(logits, task)
    return logits


def check_weak(logits: np.ndarray, task: Task) -> None:
    """Shape and finiteness of weak predictions; errors name the fix."""
    c = len(task.classnames)
    if logits.ndim != 2 or logits.shape[0] != len(task.test):
        raise ValueError(f"weak predictions have shape {logits.shape}, expected ({len(task.test)}, {c}): "
                         f"one row per test image")
    if logits.shape[1] != c:
        raise ValueError(f"the weak model outputs {logits.shape[1]} classes but the dataset has {c} "
                         f"({task.dataset}, domain {task.domain}); use a weak model trained on this "
                         f"class list or fix the class-names file")
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(1).sum())
        raise ValueError(f"the weak predictions contain NaN or infinite values in {bad} rows; check "
                         f"the weak model (learning rate, precision) or the predictions file")


def load_strong_model(cfg: RunConfig):
    """The frozen strong CLIP of ``cfg.strong`` (offline when HF_HUB_OFFLINE=1)."""
    return load_strong(cfg.strong, device=cfg.device)


def image_features(cfg: RunConfig, strong, task: Task, cache_dir: Path):
    """Image features of the target's test split (``FeatureSet``: features, valid, bad_files)."""
    fs = extract(strong, task.test, cache_dir / "features", batch_size=cfg.batch_size,
                 num_workers=cfg.num_workers, shard_size=cfg.shard_size, dtype=cfg.feature_dtype,
                 bad_files=cfg.bad_files, device=cfg.device, progress=cfg.progress)
    if cfg.bad_files == "error" and fs.bad_files:  # an entry cached by an earlier bad_files=skip run
        path, reason = fs.bad_files[0]
        raise ValueError(f"{len(fs.bad_files)} unreadable image(s) in {task.dataset}/{task.domain}, first "
                         f"{path} ({reason}); fix or remove them (`w2sclip data check` lists them), "
                         f"or set bad_files=skip to record them and go on")
    return fs


def text_weights_by_set(strong, classnames: list[str], templates: list[str]) -> Callable[[str], np.ndarray]:
    """``name -> text weights (C, D)`` of the classes under a template set, computed once per set."""
    @lru_cache(maxsize=None)
    def text_for(name: str) -> np.ndarray:
        return strong.text_weights(classnames, template_set(name, templates))

    return text_for
