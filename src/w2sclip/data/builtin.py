"""The built-in offline benchmark: a procedural multi-domain image world and its captions.

``make_builtin(out, size="default", seed=0)`` writes images plus ``manifest.csv`` (path, label,
domain, split), ``classnames.txt`` and ``templates.txt``: the generic on-disk format that
``w2sclip.data.manifest`` reads. ``split`` is ``train`` or ``test`` like DomainNet's official
files; D_hold / D_test come from ``test`` (PROTOCOL.md section 1).

Every image is a pure function of (purpose, seed, domain, class, index): the seed sequence of
each image starts with a purpose code, so the pretraining corpus (``render_corpus``) can never
draw an image of the downstream dataset, whatever seeds are chosen.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from w2sclip.data.builtin_render import COLOURS, DOMAINS, STYLE_WORDS, WORLD, check_world, render
from w2sclip.data.builtin_shapes import SHAPES
from w2sclip.fileio import FileLock, atomic_write_json

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
CLASSNAMES: tuple[str, ...] = tuple(SHAPES)
TEMPLATES: tuple[str, ...] = tuple(
    f"{'an' if w[0] in 'aeiou' else 'a'} {w} of a {{}}." for w in STYLE_WORDS.values())
_PURPOSE = {"dataset": 1, "pretrain": 2}
_SPLIT_CODE = {"train": 0, "test": 1}
_COLOUR_CODES = [*COLOURS, "grey"]  # a corpus image's colour code indexes this list ("grey": sketches)


@dataclass(frozen=True)
class BuiltinSize:
    """Images per class and domain in each official-like split."""

    train: int
    test: int


SIZES = {"quick": BuiltinSize(train=30, test=24), "default": BuiltinSize(train=30, test=80)}


def image_rng(purpose: str, seed: int, domain: int, label: int, index: int, split: int = 0
              ) -> np.random.Generator:
    """The generator of one image; ``purpose`` keeps corpus and dataset streams disjoint."""
    return np.random.default_rng([_PURPOSE[purpose], seed, split, domain, label, index])


def draw(label: int, domain: str, rng: np.random.Generator, image_size: int = 64, world: int = WORLD):
    """One image of class ``label`` in ``domain`` of world version ``world`` (``WORLDS``);
    returns (PIL image, colour name)."""
    return render(SHAPES[CLASSNAMES[label]](), domain, rng, image_size, world)


def _write_chunk(args) -> list[tuple[str, int, str, str]]:
    out, seed, domain, split, per_class, image_size, world = args
    rows = []
    d, s = DOMAINS.index(domain), _SPLIT_CODE[split]
    for label, name in enumerate(CLASSNAMES):
        folder = Path(out) / "images" / domain / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img, _ = draw(label, domain, image_rng("dataset", seed, d, label, i, s), image_size, world)
            rel = f"images/{domain}/{split}/{name}/{i:04d}.png"
            img.save(Path(out) / rel)
            rows.append((rel, label, domain, split))
    return rows


def make_builtin(out: str | os.PathLike, size: str | BuiltinSize = "default", seed: int = 0,
                 image_size: int = 64, domains: tuple[str, ...] = DOMAINS, workers: int = 2,
                 world: int = WORLD) -> Path:
    """Write the benchmark to ``out`` (skipped when an identical one is already there);
    ``world``: the world version (``WORLDS``, docs/backbones.md)."""
    check_world(world)
    if isinstance(size, str):
        if size not in SIZES:
            raise KeyError(f"unknown builtin size {size!r}; valid: {', '.join(SIZES)}")
        size = SIZES[size]
    bad = [d for d in domains if d not in DOMAINS]
    if bad:
        raise KeyError(f"unknown domain(s) {bad}; valid: {', '.join(DOMAINS)}")
    out = Path(out)
    info = {"generator_version": GENERATOR_VERSION, "seed": seed, "image_size": image_size,
            "size": asdict(size), "domains": list(domains), "classes": list(CLASSNAMES),
            **({"world": world} if world != 1 else {})}
    info_file = out / "builtin.json"

    def complete() -> bool:
        try:  # read without the lock: a writer may be replacing it, or an old crash left it torn
            return (out / "manifest.csv").exists() and json.loads(info_file.read_text()) == info
        except (OSError, ValueError):
            return False

    if complete():
        log.info("built-in benchmark already at %s", out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    # Parallel runs from an empty cache: one process writes, the others wait and then find it.
    with FileLock(out / ".generate.lock"):
        if complete():
            return out
        _generate(out, info, size, seed, image_size, domains, workers, world)
    return out


def _generate(out: Path, info: dict, size: BuiltinSize, seed: int, image_size: int,
              domains: tuple[str, ...], workers: int, world: int) -> None:
    info_file = out / "builtin.json"
    info_file.unlink(missing_ok=True)  # a changed recipe: the old manifest no longer describes it
    jobs = [(str(out), seed, d, split, getattr(size, split), image_size, world)
            for d in domains for split in ("train", "test")]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            chunks = list(pool.map(_write_chunk, jobs))
    else:
        chunks = [_write_chunk(j) for j in jobs]
    tmp = out / "manifest.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "domain", "split"])
        for rows in chunks:
            w.writerows(rows)
    (out / "classnames.txt").write_text("\n".join(CLASSNAMES) + "\n")
    (out / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    os.replace(tmp, out / "manifest.csv")  # the manifest last: its presence means complete
    atomic_write_json(info_file, info)


CAPTION_FORMS = ("{a} {style} of a {colour} {cls}", "{a} {style} of a {cls}", "a {colour} {cls}",
                 "{cls}, {style}", "{a} {style} showing a {cls}")
OMIT_FORMS = ("{a} {style}", "a {colour} {style}", "{a} {style} i made")


@dataclass(frozen=True)
class CaptionNoise:
    """How the alt-text of one domain names its images' class.

    ``confused``: the fraction of classes whose captions in this domain consistently use another
    class's word (a fixed, seeded map per domain: the systematic naming errors of web alt-text,
    e.g. every doodle of a cup captioned "mug"). The images stay consistently captioned, so the
    features still separate the classes, but the text side learns the wrong word for them.
    ``omit``: the probability that a caption does not name the class at all.
    """

    confused: float = 0.0
    omit: float = 0.0


def _noise(**per_domain: tuple[float, float]) -> dict[str, CaptionNoise]:
    return {d: CaptionNoise(*per_domain.get(d, (0.0, 0.0))) for d in DOMAINS}


# Caption profiles of the pretraining corpora (``w2sclip pretrain --captions NAME``). "clean" names
# every class in the prompts' own words (the checkpoints' first stage). "web", "web-mid",
# "web-noisy" and "web-noisier" make zero-shot trail a linear probe as on real web data: photos
# are captioned well, doodles badly (DomainNet's shape, docs/backbones.md), each with more errors
# than the one before; the shipped checkpoints' second stages use "web-mid" (full) and
# "web-noisier" (limited).
CAPTIONS: dict[str, dict[str, CaptionNoise]] = {
    "clean": _noise(),
    "web": _noise(real=(0.0, 0.1), clipart=(0.35, 0.2), painting=(0.35, 0.2), sketch=(0.4, 0.2),
                  infograph=(0.45, 0.2), quickdraw=(0.85, 0.2)),
    "web-mid": _noise(real=(0.1, 0.25), clipart=(0.55, 0.3), painting=(0.6, 0.3), sketch=(0.55, 0.3),
                      infograph=(0.65, 0.3), quickdraw=(0.875, 0.3)),
    "web-noisy": _noise(real=(0.25, 0.4), clipart=(0.6, 0.4), painting=(0.6, 0.4), sketch=(0.65, 0.4),
                        infograph=(0.7, 0.4), quickdraw=(0.95, 0.4)),
    "web-noisier": _noise(real=(0.4, 0.5), clipart=(0.75, 0.5), painting=(0.75, 0.5), sketch=(0.75, 0.5),
                          infograph=(0.8, 0.5), quickdraw=(0.95, 0.5)),
}


def confusion_map(domain: str, fraction: float) -> dict[int, int]:
    """Class -> the class whose word its captions use in ``domain`` (only the confused classes).

    A seeded order of the classes per domain; the first ``round(fraction * C)`` are confused, each
    captioned with the next one's word (a cycle, so no class keeps its own word). Profiles with a
    larger fraction confuse a superset of the classes.
    """
    order = [int(c) for c in np.random.default_rng([4, DOMAINS.index(domain)]).permutation(len(CLASSNAMES))]
    k = int(round(fraction * len(CLASSNAMES)))
    if k == 1:
        return {order[0]: order[1]}
    return {order[i]: order[(i + 1) % k] for i in range(k)}


def caption_profile(name: str) -> dict[str, CaptionNoise]:
    """The named caption profile; the error lists the valid names."""
    if name not in CAPTIONS:
        raise KeyError(f"unknown caption profile {name!r}; valid: {', '.join(CAPTIONS)}")
    return CAPTIONS[name]


def caption(label: int, domain: str, colour: str, rng: np.random.Generator,
            noise: CaptionNoise | None = None, confusions: dict[int, int] | None = None) -> str:
    """A caption of the pretraining corpus, e.g. 'a clipart of a red star'.

    Without ``noise`` (the "clean" profile) the random draws are exactly those of the first
    shipped checkpoints, so their recipe still reproduces them.
    """
    style = STYLE_WORDS[domain]
    a = "an" if style[0] in "aeiou" else "a"
    if noise is not None and noise.omit > 0 and rng.random() < noise.omit:
        form = OMIT_FORMS[rng.integers(len(OMIT_FORMS))]
        return form.format(a=a, style=style, colour=colour)
    form = CAPTION_FORMS[rng.integers(len(CAPTION_FORMS))]
    if colour in ("grey",) and "{colour}" in form:
        form = CAPTION_FORMS[1]
    word = CLASSNAMES[(confusions or {}).get(label, label)]
    return form.format(a=a, style=style, colour=colour, cls=word)


def _corpus_chunk(args):
    seed, start, stop, domains, image_size, world = args
    imgs = np.empty((stop - start, image_size, image_size, 3), np.uint8)
    meta = np.empty((stop - start, 3), np.int16)
    for j, i in enumerate(range(start, stop)):
        pick = np.random.default_rng([_PURPOSE["pretrain"], seed, i])
        label, domain = int(pick.integers(len(CLASSNAMES))), domains[pick.integers(len(domains))]
        img, colour = draw(label, domain, image_rng("pretrain", seed, DOMAINS.index(domain), label, i),
                           image_size, world)
        imgs[j] = np.asarray(img)
        meta[j] = (label, DOMAINS.index(domain), _COLOUR_CODES.index(colour))
    return imgs, meta


def render_corpus(n: int, seed: int, domains: tuple[str, ...] = DOMAINS, image_size: int = 64,
                  workers: int = 2, world: int = WORLD) -> tuple[np.ndarray, np.ndarray]:
    """Pretraining images (n, H, W, 3) uint8 of world version ``world`` and their
    (label, domain, colour) codes (n, 3)."""
    step = 2000
    check_world(world)
    jobs = [(seed, s, min(s + step, n), tuple(domains), image_size, world) for s in range(0, n, step)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_corpus_chunk, jobs))
    else:
        parts = [_corpus_chunk(j) for j in jobs]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def corpus_caption(meta_row: np.ndarray, rng: np.random.Generator, captions: str = "clean") -> str:
    """Caption of one corpus image from its (label, domain, colour) codes, under a caption profile."""
    domain = DOMAINS[int(meta_row[1])]
    noise = caption_profile(captions)[domain]  # "clean": omit 0 and no confusions, the same draws
    return caption(int(meta_row[0]), domain, _COLOUR_CODES[int(meta_row[2])], rng, noise,
                   _confusions(captions, domain))


@lru_cache(maxsize=None)
def _confusions(captions: str, domain: str) -> dict[int, int]:
    return confusion_map(domain, caption_profile(captions)[domain].confused)


def corpus_definition(captions: str, corpus_size: int, seed: int, domains: tuple[str, ...],
                      image_size: int = 64, world: int = WORLD) -> dict:
    """Everything that decides the captioned corpus (its sha256 goes into a checkpoint's recipe)."""
    profile = caption_profile(captions)
    return {"generator_version": GENERATOR_VERSION, "classes": list(CLASSNAMES),
            "caption_forms": list(CAPTION_FORMS), "omit_forms": list(OMIT_FORMS),
            "captions": captions, "image_size": image_size, "corpus_size": corpus_size, "seed": seed,
            "domains": list(domains),
            "noise": {d: asdict(profile[d]) for d in DOMAINS},
            "confusions": {d: {CLASSNAMES[k]: CLASSNAMES[v] for k, v in _confusions(captions, d).items()}
                           for d in DOMAINS},
            **({"world": world} if world != 1 else {})}
