"""Rendering styles of the built-in benchmark: one function per domain.

Every renderer takes the class geometry (see ``builtin_shapes``), a numpy ``Generator``, an
output size and the world version, and returns ``(PIL.Image RGB, colour name)``. Drawing happens at twice the size and
is downsampled, so edges are antialiased. Everything random comes from the generator, so an
image is a pure function of (class, domain, seed).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from w2sclip.data.builtin_shapes import SHAPES, Part

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 35, 40), "orange": (240, 130, 20), "yellow": (235, 205, 30),
    "green": (40, 160, 60), "blue": (40, 80, 210), "purple": (130, 50, 170),
    "pink": (240, 120, 170), "brown": (120, 75, 40), "cyan": (30, 190, 200),
    "black": (25, 25, 25),
}
DOMAINS = ("real", "clipart", "painting", "sketch", "quickdraw", "infograph")
WORLDS = (1, 2)
"""World versions. 1: the first world (the first shipped checkpoints were pretrained on it; its
run folders keep their names). 2: the default since the recalibration of issue 11
(docs/backbones.md), in DomainNet's regime: the line-drawing domains get harder
(clipart: a second, smaller object of a random class and patterned backdrops; sketch: partial,
shakier outlines and stray strokes; quickdraw: incomplete, wobblier strokes, more rotation and
stray scribbles) and the textured ones easier (real and painting: larger objects, calmer
backgrounds). Version 1's images are unchanged draw for draw."""
WORLD = 2
"""The default world version: the one the shipped ``full``/``limited`` checkpoints were pretrained on."""
STYLE_WORDS = {"real": "photo", "clipart": "clipart", "painting": "painting",
               "sketch": "sketch", "quickdraw": "doodle", "infograph": "infographic"}


def _place(parts: list[Part], rng: np.random.Generator, size: int, scale: tuple[float, float],
           max_rot: float = 35.0) -> list[Part]:
    """Random scale, rotation, aspect jitter and position, in pixel coordinates."""
    half = rng.uniform(*scale) * size / 2
    a = math.radians(rng.uniform(-max_rot, max_rot))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    stretch = np.array([rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)])
    margin = size / 2 - half * 1.05
    centre = size / 2 + rng.uniform(-1, 1, size=2) * max(margin, 0)
    return [(k, (pts * stretch) @ rot.T * half + centre, w * half) for k, pts, w in parts]


def _mask(parts: list[Part], size: int) -> Image.Image:
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    for kind, pts, w in parts:
        xy = [tuple(p) for p in pts]
        if kind == "fill":
            d.polygon(xy, fill=255)
        elif kind == "line":
            d.line(xy, fill=255, width=max(1, int(round(w))), joint="curve")
    for kind, pts, _ in parts:
        if kind == "hole":
            d.polygon([tuple(p) for p in pts], fill=0)
    return m


def _outline(draw: ImageDraw.ImageDraw, parts: list[Part], colour, width: int,
             rng: np.random.Generator | None = None, jitter: float = 0.0) -> None:
    for kind, pts, w in parts:
        p = pts if rng is None else pts + rng.normal(0, jitter, size=pts.shape)
        xy = [tuple(q) for q in p]
        if kind == "line":
            draw.line(xy, fill=colour, width=max(width, int(round(w * 0.6))), joint="curve")
        else:
            draw.line(xy + [xy[0]], fill=colour, width=width, joint="curve")


def _noise(rng: np.random.Generator, size: int, cells: int, amp: float) -> np.ndarray:
    """Smooth random field in [-amp, amp], shape (size, size, 1)."""
    small = rng.uniform(-amp, amp, size=(cells, cells)).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(img)[..., None]


def _jitter_colour(rng: np.random.Generator, rgb, amount: float = 25) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.normal(0, amount, 3), 0, 255)


def _pick_colour(rng: np.random.Generator, exclude: tuple[str, ...] = ()) -> str:
    names = [c for c in COLOURS if c not in exclude]
    return names[rng.integers(len(names))]


