"""TEST FIXTURES: tiny generated copies of each dataset's on-disk layout (not real data).

``make_miniature(name, out)`` writes a folder laid out exactly like the real dataset (folder
names, file names, split files in the official format) with small images whose colour and
stripe pattern depend on the class, so a pipeline smoke test learns something. Each miniature
also has classes without images in some split, and ``corrupt=k`` adds k bad files (truncated
JPEG, text named .jpg, empty file) that the split files still list. A ``MINIATURE.txt`` marks it.
"""

from __future__ import annotations

import colorsys
import io
import math
from pathlib import Path

import numpy as np

from w2sclip.data import DATASETS

MINIATURES = ("domainnet", "office_home", "pacs", "vlcs", "folder")
FOLDER_CLASSES = ("Alarm_Clock", "The_Eiffel_Tower", "cat", "t-shirt", "teddy-bear", "TV")
"""Class folders of the generic folder miniature (exercise ``prompt_name``)."""


def draw(label: int, domain_index: int, rng: np.random.Generator, size: int = 32):
    """A ``size`` x ``size`` RGB image: class colour and stripes, per-domain style, some noise."""
    from PIL import Image

    rgb = np.array(colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 0.95))
    angle = (label // 7) % 8 * math.pi / 8 + rng.normal(0, 0.1)
    freq = 1.5 + label % 7
    yy, xx = np.mgrid[0:size, 0:size] / size
    stripes = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle))
                     + rng.uniform(0, 2 * math.pi)) > 0
    img = np.where(stripes[..., None], rgb, 1.0 - 0.5 * rgb)
    if domain_index % 3 == 1:  # a "sketch-like" domain: grey stripes keep only the pattern cue
        img = img.mean(-1, keepdims=True).repeat(3, -1)
    img = img + rng.normal(0, 0.05 + 0.03 * domain_index, img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def _corrupt(path: Path, kind: int) -> None:
    if kind % 3 == 0:  # truncated JPEG: a valid header, half the bytes
        buf = io.BytesIO()
        draw(0, 0, np.random.default_rng(0)).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind % 3 == 1:
        path.write_text("this is not an image\n")
    else:
        path.write_bytes(b"")


def _write_images(out: Path, items: list[tuple[str, int, int]], seed: int, corrupt: int) -> None:
    """Write ``(relative path, label, domain index)`` items; the first ``corrupt`` test-ish
    items (every 7th) are replaced by bad files."""
    rng = np.random.default_rng(seed)
    bad = set(range(3, 3 + 7 * corrupt, 7)) if corrupt else set()
    for i, (rel, label, d) in enumerate(items):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if i in bad:
            _corrupt(path, len([b for b in bad if b < i]))
        else:
            img = draw(label, d, rng)
            img.save(path, quality=90) if path.suffix == ".jpg" else img.save(path)


def _mark(out: Path, name: str) -> Path:
    (out / "MINIATURE.txt").write_text(f"Generated {name} test fixture (w2sclip data make-miniature); "
                                       f"NOT the real dataset.\n")
    return out


def make_miniature(name: str, out: str | Path, *, domains=None, images_per_class: int = 2,
                   seed: int = 0, corrupt: int = 0, split_layout: str = "splits") -> Path:
    """Write the ``name`` miniature into ``out``; returns ``out``.

    ``images_per_class`` per split (datasets without official splits get twice as many per
    domain). ``split_layout`` (DomainNet): ``splits`` = ``out/splits/`` with paths from the root
    (the official files), ``image_list`` = ``out/image_list/`` with paths from the domain folder.
    """
    if name not in MINIATURES:
        raise KeyError(f"no miniature for {name!r}; valid: {', '.join(MINIATURES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    all_domains = ("photo", "sketch") if name == "folder" else DATASETS[name].domains
    domains = tuple(domains or all_domains)
    bad = [d for d in domains if d not in all_domains]
    if bad:
        raise KeyError(f"unknown domain(s) {bad} for {name}; valid: {', '.join(all_domains)}")
    writer = {"domainnet": _domainnet, "office_home": _office_home, "pacs": _pacs, "vlcs": _vlcs,
              "folder": _folder}[name]
    items = writer(out, domains, images_per_class, split_layout)
    _write_images(out, items, seed, corrupt)
    return _mark(out, name)


def _domainnet(out: Path, domains, n: int, split_layout: str) -> list:
    spec = DATASETS["domainnet"]
    if split_layout not in ("splits", "image_list"):
        raise ValueError(f"split_layout={split_layout!r}; valid: splits, image_list")
    items = []
    for d in domains:
        di = spec.domains.index(d)
        lines = {"train": [], "test": []}
        for c, cls in enumerate(spec.classnames):
            k = 0
            for split in ("train", "test"):
                if (cls == "t-shirt" and d == "painting" and split == "train") or \
                        (split == "test" and (c + 3 * di) % 115 == 7):
                    continue  # classes without images in this split (t-shirt as in the real files)
                for _ in range(n):
                    k += 1
                    rel = f"{d}/{cls}/{d}_{c + 1:03d}_{k:06d}.jpg"
                    items.append((rel, c, di))
                    shown = rel if split_layout == "splits" else rel.split("/", 1)[1]
                    lines[split].append(f"{shown} {c}\n")
        for split, rows in lines.items():
            path = out / split_layout / f"{d}_{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(rows))
    return items


def _class_folders(top: str, domain_folder: str, classes, di: int, n: int, name_fmt: str,
                   skip: set[int]) -> list:
    """``(top/domain/class/file, label, domain index)`` for n files per class not in ``skip``."""
    prefix = f"{top}/{domain_folder}" if top else domain_folder
    return [(f"{prefix}/{cls}/{name_fmt.format(k)}", c, di) for c, cls in enumerate(classes)
            if c not in skip for k in range(1, n + 1)]


def _office_home(out: Path, domains, n: int, _layout) -> list:
    spec = DATASETS["office_home"]
    return [it for d in domains for it in _class_folders(
        "OfficeHomeDataset_10072016", spec.domain_folders[d][0], spec.classnames,
        spec.domains.index(d), 2 * n, "{:05d}.jpg", {(7 * spec.domains.index(d) + 3) % 65})]


def _vlcs(out: Path, domains, n: int, _layout) -> list:
    spec = DATASETS["vlcs"]
    return [it for d in domains for it in _class_folders(
        "VLCS", spec.domain_folders[d][0], spec.classnames, spec.domains.index(d), 2 * n,
        "img_{:04d}.jpg", set())]


def _folder(out: Path, domains, n: int, _layout) -> list:
    return [it for i, d in enumerate(domains) for it in _class_folders(
        "", d, FOLDER_CLASSES, i, 2 * n, "{:03d}.png", {i % len(FOLDER_CLASSES)} if i else set())]


def _pacs(out: Path, domains, n: int, _layout) -> list:
    """Official layout: ``kfold/<domain>/<class>/pic_NNN.jpg`` + ``splits/*_kfold.txt`` (1-based
    labels; ``test_kfold`` lists the whole domain, ``crossval`` about one image in four)."""
    spec, items = DATASETS["pacs"], []
    for d in domains:
        di = spec.domains.index(d)
        files = {"train": [], "crossval": [], "test": []}
        for it in _class_folders("kfold", d, spec.classnames, di, 2 * n, "pic_{:03d}.jpg", set()):
            items.append(it)
            rel, c = it[0].split("/", 1)[1], it[1]
            line = f"{rel} {c + 1}\n"
            files["test"].append(line)
            files["crossval" if len(files["test"]) % 4 == 0 else "train"].append(line)
        for s, rows in files.items():
            path = out / "splits" / f"{d}_{s}_kfold.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(rows))
    return items
