"""Installed versions of the libraries that decide a result (recorded in caches and run folders)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def library_versions(dists: tuple[str, ...] = ("w2sclip", "torch", "open_clip_torch", "timm", "numpy")) -> dict:
    """``{distribution: version or None}``."""
    out = {}
    for dist in dists:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out
