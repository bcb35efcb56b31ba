"""The regime of a study: where the weak supervisor, zero-shot and the ceiling sit (issue 11).

Weak-to-strong generalization means something only in one regime: the weak supervisor clearly
above chance, the ground-truth ceiling clearly above the weak supervisor (room to recover), and
zero-shot not far above the weak supervisor (else every student that listens to the weak labels
loses, whatever its method). Real DomainNet with CLIP is in that regime (docs/results.md). Every
report shows, before its method tables, one regime table per group with the flags below, and for
the built-in benchmark the calibration targets of its two checkpoints.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

NEAR_CHANCE = 0.10
"""Flag ``weak≈chance`` when weak - chance is below this."""
NO_ROOM = 0.03
"""Flag ``ceiling≤weak`` when best ceiling - weak is below this (PGR undefined or noise)."""
WEAK_FAR_BELOW_ZS = 0.10
"""Flag ``weak≪zero-shot`` when zero-shot - weak exceeds this."""

FLAG_TEXT = {
    "weak≈chance": "the weak supervisor is near chance: a student can only learn noise from it",
    "ceiling≤weak": "the best ceiling is not clearly above the weak supervisor: PGR is undefined or noise",
    "weak≪zero-shot": "zero-shot is far above the weak supervisor: listening to the weak labels can only hurt",
}


def _mean_by(recs: list[dict], method_pred) -> dict[str, float]:
    """Domain -> mean accuracy over seeds of the records whose method satisfies ``method_pred``;
    for several such methods (the ceilings), the best mean."""
    acc = defaultdict(lambda: defaultdict(list))
    for r in recs:
        if method_pred(r["method"]):
            acc[r["domain"]][r["method"]].append(r["accuracy"])
    return {d: max(float(np.mean(v)) for v in per.values()) for d, per in acc.items()}


def regime_rows(recs: list[dict]) -> list[dict]:
    """One row per domain (and ``avg``): chance, weak, zero_shot, ceiling (best ground-truth head),
    their gaps and the flags. Accuracies are means over seeds."""
    domains = list(dict.fromkeys(r["domain"] for r in recs))
    weak = _mean_by(recs, lambda m: m == "weak")
    zs = _mean_by(recs, lambda m: m == "zero_shot")
    ceil = _mean_by(recs, lambda m: m.startswith("ceiling"))
    ncls = {r["domain"]: r.get("n_classes") for r in recs}
    rows = [{"domain": d, "chance": 1.0 / ncls[d] if ncls[d] else None, "weak": weak.get(d),
             "zero_shot": zs.get(d), "ceiling": ceil.get(d)} for d in domains]
    if len(rows) > 1:
        avg = {k: (float(np.mean([r[k] for r in rows])) if all(r[k] is not None for r in rows) else None)
               for k in ("chance", "weak", "zero_shot", "ceiling")}
        rows.append({"domain": "avg", **avg})
    for r in rows:
        r["flags"] = flags(r)
    return rows


def flags(r: dict) -> list[str]:
    out = []
    if r["weak"] is not None and r["chance"] is not None and r["weak"] - r["chance"] < NEAR_CHANCE:
        out.append("weak≈chance")
    if r["weak"] is not None and r["ceiling"] is not None and r["ceiling"] - r["weak"] < NO_ROOM:
        out.append("ceiling≤weak")
    if r["weak"] is not None and r["zero_shot"] is not None and r["zero_shot"] - r["weak"] > WEAK_FAR_BELOW_ZS:
        out.append("weak≪zero-shot")
    return out


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _gap(a, b) -> str:
    return "–" if a is None or b is None else f"{100 * (a - b):+.1f}"


def regime_table(recs: list[dict]) -> str:
    """Markdown: the regime of one group (accuracy %, means over seeds; gaps in points)."""
    lines = ["| domain | chance | weak | zero-shot | best ceiling | weak − chance | weak − zero-shot "
             "| ceiling − weak | flags |", "|---" * 9 + "|"]
    for r in regime_rows(recs):
        lines.append(f"| {r['domain']} | {_pct(r['chance'])} | {_pct(r['weak'])} | {_pct(r['zero_shot'])} | "
                     f"{_pct(r['ceiling'])} | {_gap(r['weak'], r['chance'])} | {_gap(r['weak'], r['zero_shot'])} | "
                     f"{_gap(r['ceiling'], r['weak'])} | {', '.join(r['flags']) or 'ok'} |")
    return "\n".join(lines)


def flag_notes(recs: list[dict]) -> list[str]:
    """One sentence per flag raised in a group."""
    raised = {f for r in regime_rows(recs) for f in r["flags"]}
    return [f"- **{f}**: {FLAG_TEXT[f]}." for f in FLAG_TEXT if f in raised]


# --- the built-in benchmark's calibration targets (issue 11) ---------------------------------

def builtin_targets(records: list[dict]) -> list[dict]:
    """The regime targets of the built-in study, each ``{"target", "value", "threshold", "ok"}``.

    Empty unless the records hold the whole built-in study with the ``full`` checkpoint: every
    domain, with the weak model, zero-shot and a ceiling (a study restricted to some domains or
    methods measures no target; for the ``limited`` targets, the same with ``limited``). Values
    are means over seeds on D_test."""
    from w2sclip.data.builtin_render import DOMAINS

    by_strong = defaultdict(list)
    for r in records:
        if r.get("dataset") == "builtin" and r.get("protocol", "in_domain") == "in_domain":
            by_strong[r["strong"]].append(r)
    def whole(recs: list[dict]) -> dict | None:
        rows = {r["domain"]: r for r in regime_rows(recs)}
        complete = set(DOMAINS) <= set(rows) and all(rows[d][k] is not None for d in (*DOMAINS, "avg")
                                                      for k in ("chance", "weak", "zero_shot", "ceiling"))
        return rows if complete else None

    full = whole(by_strong["full"]) if "full" in by_strong else None
    if full is None:
        return []
    out = []

    def add(target: str, value: float | None, threshold: float, ge: bool = True) -> None:
        ok = value is not None and (value >= threshold - 1e-12 if ge else value <= threshold + 1e-12)
        out.append({"target": target, "value": value, "threshold": threshold, "relation": ">=" if ge else "<=",
                    "ok": bool(ok)})

    avg, doms = full["avg"], [d for d in full if d != "avg"]
    add("full: weak − zero-shot (avg)", avg["weak"] - avg["zero_shot"], 0.08)
    add("full: ceiling − weak (avg)", avg["ceiling"] - avg["weak"], 0.08)
    for d in doms:
        add(f"full: ceiling − weak ({d})", full[d]["ceiling"] - full[d]["weak"], 0.03)
    for d in doms:
        add(f"full: weak − chance ({d})", full[d]["weak"] - full[d]["chance"], 0.25)
    for d in doms:
        add(f"full: zero-shot / chance ({d})", full[d]["zero_shot"] / full[d]["chance"], 2.0)
    add("full: max over domains of weak − zero-shot (quickdraw-like)",
        max(full[d]["weak"] - full[d]["zero_shot"] for d in doms), 0.25)
    add("full: max over domains of zero-shot − weak (real-photo-like)",
        max(full[d]["zero_shot"] - full[d]["weak"] for d in doms), -0.05)
    lim = whole(by_strong["limited"]) if "limited" in by_strong else None
    if lim is not None:
        add("limited: zero-shot avg − full zero-shot avg", lim["avg"]["zero_shot"] - avg["zero_shot"], -0.10, ge=False)
        for d in [d for d in lim if d != "avg"]:
            add(f"limited: ceiling − weak ({d})", lim[d]["ceiling"] - lim[d]["weak"], 0.03)
    return out


def targets_table(targets: list[dict]) -> str:
    """Markdown: each built-in target with its measured value, threshold and whether it is met."""
    def fmt(t: dict, v: float) -> str:
        return f"{v:.2f}×" if "/ chance" in t["target"] else f"{100 * v:+.1f}"

    lines = ["| target | measured | threshold | met |", "|---|---|---|---|"]
    for t in targets:
        lines.append(f"| {t['target']} | {fmt(t, t['value'])} | {t['relation']} {fmt(t, t['threshold'])} | "
                     f"{'yes' if t['ok'] else '**NO**'} |")
    return "\n".join(lines)
