"""Datasets: images, labels, class names, prompt templates and splits. Nothing about models.

``get_dataset(name, root, domain, split)`` returns an ``ImageDataset``; ``DATASETS`` maps each
name to its family (one file each); ``w2sclip list datasets`` prints them.
"""

from __future__ import annotations

from pathlib import Path

from w2sclip.data.csv_dataset import BuiltinDataset, CsvDataset
from w2sclip.data.domainnet import DomainNet
from w2sclip.data.folder import FolderDataset
from w2sclip.data.hf_dataset import HFDataset
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
    "hf": HFDataset(),
}
SOURCE_DATASETS = ("hf",)
"""Families whose name may carry their source: ``hf:<hub id or folder>`` (= name ``hf``, root = source)."""


def parse_name(name: str, root: str | Path | None = None) -> tuple[str, str | Path | None]:
    """``("hf:user/data", None)`` -> ``("hf", "user/data")``; other names pass through."""
    family, sep, source = name.partition(":")
    if not sep:
        return name, root
    if family not in SOURCE_DATASETS:
        raise KeyError(f"unknown dataset {name!r}; only {', '.join(f'{f}:<source>' for f in SOURCE_DATASETS)} "
                       f"takes a source; valid names: {', '.join(DATASETS)}")
    if not source:
        raise ValueError(f"dataset {name!r} needs a source: {family}:<hub id or local folder>, e.g. "
                         f"{family}:user/name or {family}:/data/saved_dataset")
    if root is not None and str(root) != source:
        raise ValueError(f"dataset {name!r} names its source and root={str(root)!r} names another; "
                         f"drop root (or use dataset={family} with root=<source>)")
    return family, source


def get_spec(name: str) -> DatasetSpec:
    """The registered family ``name`` (``hf:<source>`` -> ``hf``); an unknown name lists the valid ones."""
    name = parse_name(name)[0]
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def get_dataset(name: str, root: str | Path | None = None, domain: str | None = None, split: str | None = None,
                **options) -> ImageDataset:
    """Samples, class names and templates of one (dataset, domain, split); reads no image.

    ``split`` is an official name (``train`` / ``test``; D_hold and D_test are carved out of
    ``test`` by ``splits.protocol_splits``); ``domain=None`` / ``split=None`` take the union.
    ``options``: ``splits`` (auto | official | seeded), ``test_fraction``, ``split_seed`` and the
    family's own (DomainNet: ``verify_files``; hf: ``image_column``, ...). ``name`` may carry the
    source of an ``hf`` dataset (``"hf:user/data"``; then ``root`` is not needed). See docs/datasets.md.
    """
    name, root = parse_name(name, root)
    return get_spec(name).load(root, domain, split, **options)


def list_domains(name: str, root: str | Path | None = None, **options) -> list[str]:
    """Domains of ``name`` (found under ``root`` for folder, csv and hf datasets; ``options``:
    the hf family's ``domain_column`` and other loading options)."""
    name, root = parse_name(name, root)
    spec = get_spec(name)
    if root is None:
        if not spec.domains:
            raise ValueError(f"dataset {name!r} discovers its domains: pass root")
        return list(spec.domains)
    return spec.list_domains(root, **options) if options else spec.list_domains(root)


__all__ = ["DATASETS", "BadImageError", "DatasetSpec", "ImageDataset", "find_bad_images",
           "get_dataset", "get_spec", "list_domains", "parse_name", "open_image", "prompt_name", "screen_images"]