def _composite(bg: np.ndarray, fg: np.ndarray, mask: Image.Image) -> np.ndarray:
    m = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    return bg * (1 - m) + fg * m


def render_real(parts, rng, size, world=1):
    amp, scale = (35, (0.5, 0.9)) if world == 1 else (20, (0.65, 0.95))
    name = _pick_colour(rng)
    c1, c2 = rng.uniform(60, 230, 3), rng.uniform(60, 230, 3)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    bg = c1 * (1 - ramp) + c2 * ramp + _noise(rng, size, 6, amp) + rng.normal(0, 6, (size, size, 3))
    placed = _place(parts, rng, size, scale)
    mask = _mask(placed, size)
    shadow = mask.filter(ImageFilter.GaussianBlur(size / 40))
    off = int(size * rng.uniform(0.02, 0.05))
    shadow = Image.fromarray(np.roll(np.asarray(shadow), (off, off), axis=(0, 1)))
    bg = _composite(bg, bg * 0.45, shadow)
    light = np.linspace(1.25, 0.7, size, dtype=np.float32)
    light = light[None, :, None] if rng.random() < 0.5 else light[:, None, None]
    fg = _jitter_colour(rng, COLOURS[name]) * light + _noise(rng, size, 8, 18)
    out = _composite(bg, fg, mask.filter(ImageFilter.GaussianBlur(1.0)))
    return out, name


def render_clipart(parts, rng, size, world=1):
    name = _pick_colour(rng, exclude=("black",))
    bg = np.full((size, size, 3), 255.0) if rng.random() < 0.6 else \
        np.full((size, size, 3), rng.uniform(200, 255, 3))
    other = None
    if world >= 2:
        if rng.random() < 0.5:  # patterned backdrop
            pat = Image.fromarray(bg.astype(np.uint8))
            pd = ImageDraw.Draw(pat)
            for _ in range(int(rng.integers(3, 8))):
                x, r = rng.uniform(0, size, 2), rng.uniform(size * 0.1, size * 0.3)
                pd.ellipse([x[0] - r, x[1] - r, x[0] + r, x[1] + r],
                           fill=tuple(int(v) for v in _jitter_colour(rng, COLOURS[_pick_colour(rng)], 30) * 0.5 + 120))
            bg = np.asarray(pat, dtype=np.float32)
        other = _place(_random_shape(rng), rng, size, (0.3, 0.5))  # a smaller object of any class
        dcol = COLOURS[_pick_colour(rng, exclude=("black", name))]
        bg = _composite(bg, np.broadcast_to(np.asarray(dcol, np.float32), (size, size, 3)), _mask(other, size))
    placed = _place(parts, rng, size, (0.55, 0.95) if world == 1 else (0.5, 0.9))
    fg = np.broadcast_to(np.asarray(COLOURS[name], np.float32), (size, size, 3))
    img = Image.fromarray(_composite(bg, fg, _mask(placed, size)).astype(np.uint8))
    if other is not None:
        _outline(ImageDraw.Draw(img), other, (0, 0, 0), width=int(size * 0.03))
    _outline(ImageDraw.Draw(img), placed, (0, 0, 0), width=int(size * rng.uniform(0.035, 0.06)))
    return np.asarray(img, dtype=np.float32), name


