"""``file:PATH``: bring-your-own weak predictions, keyed by image path.

Formats (by suffix):

- ``.csv``: header ``path,<class 0>,...,<class C-1>``, one row per image;
- ``.npz`` / ``.pt`` / ``.json``: a mapping with ``paths`` (N strings) and ``logits`` or ``probs``
  (N x C numbers), optionally ``classnames`` (C strings).

Values are probabilities or logits by one rule (``to_logits``; ``weak_options.values`` or the
``probs`` / ``logits`` key declares them): a file whose values all lie in [0, 1] holds
probabilities (renormalised, with a warning when a row is off 1 by more than 1e-3, an error when
further off than rounding explains), one with no row in [0, 1] logits, and a mix is an error
asking to declare. Class columns named like the dataset's classes are reordered to its order; other names
(``0``, ``logit_3``...) are taken in order. Keys match a sample when they equal its absolute path, its
path relative to the dataset root, or any trailing part of its path (``real/cat/001.jpg``); a key
matching several samples is an error. Every sample needs a key; extra keys only warn.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2sclip.models.hub import sha256_file
from w2sclip.models.weak.base import WeakSupervisor

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".npz", ".pt", ".pth", ".json")


def read_predictions(path: str | Path) -> tuple[list[str], np.ndarray, list[str] | None, bool | None]:
    """(paths, values (N, C), class names or None, probs flag from the key name or None) of a file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise ValueError(f"weak predictions file {path} is empty (0 bytes); write the predictions again "
                         f"(format: paths + logits or probs, see docs/backbones.md) or fix the weak=file: path")
    if suffix == ".csv":
        try:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
        except (UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"weak predictions file {path} is not a readable UTF-8 CSV ({e}); write it "
                             f"again") from None
        if not rows or not rows[0] or rows[0][0].strip().lower() != "path":
            raise ValueError(f"{path}: a predictions CSV starts with the header path,<class 0>,...,<class C-1>")
        try:
            values = np.asarray([[float(v) for v in r[1:]] for r in rows[1:]], dtype=np.float64)
        except ValueError as e:
            raise ValueError(f"{path}: non-numeric prediction value ({e})") from None
        return [r[0] for r in rows[1:]], values.reshape(len(rows) - 1, len(rows[0]) - 1), rows[0][1:], None
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unknown predictions format {suffix!r}; use one of {', '.join(SUFFIXES)}")
    try:
        data = _load_mapping(path, suffix)
    except Exception as e:  # noqa: BLE001 - any decoding failure of the user's file is named
        if "allow_pickle" in str(e) and (suffix != ".npz" or zipfile.is_zipfile(path)):
            raise ValueError(f"weak predictions file {path} holds pickled Python objects, which are never "
                             f"loaded; save paths as a string array (np.array(paths, dtype=str)) and the "
                             f"values as a number array") from None
        what = {".npz": "an .npz archive (numpy.savez)", ".json": "JSON"}.get(suffix, "a torch.save file")
        raise ValueError(f"weak predictions file {path} is not readable as {what} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'truncated or corrupt'}); the file is truncated "
                         f"or corrupt: write it again") from None
    if not isinstance(data, dict) or "paths" not in data or not ({"logits", "probs"} & set(data)):
        raise ValueError(f"{path}: expected a mapping with 'paths' and 'logits' or 'probs' "
                         f"(got {sorted(data) if isinstance(data, dict) else type(data).__name__})")
    key = "probs" if "probs" in data else "logits"
    try:
        values = np.asarray(data[key].numpy() if hasattr(data[key], "numpy") else data[key], dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {key!r} must be an N x C array of numbers ({e})") from None
    names = data.get("classnames")
    return ([str(p) for p in list(data["paths"])], values,
            [str(c) for c in list(names)] if names is not None else None, key == "probs")


def _load_mapping(path: Path, suffix: str):
    """The raw content of an .npz / .pt / .json predictions file (arrays loaded, no pickles)."""
    if suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise ValueError("not a zip archive")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix in (".pt", ".pth"):
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    return json.loads(path.read_text())


def _norm(p: str) -> str:
    return os.path.normpath(str(p).replace("\\", "/")).replace("\\", "/")


def match_rows(keys: list[str], sample_paths: list[str], where: str) -> tuple[np.ndarray, list[str]]:
    """Row of ``keys`` for every sample path, and the keys no sample used (see the module doc)."""
    index: dict[str, int] = {}
    for i, k in enumerate(keys):
        k = _norm(k)
        if k in index:
            raise ValueError(f"{where}: key {k!r} appears twice")
        index[k] = i
    rows, missing, owner = np.full(len(sample_paths), -1), [], {}
    for s, path in enumerate(sample_paths):
        parts = _norm(os.path.abspath(path)).split("/")
        for j in range(len(parts)):
            row = index.get("/".join(parts[j:]))
            if row is not None:
                if row in owner:
                    raise ValueError(f"{where}: key {keys[row]!r} matches both {sample_paths[owner[row]]} and "
                                     f"{path}; use paths relative to the dataset root or absolute paths")
                owner[row], rows[s] = s, row
                break
        else:
            missing.append(path)
    if missing:
        raise ValueError(f"{where}: {len(missing)} of {len(sample_paths)} dataset images have no prediction "
                         f"(first: {missing[:3]}); keys must be absolute paths, paths relative to the dataset "
                         f"root or trailing parts of them (example key in the file: {keys[:1]})")
    return rows, [keys[i] for i in range(len(keys)) if i not in owner]


VALUE_KINDS = ("auto", "probs", "logits")
"""``weak_options.values`` of a ``file:`` weak supervisor: what the numbers are."""
EXACT_SUM = 1e-3
"""Probability rows further than this from summing to 1 are renormalised with a warning."""


def sum_slack(num_classes: int) -> float:
    """How far from 1 a row of rounded probabilities may sum: rounding to two decimals moves each of
    C values by up to 0.005, so the sum by up to ``0.005 C``; plus 0.05; at most 0.5 (a row that
    sums to less than 0.5 has lost most of its mass and renormalising it would invent confidence).
    Further off is not a distribution (e.g. independent per-class sigmoids)."""
    return min(0.05 + 0.005 * num_classes, 0.5)


def _unit_rows(values: np.ndarray) -> np.ndarray:
    return (values.min(1) >= -1e-6) & (values.max(1) <= 1 + 1e-6)


def to_logits(values: np.ndarray, declared: str | bool | None, where: str) -> np.ndarray:
    """Logits from the file's numbers, by one documented rule (docs/backbones.md).

    ``declared`` is ``"probs"`` / ``"logits"`` (``weak_options.values``, or the ``probs`` /
    ``logits`` key of an npz/pt/json file; True / False mean the same) or ``"auto"`` / None (CSV
    columns): every value of every row in [0, 1] -> probabilities; no row entirely in [0, 1] ->
    logits; some rows in [0, 1] and some not -> an error asking to declare. Probabilities are
    checked (non-negative, each row summing to 1 within ``sum_slack(C)``), renormalised (with a
    warning when a row is off by more than ``EXACT_SUM``: rounded or truncated probabilities) and
    returned as log-probabilities.
    """
    declared = {True: "probs", False: "logits", None: "auto"}.get(declared, declared)
    if not np.isfinite(values).all():
        raise ValueError(f"{where}: {int((~np.isfinite(values)).any(1).sum())} rows hold NaN or infinite values")
    if declared == "auto":
        unit = _unit_rows(values)
        if unit.all():
            declared = "probs"
        elif unit.any():
            bad = np.flatnonzero(~unit)
            raise ValueError(f"{where}: {int(unit.sum())} rows hold values in [0, 1] like probabilities and "
                             f"{len(bad)} do not (first rows {bad[:5].tolist()}); fix those rows, or say what the "
                             f"numbers are with weak_options: {{values: probs}} or {{values: logits}}")
        elif (values >= 0).all() and np.allclose(values.sum(1), 100.0, rtol=0.01):
            raise ValueError(f"{where}: every row is non-negative and sums to 100: percentages? Divide them by "
                             f"100, or say what the numbers are with weak_options: {{values: probs}} or "
                             f"{{values: logits}}")
        else:
            return values
    if declared == "logits":
        return values
    if values.min() < -1e-6:
        rows = np.flatnonzero(values.min(1) < -1e-6)
        raise ValueError(f"{where}: probabilities must be non-negative; {len(rows)} rows hold negative values "
                         f"(first rows {rows[:5].tolist()}); store logits as logits (weak_options: {{values: logits}})")
    values = np.clip(values, 0, None)
    sums = values.sum(1)
    slack = sum_slack(values.shape[1])
    far = np.abs(sums - 1) > slack
    if far.any():
        raise ValueError(f"{where}: probability rows must sum to 1 (within {slack:.2f} for rounding over "
                         f"{values.shape[1]} classes); {int(far.sum())} sum to {sums[far].min():.3g}..{sums[far].max():.3g} "
                         f"(first rows {np.flatnonzero(far)[:5].tolist()}); store logits as logits "
                         f"(weak_options: {{values: logits}})")
    off = np.abs(sums - 1) > EXACT_SUM
    if off.any():
        warnings.warn(f"{where}: {int(off.sum())} of {len(values)} probability rows sum to "
                      f"{sums.min():.3f}..{sums.max():.3f}, not 1 (rounded?): renormalised", UserWarning, stacklevel=3)
    return np.log(np.clip(values / sums[:, None], 1e-12, None))


def order_columns(values: np.ndarray, names: list[str] | None, classnames: list[str], where: str) -> np.ndarray:
    """Columns in the dataset's class order; checks the class count and class names."""
    c = len(classnames)
    if values.ndim != 2 or values.shape[1] != c:
        got = values.shape[1] if values.ndim == 2 else values.shape
        raise ValueError(f"{where}: predictions have {got} classes but the dataset has {c} "
                         f"({', '.join(classnames[:5])}{', ...' if c > 5 else ''})")
    if not names or list(names) == list(classnames):
        return values
    known = [n for n in names if n in classnames]
    if not known:
        return values  # generic column names: positional
    if sorted(names) != sorted(classnames):
        raise ValueError(f"{where}: class columns {sorted(set(names) - set(classnames))[:5]} are not dataset "
                         f"classes and {sorted(set(classnames) - set(names))[:5]} are missing")
    pos = {n: i for i, n in enumerate(names)}
    return values[:, [pos[n] for n in classnames]]


@dataclass
class FileWeak(WeakSupervisor):
    """Predictions read from a file (format in the module doc); no training, no labels."""

    kind = "file"
    needs_training = False
    protocol = "byo"
    values: str = "auto"
    """What the numbers are: ``auto`` (the rule of ``to_logits``), ``probs`` or ``logits``."""

    def __post_init__(self) -> None:
        p = Path(self.name).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"weak predictions file {p} not found (spec file:PATH)")
        if p.suffix.lower() not in SUFFIXES:
            raise ValueError(f"weak predictions file {p}: unknown format; use one of {', '.join(SUFFIXES)}")
        if self.values not in VALUE_KINDS:
            raise ValueError(f"weak_options.values {self.values!r} unknown; valid: {', '.join(VALUE_KINDS)}")

    def identity(self) -> dict:
        return {"kind": self.kind, "path": str(Path(self.name).expanduser().resolve()),
                "sha256": sha256_file(Path(self.name).expanduser()), "values": self.values}

    def predict_logits(self, dataset) -> np.ndarray:
        """Logits (N, C) float32 in dataset order."""
        where = f"weak predictions {self.name}"
        keys, values, names, probs = read_predictions(Path(self.name).expanduser())
        if len(keys) != len(values):
            raise ValueError(f"{where}: {len(keys)} paths but {len(values)} rows of values")
        values = order_columns(values, names, list(dataset.classnames), where)
        rows, extra = match_rows(keys, [p for p, _ in dataset.samples], where)
        if extra:  # e.g. the other split's images: legal, so not a warning
            log.info("%s: %d keys match no image of this split (first: %s)", where, len(extra), extra[:3])
        declared = self.values
        if probs is not None and declared != "auto" and (declared == "probs") != probs:
            raise ValueError(f"{where}: the file stores {'probs' if probs else 'logits'} but weak_options.values "
                             f"says {declared!r}; drop the option or store the numbers under the right key")
        return to_logits(values[rows], declared if declared != "auto" else probs, where).astype(np.float32)
