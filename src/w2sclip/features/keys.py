"""What identifies a set of image features: the cache key of the feature store."""

from __future__ import annotations

import hashlib
import json

FEATURE_LAYER = "image_embedding"
NORMALIZATION = "l2"


def library_versions() -> dict:
    """Versions of the libraries that change extracted numbers (model, preprocessing, decoding)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "torchvision", "open_clip_torch", "pillow", "w2sclip"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def dataset_fingerprint(dataset) -> str:
    """``dataset.fingerprint()`` when the dataset has one, else a hash of its name, class names
    and samples (paths and labels, in order)."""
    fp = getattr(dataset, "fingerprint", None)
    if fp is not None:
        value = fp() if callable(fp) else fp
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    h = hashlib.sha256()
    h.update(json.dumps([dataset.name, list(dataset.classnames)]).encode())
    for path, label in dataset.samples:
        h.update(f"{path}\0{label}\n".encode())
    return h.hexdigest()[:16]


def feature_key(strong, dataset, *, dtype: str, precision: str) -> dict:
    """The feature-store key: dataset content, split and size; model identity (architecture,
    weights, preprocessing); feature layer; normalisation; compute precision; storage dtype;
    library versions. Features cover the whole split in sample order, so seeds (which pick
    rows downstream) are not part of it."""
    return {"kind": "image_features",
            "data": {"name": dataset.name, "domain": dataset.domain, "split": dataset.split,
                     "n": len(dataset), "fingerprint": dataset_fingerprint(dataset)},
            "model": strong.identity(), "layer": FEATURE_LAYER, "normalization": NORMALIZATION,
            "precision": precision, "dtype": dtype, "versions": library_versions()}


def entry_slug(strong, dataset, dtype: str) -> str:
    """Readable part of the entry folder name."""
    parts = [dataset.name, dataset.domain, dataset.split, strong.name, dtype]
    return "-".join(str(p) for p in parts if p)
