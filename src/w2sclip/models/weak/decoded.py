"""Fine-tuning without re-decoding: each training image is decoded once, augmented as a tensor.

``decode_once`` reads every image through ``open_image`` (JPEGs at reduced size, see
``w2sclip.data.decode``) into one uint8 array (N, 3, side, side): the image's centre square,
resized to ``side`` px. The array stays in memory up to ``MEMORY_BUDGET`` bytes, else it is a
memory map in a temporary folder removed with it. ``augmented_loader`` then serves random crops,
flips and colour jitter of those tensors every epoch, so an epoch costs no JPEG decoding.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from w2sclip.data.images import FAITHFUL_VERSION, BadImageError
from w2sclip.models.weak.base import _collate

log = logging.getLogger(__name__)

MEMORY_BUDGET = 2 * 2**30
"""Bytes of decoded training images held in RAM; a larger set is memory-mapped from a temp file."""

TRAIN_DECODE = {"train": "decoded-once-uint8", "version": 1, "faithful": FAITHFUL_VERSION, "draft": True}
"""The part of a weak model's identity that says how its images are decoded (cache keys)."""


def store_side(input_size: int, crop_pct: float | None = None) -> int:
    """The side images are decoded at for an ``input_size`` model: the eval resize size
    (``input_size / crop_pct``, crop_pct at most 0.875)."""
    return int(np.ceil(input_size / min(crop_pct or 0.875, 0.875)))


class _Square(torch.utils.data.Dataset):
    """(uint8 (3, side, side), ok) of each sample: centre square, resized (bicubic)."""

    def __init__(self, dataset, side: int) -> None:
        self.dataset, self.side = dataset, side

    def __len__(self) -> int:
        return len(self.dataset.samples)

    def __getitem__(self, i: int):
        from PIL import Image, ImageOps

        try:
            img = self.dataset.load_image(i, draft=self.side)
        except BadImageError as e:
            log.debug("skipping %s", e)
            return torch.zeros(3, self.side, self.side, dtype=torch.uint8), False
        img = ImageOps.fit(img, (self.side, self.side), Image.BICUBIC)
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous(), True


def decode_once(dataset, side: int, num_workers: int = 0, what: str = "weak model",
                budget: int = MEMORY_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, side, side), ok (N,) bool) of every sample of ``dataset``, in order.

    Unreadable images are zeros with ``ok`` False (a warning counts them); an array larger than
    ``budget`` bytes is a memory map in a temporary folder (deleted when the array is)."""
    shape = (len(dataset.samples), 3, side, side)
    if np.prod(shape) <= budget:
        images = np.empty(shape, np.uint8)
    else:
        folder = tempfile.TemporaryDirectory(prefix="w2sclip-decoded-")
        images = np.lib.format.open_memmap(Path(folder.name) / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=shape)
        images._tmp_folder = folder  # removed with the array
        log.info("%s: %d decoded images (%.1f GiB) memory-mapped from %s", what, len(dataset.samples),
                 np.prod(shape) / 2**30, folder.name)
    ok = np.zeros(len(dataset.samples), bool)
    loader = torch.utils.data.DataLoader(_Square(dataset, side), batch_size=64, num_workers=num_workers)
    start = 0
    for x, good in loader:
        images[start:start + len(x)] = x.numpy()
        ok[start:start + len(x)] = good.numpy()
        start += len(x)
    if not ok.all():
        warnings.warn(f"{what}: {int((~ok).sum())} unreadable training images were skipped",
                      UserWarning, stacklevel=2)
    return images, ok


class _Augmented(torch.utils.data.Dataset):
    """(transform(images[i]), label, i) over the readable rows of a decoded array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rows: np.ndarray, transform) -> None:
        self.images, self.labels, self.rows, self.transform = images, labels, rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        i = int(self.rows[k])
        return self.transform(torch.from_numpy(np.asarray(self.images[i]))), int(self.labels[i]), i


def train_transform(size: int, mean, std, scale: tuple[float, float] = (0.08, 1.0),
                    interpolation: str = "bilinear", color_jitter: float = 0.0):
    """Random resized crop, horizontal flip, optional colour jitter, then normalise: on uint8 tensors."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True,
                                  interpolation=InterpolationMode(interpolation)),
             v2.RandomHorizontalFlip()]
    if color_jitter:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def augmented_loader(dataset, transform, side: int, batch_size: int, seed: int, num_workers: int = 0,
                     device: str = "cpu", what: str = "weak model") -> torch.utils.data.DataLoader:
    """A shuffled DataLoader of (x, y, indices, []) batches, as ``finetune`` takes, over the
    images of ``dataset`` decoded once at ``side`` px and augmented by ``transform`` each epoch."""
    images, ok = decode_once(dataset, side, num_workers, what)
    if not ok.any():
        raise ValueError(f"{what}: none of the {len(ok)} training images could be read; check the "
                         f"dataset with `w2sclip data check`")
    labels = np.asarray(dataset.labels)
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(_Augmented(images, labels, np.flatnonzero(ok), transform),
                                       batch_size=batch_size, shuffle=True, generator=gen,
                                       num_workers=num_workers, collate_fn=_collate,
                                       pin_memory=str(device).startswith("cuda"))
