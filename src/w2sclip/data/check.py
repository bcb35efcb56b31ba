"""``w2sclip data check``: counts per domain, split and class, and every problem found.

Problems (exit status 1): a missing split file or domain, a split-file label that disagrees
with its class folder, an unknown class folder, a listed file that is missing, an image that
does not decode, a file in both train and test, no image at all. Notes (no failure): classes without images in a
split (DomainNet's ``t-shirt`` in painting/train), domains not present under the root, test images
that are byte-identical copies of train images (checked with ``images=True``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from w2sclip.data import get_spec
from w2sclip.data.identity import file_digests
from w2sclip.data.images import find_bad_images, is_image_file
from w2sclip.data.split_files import missing_files
from w2sclip.fileio import default_cache_dir

_LIST_MAX = 20


@dataclass
class CheckReport:
    """What ``check_dataset`` found: per-class counts, problems (failures) and notes."""

    name: str
    root: str
    classnames: list[str] = field(default_factory=list)
    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bad_images: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, per_class: bool = True) -> str:
        """The report as text: a summary table, the per-class table, notes and problems."""
        keys = list(self.counts)
        lines = [f"{self.name} at {self.root}", "",
                 f"{'domain':<14}{'split':<8}{'images':>9}{'classes':>9}{'empty':>7}"]
        for d, s in keys:
            c = self.counts[(d, s)]
            lines.append(f"{d:<14}{s:<8}{sum(c):>9}{sum(x > 0 for x in c):>9}"
                         f"{sum(x == 0 for x in c):>7}")
        if per_class and keys:
            heads = [f"{d}/{s}" for d, s in keys]
            widths = [max(len(h), 6) + 2 for h in heads]
            name_w = max((len(n) for n in self.classnames), default=5) + 2
            lines += ["", f"{'label':<6}{'class':<{name_w}}" + "".join(f"{h:>{w}}" for h, w in zip(heads, widths))]
            for i, n in enumerate(self.classnames):
                lines.append(f"{i:<6}{n:<{name_w}}" + "".join(f"{self.counts[k][i]:>{w}}"
                                                              for k, w in zip(keys, widths)))
        for title, items in (("notes", self.notes), ("problems", self.problems)):
            if items:
                lines += ["", f"{title} ({len(items)}):"] + [f"  - {x}" for x in items]
        lines += ["", "OK: no problems found" if self.ok else f"FAILED: {len(self.problems)} problem(s)"]
        return "\n".join(lines)


def _listing(items: list[str]) -> str:
    more = f" ... and {len(items) - _LIST_MAX} more" if len(items) > _LIST_MAX else ""
    return ", ".join(items[:_LIST_MAX]) + more


def check_dataset(name: str, root: str | Path, domains=None, images: bool = True,
                  num_workers: int = 0, **options) -> CheckReport:
    """Load every (domain, split) of ``name`` under ``root`` and report what is wrong.

    ``images=True`` decodes every image (slow on DomainNet: use ``num_workers``).
    """
    spec = get_spec(name)
    root = Path(root).expanduser()
    report = CheckReport(name, str(root))
    if not root.exists():
        report.problems.append(f"root {root} does not exist")
        return report
    present = spec.list_domains(root)
    known = list(spec.domains) or present
    wanted = list(domains) if domains else known
    unknown = [d for d in wanted if d not in known]
    if unknown:
        raise KeyError(f"unknown domain(s) {unknown} for {name}; valid: {', '.join(known)}")
    for d in wanted:
        if d not in present:
            (report.problems if domains else report.notes).append(f"domain {d!r} not found under {root}")
            continue
        _check_domain(spec, root, d, report, images, num_workers, options)
    _note_skipped_files(root, report)
    if not any(sum(c) for c in report.counts.values()) and not report.problems:
        where = f"domains {', '.join(present)}" if present else "no domain folders"
        report.problems.append(f"no images found under {root} ({where}); check the root and the {name} "
                               f"layout (docs/datasets.md; images need a suffix such as .jpg or .png)")
    return report


def _check_domain(spec, root: Path, domain: str, report: CheckReport, images: bool,
                  num_workers: int, options: dict) -> None:
    paths, decoded = {}, set()
    for split in spec.split_names(root, domain):
        where = f"{domain}/{split}"
        errors: list[str] = []
        try:
            ds = spec.load(root, domain, split, errors=errors, **options)
        except (FileNotFoundError, ValueError, KeyError) as e:
            report.problems.append(f"{where}: {e.args[0] if isinstance(e, KeyError) else e}")
            continue
        report.problems += errors
        raw = ds.raw_classnames or ds.classnames
        report.classnames = report.classnames or list(raw)
        counts = [0] * len(raw)
        for lab in ds.labels:
            counts[lab] += 1
        report.counts[(domain, split)] = counts
        empty = [f"{raw[i]} ({i})" for i, c in enumerate(counts) if c == 0]
        if empty:
            report.notes.append(f"{where}: {len(empty)} class(es) without images: {_listing(empty)}")
        listed = [p for p, _ in ds.samples]
        dup = len(listed) - len(set(listed))
        if dup:
            report.problems.append(f"{where}: {dup} file(s) listed more than once")
        missing = missing_files(ds.samples)
        if missing:
            report.problems.append(f"{where}: {len(missing)} listed file(s) missing: {_listing(missing)}")
        if images:  # each file decoded once, even if several splits list it (PACS "all")
            todo = replace(ds, samples=[x for x in ds.samples if x[0] not in decoded])
            decoded.update(listed)
            bad = find_bad_images(todo.without(missing), num_workers)
            report.bad_images += bad
            if bad:
                report.problems.append(f"{where}: {len(bad)} bad image(s): "
                                       f"{_listing([f'{p} ({r})' for p, r in bad])}")
        paths[split] = set(listed)
    if "train" in paths and "test" in paths:
        both = sorted(paths["train"] & paths["test"])
        if both:
            report.problems.append(f"{domain}: {len(both)} file(s) in both train and test: {_listing(both)}")
        if images:
            _note_copies_across_splits(domain, paths, report)


OTHER_IMAGE_SUFFIXES = (".avif", ".heic", ".heif", ".svg", ".jxl", ".psd", ".dng", ".cr2", ".nef", ".raw", ".ico")
"""Image formats that no w2sclip command reads (``images.IMAGE_EXTENSIONS`` lists those it does)."""


def _note_skipped_files(root: Path, report: CheckReport) -> None:
    """A note for files under ``root`` that every scan leaves out: images in formats w2sclip does not
    read (by suffix) and special files (FIFOs, sockets, devices) named like images."""
    other, special = Counter(), 0
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in files:
            suffix = os.path.splitext(f)[1].lower()
            if suffix in OTHER_IMAGE_SUFFIXES:
                other[suffix] += 1
            elif is_image_file(f) and not os.path.isfile(os.path.join(dirpath, f)):
                special += 1
    if other:
        found = ", ".join(f"{n} {s}" for s, n in sorted(other.items()))
        report.notes.append(f"{sum(other.values())} image file(s) in formats w2sclip does not read are left out "
                            f"({found}); convert them to JPEG or PNG to use them")
    if special:
        report.notes.append(f"{special} special file(s) (FIFO, socket, device) named like images are left out")


def _note_copies_across_splits(domain: str, paths: dict[str, set], report: CheckReport) -> None:
    """A note for test images whose bytes equal a train image's (same sha256, as the cache's
    identities compute it): the weak model trained on them (DomainNet has such copies)."""
    train, test = sorted(paths["train"] - paths["test"]), sorted(paths["test"] - paths["train"])
    memo = default_cache_dir(None) / "identity"
    digests = file_digests(train + test, memo / f"check-{domain}.json")
    seen = {d: p for p, d in zip(train, digests[:len(train)]) if not d.startswith("unreadable:")}
    copies = [f"{p} = {seen[d]}" for p, d in zip(test, digests[len(train):]) if d in seen]
    if copies:
        report.notes.append(f"{domain}: {len(copies)} test image(s) are byte-identical copies of train images "
                            f"(same sha256; the weak supervisor trained on them): {_listing(copies)}")
