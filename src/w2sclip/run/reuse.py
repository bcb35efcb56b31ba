"""Finished runs in the cache, keyed by what their numbers are computed from.

A run's result files are a function of its semantic config (``RunConfig.digest``), of what its
fits see (image features, weak logits, labels, test-split paths and bad files, class names,
templates, the strong model's identity), of the code (every file of the installed ``w2sclip``)
and of the library versions. :func:`result_key` hashes all of it; ``<cache>/runs/<slug>-<hash>/``
keeps a finished run folder's result files (hard links where the file system allows) with their
SHA-256s. The same run in another runs dir (``w2sclip sweep`` after ``w2sclip demo``, or the
reverse) gets a verified copy instead of being fitted again. Nothing is looked up by path or by
run digest alone: a changed dataset file, weak model or source line gives a new key.

Execution settings are not in the key, as they are not in a run's digest: the thread count,
the device and the CPU or GPU type change only the last bits of a fit (docs/determinism.md), so a
copy holds the bits of the process that fitted it (``meta.json`` records its device, threads and
machine). ``reuse_runs=false`` fits anyway; ``w2sclip run --force`` fits and replaces the copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path

import numpy as np

from w2sclip.features.cache import canonical, digest
from w2sclip.fileio import FileLock, atomic_write_json, file_sha256, fsync_dir, tmp_name
from w2sclip.versions import library_versions

log = logging.getLogger(__name__)

RESULT_FILES = ("records.jsonl", "splits.json", "predictions.npz", "labels.npz", "projection.npz",
                "classnames.json", "strong.json", "bad_files.txt")
"""A run folder's result files (besides ``fitted/*``); ``config.json``, ``log.jsonl`` and ``done``
belong to the folder that runs."""


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 (16 hex) of every file of the installed ``w2sclip`` package (sources, model
    configs, presets, checkpoints; not ``__pycache__``), with its path."""
    import w2sclip

    root = Path(w2sclip.__file__).parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f"{path.relative_to(root).as_posix()}\0{file_sha256(path)}\0".encode())
    return h.hexdigest()[:16]


def result_key(cfg, prepared) -> dict:
    """What decides a run's result files: ``cfg``'s semantics and ``prepared``'s fit inputs (see the module)."""
    x, task = prepared.inputs, prepared.task
    h = hashlib.sha256()
    for a in (x.features, x.weak_logits, x.labels, prepared.index):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode() + a.tobytes())
    h.update(json.dumps([[task.test.samples[i][0] for i in prepared.index], prepared.bad_files],
                        default=str).encode())
    return {"kind": "run_result", "run": cfg.digest(), "inputs": h.hexdigest(), "logit_scale": float(x.logit_scale),
            "classnames": list(task.classnames), "templates": list(task.test.templates),
            "strong": prepared.strong.identity(), "code": code_digest(),
            "versions": library_versions(("w2sclip", "torch", "numpy", "scikit-learn", "safetensors"))}


def provenance(cfg) -> dict:
    """Where a stored run was fitted (recorded, not keyed)."""
    import torch

    return {"device": cfg.device, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "host": platform.node()}


class Damaged(ValueError):
    """A stored run that must not be copied (removed, then the run is fitted again)."""


def _files(folder: Path) -> list[str]:
    names = [n for n in RESULT_FILES if (folder / n).exists()]
    return names + sorted(f"fitted/{p.name}" for p in (folder / "fitted").glob("*.safetensors"))


def _copy(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` (synced) and return the SHA-256 of the bytes copied."""
    h = hashlib.sha256()
    with open(src, "rb") as f, open(dst, "wb") as out:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links
        shutil.copyfile(src, dst)


class ResultStore:
    """Finished runs' result files under ``root/<slug>-<hash16>/`` (``meta.json``: key, files and
    their SHA-256s, provenance)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: dict, slug: str) -> Path:
        return self.root / f"{slug}-{digest(key)}"

    def lock(self, key: dict, slug: str):
        """A lock on one entry: held from the lookup to the store, so that the same run in two runs
        dirs at once is fitted once (the second copies). No lock where the cache cannot hold one."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only cache without runs/: nothing to restore or store
            return nullcontext()
        return FileLock(self.root / f".{self.path(key, slug).name}.lock")

    def _stored_files(self, entry: Path, key: dict) -> dict[str, str]:
        try:
            meta = json.loads((entry / "meta.json").read_text())
        except FileNotFoundError:
            raise Damaged("meta.json is missing") from None
        except ValueError as e:
            raise Damaged(f"meta.json is unreadable: {e}") from None
        if not isinstance(meta, dict) or meta.get("key") != canonical(key) or not isinstance(meta.get("files"), dict):
            raise Damaged("it holds another key")
        missing = [n for n in meta["files"] if not (entry / n).is_file()]
        if missing:
            raise Damaged(f"it lacks {missing}")
        return meta["files"]

    def restore(self, key: dict, slug: str, folder: Path) -> Path | None:
        """Copy the stored result files of ``key`` into ``folder`` (each checked against its stored
        SHA-256, written under a temporary name, synced, then renamed); the entry, or None when
        there is none. A damaged entry (unreadable, another key, a file missing or changed since it
        was stored) is removed with a warning and None is returned: the run is fitted again and
        stored anew. A failure to write into ``folder`` keeps the entry and returns None."""
        entry = self.path(key, slug)
        if not entry.exists():
            return None
        staged: list[tuple[Path, Path]] = []
        try:
            files = self._stored_files(entry, key)
            for name, sha in files.items():
                dst = folder / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                staged.append((tmp_name(dst), dst))
                if _copy(entry / name, staged[-1][0]) != sha:
                    raise Damaged(f"[{name!r}] changed since it was stored")
            for tmp, dst in staged:
                os.replace(tmp, dst)
            for stale in set(_files(folder)) - set(files):  # left by an earlier attempt in this folder
                (folder / stale).unlink(missing_ok=True)
            fsync_dir(folder)
        except Damaged as e:
            log.warning("stored run %s is damaged (%s); removing it and fitting the run again", entry, e)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        except OSError as e:
            log.warning("could not copy stored run %s into %s (%s); fitting the run instead", entry, folder, e)
            return None
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
        return entry

    def save(self, key: dict, slug: str, folder: Path, *, replace: bool = False,
             fitted_with: dict | None = None) -> None:
        """Store ``folder``'s result files for ``key`` (atomic: a temporary folder, then a rename);
        ``replace`` drops an existing entry first (a forced rerun). Storing only saves later fits:
        any failure (a full or read-only cache) is a warning, the run folder is finished anyway."""
        entry = self.path(key, slug)
        tmp = None
        try:
            if replace:
                shutil.rmtree(entry, ignore_errors=True)
            if entry.exists():
                return
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            files = {}
            for name in _files(folder):
                _link_or_copy(folder / name, tmp / name)
                files[name] = file_sha256(tmp / name)
            atomic_write_json(tmp / "meta.json", {"key": key, "files": files, "from": str(folder),
                                                  "fitted_with": fitted_with})
            os.replace(tmp, entry)
        except Exception as e:  # noqa: BLE001 - storing is an optimisation, never a reason to fail a run
            if not entry.exists():
                log.warning("could not store run %s in %s (%s: %s); it will be fitted again in another "
                            "runs dir", folder.name, self.root, type(e).__name__, e)
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
