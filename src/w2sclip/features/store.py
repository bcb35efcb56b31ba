"""The sharded, resumable feature store (layout and guarantees: docs/cache.md).

One entry per feature key, in ``<root>/<slug>-<hash16>/``::

    meta.json             key, n, shard_size, n_shards, dtype, versions (+ dim, checksums once merged)
    shard-00000.npy/.json one block of ``shard_size`` rows + sidecar (sha256, rows, bad files)
    shard-00000.lock      flock taken by the process encoding that shard
    features.npy          (N, D) float32|float16, merged; open with ``np.load(mmap_mode="r")``
    valid.npy             (N,) bool; False where the image could not be read (row is NaN)
    bad_files.json        [[index, path, reason], ...]
    complete              marker written last: the entry is finished and immutable

Shards are written atomically (``fileio.atomic_write``), so a killed extraction loses at most the
shard it was encoding; the merge runs once, under ``merge.lock``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from w2sclip.features.cache import canonical, digest, folder_slug
from w2sclip.fileio import (
    FileLock,
    NotWritableError,
    atomic_write,
    atomic_write_json,
    disk_full_hint,
    file_sha256,
    folder_problem,
    read_only_cache_error,
    tmp_name,
)

log = logging.getLogger(__name__)

FORMAT = 1
DTYPES = ("float32", "float16")
SPOT_BLOCKS, SPOT_BLOCK_BYTES = 64, 4096


@dataclass
class FeatureSet:
    """A finished entry: ``features`` (N, D) memory-mapped, ``valid`` (N,) bool, ``bad_files``
    [(path, reason)], the ``key`` it was computed for and its folder ``path``."""

    features: np.ndarray
    valid: np.ndarray
    bad_files: list[tuple[str, str]]
    key: dict
    path: Path
    meta: dict = field(default_factory=dict, repr=False)
    bad_rows: list[int] = field(default_factory=list)
    """Row index of each entry of ``bad_files``."""

    def __len__(self) -> int:
        return len(self.features)

    def named_for(self, dataset) -> "FeatureSet":
        """This set with bad files named by ``dataset``'s paths (an entry is shared by every copy
        of the same content, whichever copy extracted it)."""
        return replace(self, bad_files=[(dataset.samples[i][0], r) for i, (_, r) in zip(self.bad_rows, self.bad_files)])


def key_diff(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two keys differ."""
    out = []
    for k in sorted(set(stored) | set(wanted)):
        a, b, name = stored.get(k), wanted.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += key_diff(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: stored {a!r} != requested {b!r}")
    return out


def spot_digest(path: Path) -> str:
    """SHA-256 of the size and of 64 evenly spaced 4 KiB blocks: a cheap load-time check that
    catches truncation, replacement and most rewrites (``verify=True`` hashes every byte)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for b in range(SPOT_BLOCKS):
            f.seek(b * max(0, size - SPOT_BLOCK_BYTES) // max(1, SPOT_BLOCKS - 1))
            h.update(f.read(SPOT_BLOCK_BYTES))
    return h.hexdigest()


class _HashingWriter:
    """A file wrapper that hashes what goes through ``write``."""

    def __init__(self, f) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)


class FeatureStore:
    """One entry folder of the store (see the module docstring).

    ``FeatureStore(root, key, slug, n, shard_size)`` names the folder; ``open()`` creates it with
    its ``meta.json`` (first process wins) or checks the existing one against ``key``.
    """

    def __init__(self, root: str | Path, key: dict, slug: str, n: int, shard_size: int = 4096) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.key = canonical(key)
        self.path = Path(root) / f"{folder_slug(slug, 80) + '-' if slug else ''}{digest(self.key)}"
        self.n, self.shard_size = int(n), int(shard_size)
        if self.n < 1:
            raise ValueError("cannot extract features of an empty dataset")

    # ----- layout -------------------------------------------------------------------------
    @property
    def n_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_range(self, j: int) -> tuple[int, int]:
        return j * self.shard_size, min(self.n, (j + 1) * self.shard_size)

    def shard_of(self, index: int) -> int:
        return index // self.shard_size

    def shard_file(self, j: int) -> Path:
        return self.path / f"shard-{j:05d}.npy"

    def sidecar(self, j: int) -> Path:
        return self.path / f"shard-{j:05d}.json"

    def shard_lock(self, j: int) -> FileLock:
        return FileLock(self.path / f"shard-{j:05d}.lock")

    @property
    def complete(self) -> bool:
        return (self.path / "complete").exists()

    # ----- meta ---------------------------------------------------------------------------
    def open(self) -> FeatureStore:
        """Create the folder and ``meta.json``, or check an existing one (adopting its shard size).

        An existing entry is only read, so a complete entry in a read-only cache opens; an entry
        that still needs work in a folder that cannot be written is a ``NotWritableError``."""
        meta_file = self.path / "meta.json"
        created = False
        if not meta_file.exists():
            meta = {"format": FORMAT, "key": self.key, "n": self.n, "shard_size": self.shard_size,
                    "n_shards": self.n_shards, "dtype": self.key.get("dtype"),
                    "versions": self.key.get("versions"), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            try:
                with disk_full_hint(meta_file):
                    self.path.mkdir(parents=True, exist_ok=True)
                created = atomic_write_json(meta_file, meta, exclusive=True)
            except NotWritableError as e:
                raise read_only_cache_error(self.path, "feature cache entry", e) from None
        if not created:
            meta = self.read_meta()
            if meta["shard_size"] != self.shard_size:
                log.info("%s: keeping the entry's shard size %d (asked %d)", self.path.name,
                         meta["shard_size"], self.shard_size)
                self.shard_size = int(meta["shard_size"])
            if not self.complete and folder_problem(self.path):
                raise read_only_cache_error(self.path, "feature cache entry")
        return self

    def read_meta(self) -> dict:
        """``meta.json``, checked against this store's key (a mismatch is a ValueError)."""
        f = self.path / "meta.json"
        if not f.exists():
            raise FileNotFoundError(f"{f} not found: {self.path} is not a feature-store entry")
        try:
            meta = json.loads(f.read_text())
            problem = "" if isinstance(meta, dict) else "not a JSON object"
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            meta, problem = {}, f"{type(e).__name__}: {e}"
        if problem:
            raise ValueError(f"feature cache {self.path}: meta.json is unreadable ({problem}); delete "
                             f"the folder to recompute it")
        if meta.get("format") != FORMAT or meta.get("key") != self.key or meta.get("n") != self.n:
            diff = key_diff(meta.get("key") or {}, self.key)
            if meta.get("n") != self.n:
                diff.append(f"n: stored {meta.get('n')!r} != requested {self.n!r}")
            if meta.get("format") != FORMAT:
                diff.append(f"format: stored {meta.get('format')!r} != {FORMAT}")
            raise ValueError(f"feature cache {self.path} was written for a different key ("
                             f"{'; '.join(diff)}); delete the folder to recompute it")
        return meta

    # ----- shards -------------------------------------------------------------------------
    def read_sidecar(self, j: int) -> dict | None:
        try:
            return json.loads(self.sidecar(j).read_text())
        except (FileNotFoundError, ValueError):  # absent, garbled or not UTF-8: not done
            return None

    def is_done(self, j: int) -> bool:
        """Shard ``j`` is on disk: its sidecar exists and the shard file has the recorded size."""
        side = self.read_sidecar(j)
        try:
            return side is not None and self.shard_file(j).stat().st_size == side["file_size"]
        except FileNotFoundError:
            return False

    def missing(self) -> list[int]:
        return [j for j in range(self.n_shards) if not self.is_done(j)]

    def clean_tmp(self, j: int) -> None:
        """Remove leftovers of a killed writer of shard ``j`` (call while holding its lock)."""
        for f in self.path.glob(f".shard-{j:05d}.*.tmp"):
            f.unlink(missing_ok=True)

    def write_shard(self, j: int, rows: np.ndarray, bad: list[tuple[int, str, str]], **info) -> None:
        """Write shard ``j`` (rows, D) atomically, then its sidecar (the sidecar marks it done).

        ``bad`` holds (dataset index, path, reason) of rows whose image could not be read."""
        start, stop = self.shard_range(j)
        if rows.shape[0] != stop - start or str(rows.dtype) != self.key["dtype"]:
            raise ValueError(f"shard {j}: got {rows.shape} {rows.dtype}, expected "
                             f"({stop - start}, D) {self.key['dtype']}")
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(rows))
        data = buf.getvalue()
        atomic_write(self.shard_file(j), lambda f: f.write(data))
        side = {"shard": j, "start": start, "stop": stop, "rows": stop - start, "dim": int(rows.shape[1]),
                "dtype": str(rows.dtype), "file_size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "bad": [list(b) for b in bad], "pid": os.getpid(), "host": socket.gethostname(), **info}
        atomic_write_json(self.sidecar(j), side)

    # ----- merge and load -----------------------------------------------------------------
    def merge(self, keep_shards: bool = False) -> bool:
        """Merge all shards into ``features.npy`` once (under ``merge.lock``).

        Returns False while shards are missing. Every shard's checksum is verified; a corrupt
        shard is a ValueError naming the files to delete (only that shard is then recomputed)."""
        with FileLock(self.path / "merge.lock"):
            if self.complete:
                return True
            if self.missing():
                return False
            meta = self.read_meta()
            for f in self.path.glob(".features.npy.*.tmp"):
                f.unlink(missing_ok=True)
            sides = [self.read_sidecar(j) for j in range(self.n_shards)]
            dim, dtype = sides[0]["dim"], np.dtype(self.key["dtype"])
            valid, bad = np.ones(self.n, dtype=bool), []
            out = self.path / "features.npy"
            tmp = tmp_name(out)
            try:
                with disk_full_hint(out), open(tmp, "wb") as f:
                    w = _HashingWriter(f)
                    np.lib.format.write_array_header_1_0(w, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                             "fortran_order": False, "shape": (self.n, dim)})
                    for j, side in enumerate(sides):
                        w.write(self._checked_shard_bytes(j, side, dim))
                        for i, path, reason in side["bad"]:
                            valid[i] = False
                            bad.append([i, path, reason])
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
            atomic_write(self.path / "valid.npy", lambda f: np.save(f, valid))
            atomic_write_json(self.path / "bad_files.json", bad)
            meta.update(dim=dim, features_bytes=out.stat().st_size, features_sha256=w.sha.hexdigest(),
                        features_spot_sha256=spot_digest(out), n_bad=len(bad),
                        merged=time.strftime("%Y-%m-%dT%H:%M:%S"))
            atomic_write_json(self.path / "meta.json", meta)
            atomic_write(self.path / "complete", lambda f: f.write(b"ok\n"))
            if not keep_shards:
                for j in range(self.n_shards):
                    self.shard_file(j).unlink(missing_ok=True)
        log.info("merged %d shards into %s", self.n_shards, out)
        return True

    def _checked_shard_bytes(self, j: int, side: dict, dim: int) -> bytes:
        data = self.shard_file(j).read_bytes()
        start, stop = self.shard_range(j)
        arr = np.load(io.BytesIO(data)) if hashlib.sha256(data).hexdigest() == side["sha256"] else None
        if arr is None or arr.shape != (stop - start, dim) or str(arr.dtype) != self.key["dtype"]:
            raise ValueError(f"feature cache shard {self.shard_file(j)} is corrupt (checksum, shape "
                             f"or dtype differs from {self.sidecar(j).name}); delete both files and "
                             f"rerun the extraction: only that shard is recomputed")
        return np.ascontiguousarray(arr).tobytes()

    def load(self, verify: bool = False) -> FeatureSet:
        """The finished entry. Checks key, shape, dtype, file size and a spot checksum; with
        ``verify`` also the full SHA-256 of ``features.npy`` (reads the whole file)."""
        meta = self.read_meta()
        if not self.complete:
            raise FileNotFoundError(f"feature cache {self.path} is not complete ({len(self.missing())} "
                                    f"of {self.n_shards} shards missing); run the extraction to finish it")
        f = self.path / "features.npy"
        problem = ""
        if not f.exists() or f.stat().st_size != meta["features_bytes"]:
            problem = "size differs from meta.json"
        elif spot_digest(f) != meta["features_spot_sha256"]:
            problem = "spot checksum differs"
        elif verify and file_sha256(f) != meta["features_sha256"]:
            problem = "sha256 differs"
        feats = None if problem else np.load(f, mmap_mode="r")
        if feats is not None and (feats.shape != (self.n, meta["dim"]) or str(feats.dtype) != meta["dtype"]):
            problem = f"shape/dtype {feats.shape} {feats.dtype} != ({self.n}, {meta['dim']}) {meta['dtype']}"
        valid, bad = np.zeros(0, bool), []
        for name in ("valid.npy", "bad_files.json"):
            try:
                if (self.path / name).stat().st_size == 0:
                    raise EOFError("empty file (0 bytes)")
                if name == "valid.npy":
                    valid = np.load(self.path / name, allow_pickle=False)
                else:
                    bad = json.loads((self.path / name).read_text())
            except (OSError, ValueError, EOFError) as e:  # missing, empty, truncated or garbled
                why = "missing" if isinstance(e, FileNotFoundError) else f"{type(e).__name__}: {e}"
                problem = problem or f"valid.npy / bad_files.json unreadable: {name} {why}"
                break
        if not problem and (valid.shape != (self.n,) or int((~valid).sum()) != meta["n_bad"]
                            or len(bad) != meta["n_bad"]):
            problem = "valid.npy / bad_files.json disagree with meta.json"
        if problem:
            raise ValueError(f"feature cache {self.path} is corrupt ({problem}); delete the folder "
                             f"to recompute it")
        return FeatureSet(feats, valid, [(p, r) for _, p, r in bad], self.key, self.path, meta,
                          bad_rows=[int(i) for i, _, _ in bad])


def load_entry(path: str | Path, key: dict | None = None, verify: bool = False) -> FeatureSet:
    """Open a finished entry by folder; with ``key`` the stored key must equal it."""
    path = Path(path)
    meta_f = path / "meta.json"
    if not meta_f.exists():
        raise FileNotFoundError(f"{meta_f} not found: {path} is not a feature-store entry")
    try:
        meta = json.loads(meta_f.read_text())
        n, shard_size = meta["n"], meta["shard_size"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"feature cache {path}: meta.json is unreadable ({type(e).__name__}: {e}); delete "
                         f"the folder to recompute it") from None
    store = FeatureStore(path.parent, key if key is not None else meta.get("key", {}), "", n, shard_size)
    store.path = path
    return store.load(verify=verify)
