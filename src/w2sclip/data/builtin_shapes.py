"""Geometry of the built-in benchmark's classes: simple pictograms in unit coordinates.

Each class is a function returning a list of parts ``(kind, points, width)`` in the box
[-1, 1]^2 (y grows downwards, as in images). ``kind`` is ``"fill"`` (a closed polygon that is
part of the object), ``"hole"`` (a closed polygon cut out of the object) or ``"line"`` (an open
polyline drawn with ``width``, in the same units). Renderers decide how to draw the parts.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Part = tuple[str, np.ndarray, float]


def _ellipse(cx: float, cy: float, rx: float, ry: float | None = None, n: int = 36,
             t0: float = 0.0, t1: float = 2 * math.pi) -> np.ndarray:
    ry = rx if ry is None else ry
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _regular(n: int, r: float, rot: float = -math.pi / 2) -> np.ndarray:
    t = rot + np.arange(n) * 2 * math.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def _poly(*pts: tuple[float, float]) -> np.ndarray:
    return np.array(pts, dtype=float)


def circle() -> list[Part]:
    return [("fill", _ellipse(0, 0, 0.9), 0)]


def square() -> list[Part]:
    return [("fill", _rect(-0.8, -0.8, 0.8, 0.8), 0)]


def triangle() -> list[Part]:
    return [("fill", _regular(3, 0.98) + [0, 0.18], 0)]


def star() -> list[Part]:
    outer, inner = _regular(5, 1.0), _regular(5, 0.42, rot=-math.pi / 2 + math.pi / 5)
    pts = np.empty((10, 2))
    pts[0::2], pts[1::2] = outer, inner
    return [("fill", pts + [0, 0.08], 0)]


def heart() -> list[Part]:
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [("fill", np.stack([x, y + 2.5], axis=1) / 17.0, 0)]


def arrow() -> list[Part]:
    return [("fill", _poly((-0.95, -0.2), (0.15, -0.2), (0.15, -0.6), (0.95, 0), (0.15, 0.6),
                           (0.15, 0.2), (-0.95, 0.2)), 0)]


def house() -> list[Part]:
    return [("fill", _rect(-0.65, -0.1, 0.65, 0.9), 0),
            ("fill", _poly((-0.9, -0.05), (0, -0.9), (0.9, -0.05)), 0),
            ("hole", _rect(-0.15, 0.35, 0.15, 0.9), 0)]


def tree() -> list[Part]:
    return [("fill", _rect(-0.14, 0.3, 0.14, 0.97), 0),
            ("fill", _poly((-0.75, 0.4), (0, -0.97), (0.75, 0.4)), 0)]


def moon() -> list[Part]:
    t = np.linspace(-math.pi / 2, math.pi / 2, 24)
    outer = np.stack([-0.9 * np.cos(t), 0.9 * np.sin(t)], axis=1)
    inner = np.stack([-0.3 * np.cos(t[::-1]), 0.9 * np.sin(t[::-1])], axis=1)
    return [("fill", np.concatenate([outer, inner]) + [0.3, 0], 0)]


def cross() -> list[Part]:
    a, b = 0.27, 0.9
    return [("fill", _poly((-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b),
                           (-a, a), (-b, a), (-b, -a), (-a, -a)), 0)]


def diamond() -> list[Part]:
    return [("fill", _poly((0, -0.97), (0.6, 0), (0, 0.97), (-0.6, 0)), 0)]


def hexagon() -> list[Part]:
    return [("fill", _regular(6, 0.92, rot=0), 0)]


def lightning() -> list[Part]:
    return [("fill", _poly((0.2, -0.97), (-0.55, 0.12), (-0.05, 0.12), (-0.3, 0.97),
                           (0.6, -0.18), (0.08, -0.18), (0.4, -0.97)), 0)]


def flower() -> list[Part]:
    petals = [("fill", _ellipse(0.55 * math.cos(a), 0.55 * math.sin(a), 0.36), 0)
              for a in np.arange(5) * 2 * math.pi / 5 - math.pi / 2]
    return petals + [("fill", _ellipse(0, 0, 0.3), 0)]


def umbrella() -> list[Part]:
    canopy = _ellipse(0, 0, 0.92, 0.8, n=24, t0=math.pi, t1=2 * math.pi)
    canopy = np.concatenate([canopy, [[0.92, 0.0], [0.46, -0.12], [0.0, 0.0], [-0.46, -0.12]]])
    hook = np.concatenate([[[0, 0]], _ellipse(-0.2, 0.72, 0.2, 0.2, n=10, t0=0, t1=math.pi)])
    return [("fill", canopy, 0), ("line", hook, 0.12)]


def fish() -> list[Part]:
    return [("fill", _ellipse(-0.15, 0, 0.62, 0.4), 0),
            ("fill", _poly((0.35, 0), (0.97, -0.5), (0.97, 0.5)), 0),
            ("hole", _ellipse(-0.47, -0.1, 0.08), 0)]


def cloud() -> list[Part]:
    return [("fill", _ellipse(-0.5, 0.2, 0.38), 0), ("fill", _ellipse(0.0, -0.08, 0.5), 0),
            ("fill", _ellipse(0.5, 0.2, 0.38), 0), ("fill", _rect(-0.5, 0.1, 0.5, 0.58), 0)]


def bell() -> list[Part]:
    body = np.concatenate([_ellipse(0, -0.3, 0.45, 0.5, n=18, t0=math.pi, t1=2 * math.pi),
                           _poly((0.5, 0.2), (0.85, 0.6), (-0.85, 0.6), (-0.5, 0.2))])
    return [("fill", body, 0), ("fill", _ellipse(0, 0.75, 0.17), 0),
            ("fill", _ellipse(0, -0.85, 0.1), 0)]


def mushroom() -> list[Part]:
    cap = _ellipse(0, 0.05, 0.95, 0.75, n=24, t0=math.pi, t1=2 * math.pi)
    return [("fill", np.concatenate([cap, [[0.95, 0.05]]]), 0),
            ("fill", _rect(-0.25, 0.05, 0.25, 0.9), 0)]


def cup() -> list[Part]:
    handle = _ellipse(0.45, 0.05, 0.35, 0.32, n=14, t0=-math.pi / 2, t1=math.pi / 2)
    return [("fill", _poly((-0.7, -0.65), (0.5, -0.65), (0.38, 0.8), (-0.58, 0.8)), 0),
            ("line", handle, 0.13)]


def ring() -> list[Part]:
    return [("fill", _ellipse(0, 0, 0.92), 0), ("hole", _ellipse(0, 0, 0.5), 0)]


def envelope() -> list[Part]:
    return [("fill", _rect(-0.92, -0.6, 0.92, 0.6), 0),
            ("line", _poly((-0.92, -0.6), (0, 0.12), (0.92, -0.6)), 0.08)]


def sun() -> list[Part]:
    rays = []
    for a in np.arange(8) * math.pi / 4:
        c, s = math.cos(a), math.sin(a)
        rays.append(("line", _poly((0.6 * c, 0.6 * s), (0.97 * c, 0.97 * s)), 0.13))
    return [("fill", _ellipse(0, 0, 0.45), 0)] + rays


def crown() -> list[Part]:
    return [("fill", _poly((-0.9, 0.6), (-0.9, -0.55), (-0.45, 0.0), (0, -0.75), (0.45, 0.0),
                           (0.9, -0.55), (0.9, 0.6)), 0)]


SHAPES: dict[str, Callable[[], list[Part]]] = {
    f.__name__: f for f in (circle, square, triangle, star, heart, arrow, house, tree, moon, cross,
                            diamond, hexagon, lightning, flower, umbrella, fish, cloud, bell,
                            mushroom, cup, ring, envelope, sun, crown)
}
"""Class name -> geometry, in the benchmark's class order."""
