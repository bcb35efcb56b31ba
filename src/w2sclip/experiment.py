"""The steps of one run, each a plain function of a :class:`~w2sclip.config.RunConfig`.

``load_task`` (datasets) -> ``weak_predictions`` (weak supervisor, cached) -> ``load_strong_model``
-> ``features`` (strong image features, cached) -> ``fit_and_evaluate`` (every method on
hold_fit, evaluated once on D_test; :func:`w2sclip.pipeline.run_seed`). :mod:`w2sclip.runs`
calls them in that order and writes the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from w2sclip.config import RunConfig
from w2sclip.data.manifest import ImageDataset
from w2sclip.features.cache import ArrayCache
from w2sclip.pipeline import Task, Timer, run_seed, softmax

log = logging.getLogger(__name__)


def dataset_root(cfg: RunConfig, cache_dir: Path) -> Path:
    """The dataset folder: ``cfg.root``, or the generated built-in benchmark in the cache."""
    if cfg.root:
        root = Path(cfg.root).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"dataset root {root} does not exist; set root to the folder "
                                    f"holding {cfg.dataset!r} (see `w2sclip data download` / docs/datasets.md)")
        return root
    if cfg.dataset == "builtin":
        from w2sclip.data.builtin import make_builtin

        return make_builtin(cache_dir / f"builtin-{cfg.builtin_size}", size=cfg.builtin_size, seed=0)
    raise ValueError(f"dataset {cfg.dataset!r} needs root=<folder>; e.g. --set root=/data/domainnet")


def get_split(cfg: RunConfig, root: Path, domain: str, split: str) -> ImageDataset:
    """One official split of one domain through the dataset registry."""
    from w2sclip.data import get_dataset

    return get_dataset(cfg.dataset, root=root, domain=domain, split=split)


def load_task(cfg: RunConfig, cache_dir: Path) -> Task:
    """The run's task: the weak model's D_train (source domain) and the target's official test split."""
    root = dataset_root(cfg, cache_dir)
    test = get_split(cfg, root, cfg.domain, "test")
    train = get_split(cfg, root, cfg.source_domain or cfg.domain, "train") if _weak_trains(cfg) else None
    if len(test) == 0:
        raise ValueError(f"domain {cfg.domain!r} of {cfg.dataset!r} has no test images in {root}; "
                         f"check the folder with `w2sclip data check {cfg.dataset} --root {root}`")
    if len(set(test.labels)) < 2:
        raise ValueError(f"domain {cfg.domain!r} of {cfg.dataset!r} has a single class in its test "
                         f"split: a classifier cannot be evaluated; use a dataset with >= 2 classes")
    if train is not None and len(train) == 0:
        raise ValueError(f"domain {train.domain!r} of {cfg.dataset!r} has no train images in {root}: the "
                         f"weak model {cfg.weak!r} cannot be trained; check the folder with `w2sclip data "
                         f"check {cfg.dataset} --root {root}`, or bring weak predictions (weak=file:PATH)")
    if train is not None and train.classnames != test.classnames:
        raise ValueError(f"the source domain {cfg.source_domain!r} and target {cfg.domain!r} have "
                         f"different class lists; cross-domain needs the same classes")
    key = {"name": cfg.dataset, "domain": cfg.domain, "fingerprint": test.fingerprint()}
    train_key = {"domain": train.domain, "fingerprint": train.fingerprint()} if train is not None else None
    # label-free weak kinds get no D_train at all (no path to ground truth through task.train)
    return Task(cfg.dataset, cfg.domain, train, test, key, train_key)


def _weak_trains(cfg: RunConfig) -> bool:
    return not (cfg.weak.startswith("clip:") or cfg.weak.startswith("file:"))


