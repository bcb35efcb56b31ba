"""Batched, no-grad image-feature extraction into the sharded feature store.

``extract`` is the entry point (docs/cache.md): it splits the dataset into shards, encodes the
shards this process owns (``shard=(i, N)`` or torchrun's RANK/WORLD_SIZE), writes each one
atomically, and merges them once all exist.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from w2sclip.features.keys import entry_slug, feature_key
from w2sclip.data.decode import DECODE_CHOICES, ImageDecoder, decode_identity, resolve_decode
from w2sclip.data.images import check_policy
from w2sclip.features.loading import ShardBatches, image_batches, image_source
from w2sclip.features.store import DTYPES, FeatureSet, FeatureStore, key_diff
from w2sclip.models.strong.openclip import PRECISIONS

log = logging.getLogger(__name__)


def precision_dtypes(precision: str, device: torch.device) -> tuple[torch.dtype | None, torch.dtype | None]:
    """(input dtype or None for fp32, autocast dtype or None) of a model precision on ``device``, as
    ``load_strong`` defines them (``PRECISIONS``): ``fp16``/``bf16`` hold low-precision weights (inputs
    of that dtype), ``amp``/``amp_bf16`` fp32 weights under autocast. Autocast runs on CUDA only; on
    CPU every precision runs as stored (open_clip's convention)."""
    name = {"pure_fp16": "fp16", "pure_bf16": "bf16", "amp_fp16": "amp"}.get(precision, precision)
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    weights, amp = PRECISIONS[name]
    return (None if weights == "fp32" else amp), (amp if device.type == "cuda" else None)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r}: write it as i/N, e.g. 0/4 (this is part 0 of 4)") from None
    return _check_shard(i, n)


def _check_shard(i: int, n: int) -> tuple[int, int]:
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: need N >= 1 and 0 <= i < N")
    return i, n


def resolve_shard(shard: tuple[int, int] | str | None) -> tuple[int, int, bool]:
    """(rank, world, from_env): ``shard`` when given, else torchrun's RANK and WORLD_SIZE."""
    if shard is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return (*_check_shard(int(os.environ.get("RANK", "0")), world), world > 1)
    return (*(parse_shard(shard) if isinstance(shard, str) else _check_shard(*shard)), False)