def render_painting(parts, rng, size, world=1):
    name = _pick_colour(rng)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.uniform(90, 200, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(20):
        x, r = rng.uniform(0, size, 2), rng.uniform(size * 0.08, size * 0.3)
        d.ellipse([x[0] - r, x[1] - r * 0.6, x[0] + r, x[1] + r * 0.6],
                  fill=tuple(int(v) for v in rng.uniform(60, 220, 3)))
    bg = np.asarray(img.filter(ImageFilter.GaussianBlur(size / 25)), dtype=np.float32)
    placed = _place(parts, rng, size, (0.55, 0.9) if world == 1 else (0.65, 0.95))
    strokes = Image.new("RGB", (size, size), tuple(int(v) for v in COLOURS[name]))
    d = ImageDraw.Draw(strokes)
    for _ in range(60):
        x, r = rng.uniform(0, size, 2), rng.uniform(size * 0.02, size * 0.06)
        c = _jitter_colour(rng, COLOURS[name], 45)
        d.ellipse([x[0] - 2 * r, x[1] - r, x[0] + 2 * r, x[1] + r], fill=tuple(int(v) for v in c))
    mask = _mask(placed, size).filter(ImageFilter.GaussianBlur(size / 60))
    mask = Image.fromarray(np.clip(np.asarray(mask) * 1.0 + _noise(rng, size, 16, 60 if world == 1 else 35)[..., 0], 0, 255)
                           .astype(np.uint8))
    out = _composite(bg, np.asarray(strokes, dtype=np.float32), mask)
    out = np.asarray(Image.fromarray(out.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2)),
                     dtype=np.float32)
    return out + rng.normal(0, 8, out.shape), name


def render_sketch(parts, rng, size, world=1):
    paper = rng.uniform(225, 250) + _noise(rng, size, 24, 6) + rng.normal(0, 5, (size, size, 1))
    img = Image.fromarray(np.clip(np.repeat(paper, 3, axis=2), 0, 255).astype(np.uint8))
    placed = _place(parts, rng, size, (0.55, 0.95))
    d = ImageDraw.Draw(img)
    grey = int(rng.uniform(40, 120))
    drawn = placed if world == 1 else [_partial(p, rng, 0.5) for p in placed]
    for _ in range(int(rng.integers(2, 4))):
        _outline(d, drawn, (grey,) * 3, width=max(1, int(size * 0.015)), rng=rng,
                 jitter=size * (0.012 if world == 1 else 0.02))
    if world >= 2:
        _scribbles(d, rng, size, int(rng.integers(1, 4)), (grey,) * 3, max(1, int(size * 0.015)))
    if rng.random() < 0.7:  # pencil hatching inside the object
        hatch = Image.new("L", (size, size), 0)
        hd = ImageDraw.Draw(hatch)
        step, slope = size * rng.uniform(0.04, 0.07), rng.uniform(-1.5, 1.5)
        for x0 in np.arange(-size, 2 * size, step):
            hd.line([(x0, 0), (x0 + slope * size, size)], fill=255, width=max(1, int(size * 0.008)))
        m = np.asarray(hatch, np.float32) * (np.asarray(_mask(placed, size), np.float32) / 255)
        arr = np.asarray(img, np.float32)
        return _composite(arr, np.full_like(arr, grey + 40), Image.fromarray(m.astype(np.uint8))), "grey"
    return np.asarray(img, dtype=np.float32), "grey"


