"""Finished runs in the cache, keyed by everything their numbers depend on.

A run's result files are a function of its semantic config (``RunConfig.digest``), of what its
fits see (image features, weak logits, labels, test-split paths and bad files, class names,
templates, the strong model's identity), of the code (every source file of the installed
``w2sclip``), of the library versions and of the device. :func:`result_key` hashes all of it;
``<cache>/runs/<slug>-<hash>/`` keeps a finished run folder's result files (hard links where the
file system allows, so no extra disk) with their SHA-256s. The same run in another runs dir
(``w2sclip sweep`` after ``w2sclip demo``, or the reverse) gets a verified copy instead of being
fitted again; ``force`` recomputes. Nothing is looked up by path or by run digest alone: a changed
dataset file, weak model or source line gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from w2sclip.fileio import atomic_write_json
from w2sclip.versions import library_versions

log = logging.getLogger(__name__)

RESULT_FILES = ("records.jsonl", "splits.json", "predictions.npz", "labels.npz", "projection.npz",
                "classnames.json", "strong.json", "bad_files.txt")
"""A run folder's result files (besides ``fitted/*``); ``config.json``, ``log.jsonl`` and ``done``
belong to the folder that runs."""


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 (16 hex) of every ``*.py`` file of the installed ``w2sclip`` package, with its path."""
    import w2sclip

    root = Path(w2sclip.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
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
            "strong": prepared.strong.identity(), "device": cfg.device, "code": code_digest(),
            "versions": library_versions(("w2sclip", "torch", "numpy", "scikit-learn", "safetensors"))}


def _files(folder: Path) -> list[str]:
    names = [n for n in RESULT_FILES if (folder / n).exists()]
    return names + sorted(f"fitted/{p.name}" for p in (folder / "fitted").glob("*.safetensors"))


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links
        shutil.copyfile(src, dst)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ResultStore:
    """Finished runs' result files under ``root/<slug>-<hash16>/`` (``meta.json`` holds the key)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: dict, slug: str) -> Path:
        from w2sclip.features.cache import digest

        return self.root / f"{slug}-{digest(key)}"

    def restore(self, key: dict, slug: str, folder: Path) -> Path | None:
        """Copy the stored result files of ``key`` into ``folder``; the entry, or None when there is
        none. A damaged entry (unreadable, another key, a file missing or changed since it was
        stored) is removed with a warning and None is returned: the run is fitted again and stored
        anew."""
        entry = self.path(key, slug)
        if not entry.exists():
            return None
        canonical = json.loads(json.dumps(key, sort_keys=True, default=str))
        try:
            meta = json.loads((entry / "meta.json").read_text())
            if not isinstance(meta, dict) or meta.get("key") != canonical or not isinstance(meta.get("files"), dict):
                raise ValueError("it holds another key")
            missing = [n for n in meta["files"] if not (entry / n).is_file()]
            if missing:
                raise ValueError(f"it lacks {missing}")
            changed = [n for n, sha in meta["files"].items() if _sha256(entry / n) != sha]
            if changed:
                raise ValueError(f"{changed} changed since it was stored")
            for name in meta["files"]:
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).unlink(missing_ok=True)  # it may be a link into this entry
                shutil.copyfile(entry / name, folder / name)  # a copy: editing one folder never edits another
        except (OSError, ValueError) as e:
            log.warning("stored run %s is damaged (%s); removing it and fitting the run again", entry, e)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return entry

    def save(self, key: dict, slug: str, folder: Path, replace: bool = False) -> None:
        """Store ``folder``'s result files for ``key`` (atomic: a temporary folder, then a rename);
        ``replace`` drops an existing entry first (a forced rerun). A failure only costs the reuse:
        it is logged, the run folder is finished anyway."""
        entry = self.path(key, slug)
        if replace:
            shutil.rmtree(entry, ignore_errors=True)
        if entry.exists():
            return
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            files = {name: _sha256(folder / name) for name in _files(folder)}
            for name in files:
                _link_or_copy(folder / name, tmp / name)
            atomic_write_json(tmp / "meta.json", {"key": key, "files": files, "from": str(folder)})
            os.replace(tmp, entry)
        except OSError as e:  # full or read-only cache, or another process stored it first
            if not entry.exists():
                log.warning("could not store run %s in %s (%s); it will be fitted again in another runs dir",
                            folder.name, self.root, e)
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
