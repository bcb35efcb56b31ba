"""Class-folder datasets: the scanner shared by Office-Home, PACS, VLCS, and the generic ``folder``.

Generic layout (``get_dataset("folder", root=ROOT)``)::

    ROOT/<class>/<image>                       one domain, called "default"
    ROOT/<domain>/<class>/<image>              one domain per folder
    ROOT/[<domain>/]{train,test}/<class>/...   official split folders (``val`` or ``crossval``
                                               stand in for a missing ``test``)
    ROOT/classnames.txt                        optional: class folder names in label order
    ROOT/templates.txt                         optional: prompt templates, ``{}`` = class name

Without split folders, train/test is the seeded stratified split ``hashed_train_test`` of the
files (``test_fraction`` 0.5, ``split_seed`` 0 by default). Classes are the sorted union of
the class folders of all domains unless ``classnames.txt`` fixes the order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from w2sclip.data.classnames import read_classnames
from w2sclip.data.images import is_image_file
from w2sclip.data.manifest import ImageDataset
from w2sclip.data.prompts import GENERIC_TEMPLATES, read_templates, style_templates
from w2sclip.data.spec import DatasetSpec, make_dataset, norm_key
from w2sclip.data.splits import hashed_train_test

SPLIT_DIR_NAMES = ("train", "test", "val", "valid", "validation", "crossval", "full")
_TEST_DIRS = ("test", "val", "validation", "valid", "crossval")
DEFAULT_DOMAIN = "default"
_SKIP_DIRS = {"splits", "image_list", "downloads", "__MACOSX"}


def subdirs(path: Path) -> list[str]:
    """Names of the visible sub-folders of ``path``, sorted."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")
                  and e.name not in _SKIP_DIRS)


def _has_images(path: Path) -> bool:
    return any(e.is_file() and is_image_file(e.name) for e in os.scandir(path))


def split_dirs(domain_dir: Path) -> dict[str, Path] | None:
    """``{"train": dir, "test": dir}`` when ``domain_dir`` holds official split folders."""
    names = {n.lower(): n for n in subdirs(domain_dir)}
    test = next((names[t] for t in _TEST_DIRS if t in names), None)
    if "train" not in names or test is None:
        return None
    return {"train": domain_dir / names["train"], "test": domain_dir / test}


