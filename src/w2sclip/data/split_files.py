"""Official split files (``<path> <label>`` per line), as DomainNet and PACS ship them.

Two line layouts are in common use and both are read: paths from the dataset root
(``clipart/aircraft_carrier/clipart_001_000001.jpg 0``, the official files) and paths from the
domain folder (``aircraft_carrier/clipart_001_000001.jpg 0``). Extra leading folders
(``domainnet/clipart/...``, ``./clipart/...``) are ignored. Every label is checked against the
class folder of its path: a disagreement is an error naming the file and the line.
"""

from __future__ import annotations

import os
from pathlib import Path

SPLIT_DIRS = ("splits", "image_list", "")
"""Where split files are looked for, in order, relative to the dataset root."""


def find_split_file(root: Path, filename: str, dirs: tuple[str, ...] = SPLIT_DIRS) -> Path | None:
    """The first ``root/<dir>/filename`` that exists, or None."""
    for d in dirs:
        f = root / d / filename if d else root / filename
        if f.is_file():
            return f
    return None


def _class_and_tail(parts: list[str], domain_folder: str, class_index: dict[str, int]):
    for i in range(len(parts) - 3, -1, -1):
        if parts[i] == domain_folder:
            return parts[i + 1], "/".join(parts[i + 2:])
    if len(parts) >= 2 and parts[0] in class_index:
        return parts[0], "/".join(parts[1:])
    return None, None


def read_split_file(path: Path, image_root: Path, domain_folder: str, class_index: dict[str, int],
                    label_offset: int = 0, errors: list | None = None) -> list[tuple[str, int]]:
    """Samples ``(image path, label)`` of a split file; labels are checked against the folders.

    ``class_index`` maps class folder names to labels; ``label_offset`` is subtracted from the
    file's labels (PACS counts from 1). A bad line raises ``ValueError`` naming ``path:line``,
    or is recorded in ``errors`` (and skipped) when a list is given.
    """
    base = f"{image_root}/{domain_folder}/"
    samples: list[tuple[str, int]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            msg = None
            fields = line.rsplit(maxsplit=1)
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                msg = f"expected '<path> <label>', got {line!r}"
            else:
                parts = [p for p in fields[0].replace("\\", "/").split("/") if p not in ("", ".")]
                cls, tail = _class_and_tail(parts, domain_folder, class_index)
                label = int(fields[1]) - label_offset
                if cls is None:
                    msg = (f"path {fields[0]!r} is not '{domain_folder}/<class>/<file>' or "
                           f"'<class>/<file>' with a known class folder")
                elif cls not in class_index:
                    msg = f"unknown class folder {cls!r} in {fields[0]!r}"
                elif label != class_index[cls]:
                    msg = (f"label {fields[1]} but the image is in folder {cls!r}, which is label "
                           f"{class_index[cls] + label_offset} in the official class order")
                else:
                    samples.append((base + cls + "/" + tail, label))
            if msg is not None:
                full = f"{path}:{lineno}: {msg}"
                if errors is None:
                    raise ValueError(full + "; fix or re-download the split file (check it with "
                                            "`w2sclip data check`)")
                errors.append(full)
    return samples


def missing_files(samples: list[tuple[str, int]]) -> list[str]:
    """Paths of ``samples`` that do not exist, with one ``os.scandir`` per folder (no stat each)."""
    listing: dict[str, set[str] | None] = {}
    out = []
    for p, _ in samples:
        folder, _, fname = p.rpartition("/")
        if folder not in listing:
            try:
                listing[folder] = {e.name for e in os.scandir(folder)}
            except (FileNotFoundError, NotADirectoryError):
                listing[folder] = None
        names = listing[folder]
        if names is None or fname not in names:
            out.append(p)
    return out