def default_device() -> str:
    """``cuda:LOCAL_RANK`` (torchrun) or ``cuda`` when CUDA is available, else ``cpu``."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"


def prepare_device(strong, device: str | torch.device | None = None) -> torch.device:
    """The device to encode on, with ``strong.model`` moved there: ``device``, else the model's.
    A CUDA device without an index means ``cuda:LOCAL_RANK`` under torchrun."""
    given = device
    device = torch.device(device if device is not None else getattr(strong, "device", None) or "cpu")
    if device.type == "cuda" and (given is None or device.index is None):
        local = os.environ.get("LOCAL_RANK")
        index = device.index if local is None else int(local)
        device = torch.device("cuda", torch.cuda.current_device() if index is None else index)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    param = next(strong.model.parameters(), None)
    if param is not None and param.device != device:
        strong.model.to(device)
    return device


@torch.inference_mode()
def encode_batches(model, batches: Iterable, *, device: torch.device, dtype: torch.dtype,
                   shard_of: Callable[[int], int], on_shard: Callable, precision: str = "fp32",
                   progress=None) -> None:
    """Encode ``(images (B, 3, H, W), indices (B,), reasons)`` batches in order.

    Features are ``model.encode_image`` (inputs cast and autocast as ``precision`` says, see
    ``PRECISIONS``), L2-normalised in fp32,
    cast to ``dtype`` and kept on the device until a shard is complete; then
    ``on_shard(j, rows (n_j, D), bad [(index, reason)], event)`` gets them on the host (on CUDA
    a pinned copy still in flight until ``event``, so the GPU never waits for the host).
    """
    inp, amp = precision_dtypes(precision, device)
    cur, parts, bad = None, [], []
    for x, idx, reasons in batches:
        j = shard_of(int(idx[0]))
        if j != cur:
            if parts:
                _hand_over(cur, parts, bad, on_shard)
            cur, parts, bad = j, [], []
        x = x.to(device, dtype=inp, non_blocking=True)
        with torch.autocast("cuda", dtype=amp) if amp is not None else nullcontext():
            f = model.encode_image(x)
        parts.append(F.normalize(f.float(), dim=-1).to(dtype))
        if any(reasons):
            bad += [(int(i), r) for i, r in zip(idx.tolist(), reasons) if r]
        if progress is not None:
            progress.update(len(idx))
    if parts:
        _hand_over(cur, parts, bad, on_shard)


def _hand_over(j: int, parts: list[torch.Tensor], bad: list, on_shard: Callable) -> None:
    rows, event = torch.cat(parts), None
    if rows.is_cuda:
        host = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
        host.copy_(rows, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        rows = host
    on_shard(j, rows, bad, event)


class _ShardWriter:
    """Writes finished shards from a background thread, then releases their locks."""

    def __init__(self, store: FeatureStore, path_of: Callable[[int], str], release: Callable[[int], None],
                 info: dict) -> None:
        self.store, self.path_of, self.release, self.info = store, path_of, release, info
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
        self.futures: list[Future] = []

    def submit(self, j: int, rows: torch.Tensor, bad: list, event) -> None:
        for f in self.futures:  # fail fast if an earlier write broke
            if f.done() and f.exception() is not None:
                raise f.exception()
        self.futures.append(self.pool.submit(self._write, j, rows, bad, event))

    def _write(self, j: int, rows: torch.Tensor, bad: list, event) -> None:
        try:
            if event is not None:
                event.synchronize()
            arr = rows.numpy()
            start = self.store.shard_range(j)[0]
            self._check_finite(j, arr, start, {i for i, _ in bad})
            if bad:  # unreadable images: NaN rows, so forgetting the valid mask fails loudly
                arr[[i - start for i, _ in bad]] = np.nan
            self.store.write_shard(j, arr, [(i, self.path_of(i), r) for i, r in bad], **self.info)
        finally:
            self.release(j)

    def _check_finite(self, j: int, arr: np.ndarray, start: int, bad: set[int]) -> None:
        """NaN/inf features of readable images are never stored (they would look valid)."""
        rows = [start + r for r in np.flatnonzero(~np.isfinite(arr).all(1)) if start + r not in bad]
        if rows:
            raise ValueError(f"the strong model produced NaN or infinite features for {len(rows)} "
                             f"readable image(s) of shard {j} (first: {self.path_of(rows[0])}); the "
                             f"shard was not stored. Check the model's precision "
                             f"({self.info.get('precision')}; fp16 can overflow: use fp32, amp or "
                             f"amp_bf16) and its weights, then rerun: finished shards are kept")

    def close(self) -> None:
        """Wait for every pending write; re-raise the first error."""
        self.pool.shutdown(wait=True)
        for f in self.futures:
            if f.exception() is not None:
                raise f.exception()


def extract(strong, dataset, cache_root, *, batch_size: int = 256, num_workers: int = 0,
            shard_size: int = 4096, shard: tuple[int, int] | str | None = None, dtype: str = "float32",
            bad_files: str = "skip", device: str | None = None, wait: bool | None = None, keep_shards: bool = False, progress: bool = True,
            decode: str = "auto") -> FeatureSet | None:
    """Image features (N, D) of every sample of ``dataset``, through the feature store.

    Resumable (finished shards are kept and skipped), safe with several processes on one entry
    (per-shard locks), sharded with ``shard=(i, N)`` / ``"i/N"`` (shards j with j % N == i) or
    under torchrun (RANK, WORLD_SIZE). ``dtype`` is the storage dtype (float32|float16); the
    compute precision is the model's (``load_strong(..., precision=)``); ``device``: see
    ``prepare_device``. ``bad_files="skip"`` records unreadable images (row NaN, valid False),
    ``"error"`` stops at the first one. ``decode``: ``auto`` (nvjpeg on CUDA, turbo on CPU),
    ``pil`` (full-size reference), ``pil-draft``, ``turbo`` or ``nvjpeg`` (``w2sclip.data.decode``).
    Returns the merged ``FeatureSet``, or None when other
    shards are still missing and ``wait`` is false (default: wait only under torchrun).
    """
    if decode not in DECODE_CHOICES:
        raise ValueError(f"decode={decode!r}; valid: {', '.join(DECODE_CHOICES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; valid: {', '.join(DTYPES)}")
    check_policy(bad_files)
    rank, world, from_env = resolve_shard(shard)
    precision = getattr(strong, "precision", "fp32")
    precision_dtypes(precision, torch.device("cpu"))
    device = prepare_device(strong, device)
    decoder = ImageDecoder(strong.preprocess, resolve_decode(decode, device))
    key = feature_key(strong, dataset, dtype=dtype, precision=precision, decode=decoder.identity(),
                      memo_dir=identity_memo(cache_root))
    store = FeatureStore(cache_root, key, entry_slug(strong, dataset, dtype), len(dataset), shard_size).open()
    if not store.complete:
        mine = [j for j in range(store.n_shards) if j % world == rank]
        _extract_shards(strong, dataset, store, mine, decoder, batch_size=batch_size, num_workers=num_workers,
                        bad_files=bad_files, device=device, progress=progress)
    waited = 0.0
    while not store.merge(keep_shards=keep_shards):
        if not (from_env if wait is None else wait):
            log.info("%s: shards of part %d/%d done; %d shard(s) of other parts missing; the last "
                     "part to finish merges", store.path, rank, world, len(store.missing()))
            return None
        time.sleep(0.5)
        waited += 0.5
        if waited % WAIT_HINT_S == 0:
            _log_waiting(store, waited)
    return store.load().named_for(dataset)


WAIT_HINT_S = 60.0
"""Seconds between the messages of a part waiting for the other parts' shards."""