def scan_classes(folder: Path) -> list[tuple[str, str]]:
    """``(class folder, image path)`` for every image under ``folder/<class>/`` (sorted): regular
    files with an image suffix (``images.IMAGE_EXTENSIONS``); special files (a FIFO, a socket, a
    device), which would block or fail when read, are never listed."""
    out = []
    for cls in subdirs(folder):
        for dirpath, dirnames, files in os.walk(folder / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out += [(cls, f"{dirpath}/{f}") for f in sorted(files)
                    if is_image_file(f) and not f.startswith(".") and os.path.isfile(f"{dirpath}/{f}")]
    return out


def labelled(entries, label_of: Callable[[str], int | None], where: Path,
             errors: list | None) -> list[tuple[str, int]]:
    """Samples of scanned entries; an unknown class folder is an error (or recorded in ``errors``)."""
    samples, unknown = [], set()
    for cls, path in entries:
        lab = label_of(cls)
        if lab is None:
            unknown.add(cls)
        else:
            samples.append((path, lab))
    if unknown:
        msg = f"{where}: unknown class folder(s) {sorted(unknown)}"
        if errors is None:
            raise ValueError(msg + "; rename them to the dataset's class names (see `w2sclip data "
                                   "check`) or list them in classnames.txt for a folder dataset")
        errors.append(msg)
    return samples


def folder_split_samples(domain_dir: Path, root: Path, label_of, split: str, opts: dict,
                         errors: list | None = None) -> list[tuple[str, int]]:
    """Samples of ``split`` from ``domain_dir``: its split folders, or the seeded split."""
    official = split_dirs(domain_dir) if opts["splits"] != "seeded" else None
    if opts["splits"] == "official" and official is None:
        raise FileNotFoundError(f"splits='official' but {domain_dir} has no train/ and test/ (or "
                                f"val/) folders; use splits='seeded' (or 'auto')")
    if official is not None:
        return labelled(scan_classes(official[split]), label_of, official[split], errors)
    parts = split_dirs(domain_dir)  # seeded split of a tree that has split folders: pool them
    samples = [s for d in (parts.values() if parts else [domain_dir])
               for s in labelled(scan_classes(d), label_of, d, errors)]
    prefix = f"{root}/"
    keys = [p.removeprefix(prefix) for p, _ in samples]
    train, test = hashed_train_test(keys, [lab for _, lab in samples], opts["test_fraction"],
                                    opts["split_seed"])
    return [samples[i] for i in (train if split == "train" else test)]


class FolderDataset(DatasetSpec):
    """Any ``ROOT/[<domain>/][<split>/]<class>/<image>`` tree (see the module docstring)."""

    name = "folder"
    description = "any folder of class sub-folders, optionally per domain and split"
    source = "your own data"
    citation = "-"

    def _layout(self, root: Path) -> str:
        names = subdirs(root)
        if not names:
            raise FileNotFoundError(f"{root} has no sub-folders: a folder dataset needs "
                                    f"ROOT/[<domain>/]<class>/<image>")
        if {n.lower() for n in names} <= set(SPLIT_DIR_NAMES) and split_dirs(root):
            return "single"
        if any(_has_images(root / n) for n in names):
            return "single"
        return "domains"

    def list_domains(self, root: str | Path) -> list[str]:
        root = Path(root)
        return [DEFAULT_DOMAIN] if self._layout(root) == "single" else subdirs(root)

    def domain_dir(self, root: Path, domain: str) -> Path:
        return root if domain == DEFAULT_DOMAIN and self._layout(root) == "single" else root / domain

    def raw_classnames(self, root: Path) -> list[str]:
        """Class folder names in label order: ``classnames.txt`` or the sorted union of folders."""
        listed = root / "classnames.txt"
        if listed.is_file():
            return read_classnames(listed)
        found = set()
        for d in self.list_domains(root):
            top = self.domain_dir(root, d)
            parts = split_dirs(top)
            for folder in (parts.values() if parts else [top]):
                found.update(subdirs(folder))
        return sorted(found)

    def load_domain(self, root: Path, domain: str, split: str, opts: dict,
                    errors: list | None) -> ImageDataset:
        raw = self.raw_classnames(root)
        index = {c: i for i, c in enumerate(raw)}
        samples = folder_split_samples(self.domain_dir(root, domain), root, index.get, split, opts, errors)
        templates = read_templates(root / "templates.txt") or list(GENERIC_TEMPLATES)
        return make_dataset(self.name, raw, templates, samples, domain, split, root)


class FixedClassFolders(DatasetSpec):
    """A benchmark of class folders with a fixed class list and known domain-folder names."""

    domain_folders: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Domain id -> folder names seen in the wild (first match wins)."""
    wrappers: tuple[str, ...] = ("",)
    """Folders under ROOT that may hold the domain folders (an unpacked archive's top folder)."""
    styles: ClassVar[dict[str, str]] = {}
    numeric_classes: bool = False
    """Whether class folders may be named ``0, 1, ...`` (label = number)."""

    def has_domain(self, root: Path, domain: str) -> bool:
        try:
            self.domain_dir(root, domain)
        except FileNotFoundError:
            return False
        return True

    def domain_dir(self, root: Path, domain: str) -> Path:
        """The folder of ``domain`` under ``root``; the error lists every place looked at."""
        tried = []
        for w in self.wrappers:
            for f in self.domain_folders[domain]:
                p = root / w / f if w else root / f
                if p.is_dir():
                    return p
                tried.append(str(p))
        raise FileNotFoundError(f"{self.name} domain {domain!r} not found; looked at "
                                f"{', '.join(tried)}. {self.manual_download}")

    def label_fn(self) -> Callable[[str], int | None]:
        """Class folder name -> label (case, spaces, ``_``, ``-`` ignored; digits if numeric)."""
        index = {norm_key(c): i for i, c in enumerate(self.classnames)}
        if self.numeric_classes:
            index.update({str(i): i for i in range(len(self.classnames))})
        return lambda folder: index.get(norm_key(folder))

    def load_domain(self, root: Path, domain: str, split: str, opts: dict,
                    errors: list | None) -> ImageDataset:
        samples = folder_split_samples(self.domain_dir(root, domain), root, self.label_fn(), split,
                                       opts, errors)
        return make_dataset(self.name, self.classnames, style_templates(self.styles.get(domain)),
                            samples, domain, split, root)
