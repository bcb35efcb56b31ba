"""Feeding the encoder: images that may fail to load, and batches that claim whole shards."""

from __future__ import annotations

import logging

import torch

from w2sclip.features.fileio import FileLock

log = logging.getLogger(__name__)

BAD_FILES = ("skip", "error")


class SafeImages(torch.utils.data.Dataset):
    """``images[i] -> (tensor, i, reason)``: a zero image and the reason when sample ``i``
    cannot be read (``bad_files="skip"``), or a ValueError naming the file (``"error"``)."""

    def __init__(self, dataset, shape: tuple[int, ...], bad_files: str = "skip") -> None:
        if bad_files not in BAD_FILES:
            raise ValueError(f"bad_files={bad_files!r}; valid: {', '.join(BAD_FILES)}")
        self.dataset, self.shape, self.bad_files = dataset, tuple(shape), bad_files

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            x, _ = self.dataset[i]
        except Exception as e:  # any decoder or file error: one bad file must not stop a long job
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            if self.bad_files == "error":
                raise ValueError(f"image {i} ({self.path(i)}) could not be read ({reason}); fix or "
                                 f"remove it, or pass bad_files='skip' to record it and go on") from e
            return torch.zeros(self.shape), i, reason
        return x, i, ""

    def path(self, i: int) -> str:
        samples = getattr(self.dataset, "samples", None)
        return str(samples[i][0]) if samples is not None else f"#{i}"


class ShardBatches:
    """A batch sampler over whole shards: before yielding a shard's batches it takes the
    shard's lock; shards that are done are skipped, shards locked by another process are
    deferred (``self.deferred``) unless ``blocking``. Batches never span two shards.

    The sampler runs in the main process, so the locks are held there; ``release(j)`` is
    called once shard ``j`` is written. Only use ``blocking`` with a single shard (waiting
    while holding an unfinished shard's lock could deadlock two processes)."""

    def __init__(self, store, shards: list[int], batch_size: int, blocking: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if blocking and len(shards) > 1:
            raise ValueError("blocking ShardBatches takes one shard at a time")
        self.store, self.shards, self.batch_size, self.blocking = store, list(shards), batch_size, blocking
        self.deferred: list[int] = []
        self.locks: dict[int, FileLock] = {}

    def _claim(self, j: int) -> bool:
        if self.store.complete or self.store.is_done(j):
            return False
        lock = self.store.shard_lock(j)
        if self.blocking:
            lock.acquire()
        elif not lock.try_acquire():
            self.deferred.append(j)
            return False
        # finished by another process between the check and the lock; is_done before complete:
        # the merge writes ``complete`` before it deletes the shard files
        if self.store.is_done(j) or self.store.complete:
            lock.release()
            return False
        self.store.clean_tmp(j)
        self.locks[j] = lock
        return True

    def __iter__(self):
        for j in self.shards:
            if self._claim(j):
                start, stop = self.store.shard_range(j)
                for a in range(start, stop, self.batch_size):
                    yield list(range(a, min(a + self.batch_size, stop)))

    def release(self, j: int) -> None:
        lock = self.locks.pop(j, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for j in list(self.locks):
            self.release(j)
