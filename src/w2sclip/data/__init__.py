"""Datasets: images, labels, class names, prompt templates and splits. Nothing about models.

``get_dataset(name, root, domain, split)`` returns an ``ImageDataset``; ``DATASETS`` maps each
name to its family (one file each); ``w2sclip list datasets`` prints them.
"""

from __future__ import annotations

from pathlib import Path

from w2sclip.data.csv_dataset import BuiltinDataset, CsvDataset
from w2sclip.data.domainnet import DomainNet
from w2sclip.data.folder import FolderDataset
from w2sclip.data.images import (
    BadImageError,
    find_bad_images,
    open_image,
    screen_images,
)
from w2sclip.data.manifest import ImageDataset
from w2sclip.data.office_home import OfficeHome
from w2sclip.data.pacs import PACS
from w2sclip.data.prompts import prompt_name
from w2sclip.data.spec import DatasetSpec
from w2sclip.data.vlcs import VLCS

DATASETS: dict[str, DatasetSpec] = {
    "domainnet": DomainNet(),
    "office_home": OfficeHome(),
    "pacs": PACS(),
    "vlcs": VLCS(),
    "folder": FolderDataset(),
    "csv": CsvDataset(),
    "builtin": BuiltinDataset(),
}


def get_spec(name: str) -> DatasetSpec:
    """The registered family ``name``; an unknown name lists the valid ones."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def get_dataset(name: str, root: str | Path, domain: str | None = None, split: str | None = None,
                **options) -> ImageDataset:
    """Samples, class names and templates of one (dataset, domain, split); reads no image.

    ``split`` is an official name (``train`` / ``test``; D_hold and D_test are carved out of
    ``test`` by ``splits.protocol_splits``); ``domain=None`` / ``split=None`` take the union.
    ``options``: ``splits`` (auto | official | seeded), ``test_fraction``, ``split_seed`` and the
    family's own (DomainNet: ``verify_files``). See docs/datasets.md.
    """
    return get_spec(name).load(root, domain, split, **options)


def list_domains(name: str, root: str | Path | None = None) -> list[str]:
    """Domains of ``name`` (found under ``root`` for folder and csv datasets)."""
    spec = get_spec(name)
    if root is None:
        if not spec.domains:
            raise ValueError(f"dataset {name!r} discovers its domains: pass root")
        return list(spec.domains)
    return spec.list_domains(root)


__all__ = ["DATASETS", "BadImageError", "DatasetSpec", "ImageDataset", "find_bad_images",
           "get_dataset", "get_spec", "list_domains", "open_image", "prompt_name", "screen_images"]
