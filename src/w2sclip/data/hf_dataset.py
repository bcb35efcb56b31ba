"""``hf:<source>``: an image-classification dataset in Hugging Face ``datasets`` format.

``<source>`` is a hub id (``user/name``; read from the local Hugging Face cache when
``HF_HUB_OFFLINE=1``), a ``save_to_disk`` folder (read with ``datasets.load_from_disk``) or any
other local folder ``datasets.load_dataset`` reads (imagefolder, parquet files, ...). In a config:
``dataset: hf:<source>`` (the library call ``get_dataset("hf", root=<source>)`` is the same).

Options (besides ``splits``, ``test_fraction``, ``split_seed``, see docs/datasets.md):

- ``image_column`` (``image``): a ``datasets.Image`` column.
- ``label_column`` (``label``): a ``ClassLabel`` column (class names come from it), or integer /
  string labels together with ``classnames``. Rows labelled ``-1`` / ``None`` are dropped.
- ``domain_column`` (none): a column naming each row's domain; without it there is one domain,
  ``default``.
- ``classnames``: class names in label order, when the label column is not a ``ClassLabel``.
- ``templates``: prompt templates (``{}`` = class name); default ``"a photo of a {}."``.
- ``train_split`` / ``test_split``: the dataset's split that plays the project's ``train`` /
  ``test`` role (default ``train``, and the first of ``test``, ``validation``, ``valid``, ``val``).
  When the dataset has no such pair (or ``splits=seeded``) train/test is the seeded stratified
  split ``hashed_train_test`` of the named splits, or of all splits when none is named.
- ``subset``: the dataset's configuration name (``load_dataset(source, subset)``).

Samples are ``("hf:<arrow fingerprint>/<row>", label)``; ``HFImageDataset[i]`` decodes the row's
image. Identity is the ``datasets`` fingerprint of each split plus the chosen columns, rows and
class names, so a copy of a saved dataset at another path has the same identity.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from w2sclip.data.folder import DEFAULT_DOMAIN
from w2sclip.data.images import BadImageError, read_image
from w2sclip.data.manifest import ImageDataset
from w2sclip.data.prompts import GENERIC_TEMPLATES, prompt_name
from w2sclip.data.spec import SPLITS, DatasetSpec
from w2sclip.data.splits import hashed_train_test

log = logging.getLogger(__name__)

TEST_SPLIT_NAMES = ("test", "validation", "valid", "val")
HF_OPTIONS = {"image_column": "image", "label_column": "label", "domain_column": None,
              "classnames": None, "templates": None, "train_split": None, "test_split": None,
              "subset": None}


def decode_image(record: dict, key: str, draft: int | None = None):
    """``(image, jpeg)``: an ``Image(decode=False)`` cell (``{"bytes", "path"}``) as an RGB PIL image, by the rules
    of ``open_image`` (EXIF orientation, ``to_rgb``, ``draft`` for JPEGs); raises
    ``BadImageError`` with the reason."""
    data, path = record.get("bytes") if record else None, record.get("path") if record else None
    if data is None:
        if not path:
            raise BadImageError(key, "no image in this row (empty cell)")
        return read_image(path, draft=draft)  # a dataset that stores file paths instead of bytes
    if len(data) == 0:
        raise BadImageError(key, "empty image (0 bytes)")
    return read_image(io.BytesIO(data), draft, key)


@dataclass
class HFImageDataset(ImageDataset):
    """An ``ImageDataset`` whose images are rows of arrow tables, not files.

    ``tables`` maps an arrow fingerprint to that split's image column (undecoded); ``columns``
    are the (image, label, domain) columns the samples were read with.
    """

    tables: dict = field(default_factory=dict, repr=False)
    columns: tuple = ()

    def read_image(self, i: int, draft: int | None = None):
        """``(image, jpeg)`` of sample ``i`` decoded from its arrow row; ``draft`` as for ``open_image``."""
        key = self.samples[i][0]
        fp, _, row = key.removeprefix("hf:").rpartition("/")
        return decode_image(self.tables[fp][int(row)][self.columns[0]], key, draft)

    def content_id(self, memo_dir=None) -> str:
        """Short sha256 of the splits' ``datasets`` fingerprints and sizes, the columns, the
        domain, split, class names and the (row, label) samples; independent of the source path.
        No image is read (``memo_dir`` is accepted for the ``ImageDataset`` signature, unused)."""
        h = hashlib.sha256(json.dumps([
            {fp: len(t) for fp, t in sorted(self.tables.items())}, list(self.columns),
            self.domain, self.split, list(self.raw_classnames or self.classnames)]).encode())
        for key, lab in self.samples:
            h.update(f"\n{key}\t{lab}".encode())
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        """Short sha256 of ``ImageDataset.fingerprint`` (names, templates, samples) and ``content_id``."""
        return hashlib.sha256(f"{super().fingerprint()}:{self.content_id()}".encode()).hexdigest()[:16]


def open_source(source: str, subset: str | None = None) -> dict:
    """``{split name: datasets.Dataset}`` of a hub id or local folder; offline-aware errors."""
    try:
        import datasets
    except ImportError:
        raise ImportError("dataset=hf:<source> needs the `datasets` library: pip install "
                          "'w2sclip[hf]' (or pip install datasets)") from None
    path = Path(source).expanduser()
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
        if subset is not None:
            raise ValueError(f"subset={subset!r} does not apply to the save_to_disk folder {path}; drop it")
        loaded = datasets.load_from_disk(str(path))
    else:
        try:
            loaded = datasets.load_dataset(str(path) if path.is_dir() else source, subset)
        except Exception as e:  # the library raises several types for "not there / not cached"
            if path.is_dir():
                raise
            raise FileNotFoundError(
                f"hf dataset {source!r} could not be loaded ({type(e).__name__}: {e}); it is neither a "
                f"local folder nor a dataset in the Hugging Face cache. Offline (HF_HUB_OFFLINE=1), fetch "
                f"it once on a machine with network (python -c \"import datasets; "
                f"datasets.load_dataset('{source}')\") and copy the cache, or save_to_disk it and use "
                f"dataset=hf:/path/to/folder") from None
    if isinstance(loaded, datasets.Dataset):
        return {str(loaded.split) if loaded.split else "train": loaded}
    return dict(loaded)


def _column(ds, name: str) -> list:
    return ds.select_columns([name]).with_format("arrow")[name].to_pylist()


class HFDataset(DatasetSpec):
    """``hf:<source>``: a ``datasets`` dataset (see the module docstring)."""

    name = "hf"
    description = "a Hugging Face `datasets` dataset: dataset=hf:<hub id or local folder>"
    source = "Hugging Face hub (cached) or a save_to_disk folder"
    citation = "-"
    options = HF_OPTIONS

    def load(self, root, domain: str | None = None, split: str | None = None,
             errors: list | None = None, **options) -> HFImageDataset:
        """One (domain, split) of ``root`` (the source: hub id or folder); ``None`` = the union."""
        if root is None or not str(root):
            raise ValueError("dataset hf needs a source: dataset=hf:<hub id or local folder>, e.g. "
                             "hf:user/name or hf:/data/saved_dataset")
        source, opts = str(root), self.resolve_options(options)
        if split is not None and split not in SPLITS:
            raise KeyError(f"unknown split {split!r} for hf:{source}; valid: {', '.join(SPLITS)}")
        splits = open_source(source, opts["subset"])
        import datasets  # after open_source, which names the fix when the library is missing
        cols = self._check_columns(source, splits, opts)
        raw = self._classnames(source, splits, opts)
        domains = self._domains(splits, opts)
        if domain is not None and domain not in domains:
            raise KeyError(f"unknown domain {domain!r} for hf:{source}; valid: {', '.join(domains)}")
        roles = self._roles(source, splits, opts)
        samples, tables = [], {}
        for hf_split in dict.fromkeys(s for r in ((split,) if split else SPLITS) for s in roles[r]):
            ds = splits[hf_split]
            rows, labels = self._rows(ds, hf_split, raw, domain, opts)
            keep = self._pick(hf_split, rows, labels, roles["seeded"], split, domain, ds, opts)
            if len(keep):
                fp = ds._fingerprint
                tables[fp] = ds.select_columns([cols[0]]).cast_column(cols[0], datasets.Image(decode=False))
                samples += [(f"hf:{fp}/{rows[i]}", int(labels[i])) for i in keep]
        templates = list(opts["templates"] or GENERIC_TEMPLATES)
        if not all(isinstance(t, str) and "{}" in t for t in templates):
            raise ValueError(f"templates={templates!r}: every template needs '{{}}' for the class name, "
                             f"e.g. ['a sketch of a {{}}.']")
        return HFImageDataset(self.name, [prompt_name(c) for c in raw], templates, samples,
                              domain, split, root=source, raw_classnames=list(raw), tables=tables, columns=cols)

    def list_domains(self, root, **options) -> list[str]:
        """Values of ``domain_column`` (``["default"]`` without one)."""
        opts = self.resolve_options(options)
        return self._domains(open_source(str(root), opts["subset"]), opts)

    def has_domain(self, root, domain: str, **options) -> bool:
        return domain in self.list_domains(root, **options)

    # -- pieces of load ------------------------------------------------------------------------

    def _check_columns(self, source: str, splits: dict, opts: dict) -> tuple:
        import datasets

        cols = (opts["image_column"], opts["label_column"], opts["domain_column"])
        for hf_split, ds in splits.items():
            for option, col in zip(("image_column", "label_column", "domain_column"), cols):
                if col is not None and col not in ds.column_names:
                    raise KeyError(f"hf:{source} split {hf_split!r} has no column {col!r}; columns: "
                                   f"{', '.join(ds.column_names)}; set {option}=<one of them>")
            if not isinstance(ds.features[cols[0]], datasets.Image):
                raise ValueError(f"hf:{source} column {cols[0]!r} is {ds.features[cols[0]]!r}, not an "
                                 f"image; set image_column to a datasets.Image column (or cast it: "
                                 f"ds.cast_column({cols[0]!r}, datasets.Image()))")
        return cols

    def _classnames(self, source: str, splits: dict, opts: dict) -> list[str]:
        import datasets

        if opts["classnames"] is not None:
            return [str(c) for c in opts["classnames"]]
        feature = next(iter(splits.values())).features[opts["label_column"]]
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
        raise ValueError(f"hf:{source} label column {opts['label_column']!r} is {feature!r}, not a "
                         f"ClassLabel, so it has no class names; pass classnames=[...] in label order "
                         f"(or set label_column to a ClassLabel column)")

    def _domains(self, splits: dict, opts: dict) -> list[str]:
        import datasets

        col = opts["domain_column"]
        if col is None:
            return [DEFAULT_DOMAIN]
        feature = next(iter(splits.values())).features.get(col)
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
        return sorted({str(v) for ds in splits.values() if col in ds.column_names for v in _column(ds, col)})

    def _roles(self, source: str, splits: dict, opts: dict) -> dict:
        """``{"train": [hf splits], "test": [hf splits], "seeded": bool}``."""
        for option in ("train_split", "test_split"):
            if opts[option] is not None and opts[option] not in splits:
                raise KeyError(f"hf:{source} has no split {opts[option]!r} ({option}); splits: "
                               f"{', '.join(splits)}")
        train = opts["train_split"] or ("train" if "train" in splits else None)
        test = opts["test_split"] or next((s for s in TEST_SPLIT_NAMES if s in splits), None)
        official = train is not None and test is not None and train != test
        if opts["splits"] == "official" and not official:
            raise KeyError(f"splits='official' but hf:{source} has no train/test pair; splits: "
                           f"{', '.join(splits)}; set train_split and test_split, or splits='seeded'")
        if official and opts["splits"] != "seeded":
            return {"train": [train], "test": [test], "seeded": False}
        named = [s for s in (opts["train_split"], opts["test_split"]) if s is not None]
        pool = list(dict.fromkeys(named)) or list(splits)
        return {"train": pool, "test": pool, "seeded": True}

    def _rows(self, ds, hf_split: str, raw: list[str], domain: str | None, opts: dict):
        """Row indices and labels of ``ds`` in ``domain`` (all domains when None), labelled rows only."""
        labels = _column(ds, opts["label_column"])
        index = {c: i for i, c in enumerate(raw)}
        lab = np.array([-1 if v is None else index.get(v, -2) if isinstance(v, str) else int(v)
                        for v in labels], dtype=np.int64)
        bad = np.flatnonzero((lab == -2) | (lab >= len(raw)) | (lab < -1))
        if len(bad):
            raise ValueError(f"split {hf_split!r} row {int(bad[0])}: label {labels[bad[0]]!r} is not a class "
                             f"index in [0, {len(raw)}) nor one of the class names ({len(bad)} such rows)")
        keep = lab >= 0
        if (~keep).any():
            log.warning("hf split %s: %d unlabelled row(s) dropped", hf_split, int((~keep).sum()))
        if domain is not None and opts["domain_column"] is not None:
            feature = ds.features[opts["domain_column"]]
            values = _column(ds, opts["domain_column"])
            names = [feature.int2str(v) if hasattr(feature, "int2str") and v is not None else str(v)
                     for v in values]
            keep &= np.array([n == domain for n in names], dtype=bool)
        rows = np.flatnonzero(keep)
        return rows, lab[rows]

    def _pick(self, hf_split, rows, labels, seeded, split, domain, ds, opts) -> np.ndarray:
        """Positions into ``rows`` (of a split playing ``split``'s role; None: train and test)
        that belong to ``split``: all of them, unless the seeded split divides them."""
        if not seeded or split is None:
            return np.arange(len(rows))
        # seeded split per domain, keyed by (split, row) so it is independent of listing order
        domains = self._row_domains(ds, rows, opts) if domain is None else np.zeros(len(rows), int)
        out = []
        for d in np.unique(domains) if len(rows) else []:
            pos = np.flatnonzero(domains == d)
            keys = [f"{hf_split}/{rows[i]}" for i in pos]
            train, test = hashed_train_test(keys, labels[pos], opts["test_fraction"], opts["split_seed"])
            out.append(pos[train if split == "train" else test])
        return np.sort(np.concatenate(out)) if out else np.zeros(0, int)

    def _row_domains(self, ds, rows, opts) -> np.ndarray:
        if opts["domain_column"] is None:
            return np.zeros(len(rows), int)
        values = _column(ds, opts["domain_column"])
        codes = {v: i for i, v in enumerate(dict.fromkeys(map(str, values)))}
        return np.array([codes[str(values[r])] for r in rows], dtype=np.int64)
