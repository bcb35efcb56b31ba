"""What a dataset split *is*, for cache keys: the content of its files, not where they sit.

``content_id(dataset)`` hashes, in sample order, the sha256 of every image file's bytes and its
label, plus the class list (what the labels mean). Paths and the dataset's root are not part of
it: an unchanged copy of a dataset at another root has the same identity (its cached features
and weak predictions are reused), while a changed file, a moved-and-altered copy or another
dataset with the same file names gets a new one.

Hashing every file is the expensive part, so each file's digest is remembered in a memo
(``<memo_dir>/<root hash>.json``) next to its size, modification time and inode change time; a
later call re-hashes only files whose ``stat`` changed. A memo that cannot be written (a
read-only cache) only costs the re-hashing next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

from w2sclip.fileio import default_cache_dir, file_sha256

log = logging.getLogger(__name__)

ID_VERSION = 1
HASH_THREADS = 8
"""Threads hashing files (hashlib releases the GIL; threads also overlap disk reads)."""


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _digest_or_missing(path: str) -> str:
    try:
        return file_sha256(path)
    except OSError as e:  # a missing or unreadable file has an identity too: it is a bad file
        return f"unreadable:{type(e).__name__}"


def file_digests(paths: list[str], memo_file: Path | None) -> list[str]:
    """sha256 of each file (``unreadable:...`` for files that cannot be read), through the memo."""
    memo: dict = {}
    if memo_file is not None and memo_file.exists():
        try:
            memo = json.loads(memo_file.read_text())
            memo = memo if isinstance(memo, dict) and memo.get("version") == ID_VERSION else {}
        except (OSError, ValueError):
            memo = {}
    files = memo.get("files", {})
    out: list[str | None] = [None] * len(paths)
    todo, sigs = [], {}
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
        except OSError as e:
            out[i] = f"unreadable:{type(e).__name__}"
            continue
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever
            out[i] = "unreadable:NotARegularFile"
            continue
        sig = _signature(st)
        sigs[p] = sig
        entry = files.get(p)
        if entry is not None and entry[:4] == sig:
            out[i] = entry[4]
        else:
            todo.append(i)
    if todo:
        with ThreadPoolExecutor(HASH_THREADS) as pool:
            for i, d in zip(todo, pool.map(_digest_or_missing, [paths[i] for i in todo], chunksize=64)):
                out[i] = d
                if not d.startswith("unreadable:"):
                    files[paths[i]] = sigs[paths[i]] + [d]
        if memo_file is not None:
            _write_memo(memo_file, files)
    return out  # type: ignore[return-value]


def _write_memo(memo_file: Path, files: dict) -> None:
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_name(f".{memo_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": ID_VERSION, "files": files}))
        os.replace(tmp, memo_file)
    except OSError as e:  # read-only or full cache: identities still correct, just not remembered
        log.debug("could not write the identity memo %s (%s)", memo_file, e)


def content_id(dataset, memo_dir: str | os.PathLike | None = None) -> str:
    """Short sha256 of the dataset's content: file digests and labels in sample order, class list.

    Computed once per dataset object (remembered on it); ``memo_dir`` (default
    ``<cache>/identity``) remembers file digests across processes.
    """
    cached = getattr(dataset, "_content_id", None)
    if cached is not None:
        return cached
    if memo_dir is None:
        memo_dir = default_cache_dir() / "identity"
    paths = [os.path.abspath(p) for p, _ in dataset.samples]
    where = os.path.commonpath(paths) if paths else ""
    memo_file = Path(memo_dir) / f"{hashlib.sha256(where.encode()).hexdigest()[:16]}.json"
    digests = file_digests(paths, memo_file)
    h = hashlib.sha256(json.dumps({"version": ID_VERSION, "classes": list(dataset.classnames)}).encode())
    for d, (_, label) in zip(digests, dataset.samples):
        h.update(f"{d}\t{label}\n".encode())
    value = h.hexdigest()[:16]
    with suppress(AttributeError):  # a frozen or slotted dataset: recomputed through the memo next time
        dataset._content_id = value
    return value
