"""Class names as prompt text, and the default prompt templates of each dataset.

``prompt_name`` turns a folder-style class name into words CLIP reads naturally:

- ``_`` becomes a space; ``-`` becomes a space except after a single letter, where the hyphen is
  part of the word (``teddy-bear`` -> "teddy bear", ``t-shirt`` and ``x-ray`` stay);
- a name starting with ``The_`` is a proper noun: "The" becomes "the", the other words keep their
  case (``The_Eiffel_Tower`` -> "the Eiffel Tower", ``The_Great_Wall_of_China`` -> "the Great
  Wall of China");
- otherwise capitalised words are lower-cased (``Alarm_Clock`` -> "alarm clock"), CamelCase
  words are split (``ToothBrush`` -> "tooth brush", ``AlarmClock`` -> "alarm clock") and
  all-capital words are kept (``TV``, ``USB_Stick`` -> "USB stick");
- runs of spaces collapse and the ends are stripped.

The raw names stay on the dataset as ``ImageDataset.raw_classnames``.
"""

from __future__ import annotations

import re
from pathlib import Path

GENERIC_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
"""The plain CLIP prompt; every dataset's templates start with it."""

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _word(w: str) -> str:
    if w.isupper() or not w[:1].isupper():
        return w  # "TV", "iPhone", "shirt"
    parts = _CAMEL.split(w)
    return " ".join(p if p.isupper() else p.lower() for p in parts)


def prompt_name(raw: str) -> str:
    """Prompt text of a raw class name (rules in this module's docstring)."""
    keep = "\x00"  # marks the hyphens that belong to the word (single letter before them)
    text = re.sub(r"(?<![A-Za-z])([A-Za-z])-", lambda m: m.group(1) + keep, raw.strip())
    text = text.replace("_", " ").replace("-", " ").replace(keep, "-")
    words = text.split()
    if not words:
        raise ValueError(f"class name {raw!r} is empty")
    if words[0] == "The" and len(words) > 1:
        return " ".join(["the"] + words[1:])
    return " ".join(_word(w) for w in words)


def style_templates(style: str | None) -> list[str]:
    """The generic templates plus ``"<style> of a {}."`` (e.g. "a sketch of a {}.") when given."""
    out = list(GENERIC_TEMPLATES)
    if style and style not in out:
        out.append(style)
    return out


def read_templates(path) -> list[str] | None:
    """Templates from a ``templates.txt`` (one per line, ``{}`` for the class), or None if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    lines = [t.strip() for t in path.read_text(encoding="utf-8-sig").splitlines() if t.strip()]
    bad = [t for t in lines if "{}" not in t]
    if bad:
        raise ValueError(f"{path}: template(s) without '{{}}' for the class name: {bad}")
    return lines
