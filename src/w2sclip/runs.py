"""One run = one :class:`~w2sclip.config.RunConfig`, in a folder named by its semantic digest.

``<runs_dir>/<slug>-<digest>/`` holds ``config.json`` (the resolved config), ``records.jsonl``
(one record per method), ``predictions.npz`` (D_test probabilities), ``projection.npz`` (a
feature sample and the prototypes, for plots), ``classnames.json``, ``splits.json``,
``labels.npz`` (exact predicted labels), ``strong.json`` (the strong model's identity),
``fitted/<method>.safetensors`` (heads that :mod:`w2sclip.export` can ship), ``bad_files.txt``
when images were skipped, ``log.jsonl`` (machine-readable stage log) and finally ``done``. A
folder without ``done`` is unfinished and is recomputed (features and weak predictions come
back from the cache); a folder with ``done`` is never touched again. Every file is written
atomically; ``run.lock`` (flock) makes a second process on the same run wait, then skip it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from w2sclip.config import RunConfig
from w2sclip.features.fileio import FileLock, atomic_write, disk_full_hint

log = logging.getLogger(__name__)

PROJECTION_SAMPLE = 2000
MOVE_RUNS = "--runs-dir"
"""How to move run folders elsewhere (named in disk-full errors)."""


def run_folder(cfg: RunConfig, runs_dir: str | Path) -> Path:
    """``<runs_dir>/<slug>-<digest>``."""
    return Path(runs_dir) / f"{cfg.slug()}-{cfg.digest()}"


def is_done(folder: str | Path) -> bool:
    return (Path(folder) / "done").exists()


def cache_dir_of(cfg: RunConfig) -> Path:
    from w2sclip.demo import default_cache_dir

    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


class RunLog:
    """Appends JSON events (``{"t", "event", ...}``) to ``log.jsonl`` and times stages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}

    def event(self, event: str, **fields) -> None:
        with disk_full_hint(self.path, MOVE_RUNS), open(self.path, "a") as f:
            f.write(json.dumps({"t": round(time.time(), 3), "event": event, **fields}) + "\n")

    def stage(self, name: str):
        from contextlib import contextmanager

        @contextmanager
        def _stage():
            t0 = time.perf_counter()
            self.event("start", stage=name)
            try:
                yield
            finally:
                dt = time.perf_counter() - t0
                self.seconds[name] = self.seconds.get(name, 0.0) + dt
                self.event("end", stage=name, seconds=round(dt, 3))
        return _stage()


def run(cfg: RunConfig, runs_dir: str | Path, *, force: bool = False) -> Path:
    """Execute ``cfg`` into its run folder (skipped when already done) and return the folder."""
    folder = run_folder(cfg, runs_dir)
    if is_done(folder) and not force:
        log.info("skip %s (done)", folder.name)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / "run.lock")
    if not lock.try_acquire():
        log.warning("%s: another process is computing this run; waiting for it", folder.name)
        lock.acquire()
    try:
        if is_done(folder) and not force:  # the other process finished it
            return folder
        return _run_locked(cfg, folder)
    finally:
        lock.release()


def _run_locked(cfg: RunConfig, folder: Path) -> Path:
    # a forced rerun keeps the old results readable until the new ones are computed
    (folder / "log.jsonl").unlink(missing_ok=True)
    _write_json(folder / "config.json", {"semantic": cfg.semantic(), "resolved": cfg.model_dump(mode="json"),
                                         "digest": cfg.digest(), "versions": _versions()})
    rlog = RunLog(folder / "log.jsonl")
    rlog.event("run_start", digest=cfg.digest(), slug=cfg.slug())
    t0 = time.perf_counter()
    try:
        result = _execute(cfg, folder, rlog)
        (folder / "done").unlink(missing_ok=True)
        _write_outputs(folder, cfg, result)
    except BaseException as e:
        try:
            rlog.event("run_failed", error=f"{type(e).__name__}: {e}")
        except OSError:  # e.g. the disk is full: the original error matters
            pass
        raise
    rlog.event("run_end", seconds=round(time.perf_counter() - t0, 3),
               stages={k: round(v, 3) for k, v in rlog.seconds.items()})
    _write_json(folder / "done", {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "seconds": round(time.perf_counter() - t0, 3),
                                  "stages_s": {k: round(v, 3) for k, v in rlog.seconds.items()}})
    return folder


