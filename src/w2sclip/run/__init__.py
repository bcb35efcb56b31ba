"""One run: a :class:`~w2sclip.config.RunConfig` -> a run folder (the only way a study runs).

``execute(cfg)`` goes data -> weak predictions -> strong features -> fits -> evaluation
(PROTOCOL.md) and returns a typed :class:`RunResult`; ``run(cfg, runs_dir)`` executes into the
run's folder (:class:`~w2sclip.run.folder.RunFolder`), skipping finished ones. ``w2sclip run``,
``sweep``, ``demo`` and ``selection-study`` all come through here and share one cache.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from w2sclip.config import RunConfig
from w2sclip.fileio import default_cache_dir
from w2sclip.run import steps
from w2sclip.run.fit import FitInputs, FitResult, fit_and_evaluate
from w2sclip.run.folder import RunFolder, RunLog
from w2sclip.run.reuse import ResultStore, provenance, result_key
from w2sclip.run.task import Task, load_task
from w2sclip.versions import library_versions

log = logging.getLogger(__name__)


def cache_dir_of(cfg: RunConfig) -> Path:
    """``cfg.cache_dir`` or the default cache (``$W2SCLIP_CACHE``, ``~/.cache/w2sclip``)."""
    return default_cache_dir(cfg.cache_dir)


@dataclass
class Prepared:
    """A run up to its fits: the task, the fit inputs (readable images only) and where they came from."""

    task: Task
    inputs: FitInputs
    index: np.ndarray
    """Rows of the official test split that are readable (features exist)."""
    strong: object
    bad_files: list[tuple[str, str]]


@dataclass
class RunResult:
    """Everything a finished run produced (what :class:`RunFolder` writes)."""

    config: RunConfig
    fit: FitResult
    classnames: list[str]
    labels: np.ndarray
    """(N,) ground truth of the readable test-split images (``fit.splits`` index into these rows)."""
    index: np.ndarray
    """(N,) their rows in the official test split."""
    paths: list[str]
    features: np.ndarray
    text_prototypes: np.ndarray
    strong_spec: str
    strong_identity: dict
    bad_files: list[tuple[str, str]]


def prepare(cfg: RunConfig, cache_dir: Path | None = None, rlog: RunLog | None = None) -> Prepared:
    """Data, weak predictions, strong model and image features of a run, through the caches."""
    cache = default_cache_dir(cache_dir or cfg.cache_dir)
    stage = rlog.stage if rlog is not None else (lambda name: nullcontext())
    with stage("data"):
        task = load_task(cfg, cache)
    with stage("strong-load"):  # before the weak model: missing weights fail in seconds
        strong = steps.load_strong_model(cfg)
    with stage("weak"):
        weak = steps.weak_logits(cfg, task, cache)
    with stage("extraction"):
        fs = steps.image_features(cfg, strong, task, cache)
    with stage("text"):
        text = steps.text_weights_by_set(strong, task.classnames, task.test.templates)
    index = np.flatnonzero(np.asarray(fs.valid, dtype=bool))
    if len(index) == 0:
        raise ValueError(f"no readable test images in {task.dataset}/{task.domain}; see the bad files list")
    inputs = FitInputs(features=np.asarray(fs.features[index], dtype=np.float32), weak_logits=weak[index],
                       labels=task.labels[index], text=text, logit_scale=strong.logit_scale,
                       prompt_encoder=lambda: strong.prompt_encoder(task.classnames, task.test.templates))
    return Prepared(task, inputs, index, strong, list(fs.bad_files))


def _set_threads(cfg: RunConfig) -> None:
    if cfg.device == "cpu":
        torch.set_num_threads(max(1, int(os.environ.get("W2SCLIP_THREADS", os.cpu_count() or 1))))


def execute(cfg: RunConfig, cache_dir: Path | None = None, rlog: RunLog | None = None) -> RunResult:
    """Data -> weak predictions -> strong features -> fits -> evaluation (PROTOCOL.md)."""
    _set_threads(cfg)
    return fit_prepared(cfg, prepare(cfg, cache_dir, rlog), rlog)


def fit_prepared(cfg: RunConfig, p: Prepared, rlog: RunLog | None = None) -> RunResult:
    """The fits and the evaluation of a prepared run."""
    ids = {"dataset": cfg.dataset, "domain": cfg.domain, "strong": cfg.strong, "weak": cfg.weak,
           "seed": cfg.seed, "protocol": cfg.protocol, "dataset_id": p.task.test.fingerprint(), "dataset_root": cfg.root,
           "w2sclip_version": library_versions()["w2sclip"]}
    with (rlog.stage("fits") if rlog is not None else nullcontext()):
        fit = fit_and_evaluate(p.inputs, seed=cfg.seed, methods=cfg.methods, ids=ids,
                               method_params=cfg.method_params, fractions=(cfg.hold_fraction, cfg.fit_fraction),
                               tuning=cfg.tuning)
    w0 = np.asarray(p.inputs.text("dataset"), dtype=np.float32)
    w0 = w0 / np.linalg.norm(w0, axis=1, keepdims=True).clip(1e-12)
    return RunResult(cfg, fit, list(p.task.classnames), p.inputs.labels, p.index,
                     [p.task.test.samples[i][0] for i in p.index], p.inputs.features, w0, cfg.strong,
                     p.strong.identity(), p.bad_files)


def run_folder(cfg: RunConfig, runs_dir: str | Path) -> RunFolder:
    """``<runs_dir>/<slug>-<digest>``."""
    return RunFolder(Path(runs_dir) / f"{cfg.slug()}-{cfg.digest()}")


def run(cfg: RunConfig, runs_dir: str | Path, *, force: bool = False) -> RunFolder:
    """Execute ``cfg`` into its run folder (skipped when already done) and return the folder.

    The same run finished in another runs dir with the same cache is copied from the cache
    (:mod:`w2sclip.run.reuse`) instead of fitted again; ``force`` or ``cfg.reuse_runs=False``
    recomputes it (``force`` also replaces the stored copy)."""
    folder = run_folder(cfg, runs_dir)
    if folder.is_done and not force:
        log.info("skip %s (done)", folder.name)
        return folder
    folder.path.mkdir(parents=True, exist_ok=True)
    lock = folder.lock()
    if not lock.try_acquire():
        log.warning("%s: another process is computing this run; waiting for it", folder.name)
        lock.acquire()
    try:
        if folder.is_done and not force:  # the other process finished it
            return folder
        return _run_locked(cfg, folder, force)
    finally:
        lock.release()


def _result_key(cfg: RunConfig, prepared: Prepared) -> dict | None:
    """The stored-run key (:mod:`w2sclip.run.reuse`); None (no reuse, a warning) if it cannot be made."""
    try:
        return result_key(cfg, prepared)
    except Exception as e:  # noqa: BLE001 - reuse is an optimisation: fit instead
        log.warning("%s: no stored-run lookup (%s: %s); fitting", cfg.slug(), type(e).__name__, e)
        return None


def _run_locked(cfg: RunConfig, folder: RunFolder, force: bool) -> RunFolder:
    # a forced rerun keeps the old results readable until the new ones are computed
    (folder.path / "log.jsonl").unlink(missing_ok=True)
    folder.write_json("config.json", {"semantic": cfg.semantic(), "resolved": cfg.model_dump(mode="json"),
                                      "digest": cfg.digest(), "versions": library_versions()})
    rlog = RunLog(folder.path / "log.jsonl")
    rlog.event("run_start", digest=cfg.digest(), slug=cfg.slug())
    t0 = time.perf_counter()
    try:
        _set_threads(cfg)
        cache, slug = cache_dir_of(cfg), cfg.slug()
        prepared = prepare(cfg, cache, rlog)
        store, key = ResultStore(cache / "runs"), _result_key(cfg, prepared)
        (folder.path / "done").unlink(missing_ok=True)
        with store.lock(key, slug) if key is not None else nullcontext():
            reuse = cfg.reuse_runs and not force and key is not None
            entry = store.restore(key, slug, folder.path) if reuse else None
            reused_from = str(entry) if entry is not None else None
            if entry is not None:
                log.info("%s: the same run (same inputs, code and libraries) is finished in the cache; "
                         "copied from %s", folder.name, entry)
                rlog.event("reused", entry=reused_from)
            else:
                folder.write_result(fit_prepared(cfg, prepared, rlog), cfg.seed)
                if key is not None:
                    store.save(key, slug, folder.path, replace=force and cfg.reuse_runs, fitted_with=provenance(cfg))
    except BaseException as e:
        with suppress(OSError):  # e.g. the disk is full: the original error matters
            rlog.event("run_failed", error=f"{type(e).__name__}: {e}")
        raise
    stages = {k: round(v, 3) for k, v in rlog.seconds.items()}
    rlog.event("run_end", seconds=round(time.perf_counter() - t0, 3), stages=stages)
    folder.mark_done(time.perf_counter() - t0, rlog.seconds, reused_from)
    return folder


__all__ = ["Prepared", "RunFolder", "RunResult", "Task", "cache_dir_of", "execute", "fit_prepared", "prepare", "run",
           "run_folder"]
