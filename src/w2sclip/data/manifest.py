"""The generic on-disk dataset: ``manifest.csv`` + ``classnames.txt`` [+ ``templates.txt``].

``manifest.csv`` has a header with at least ``path`` and ``label`` and optionally ``domain`` and
``split``. ``label`` is a class index into ``classnames.txt`` (one name per line) or a class name.
Paths are relative to the folder that holds the manifest. The built-in benchmark is written in
this format.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from w2sclip.data.identity import content_id
from w2sclip.data.images import read_image
from w2sclip.data.prompts import GENERIC_TEMPLATES


@dataclass
class ImageDataset:
    """Images of one (dataset, domain, split): ``samples`` are (path, label) pairs.

    ``classnames`` are prompt-ready (``prompt_name`` of the folder names); ``raw_classnames``
    keeps the names as on disk (None for manifest datasets, whose names are already prompt text). ``root`` is the folder the paths
    live under (it makes ``fingerprint`` independent of where the data is mounted).
    """

    name: str
    classnames: list[str]
    templates: list[str]
    samples: list[tuple[str, int]]
    domain: str | None = None
    split: str | None = None
    transform: object = field(default=None, repr=False)
    root: str | None = None
    raw_classnames: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        img = self.load_image(i)
        label = self.samples[i][1]
        return (self.transform(img) if self.transform else img), label

    def read_image(self, i: int, draft: int | None = None):
        """``(image, jpeg)``: sample ``i`` as an RGB PIL image (``w2sclip.data.images.read_image``:
        faithful modes, EXIF orientation, ``draft`` for reduced-size JPEG decoding) and whether it
        was a JPEG; raises ``BadImageError``. Every reader of samples goes through this method,
        so a dataset whose images are not files (``hf:``) overrides only this."""
        return read_image(self.samples[i][0], draft)

    def load_image(self, i: int, draft: int | None = None):
        """Sample ``i`` as an RGB PIL image (see :meth:`read_image`)."""
        return self.read_image(i, draft)[0]

    @property
    def labels(self) -> list[int]:
        return [lab for _, lab in self.samples]

    def with_transform(self, transform) -> ImageDataset:
        return replace(self, transform=transform)

    def without(self, paths: Iterable[str]) -> ImageDataset:
        """A copy without the samples whose path is in ``paths`` (e.g. bad files)."""
        drop = {str(p) for p in paths}
        return replace(self, samples=[s for s in self.samples if s[0] not in drop])

    def relative_samples(self) -> list[tuple[str, int]]:
        """Samples with paths relative to ``root`` (posix separators) when they lie under it."""
        if not self.root:
            return list(self.samples)
        prefix = str(self.root).rstrip("/\\") + os.sep
        n = len(prefix)
        return [((p[n:] if p.startswith(prefix) else p).replace(os.sep, "/"), lab)
                for p, lab in self.samples]

    def content_id(self, memo_dir: str | os.PathLike | None = None) -> str:
        """What the split is (file contents, labels, class list), for cache keys; see
        ``w2sclip.data.identity``. Independent of the root and the file names."""
        return content_id(self, memo_dir)

    def fingerprint(self) -> str:
        """Short sha256 of name, domain, split, class names, templates and relative samples.

        No image is read; two copies of a dataset under different roots have the same print.
        """
        h = hashlib.sha256(json.dumps([self.name, self.domain, self.split, list(self.classnames),
                                       list(self.templates)]).encode())
        for path, lab in self.relative_samples():
            h.update(f"\n{path}\t{lab}".encode())
        return h.hexdigest()[:16]


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def load_manifest(root: str | Path, domain: str | None = None, split: str | None = None,
                  name: str = "manifest") -> ImageDataset:
    """Read a manifest folder, keeping the rows of ``domain`` and ``split`` when given."""
    root = Path(root)
    manifest, names_file = root / "manifest.csv", root / "classnames.txt"
    for f in (manifest, names_file):
        if not f.exists():
            raise FileNotFoundError(f"{f} not found: a manifest dataset needs manifest.csv "
                                    f"(path,label[,domain][,split]) and classnames.txt in {root}")
    classnames = _read_lines(names_file)
    index = {c: i for i, c in enumerate(classnames)}
    templates = _read_lines(root / "templates.txt") if (root / "templates.txt").exists() \
        else list(GENERIC_TEMPLATES)
    samples, domains, splits = [], set(), set()
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{manifest}: missing column(s) {sorted(missing)}; header must hold "
                             f"path,label[,domain][,split]")
        for lineno, row in enumerate(reader, start=2):
            domains.add(row.get("domain"))
            splits.add(row.get("split"))
            if (domain is not None and row.get("domain") != domain) or \
                    (split is not None and row.get("split") != split):
                continue
            samples.append((str(root / row["path"]), _label(row["label"], index, manifest, lineno)))
    if not samples:
        raise ValueError(f"{manifest}: no rows for domain={domain!r}, split={split!r}; domains "
                         f"present: {sorted(d for d in domains if d)}, splits: {sorted(s for s in splits if s)}")
    return ImageDataset(name, classnames, templates, samples, domain, split, root=str(root))


def _label(value: str, index: dict[str, int], manifest: Path, lineno: int) -> int:
    if value in index:
        return index[value]
    try:
        lab = int(value)
    except ValueError:
        raise ValueError(f"{manifest}:{lineno}: label {value!r} is neither a class index nor a "
                         f"name in classnames.txt") from None
    if not 0 <= lab < len(index):
        raise ValueError(f"{manifest}:{lineno}: label {lab} out of range [0, {len(index)})")
    return lab