def weak_predictions(cfg: RunConfig, task: Task, cache_dir: Path) -> np.ndarray:
    """Weak logits (N_test_split, C) on the target's official test split, through the array cache.

    The weak supervisor is trained on D_train (of the source domain for cross-domain) with the
    run's seed; weak-CLIP and bring-your-own predictions use no labels at all.
    """
    from w2sclip.models.weak import get_weak, weak_options

    valid = weak_options(cfg.weak.partition(":")[0])
    execution = {k: getattr(cfg, k) for k in ("device", "num_workers") if k in valid}
    weak = get_weak(cfg.weak, **{**execution, **cfg.weak_options})
    key = {"kind": "weak_logits", "weak": weak.identity(), "target": task.key, "split": "test",
           "n": len(task.test), "train": task.train_key if weak.needs_training else None,
           "seed": cfg.seed if weak.needs_training else None}
    from w2sclip.features.fileio import FileLock

    cache = ArrayCache(cache_dir / "arrays")
    slug = f"{cfg.dataset}-{cfg.domain}-{cfg.weak}" + (f"-s{cfg.seed}" if weak.needs_training else "")
    locks = cache_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    # one process trains a given weak model; others (sweep workers, Ray tasks) wait and reuse it
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
    from w2sclip.models.strong.openclip import load_strong

    return load_strong(cfg.strong, device=cfg.device)


def features(cfg: RunConfig, strong, task: Task, cache_dir: Path):
    """Image features of the target's test split (``FeatureSet``: features, valid, bad_files)."""
    from w2sclip.features.extract import extract

    fs = extract(strong, task.test, cache_dir / "features", batch_size=cfg.batch_size,
                 num_workers=cfg.num_workers, shard_size=cfg.shard_size, dtype=cfg.feature_dtype,
                 bad_files=cfg.bad_files, device=cfg.device, progress=cfg.progress)
    if cfg.bad_files == "error" and fs.bad_files:  # an entry cached by an earlier bad_files=skip run
        path, reason = fs.bad_files[0]
        raise ValueError(f"{len(fs.bad_files)} unreadable image(s) in {task.dataset}/{task.domain}, first "
                         f"{path} ({reason}); fix or remove them (`w2sclip data check` lists them), "
                         f"or set bad_files=skip to record them and go on")
    return fs


def text_weights_by_set(strong, task: Task):
    """``name -> text weights (C, D)`` for the task's classes, computed once per template set."""
    from functools import lru_cache

    from w2sclip.models.strong.openclip import template_set

    @lru_cache(maxsize=None)
    def text_for(name: str):
        return strong.text_weights(task.classnames, template_set(name, task.test.templates))

    return text_for


def fit_and_evaluate(cfg: RunConfig, task: Task, strong, fs, weak: np.ndarray, text) -> dict:
    """Drop unreadable images, fit every method on hold_fit, evaluate on D_test."""
    valid = np.asarray(fs.valid, dtype=bool)
    index = np.flatnonzero(valid)
    if len(index) == 0:
        raise ValueError(f"no readable test images in {task.dataset}/{task.domain}; see the bad files list")
    feats = np.asarray(fs.features[index], dtype=np.float32)
    sub = ImageDataset(task.test.name, task.test.classnames, task.test.templates,
                       [task.test.samples[i] for i in index], task.test.domain, task.test.split)
    run_task = Task(task.dataset, task.domain, task.train, sub, task.key, task.train_key)
    artifacts: dict = {}
    records = run_seed(run_task, cfg.strong, feats, text, strong.logit_scale, weak[index], cfg.weak,
                       cfg.seed, cfg.methods, Timer(),
                       lambda: strong.prompt_encoder(task.classnames),
                       method_params=cfg.method_params, fractions=(cfg.hold_fraction, cfg.fit_fraction),
                       artifacts=artifacts, protocol=cfg.protocol)
    w0 = np.asarray(text("dataset"), dtype=np.float32)
    w0 = w0 / np.linalg.norm(w0, axis=1, keepdims=True).clip(1e-12)
    return {"records": records, "artifacts": artifacts, "classnames": list(task.classnames),
            "labels": np.asarray(sub.labels), "index": index, "paths": [p for p, _ in sub.samples], "features": feats,
            "text_prototypes": w0, "strong_identity": strong.identity(), "bad_files": list(fs.bad_files), "weak_probs": softmax(weak[index])}
