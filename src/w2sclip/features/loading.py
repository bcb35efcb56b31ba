"""Feeding the encoder: images that may fail to load, and batches that claim whole shards."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import torch

from w2sclip.data.images import check_policy
from w2sclip.fileio import FileLock


class SafeImages(torch.utils.data.Dataset):
    """``images[i] -> (tensor, i, reason)``: a zero image and the reason when sample ``i``
    cannot be read (``bad_files="skip"``), or a ValueError naming the file (``"error"``).

    With a ``decoder`` (``w2sclip.data.decode.ImageDecoder``) sample ``i`` is
    ``decoder.read_sample(dataset, i)`` (uint8, see there); without one it is ``dataset[i][0]``."""

    def __init__(self, dataset, shape: tuple[int, ...], bad_files: str = "skip", decoder=None) -> None:
        check_policy(bad_files)
        self.dataset, self.shape, self.bad_files, self.decoder = dataset, tuple(shape), bad_files, decoder

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            x = self.decoder.read_sample(self.dataset, i) if self.decoder is not None else self.dataset[i][0]
        except Exception as e:  # any decoder or file error: one bad file must not stop a long job
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            if self.bad_files == "error":
                raise ValueError(f"image {i} ({self.path(i)}) could not be read ({reason}); fix or "
                                 f"remove it, or pass bad_files='skip' to record it and go on") from e
            return (self.decoder.zeros() if self.decoder is not None else torch.zeros(self.shape)), i, reason
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


def image_source(dataset, decoder, bad_files: str = "skip") -> SafeImages:
    """The samples of ``dataset`` read by ``decoder`` (an ``ImageDecoder``) when they are files;
    a dataset without ``samples`` yields PIL images and gets the decoder's preprocess as it is."""
    if hasattr(dataset, "samples"):
        return SafeImages(dataset, decoder.shape, bad_files, decoder)
    return SafeImages(dataset.with_transform(decoder.preprocess), decoder.shape, bad_files)


def image_batches(images: SafeImages, batch_sampler, *, num_workers: int = 0,
                  device: torch.device = torch.device("cpu")) -> Iterator:
    """``(x (B, 3, H, W) float on device, indices (B,), reasons)`` of ``images`` in the batches of
    ``batch_sampler``: read in ``num_workers`` processes, moved, GPU-decoded and normalised on the
    device one batch ahead in a thread (``prefetch``), so decoding overlaps encoding."""
    dec = images.decoder
    loader = torch.utils.data.DataLoader(images, batch_sampler=batch_sampler, num_workers=num_workers,
                                         pin_memory=device.type == "cuda",
                                         prefetch_factor=4 if num_workers else None,
                                         collate_fn=dec.collate if dec is not None else None)
    return prefetch(on_device(loader, dec, device, images.path) if dec is not None else loader)


def on_device(batches: Iterable, decoder, device: torch.device, path_of: Callable[[int], str]) -> Iterator:
    """``decoder.collate`` batches as ``decoder.to_device`` makes them (normalised floats on
    ``device``; GPU-decoded when they hold JPEG bytes, adding the reasons of files that fail)."""
    for x, idx, reasons in batches:
        paths = [path_of(i) for i in idx.tolist()] if isinstance(x, list) else None
        yield decoder.to_device(x, device, reasons, paths), idx, reasons


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """``items`` produced in a background thread, up to ``depth`` ahead: without worker processes
    (``num_workers=0``) the next batch is decoded while this one is encoded (PIL and torch release
    the GIL). Errors of the producer are raised here; closing the iterator stops the thread."""
    q: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put((end, e))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = q.get()
            if item is end:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join()