def _wobble(pts: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    n = max(len(pts) * 4, 12)
    t = np.linspace(0, len(pts) - 1, n)
    dense = np.stack([np.interp(t, np.arange(len(pts)), pts[:, i]) for i in range(2)], axis=1)
    drift = np.cumsum(rng.normal(0, amount, size=dense.shape), axis=0)
    return dense + drift - np.linspace(0, 1, n)[:, None] * drift[-1] * rng.uniform(0.3, 1.0)


def _partial(part: Part, rng: np.random.Generator, p: float) -> Part:
    """The part as an open line; with probability ``p`` drawn only in part (55-90 % of its
    length), as hand drawings often are."""
    kind, pts, w = part
    if kind != "line":
        pts = np.concatenate([pts, pts[:1]])
    if rng.random() < p and len(pts) > 2:
        n = len(pts)
        keep = max(2, int(n * rng.uniform(0.55, 0.9)))
        start = int(rng.integers(n))
        pts = pts[(start + np.arange(keep)) % n] if kind != "line" else pts[:keep]
    return ("line", pts, w)


def _scribbles(d: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, n: int, colour, width: int) -> None:
    """``n`` stray strokes (random walks of 4-7 points) anywhere in the image."""
    for _ in range(n):
        p = rng.uniform(0, size, 2)
        pts = [tuple(p)]
        for _ in range(int(rng.integers(3, 7))):
            p = np.clip(p + rng.normal(0, size * 0.12, 2), 0, size)
            pts.append(tuple(p))
        d.line(pts, fill=colour, width=width, joint="curve")


def _random_shape(rng: np.random.Generator) -> list[Part]:
    names = list(SHAPES)
    return SHAPES[names[rng.integers(len(names))]]()


def render_quickdraw(parts, rng, size, world=1):
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    if world == 1:
        placed = _place(parts, rng, size, (0.6, 0.98), max_rot=50)
        width = max(1, int(size * rng.uniform(0.012, 0.025)))
        for kind, pts, _ in placed:
            if kind != "line":
                pts = np.concatenate([pts, pts[:1]])
            wob = _wobble(pts, rng, size * 0.006)
            d.line([tuple(p) for p in wob], fill=(0, 0, 0), width=width, joint="curve")
        return np.asarray(img, dtype=np.float32), "black"
    placed = _place(parts, rng, size, (0.5, 0.98), max_rot=70)
    width = max(1, int(size * rng.uniform(0.012, 0.025)))
    for _, pts, _ in [_partial(p, rng, 0.7) for p in placed]:
        wob = _wobble(pts, rng, size * 0.012)
        d.line([tuple(p) for p in wob], fill=(0, 0, 0), width=width, joint="curve")
    _scribbles(d, rng, size, int(rng.integers(0, 3)), (0, 0, 0), width)
    return np.asarray(img, dtype=np.float32), "black"


def render_infograph(parts, rng, size, world=1):
    name = _pick_colour(rng, exclude=("black",))
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.uniform(200, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 16))):  # lines of "text"
        x, y = rng.uniform(0, size * 0.8), rng.uniform(0, size)
        while x < size:
            w = rng.uniform(size * 0.02, size * 0.09)
            d.rectangle([x, y, x + w, y + size * 0.018], fill=(70, 70, 70))
            x += w + size * 0.025
            if rng.random() < 0.15:
                break
    x0, y0 = rng.uniform(0, size * 0.7, 2)
    for i in range(int(rng.integers(3, 6))):  # a small bar chart
        h = rng.uniform(size * 0.05, size * 0.2)
        colour = tuple(int(v) for v in _jitter_colour(rng, COLOURS[_pick_colour(rng)], 10))
        d.rectangle([x0 + i * size * 0.05, y0 + size * 0.2 - h, x0 + i * size * 0.05 + size * 0.035,
                     y0 + size * 0.2], fill=colour)
    placed = _place(parts, rng, size, (0.3, 0.5), max_rot=15)
    bg = np.asarray(img, dtype=np.float32)
    fg = np.broadcast_to(np.asarray(COLOURS[name], np.float32), bg.shape)
    return _composite(bg, fg, _mask(placed, size)), name


RENDERERS: dict[str, Callable] = {
    "real": render_real, "clipart": render_clipart, "painting": render_painting,
    "sketch": render_sketch, "quickdraw": render_quickdraw, "infograph": render_infograph,
}


def check_world(world: int) -> int:
    if world not in WORLDS:
        raise KeyError(f"unknown world version {world!r}; valid: {', '.join(map(str, WORLDS))}")
    return world


def render(parts: list[Part], domain: str, rng: np.random.Generator, size: int = 64, world: int = WORLD
           ) -> tuple[Image.Image, str]:
    """Draw one object of geometry ``parts`` in ``domain`` style of world version ``world``;
    returns (RGB image, colour)."""
    if domain not in RENDERERS:
        raise KeyError(f"unknown domain {domain!r}; valid: {', '.join(RENDERERS)}")
    big = 2 * size
    arr, colour = RENDERERS[domain](parts, rng, big, check_world(world))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img.resize((size, size), Image.BILINEAR), colour
