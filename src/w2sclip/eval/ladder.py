"""The pretraining ladder: each method's gain against the strong model's pretraining samples seen.

For every (dataset, weak, protocol) with at least two strong models of known pretraining size
(``models.strong.scale.pretraining_samples``), per strong model, method and domain (and the
domain average): the gain over zero-shot and over KD+LP (accuracy points, mean over the seeds
both were run with, paired per seed) and the PGR against the method's own ceiling (the point
estimate of ``eval.pgr``, from seed-mean accuracies). Shared by the report's table and figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from w2sclip.eval.tables import groups, method_order, pgr_cells

REFERENCES = ("zero_shot", "kd_lp")
"""The gains are measured against these methods (the paper's two reference points)."""


@dataclass
class Rung:
    """One strong model of a ladder: its samples seen and its per-cell numbers."""

    strong: str
    samples: float
    gain: dict[tuple[str, str, str], float | None] = field(default_factory=dict)
    """(reference, method, domain | "avg") -> mean over seeds of accuracy(method) - accuracy(reference)."""
    pgr: dict[tuple[str, str], float | None] = field(default_factory=dict)
    """(method, domain | "avg") -> PGR against the method's own ceiling."""


@dataclass
class Ladder:
    dataset: str
    weak: str
    protocol: str | None
    domains: list[str]
    methods: list[str]
    rungs: list[Rung]
    unknown: list[str]
    """Strong models of the group whose pretraining size is unknown (left out)."""


def _gains(recs: list[dict], ref: str) -> dict[tuple[str, str], float | None]:
    """(method, domain | "avg") -> mean over seeds of the per-seed difference to ``ref``."""
    domains = list(dict.fromkeys(r["domain"] for r in recs))
    acc = {(r["method"], r["domain"], r["seed"]): r["accuracy"] for r in recs}
    methods = {m for m, _, _ in acc}
    out = {}
    if ref not in methods:
        return out
    for m in methods - {ref, "weak"}:
        if m.startswith("ceiling"):
            continue
        for d in domains:
            diffs = [a - acc[(ref, d, s)] for (mm, dd, s), a in acc.items() if (mm, dd) == (m, d) and (ref, d, s) in acc]
            out[(m, d)] = sum(diffs) / len(diffs) if diffs else None
        per_dom = [out[(m, d)] for d in domains]
        out[(m, "avg")] = None if None in per_dom else sum(per_dom) / len(per_dom)
    return out


def ladders(records: list[dict], per_image: dict[tuple, dict | None] | None = None) -> list[Ladder]:
    """One :class:`Ladder` per (dataset, weak, protocol) with strong models of >= 2 different known
    sizes (compute-matched models, such as the shipped ``full`` and ``limited``, which differ in
    pretraining data but not in samples seen, are no ladder).

    ``per_image`` maps a group key (``eval.tables.group_key``) to its D_test correctness (as
    ``eval.tables.pgr_cells`` takes it), so that PGR is defined exactly where the group's PGR
    table defines it."""
    from w2sclip.models.strong.scale import pretraining_samples

    by: dict[tuple, dict[str, list[dict]]] = {}
    for (dataset, strong, weak, protocol), recs in groups(records).items():
        by.setdefault((dataset, weak, protocol), {})[strong] = recs
    out = []
    for (dataset, weak, protocol), per_strong in by.items():
        sizes = {s: pretraining_samples(s) for s in per_strong}
        known = sorted((s for s, n in sizes.items() if n is not None), key=lambda s: (sizes[s], s))
        if len({sizes[s] for s in known}) < 2:
            continue
        domains = list(dict.fromkeys(r["domain"] for s in known for r in per_strong[s]))
        methods = [m for m in method_order({r["method"] for s in known for r in per_strong[s]})
                   if m != "weak" and not m.startswith("ceiling")]
        rungs = []
        for s in known:
            rung = Rung(s, sizes[s])
            for ref in REFERENCES:
                rung.gain.update({(ref, m, d): v for (m, d), v in _gains(per_strong[s], ref).items()})
            _, _, cells = pgr_cells(per_strong[s], (per_image or {}).get((dataset, s, weak, protocol)))
            rung.pgr = {k: c.value for k, c in cells.items()}  # None where undefined
            rungs.append(rung)
        out.append(Ladder(dataset, weak, protocol, domains, methods, rungs,
                          sorted(s for s, n in sizes.items() if n is None)))
    return out
