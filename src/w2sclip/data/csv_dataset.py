"""CSV manifests: your own list of images, and the built-in benchmark (same format).

``get_dataset("csv", root=ROOT)`` reads::

    ROOT/manifest.csv (or ROOT = the .csv file)   header: path,label[,domain][,split]
    ROOT/classnames.txt                           class names in label order (one per line)
    ROOT/templates.txt                            optional prompt templates, ``{}`` = class name

``path`` is relative to the CSV's folder (or absolute). ``label`` is a class index or a class
name. Without ``classnames.txt`` the labels must be names, and the classes are their sorted set.
Without a ``domain`` column there is one domain, "default". Without a ``split`` column
train/test is the seeded stratified split (``splits.hashed_train_test``, ``test_fraction`` 0.5).
Errors name the file and the line.
"""

from __future__ import annotations

import csv
from pathlib import Path

from w2sclip.data.classnames import read_classnames
from w2sclip.data.folder import DEFAULT_DOMAIN
from w2sclip.data.manifest import ImageDataset, load_manifest
from w2sclip.data.prompts import GENERIC_TEMPLATES, read_templates
from w2sclip.data.spec import DatasetSpec, make_dataset
from w2sclip.data.splits import hashed_train_test


def csv_file(root: Path) -> Path:
    """The manifest of ``root``: the file itself, ``manifest.csv``, or the folder's only .csv."""
    if root.is_file():
        return root
    if (root / "manifest.csv").is_file():
        return root / "manifest.csv"
    found = sorted(root.glob("*.csv"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(f"no manifest.csv in {root} ({len(found)} other .csv files); pass the "
                            f"CSV file itself as root, with header path,label[,domain][,split]")


def read_rows(path: Path) -> tuple[list[dict], list[str]]:
    """Rows of a manifest CSV (with their line numbers as ``_line``) and its columns."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel) is not part of the header
        reader = csv.DictReader(f)
        cols = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = cols
        missing = {"path", "label"} - set(cols)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; the header must be "
                             f"path,label[,domain][,split] (found {cols})")
        rows = [{**r, "_line": i} for i, r in enumerate(reader, start=2)]
    return rows, cols


def _classnames(path: Path, rows: list[dict]) -> list[str]:
    listed = path.parent / "classnames.txt"
    if listed.is_file():
        return read_classnames(listed)
    names = {(r["label"] or "").strip() for r in rows}
    if any(n.isdigit() for n in names):
        raise FileNotFoundError(f"{listed} not found: it is needed for integer labels (one class "
                                f"name per line, in label order)")
    return sorted(names)


def _label(value: str, index: dict[str, int], n: int, where: str) -> int:
    value = (value or "").strip()
    if value in index:
        return index[value]
    if value.isdigit() and int(value) < n:
        return int(value)
    raise ValueError(f"{where}: label {value!r} is neither a class index in [0, {n}) nor a name "
                     f"in classnames.txt")


class CsvDataset(DatasetSpec):
    """A CSV manifest of your own images (see the module docstring)."""

    name = "csv"
    description = "a CSV manifest path,label[,domain][,split] plus classnames.txt"
    source = "your own data"
    citation = "-"

    def list_domains(self, root) -> list[str]:
        rows, cols = read_rows(csv_file(Path(root)))
        return sorted({r["domain"] for r in rows}) if "domain" in cols else [DEFAULT_DOMAIN]

    def split_names(self, root, domain: str) -> tuple[str, ...]:
        rows, cols = read_rows(csv_file(Path(root)))
        if "split" not in cols:
            return ("train", "test")
        return tuple(sorted({r["split"] for r in rows if r.get("domain", DEFAULT_DOMAIN) == domain}))

    def load_domain(self, root: Path, domain: str, split: str, opts: dict,
                    errors: list | None) -> ImageDataset:
        path = csv_file(root)
        rows, cols = read_rows(path)
        raw = _classnames(path, rows)
        index = {c: i for i, c in enumerate(raw)}
        rows = [r for r in rows if r.get("domain", DEFAULT_DOMAIN) == domain]
        base = path.parent
        samples, keys = [], []
        for r in rows:
            try:
                lab = _label(r["label"], index, len(raw), f"{path}:{r['_line']}")
            except ValueError as e:
                if errors is None:
                    raise
                errors.append(str(e))
                continue
            rel = r["path"].strip()
            samples.append((str(base / rel), lab))
            keys.append((rel, r.get("split")))
        if "split" in cols and opts["splits"] != "seeded":
            chosen = [i for i, (_, s) in enumerate(keys) if s == split]
        else:
            train, test = hashed_train_test([k for k, _ in keys], [lab for _, lab in samples],
                                            opts["test_fraction"], opts["split_seed"])
            chosen = train if split == "train" else test
        templates = read_templates(base / "templates.txt") or list(GENERIC_TEMPLATES)
        return make_dataset(self.name, raw, templates, [samples[i] for i in chosen], domain, split,
                            base)


class BuiltinDataset(DatasetSpec):
    """The generated built-in benchmark (``w2sclip data make-builtin``), read as a manifest."""

    name = "builtin"
    description = "the built-in offline benchmark: 24 pictogram classes x 6 styles (generated)"
    source = "generated by `w2sclip data make-builtin` (w2sclip.data.builtin)"
    citation = "-"
    domains = ("real", "clipart", "painting", "sketch", "quickdraw", "infograph")

    def list_domains(self, root) -> list[str]:
        rows, _ = read_rows(csv_file(Path(root)))
        present = {r.get("domain") for r in rows}
        return [d for d in self.domains if d in present]

    def load(self, root, domain=None, split=None, errors=None, **options) -> ImageDataset:
        if options:
            raise ValueError(f"unknown option(s) {sorted(options)} for dataset 'builtin'; it has "
                             f"none (its splits are fixed by the generator)")
        return load_manifest(Path(root).expanduser(), domain, split, "builtin")
