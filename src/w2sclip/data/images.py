"""Reading images safely and faithfully: every reader of an image file goes through ``open_image``.

``open_image`` fully decodes a file, so a truncated JPEG fails here rather than later inside a
batch, and turns any PIL mode into 8-bit RGB by the rules of ``to_rgb`` (16/32-bit integer and
float images are rescaled, not clipped; alpha is composited on white; EXIF orientation is
applied; docs/decoding.md has the table). ``draft=`` decodes JPEGs at a reduced size in the DCT
domain (libjpeg's scaled IDCT), never below ``draft`` px on the shorter side.
``find_bad_images`` scans a dataset; ``screen_images`` applies the ``bad_files`` policy
(``"skip"``: drop and list them, ``"error"``: stop with the list). Long jobs call these before
they start, or catch ``BadImageError`` per sample, so a bad file never crashes a job halfway.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from w2sclip.fileio import atomic_write

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
"""File suffixes (lower case) that folder datasets treat as images."""

BAD_FILES_POLICIES = ("skip", "error")
"""Values of the ``bad_files`` option: skip and list bad files, or stop at the first scan."""


class BadImageError(ValueError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"bad image {self.path}: {reason}. Run `w2sclip data check` to list every "
                         f"bad file; with bad_files='skip' they are skipped and listed in the run "
                         f"folder's bad_files.txt")


def is_image_file(name: str) -> bool:
    """Whether a file name has an image suffix (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


FAITHFUL_VERSION = 1
"""Version of the mode rules of ``to_rgb``; part of every decode identity (cache keys)."""

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def open_image(path: str | Path, draft: int | None = None):
    """The image at ``path`` as a fully loaded RGB ``PIL.Image`` (``to_rgb``); raises ``BadImageError``.

    ``draft``: JPEGs are decoded at 1/2, 1/4 or 1/8 scale when their shorter side stays >= ``draft``
    px (other formats are decoded at full size); resize to the model's input afterwards.
    """
    return read_image(path, draft)[0]


def read_image(path, draft: int | None = None, name: str | None = None):
    """``(image, jpeg)``: ``open_image(path, draft)`` and whether the file is a JPEG (whose
    decoded pixels depend on the decoder anyway, unlike lossless formats). ``path`` may also be a
    binary file object; errors then name ``name``."""
    from PIL import Image, ImageOps

    name = path if name is None else name
    if isinstance(path, (str, os.PathLike)) and os.path.exists(path) and not os.path.isfile(path):
        raise BadImageError(name, "not a regular file (a FIFO, socket, device or folder), so it is never read")
    try:
        with Image.open(path) as img:
            jpeg = img.format == "JPEG"
            if draft and jpeg:
                img.draft("RGB", (int(draft), int(draft)))
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return to_rgb(img, name), jpeg
    except FileNotFoundError:
        raise BadImageError(name, "file not found") from None
    except Image.UnidentifiedImageError:
        empty = not hasattr(path, "read") and Path(path).stat().st_size == 0
        raise BadImageError(name, "empty file (0 bytes)" if empty else "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        if isinstance(e, BadImageError):
            raise
        raise BadImageError(name, f"unreadable or truncated ({type(e).__name__}: {e})") from None


def to_rgb(img, path: str | Path = "<image>"):
    """A loaded ``PIL.Image`` of any mode as 8-bit RGB, values rescaled rather than clipped.

    ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``: PIL's conversion. Alpha (``RGBA``, ``LA``, ``PA``, a
    palette or a colour with ``transparency``): composited on white. ``I;16*``: v / 257 (v * 255 /
    32767 when signed). ``I`` (signed 32-bit): the smallest of the ranges 0..255, 0..65535 and
    0..2^31-1 that holds the image's largest value maps to 0..255 (a 16-bit PGM, or 16-bit data
    in a 32-bit TIFF, keeps its 16-bit scale); negatives become 0. ``F``: values within [0, 1] are
    scaled by 255, within [0, 255] kept, otherwise min-max stretched; NaN/inf become 0.
    Multi-channel 16-bit images are already 8-bit when PIL opens them.
    """
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    try:
        if mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = img.convert("RGBA")
            out = Image.new("RGB", rgba.size, (255, 255, 255))
            out.paste(rgba, mask=rgba.getchannel("A"))
            return out
        if mode == "F" or mode == "I" or mode.startswith("I;"):
            return Image.fromarray(_to_uint8(img)).convert("RGB")
        return img.convert("RGB")
    except ValueError as e:
        raise BadImageError(path, f"image mode {mode} cannot be converted to RGB ({e}); save the file as "
                                  f"RGB, e.g. with PIL: Image.open(f).convert('RGBA').save(f)") from None


def _to_uint8(img):
    """(H, W) uint8 of a single-channel integer or float image, by ``to_rgb``'s rules."""
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(a)
        a = np.where(finite, a, 0.0)
        lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            a = a * 255
        elif not (lo >= 0 and hi <= 255):
            a = (a - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(a)
            a[~finite] = 0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if img.mode.startswith("I;16"):
        a = np.asarray(img if img.mode in ("I;16", "I;16B", "I;16L") else img.convert("I")).astype(np.int64)
        top = 32767 if img.mode.endswith("S") else 65535
    else:
        a = np.asarray(img.convert("I") if img.mode != "I" else img).astype(np.int64)
        peak = int(a.max()) if a.size else 0
        top = next(t for t in (255, 65535, 2**31 - 1) if peak <= t)
    a = np.clip(a, 0, top)
    return ((a * 255 + top // 2) // top).astype(np.uint8)


def _reason(dataset, i: int) -> str | None:
    try:
        dataset.load_image(i)
    except BadImageError as e:
        return e.reason
    return None


def find_bad_images(dataset, num_workers: int = 0) -> list[tuple[str, str]]:
    """``(path, reason)`` of every sample of ``dataset`` whose image cannot be read
    (``dataset.load_image`` raises ``BadImageError``), in order, each path once.

    Decodes every image (the only way to find truncated files); ``num_workers`` > 0 uses threads.
    """
    first = {}
    for i, (p, _) in enumerate(dataset.samples):
        first.setdefault(p, i)
    paths, rows = list(first), list(first.values())
    if num_workers > 0:
        with ThreadPoolExecutor(num_workers) as pool:
            reasons = list(pool.map(lambda i: _reason(dataset, i), rows, chunksize=64))
    else:
        reasons = [_reason(dataset, i) for i in rows]
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]


def check_policy(bad_files: str) -> str:
    """Validate a ``bad_files`` option value."""
    if bad_files not in BAD_FILES_POLICIES:
        raise ValueError(f"bad_files={bad_files!r}; valid: {', '.join(BAD_FILES_POLICIES)}")
    return bad_files


def screen_images(dataset, bad_files: str = "skip", num_workers: int = 0):
    """``(dataset without bad files, [(path, reason), ...])`` under the ``bad_files`` policy.

    With ``bad_files="error"`` any bad file raises ``BadImageError`` naming the first one and the
    count, before any work is done.
    """
    check_policy(bad_files)
    bad = find_bad_images(dataset, num_workers)
    if bad and bad_files == "error":
        path, reason = bad[0]
        raise BadImageError(path, f"{reason} (and {len(bad) - 1} more bad file(s)); bad_files='error'")
    if bad:
        log.warning("skipping %d bad image file(s) of %s/%s/%s", len(bad), dataset.name,
                    dataset.domain, dataset.split)
    return (dataset.without(p for p, _ in bad) if bad else dataset), bad


def write_bad_files(bad: Iterable[tuple[str, str]], path: str | Path) -> Path:
    """Write ``path<TAB>reason`` lines (the run folder's ``bad_files.txt``); returns the path."""
    path = Path(path)
    text = "".join(f"{p}\t{r}\n" for p, r in bad).encode()
    atomic_write(path, lambda f: f.write(text))  # replaced, never edited in place (run folders are linked)
    return path
