"""What identifies a set of image features: the cache key of the feature store."""

from __future__ import annotations

from w2sclip.versions import library_versions

FEATURE_LAYER = "image_embedding"
NORMALIZATION = "l2"


FEATURE_LIBRARIES = ("torch", "torchvision", "open_clip_torch", "pillow", "w2sclip")
"""Libraries whose versions change extracted numbers (model, preprocessing, decoding)."""


def feature_key(strong, dataset, *, dtype: str, precision: str, decode: dict, memo_dir=None) -> dict:
    """The feature-store key: dataset content (``dataset.content_id()``, see ``w2sclip.data.identity``;
    not its paths), split and size; model identity (architecture, weights, preprocessing); the
    decode path (``ImageDecoder.identity()``: features of different decode paths never mix);
    feature layer; normalisation; compute precision; storage dtype; library versions. Features
    cover the whole split in sample order, so seeds (which pick rows downstream) are not part of it."""
    return {"kind": "image_features",
            "data": {"name": dataset.name, "domain": dataset.domain, "split": dataset.split,
                     "n": len(dataset), "content": dataset.content_id(memo_dir)},
            "model": strong.identity(), "decode": dict(decode), "layer": FEATURE_LAYER, "normalization": NORMALIZATION,
            "precision": precision, "dtype": dtype, "versions": library_versions(FEATURE_LIBRARIES)}


def entry_slug(strong, dataset, dtype: str) -> str:
    """Readable part of the entry folder name."""
    parts = [dataset.name, dataset.domain, dataset.split, strong.name, dtype]
    return "-".join(str(p) for p in parts if p)
