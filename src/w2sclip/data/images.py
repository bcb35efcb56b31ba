"""Reading images safely: bad files (unreadable, truncated, not an image) raise one clear error.

``open_image`` fully decodes a file, so a truncated JPEG fails here rather than later inside a
batch. ``find_bad_images`` scans a dataset; ``screen_images`` applies the ``bad_files`` policy
(``"skip"``: drop and list them, ``"error"``: stop with the list). Long jobs call these before
they start, or catch ``BadImageError`` per sample, so a bad file never crashes a job halfway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

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


def open_image(path: str | Path):
    """The image at ``path`` as a fully loaded RGB ``PIL.Image``; raises ``BadImageError``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            return img.convert("RGB")
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except Image.UnidentifiedImageError:
        empty = Path(path).stat().st_size == 0
        raise BadImageError(path, "empty file (0 bytes)" if empty else "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise BadImageError(path, f"unreadable or truncated ({type(e).__name__}: {e})") from None


def _reason(path: str) -> str | None:
    try:
        open_image(path)
    except BadImageError as e:
        return e.reason
    return None


def find_bad_images(dataset, num_workers: int = 0) -> list[tuple[str, str]]:
    """``(path, reason)`` of every sample of ``dataset`` that ``open_image`` rejects, in order.

    Decodes every image (the only way to find truncated files); ``num_workers`` > 0 uses threads.
    """
    paths = list(dict.fromkeys(p for p, _ in dataset.samples))
    if num_workers > 0:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(num_workers) as pool:
            reasons = list(pool.map(_reason, paths, chunksize=64))
    else:
        reasons = [_reason(p) for p in paths]
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
    path.write_text("".join(f"{p}\t{r}\n" for p, r in bad))
    return path
