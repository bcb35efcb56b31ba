"""Files that define a label order (``classnames.txt``): read strictly, never silently reordered.

One class name per line, label ``i`` = line ``i + 1``. UTF-8 with or without a byte-order mark,
LF or CRLF line ends (a file saved by Excel or Notepad reads the same). A blank or whitespace-only
line between names is an error, not skipped: skipping it would shift every later integer label by
one class. Blank lines at the end are ignored (they shift nothing). A name listed twice is an
error naming both lines: two classes would merge and one would stay empty.
"""

from __future__ import annotations

from pathlib import Path


def read_classnames(path: str | Path) -> list[str]:
    """Class names in label order from ``path`` (see the module docstring); ValueError naming the
    file, the line and the fix for a blank line, a duplicate, an empty file or bad UTF-8."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8, one class name per "
                         f"line") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError(f"{path}: no class names; write one class name per line, in label order")
    seen: dict[str, int] = {}
    for i, name in enumerate(lines, start=1):
        if not name:
            raise ValueError(f"{path}, line {i}: blank line between class names; remove it (label {i - 1} "
                             f"and every later label would shift by one class)")
        if name in seen:
            raise ValueError(f"{path}, line {i}: class name {name!r} already on line {seen[name]}; every "
                             f"class needs its own name (two classes would merge)")
        seen[name] = i
    return lines
