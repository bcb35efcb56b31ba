"""Batched, no-grad image-feature extraction through the feature cache."""

from __future__ import annotations

import logging

import numpy as np
import torch

from w2sclip.features.cache import ArrayCache

log = logging.getLogger(__name__)


def decode_images(dataset, size: int | None = None) -> np.ndarray:
    """All images of ``dataset`` as uint8 (N, H, W, 3), resized to ``size`` when given."""
    from PIL import Image

    out = []
    for i in range(len(dataset)):
        img, _ = dataset[i]
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        out.append(np.asarray(img, dtype=np.uint8))
    return np.stack(out)


@torch.no_grad()
def extract_features(strong, dataset, batch_size: int = 256, num_workers: int = 0) -> np.ndarray:
    """Normalised image features (N, D) float32 of every sample, in dataset order."""
    loader = torch.utils.data.DataLoader(dataset.with_transform(strong.preprocess), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers)
    return torch.cat([strong.encode_images(x) for x, _ in loader]).numpy()


def cached_features(strong, dataset, cache: ArrayCache, dataset_key: dict, **kw) -> np.ndarray:
    """``extract_features`` through ``cache``; the key covers data, model and preprocessing."""
    key = {"kind": "image_features", "data": dataset_key, "split": dataset.split, "n": len(dataset),
           "model": strong.identity(),
           "layer": "image_embedding", "normalized": True, "dtype": "float32"}
    slug = f"{dataset_key.get('name', '')}-{dataset_key.get('domain', '')}-{strong.name}"
    feats = cache.load(key, slug)
    if feats is None:
        feats = extract_features(strong, dataset, **kw)
        cache.save(key, feats, slug)
    return feats