def _log_waiting(store: FeatureStore, waited: float) -> None:
    """Say what a part waits for, and name entries of the same features decoded another way:
    parts that resolve different decode paths (CPU and GPU parts, a failed nvJPEG probe) write
    separate entries that never merge."""
    others = []
    for meta_file in store.path.parent.glob(f"{store.path.name.rsplit('-', 1)[0]}-*/meta.json"):
        if (meta_file.parent / "complete").exists():
            continue  # finished earlier, not a part of this job
        try:
            key = json.loads(meta_file.read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        diff = key_diff(key, store.key)
        if diff and all(d.startswith("decode.") for d in diff):
            others.append(f"{meta_file.parent.name} (decode path {key['decode'].get('path')!r})")
    log.warning("%s: waited %.0f s for %d shard(s) of other parts (decode path %r)%s", store.path,
                waited, len(store.missing()), store.key["decode"].get("path"),
                f"; unfinished entries of the same features decoded another way: {', '.join(others)}; "
                f"parts that resolve different decode paths never merge: pass the same decode= "
                f"(w2sclip extract --decode) to every part" if others else "")


def identity_memo(cache_root) -> str:
    """Where file digests of dataset identities are remembered: ``<cache>/identity``."""
    return os.path.join(os.path.dirname(os.path.abspath(cache_root)), "identity")


def open_features(strong, dataset, cache_root, *, dtype: str = "float32", verify: bool = False,
                  decode: str = "auto", device: str | torch.device | None = None) -> FeatureSet:
    """The finished features of ``extract`` with the same arguments (``decode`` and ``device`` pick
    the decode path, which is part of the key), without extracting (FileNotFoundError when absent
    or unfinished; ``verify`` re-hashes the whole file)."""
    key = feature_key(strong, dataset, dtype=dtype, precision=getattr(strong, "precision", "fp32"),
                      decode=decode_identity(strong, device, decode), memo_dir=identity_memo(cache_root))
    store = FeatureStore(cache_root, key, entry_slug(strong, dataset, dtype), len(dataset))
    if not (store.path / "meta.json").exists():
        raise FileNotFoundError(f"no features at {store.path}; run `w2sclip extract` (or extract()) first")
    store.shard_size = store.read_meta()["shard_size"]
    return store.load(verify=verify).named_for(dataset)


def _extract_shards(strong, dataset, store: FeatureStore, shards: list[int], decoder: ImageDecoder, *,
                    batch_size: int, num_workers: int, bad_files: str, device: torch.device,
                    progress: bool) -> None:
    todo = [j for j in shards if not store.is_done(j)]
    if not todo:
        return
    images = image_source(dataset, decoder, bad_files)
    samplers = [ShardBatches(store, todo, batch_size)]
    writer = _ShardWriter(store, images.path, lambda j: [s.release(j) for s in samplers],
                          {"device": str(device), "precision": store.key["precision"]})
    total = sum(b - a for a, b in map(store.shard_range, todo))
    bar = tqdm(total=total, desc=f"extract {store.path.name}", unit="img", disable=not progress)

    def run(sampler: ShardBatches) -> None:
        batches = image_batches(images, sampler, num_workers=num_workers, device=device)
        try:
            encode_batches(strong.model, batches, device=device, dtype=getattr(torch, store.key["dtype"]),
                           shard_of=store.shard_of, on_shard=writer.submit, precision=store.key["precision"],
                           progress=bar)
        finally:
            batches.close()  # stop the decoding thread before the shard locks are released

    try:
        run(samplers[0])
        for j in samplers[0].deferred:  # held by another process: wait, then do it if still missing
            samplers.append(ShardBatches(store, [j], batch_size, blocking=True))
            run(samplers[-1])
    finally:
        try:
            writer.close()
        finally:
            for s in samplers:
                s.release_all()
            bar.close()
