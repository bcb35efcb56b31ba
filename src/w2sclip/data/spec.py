"""What every dataset family shares: its identity, its options, domain lookup and splits.

A family (DomainNet, Office-Home, ...) is a ``DatasetSpec`` subclass with class attributes
(``name``, ``domains``, ``description``, ``source``, ``citation``) and a ``load_domain`` method.
``get_dataset`` validates the options and the domain and calls ``load``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import ClassVar

from w2sclip.data.manifest import ImageDataset
from w2sclip.data.prompts import prompt_name

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
"""Split names every dataset has; some have more (PACS: ``val``, ``all``)."""

COMMON_OPTIONS = {"splits": "auto", "test_fraction": 0.5, "split_seed": 0}
"""``splits``: ``auto`` (official when present, else seeded), ``official`` or ``seeded``;
``test_fraction`` / ``split_seed``: the seeded stratified split (``hashed_train_test``)."""


def norm_key(name: str) -> str:
    """Comparison key of a folder name: case, spaces, ``_`` and ``-`` do not matter."""
    return re.sub(r"[\s_\-]+", "_", name.strip()).lower()


class DatasetSpec:
    """A dataset family: identity, options and loading. Subclasses implement ``load_domain``."""

    name: str = ""
    description: str = ""
    source: str = ""
    citation: str = ""
    domains: tuple[str, ...] = ()
    """Canonical domain ids; empty when discovered from the root (folder, csv)."""
    classnames: tuple[str, ...] = ()
    """Raw class names in label order; empty when discovered from the root."""
    options: ClassVar[dict] = {}
    """Extra keyword options of ``load`` with their defaults (besides ``COMMON_OPTIONS``)."""
    downloadable: bool = False
    manual_download: str = ""
    """How to obtain the data by hand (printed by ``w2sclip data download``)."""

    def __repr__(self) -> str:
        return f"<dataset {self.name}: {self.description}>"

    def list_domains(self, root: str | Path) -> list[str]:
        """Domain ids present under ``root`` (in the dataset's order)."""
        return [d for d in self.domains if self.has_domain(Path(root), d)]

    def has_domain(self, root: Path, domain: str) -> bool:
        """Whether ``domain``'s images are under ``root``."""
        return (root / domain).is_dir()

    def split_names(self, root: str | Path, domain: str) -> tuple[str, ...]:
        """Splits of ``domain`` that ``load`` accepts."""
        return SPLITS

    def resolve_options(self, options: dict) -> dict:
        """``options`` merged over the defaults; an unknown option lists the valid ones."""
        valid = {**COMMON_OPTIONS, **self.options}
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for dataset {self.name!r}; valid: "
                             f"{', '.join(sorted(valid))}")
        out = {**valid, **options}
        if out["splits"] not in ("auto", "official", "seeded"):
            raise ValueError(f"splits={out['splits']!r}; valid: auto, official, seeded")
        return out

    def load(self, root: str | Path, domain: str | None = None, split: str | None = None,
             errors: list | None = None, **options) -> ImageDataset:
        """One (domain, split); ``domain=None`` is the union of all domains, ``split=None`` of
        all splits. ``errors``: collect split-file problems there instead of raising."""
        root = Path(root).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"dataset root {root} not found (dataset {self.name!r}); "
                                    f"see `w2sclip data download {self.name} --root {root}`")
        opts = self.resolve_options(options)
        domains = list(self.domains) or self.list_domains(root)
        if domain is not None and domain not in domains:
            raise KeyError(f"unknown domain {domain!r} for {self.name}; valid: {', '.join(domains)}")
        if domain is None:
            domains = self.list_domains(root)
            if not domains:
                raise FileNotFoundError(f"no {self.name} domain found under {root}")
        parts = []
        for d in ([domain] if domain is not None else domains):
            valid = self.split_names(root, d)
            if split is not None and split not in valid:
                raise KeyError(f"unknown split {split!r} for {self.name}/{d}; valid: {', '.join(valid)}")
            for s in ([split] if split is not None else SPLITS):
                parts.append(self.load_domain(root, d, s, opts, errors))
        return _merge(parts, domain, split)

    def load_domain(self, root: Path, domain: str, split: str, opts: dict,
                    errors: list | None) -> ImageDataset:
        raise NotImplementedError


def _merge(parts: list[ImageDataset], domain: str | None, split: str | None) -> ImageDataset:
    first = parts[0]
    samples = [s for p in parts for s in p.samples]
    return ImageDataset(first.name, first.classnames, first.templates if domain else
                        list(dict.fromkeys(t for p in parts for t in p.templates)),
                        samples, domain, split, root=first.root, raw_classnames=first.raw_classnames)


def make_dataset(name: str, raw_classnames, templates, samples, domain, split, root) -> ImageDataset:
    """An ``ImageDataset`` with prompt-ready class names; logs classes without images."""
    raw = list(raw_classnames)
    present = {lab for _, lab in samples}
    empty = [raw[i] for i in range(len(raw)) if i not in present]
    if empty:
        log.info("%s/%s/%s: %d class(es) without images: %s", name, domain, split, len(empty),
                 ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""))
    names = [prompt_name(c) for c in raw]
    return ImageDataset(name, names, list(templates), samples, domain, split, root=str(root),
                        raw_classnames=raw)
