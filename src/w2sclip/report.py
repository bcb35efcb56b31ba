"""Tables from result records only (never from models): markdown, CSV and JSON."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

from w2sclip.eval.metrics import mean_std, pgr

RESULT_COLUMNS = ["dataset", "domain", "strong", "weak", "method", "seed", "accuracy", "pgr",
                  "agreement", "top5", "ece", "weak_accuracy", "ceiling_accuracy", "labels",
                  "criterion", "best_step", "protocol", "n_fit", "n_val", "n_test", "hparams"]
METHOD_ORDER = ["weak", "zero_shot", "kd_lp", "cpl", "cpl_hard", "cpl_poe", "logconf", "adaptconf",
                "tip_adapter_f", "clip_adapter", "coop", "ceiling_lp", "ceiling"]


def write_results(records: list[dict], out: str | Path, meta: Optional[dict] = None) -> None:
    """``results.csv`` (one row per record) and ``results.json`` ({"meta", "records"})."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = sorted({k for r in records for k in r} - set(RESULT_COLUMNS))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS + extra)
        w.writeheader()
        for r in records:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in RESULT_COLUMNS + extra})
    (out / "results.json").write_text(json.dumps({"meta": meta or {}, "records": records}, indent=1))


def _order(methods: Iterable[str]) -> list[str]:
    methods = set(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


def _fmt(values: list, pct: bool = True) -> str:
    """``mean ± std``; when some values are undefined (PGR), ``(k/n defined)`` is appended."""
    mean, std, k = mean_std(values)
    if mean is None:
        return "undef."
    cell = f"{100 * mean:.1f} ± {100 * std:.1f}" if pct else f"{mean:.2f} ± {std:.2f}"
    return cell if k == len(values) else f"{cell} ({k}/{len(values)} defined)"


def summary_table(records: list[dict], strong: str, metric: str = "accuracy",
                  weak: Optional[str] = None, dataset: Optional[str] = None) -> str:
    """Markdown: rows = methods, columns = domains + average, mean ± std over seeds.

    The average column averages over domains within each seed first; for ``pgr`` it is the PGR
    of the domain-averaged accuracies of that seed (undefined if that ceiling <= weak).
    """
    recs = [r for r in records if r["strong"] == strong and (weak is None or r["weak"] == weak)
            and (dataset is None or r["dataset"] == dataset)]
    domains = list(dict.fromkeys(r["domain"] for r in recs))
    methods = _order({r["method"] for r in recs})
    by = defaultdict(list)
    per_seed = defaultdict(lambda: defaultdict(list))
    for r in recs:
        by[(r["method"], r["domain"])].append(r.get(metric))
        per_seed[(r["method"], r["seed"])]["acc"].append(r["accuracy"])
        per_seed[(r["method"], r["seed"])]["weak"].append(r["weak_accuracy"])
        per_seed[(r["method"], r["seed"])]["ceil"].append(r["ceiling_accuracy"])
    pct = metric != "pgr"
    lines = [f"| method | {' | '.join(domains)} | avg |", "|---" * (len(domains) + 2) + "|"]
    for m in methods:
        cells = [_fmt(by[(m, d)], pct=pct) for d in domains]
        avgs = []
        for (mm, _seed), v in per_seed.items():
            if mm != m or len(v["acc"]) != len(domains):
                continue
            if metric == "pgr":
                n = len(v["acc"])
                avgs.append(pgr(sum(v["acc"]) / n, sum(v["weak"]) / n, sum(v["ceil"]) / n))
            else:
                avgs.append(sum(x.get(metric) for x in recs if x["method"] == m and x["seed"] == _seed)
                            / len(domains))
        cells.append(_fmt(avgs, pct=pct))
        lines.append(f"| {m} | {' | '.join(cells)} |")
    return "\n".join(lines)


def markdown_report(records: list[dict], title: str = "w2sclip results", notes: str = "") -> str:
    """The whole report: accuracy, PGR and agreement tables per strong model."""
    parts = [f"# {title}", ""]
    if notes:
        parts += [notes, ""]
    seeds = sorted({r["seed"] for r in records})
    # one group per (dataset, strong, weak): never pool different supervisors or datasets
    for dataset, strong, weak in dict.fromkeys((r["dataset"], r["strong"], r["weak"]) for r in records):
        kw = {"weak": weak, "dataset": dataset}
        parts += [f"## strong = {strong}, weak = {weak}, dataset = {dataset} (seeds {seeds})", "",
                  "Accuracy on D_test (%), mean ± std over seeds:", "",
                  summary_table(records, strong, "accuracy", **kw), "",
                  "PGR = (student - weak) / (ceiling - weak); kd_lp and ceiling_lp against "
                  "ceiling_lp, the rest against ceiling (the CPL head on ground truth):", "",
                  summary_table(records, strong, "pgr", **kw), "",
                  "Agreement with the weak supervisor on D_test (%):", "",
                  summary_table(records, strong, "agreement", **kw), ""]
    return "\n".join(parts)