def _execute(cfg: RunConfig, folder: Path, rlog: RunLog) -> dict:
    """Data -> weak predictions -> strong features -> fits -> evaluation (PROTOCOL.md)."""
    from w2sclip import experiment

    import torch

    if cfg.device == "cpu":
        torch.set_num_threads(max(1, int(os.environ.get("W2SCLIP_THREADS", os.cpu_count() or 1))))
    cache = cache_dir_of(cfg)
    with rlog.stage("data"):
        task = experiment.load_task(cfg, cache)
    with rlog.stage("strong-load"):  # before the weak model: missing weights fail in seconds
        strong = experiment.load_strong_model(cfg)
    with rlog.stage("weak"):
        weak = experiment.weak_predictions(cfg, task, cache)
    with rlog.stage("extraction"):
        feats = experiment.features(cfg, strong, task, cache)
    with rlog.stage("text"):
        text = experiment.text_weights_by_set(strong, task)
    with rlog.stage("fits"):
        return experiment.fit_and_evaluate(cfg, task, strong, feats, weak, text)


def _write_outputs(folder: Path, cfg: RunConfig, result: dict) -> None:
    from safetensors.numpy import save

    records, art = result["records"], result["artifacts"]
    _write_json(folder / "classnames.json", result["classnames"])
    _write_json(folder / "strong.json", {"spec": cfg.strong, "identity": result["strong_identity"]})
    _write_json(folder / "splits.json", {k: v.tolist() for k, v in art["split"].items()})
    test = art["split"]["test"]
    y = np.asarray(result["labels"])[test]
    preds = {"y_true": y.astype(np.int64), "test_index": np.asarray(result["index"])[test].astype(np.int64)}
    preds.update({k: v.astype(np.float16) for k, v in art["probs"].items()})
    _atomic_npz(folder / "predictions.npz", preds)
    # exact argmax labels (fp16 probabilities can tie): what export/predict must reproduce
    paths = np.array([str(result["paths"][i]) for i in test])
    _atomic_npz(folder / "labels.npz", {"y_true": preds["y_true"], "test_index": preds["test_index"], "paths": paths,
                                        **{k: v.argmax(1).astype(np.int64) for k, v in art["probs"].items()}})
    rng = np.random.default_rng(cfg.seed)
    keep = np.sort(rng.permutation(len(test))[:PROJECTION_SAMPLE])
    proj = {"features": np.asarray(result["features"][test][keep], dtype=np.float16),
            "labels": y[keep].astype(np.int64), "text_prototypes": result["text_prototypes"].astype(np.float32)}
    heads = {}
    for name, m in art["fitted"].items():
        head = linear_head(m)
        if head is None:
            continue
        heads[name] = head
        if getattr(m, "prototypes_", None) is not None and name not in ("zero_shot",):
            proj[name] = head["weight"].astype(np.float32)
    _atomic_npz(folder / "projection.npz", proj)
    (folder / "fitted").mkdir(exist_ok=True)
    for name, head in heads.items():
        data = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in head.items()},
                    metadata={"method": name, "logits": "scale * normalize(x) @ weight.T + bias"})
        _write_bytes(folder / "fitted" / f"{name}.safetensors", data)
    if result["bad_files"]:
        _write_bytes(folder / "bad_files.txt", "".join(f"{p}\t{r}\n" for p, r in result["bad_files"]).encode())
    _write_bytes(folder / "records.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())


def linear_head(method) -> Optional[dict]:
    """``{"weight" (C, D), "bias" (C,), "scale" (1,)}`` when the fitted method is a linear head on
    normalised image features (logits = scale * x @ weight.T + bias), else None."""
    import torch

    protos = getattr(method, "prototypes_", None)
    if protos is not None:
        w = torch.as_tensor(np.asarray(protos.detach() if hasattr(protos, "detach") else protos, dtype=np.float32))
        w = torch.nn.functional.normalize(w, dim=1).numpy()
        return {"weight": w, "bias": np.zeros(len(w), np.float32),
                "scale": np.array([float(method.logit_scale_)], np.float32)}
    coef = getattr(method, "coef_", None)
    if coef is not None and getattr(method, "intercept_", None) is not None:
        return {"weight": coef.detach().numpy().astype(np.float32),
                "bias": method.intercept_.detach().numpy().astype(np.float32),
                "scale": np.array([1.0], np.float32)}
    return None


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("w2sclip", "torch", "open_clip_torch", "timm", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _write_bytes(path: Path, data: bytes) -> None:
    """Atomic (unique temporary name, then rename): no partial file under ``path``, ever."""
    atomic_write(path, lambda f: f.write(data), move=MOVE_RUNS)


def _write_json(path: Path, obj) -> None:
    _write_bytes(path, json.dumps(obj, indent=1).encode())


def _atomic_npz(path: Path, arrays: dict) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays), move=MOVE_RUNS)


def load_records(folder: str | Path) -> list[dict]:
    """The records of a finished run folder."""
    folder = Path(folder)
    if not is_done(folder):
        raise FileNotFoundError(f"{folder} is not a finished run (no 'done' marker); rerun it with "
                                f"`w2sclip run` or `w2sclip sweep`")
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line]
