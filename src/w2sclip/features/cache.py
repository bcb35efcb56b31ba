"""A fingerprinted, atomic cache of arrays (image features, weak logits).

The key is a dict of everything that changes the numbers; the folder is ``<slug>-<hash>``
where hash is the SHA-256 of the canonical JSON of the key. Loading re-checks the stored key
and the array's checksum, so a stale or altered entry is an error, not a silent mix-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from w2sclip.fileio import DiskFullError, NotWritableError, disk_full_hint, read_only_cache_error


def digest(key: dict) -> str:
    """Short SHA-256 of the canonical JSON of ``key``."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def canonical(key: dict) -> dict:
    """``key`` as it reads back from JSON (what ``meta.json`` files store and are compared with)."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def folder_slug(text: str, n: int) -> str:
    """``text`` as a folder-name part: runs of other characters than ``A-Za-z0-9_.-`` become ``-``,
    at most ``n`` characters."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:n]


class ArrayCache:
    """Arrays stored under ``root/<slug>-<hash>/`` as ``data.npy`` + ``meta.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: dict, slug: str = "") -> Path:
        return self.root / f"{folder_slug(slug, 60) + '-' if slug else ''}{digest(key)}"

    def load(self, key: dict, slug: str = "") -> np.ndarray | None:
        """The cached array for ``key``, or None when absent. A mismatch raises ValueError."""
        folder = self.path(key, slug)
        meta_f, data_f = folder / "meta.json", folder / "data.npy"
        if not meta_f.exists() or not data_f.exists():
            return None
        try:
            meta = json.loads(meta_f.read_text())
        except ValueError as e:  # garbled or not UTF-8
            raise ValueError(f"cache entry {folder} is corrupt (meta.json unreadable: {type(e).__name__}: "
                             f"{e}); delete the folder to recompute it") from None
        try:
            if data_f.stat().st_size == 0:
                raise EOFError("empty file (0 bytes)")
            arr = np.load(data_f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # empty, truncated or garbled data.npy
            raise ValueError(f"cache entry {folder} is corrupt (data.npy unreadable: {type(e).__name__}: "
                             f"{e}); delete the folder to recompute it") from None
        if not isinstance(meta, dict) or meta.get("key") != canonical(key):
            raise ValueError(f"cache entry {folder} holds a different key than requested; delete "
                             f"the folder to recompute it")
        if hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() != meta.get("sha256"):
            raise ValueError(f"cache entry {folder} is corrupt (checksum mismatch); delete the "
                             f"folder to recompute it")
        return np.asarray(arr)

    def save(self, key: dict, array: np.ndarray, slug: str = "") -> Path:
        """Write atomically: into a temporary folder, then rename into place."""
        folder = self.path(key, slug)
        try:
            with disk_full_hint(folder / "data.npy"):
                folder.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        except NotWritableError as e:  # a read-only cache that lacks this entry
            raise read_only_cache_error(folder, "cache entry", e) from None
        array = np.ascontiguousarray(array)
        meta = {"key": canonical(key),
                "shape": list(array.shape), "dtype": str(array.dtype),
                "sha256": hashlib.sha256(array.tobytes()).hexdigest()}
        try:
            with disk_full_hint(folder / "data.npy"):
                np.save(tmp / "data.npy", array)
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            os.replace(tmp, folder)
        except OSError as e:  # another process may have finished the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, (DiskFullError, NotWritableError)) or self.load(key, slug) is None:
                raise  # a full or read-only disk, or not a lost race: a real write failure
        return folder
