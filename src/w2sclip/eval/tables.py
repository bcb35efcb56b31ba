"""From records to table cells: grouping, method order and the per-cell values over seeds.

Shared by the report's tables and its plots, so both always show the same numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from w2sclip.eval.pgr import pgr_cells as cells_of


def method_order(methods: Iterable[str]) -> list[str]:
    """``weak``, then the registered methods in registry order, then the ceilings, then the rest."""
    from w2sclip.methods import METHODS

    methods = set(methods)
    first = ["weak"] + list(METHODS)
    ceilings = sorted(m for m in methods if m.startswith("ceiling"))
    rest = sorted(methods - set(first) - set(ceilings))
    return [m for m in first if m in methods] + rest + ceilings


def group_key(r: dict) -> tuple:
    """``(dataset, strong, weak, protocol)``: records of different groups are never pooled. Runs
    fitted with another tuning than the default ``grid`` (``tuning: none``: published defaults)
    form their own groups: their protocol reads ``"<protocol>, tuning none"``."""
    protocol, tuning = r.get("protocol"), r.get("tuning")
    if tuning not in (None, "grid"):
        protocol = f"{protocol}, tuning {tuning}"
    return r.get("dataset"), r["strong"], r["weak"], protocol


def groups(records: list[dict]) -> dict[tuple, list[dict]]:
    """Records split by :func:`group_key`, in order of first appearance."""
    out = defaultdict(list)
    for r in records:
        out[group_key(r)].append(r)
    return dict(out)


def group_title(key: tuple) -> str:
    dataset, strong, weak, protocol = key
    text = f"strong = {strong}, weak = {weak}, dataset = {dataset}"
    return text + (f", protocol = {protocol}" if protocol else "")


def cell_values(recs: list[dict], metric: str) -> tuple[list[str], list[str], dict]:
    """Per-seed values of one group: ``(domains, methods, {(method, domain | "avg"): [value per seed]})``.

    The ``avg`` entry averages over domains within each seed first (seeds that cover every
    domain). PGR has its own cells (:func:`pgr_cells`).
    """
    domains = list(dict.fromkeys(r["domain"] for r in recs))
    methods = method_order({r["method"] for r in recs})
    cells, per_seed = defaultdict(list), defaultdict(list)
    for r in recs:
        cells[(r["method"], r["domain"])].append(r.get(metric))
        per_seed[(r["method"], r["seed"])].append(r)
    for (m, _seed), rs in per_seed.items():
        if len(rs) != len(domains):
            continue
        vals = [r.get(metric) for r in rs]
        cells[(m, "avg")].append(None if None in vals else sum(vals) / len(vals))
    return domains, methods, cells


def pgr_cells(recs: list[dict], per_image: dict | None = None) -> tuple[list[str], list[str], dict]:
    """PGR cells of one group: ``(domains, students, {(method, domain | "avg"): PGRCell})``.

    Each student is measured against its own head's ceiling (the record's ``ceiling`` field;
    ``eval.pgr``). ``per_image[(domain, seed)] = {method: bool array}`` (D_test correctness,
    images in the same order for every seed) adds the test images to the bootstrap."""
    domains = list(dict.fromkeys(r["domain"] for r in recs))
    acc = {(r["method"], r["domain"], r["seed"]): r["accuracy"] for r in recs}
    own = {r["method"]: r.get("ceiling") for r in recs if r.get("ceiling")}
    students = [m for m in method_order({r["method"] for r in recs}) if m in own and not m.startswith("ceiling")]
    out = {}
    for m in students:
        trio = (m, "weak", own[m])
        accs, images = {}, {}
        for d in domains:
            seeds = sorted(s for (mm, dd, s) in acc if mm == m and dd == d
                           and all((t, d, s) in acc for t in trio))
            if not seeds:
                continue
            accs[d] = np.array([[acc[(t, d, s)] for t in trio] for s in seeds])
            if per_image is not None and all(t in per_image.get((d, s), {}) for s in seeds for t in trio):
                images[d] = np.stack([np.stack([per_image[(d, s)][t] for t in trio], axis=1) for s in seeds])
        use_images = images if accs and len(images) == len(accs) else None
        for d, cell in (cells_of(use_images, accs, (0, 1, 2)) if accs else {}).items():
            out[(m, d)] = cell
    return domains, students, out
