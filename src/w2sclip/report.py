"""Tables from result records only (never from models): markdown, CSV and JSON; run folders -> report.

:func:`markdown_report` turns records into tables; :func:`load_runs` reads the run folders a
sweep wrote (``config.json``, ``records.jsonl``, ``done``; see docs/report.md) and
:func:`build_report` writes ``report.md``, ``report.html``, ``results.csv`` and ``plots/*.png``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2sclip import plots
from w2sclip.eval.ladder import ladders
from w2sclip.eval.metrics import mean_std
from w2sclip.eval.regime import builtin_targets, flag_notes, regime_table, targets_table
from w2sclip.run.folder import RunFolder
from w2sclip.eval.tables import cell_values, group_key, group_title, groups, method_order, pgr_cells

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["dataset", "domain", "strong", "weak", "method", "seed", "accuracy", "pgr",
                  "agreement", "top5", "ece", "weak_accuracy", "ceiling_accuracy", "labels",
                  "criterion", "best_step", "protocol", "n_fit", "n_val", "n_test", "tuning", "tuned", "recipe",
                  "search", "hparams"]
REQUIRED = ("dataset", "domain", "strong", "weak", "method", "seed", "accuracy")
TEXT_FIELDS = ("dataset", "domain", "strong", "weak", "method")
RATE_FIELDS = ("accuracy", "agreement", "top5", "ece", "weak_accuracy", "ceiling_accuracy")
"""Fields in [0, 1]: ``accuracy`` always, the others when present and not null."""
NUMBER_FIELDS = ("pgr",)
"""Fields that are a finite number or null."""
TABLES = [("accuracy", "Accuracy on D_test (%), mean ± std over seeds:"),
          ("pgr", ("PGR = (student - weak) / (ceiling - weak) of the seed-mean accuracies, each method "
                   "against the ceiling of its own head (ceiling_<head>: that head trained on the ground truth "
                   "of D_hold by the run's recipes for it, tuned by ground-truth accuracy on hold_val); "
                   "[95 % bootstrap interval over seeds and D_test images]; "
                   "undef. when ceiling - weak is below two standard errors:")),
          ("agreement", "Agreement with the weak supervisor on D_test (%):"),
          ("ece", "Calibration: expected calibration error on D_test (%, 15 bins; lower is better):")]


def write_results(records: list[dict], out: str | Path, meta: dict | None = None) -> None:
    """``results.csv`` (one row per record) and ``results.json`` ({"meta", "records"})."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = sorted({k for r in records for k in r} - set(RESULT_COLUMNS))

    def cell(v):
        return "" if v is None else json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS + extra)
        w.writeheader()
        for r in records:
            w.writerow({k: cell(r.get(k)) for k in RESULT_COLUMNS + extra})
    (out / "results.json").write_text(json.dumps({"meta": meta or {}, "records": records}, indent=1))


def _fmt(values: list) -> str:
    """``mean ± std`` in percent; when some values are missing, ``(k/n defined)`` is appended."""
    mean, std, k = mean_std(values)
    if mean is None:  # not measured
        return "–"
    cell = f"{100 * mean:.1f} ± {100 * std:.1f}"
    return cell if k == len(values) else f"{cell} ({k}/{len(values)} defined)"


def _pgr_table(recs: list[dict], per_image: dict | None) -> str:
    domains, students, cells = pgr_cells(recs, per_image)
    lines = [f"| method | ceiling | {' | '.join(domains)} | avg |", "|---" * (len(domains) + 3) + "|"]
    own = {r["method"]: r.get("ceiling") for r in recs}
    for m in students:
        row = [cells[(m, d)].text() if (m, d) in cells else "–" for d in domains + ["avg"]]
        lines.append(f"| {m} | {own.get(m)} | {' | '.join(row)} |")
    return "\n".join(lines)


def _table(recs: list[dict], metric: str, per_image: dict | None = None) -> str:
    if metric == "pgr":
        return _pgr_table(recs, per_image)
    domains, methods, cells = cell_values(recs, metric)
    lines = [f"| method | {' | '.join(domains)} | avg |", "|---" * (len(domains) + 2) + "|"]
    for m in methods:
        row = [_fmt(cells[(m, d)]) for d in domains + ["avg"]]
        lines.append(f"| {m} | {' | '.join(row)} |")
    return "\n".join(lines)


def summary_table(records: list[dict], strong: str, metric: str = "accuracy",
                  weak: str | None = None, dataset: str | None = None,
                  protocol: str | None = None) -> str:
    """Markdown: rows = methods, columns = domains + average, mean ± std over seeds.

    The average column averages over domains within each seed first; ``pgr`` gives the PGR table
    of the report (each student against its own head's ceiling, with bootstrap intervals).
    """
    want = {"strong": strong, "weak": weak, "dataset": dataset, "protocol": protocol}
    recs = [r for r in records if all(v is None or r.get(k) == v for k, v in want.items())]
    return _table(recs, metric)


def group_section(key: tuple, recs: list[dict], per_image: dict | None = None) -> list[str]:
    """Markdown lines: the heading, the regime table and the method tables of one group."""
    seeds = sorted({r["seed"] for r in recs})
    parts = [f"## {group_title(key)} (seeds {seeds})", "",
             "Regime (accuracy % on D_test, means over seeds; gaps in points; docs/protocol.md):", "",
             regime_table(recs), ""]
    notes = flag_notes(recs)
    if notes:
        parts += notes + [""]
    for metric, caption in TABLES:
        parts += [caption, "", _table(recs, metric, per_image), ""]
    return parts + tuning_section(recs)


def tuning_section(recs: list[dict]) -> list[str]:
    """Markdown lines: per method, the grid values the tuning rule chose (how many runs chose each)
    and, for the ceilings, which method's recipe gave the strongest one; Tip-Adapter's searched
    (alpha, beta) as means over runs. Nothing for records without tuning fields."""
    chosen, recipes, search = defaultdict(lambda: defaultdict(int)), defaultdict(lambda: defaultdict(int)), defaultdict(list)
    tunings = {r.get("tuning") for r in recs if r.get("tuning")}
    for r in recs:
        if r.get("tuned") is None or r["method"] == "weak":
            continue
        point = json.loads(r["tuned"]) if isinstance(r["tuned"], str) else r["tuned"]
        chosen[r["method"]][", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in sorted(point.items())) or "-"] += 1
        if r["method"].startswith("ceiling_") and r.get("recipe"):
            recipes[r["method"]][r["recipe"]] += 1
        if r.get("search"):
            search[r["method"]].append(json.loads(r["search"]) if isinstance(r["search"], str) else r["search"])
    if not chosen:
        return []
    rows = ["| method | chosen (runs) | ceiling recipe (runs) | searched alpha, beta (mean) |", "|---|---|---|---|"]
    for m in method_order(chosen):
        pick = "; ".join(f"{k} ({n})" for k, n in sorted(chosen[m].items(), key=lambda kv: -kv[1]))
        rec = "; ".join(f"{k} ({n})" for k, n in sorted(recipes[m].items(), key=lambda kv: -kv[1])) or "-"
        found = search.get(m)
        hp = (f"{np.mean([f['alpha'] for f in found]):.2f}, {np.mean([f['beta'] for f in found]):.2f}"
              if found else "-")
        rows.append(f"| {m} | {pick} | {rec} | {hp} |")
    return [f"Tuning ({', '.join(sorted(tunings)) or 'n/a'}; docs/methods.md): the grid values chosen on hold_val "
            f"(students: argmax agreement with the weak labels; ceilings: ground-truth accuracy), by how many "
            f"runs:", "", *rows, ""]


def targets_section(records: list[dict]) -> list[str]:
    """The built-in benchmark's regime targets (docs/results.md), when the records hold it."""
    targets = builtin_targets(records)
    if not targets:
        return []
    missed = [t["target"] for t in targets if not t["ok"]]
    verdict = (f"**{len(missed)} of {len(targets)} targets not met**: the built-in study is not in "
               f"DomainNet's regime there" if missed else f"all {len(targets)} targets met")
    return ["## Built-in regime targets", "",
            f"Targets that give the built-in study DomainNet's shape (weak above zero-shot, ceiling above "
            f"both; docs/results.md); {verdict}.",
            "", targets_table(targets), ""]


def _samples(n: float) -> str:
    for unit, k in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= k:
            return f"{n / k:.3g}{unit}"
    return f"{n:.0f}"


def _signed(v: float | None, pct: bool = True) -> str:
    return "n/a" if v is None else (f"{100 * v:+.1f}" if pct else f"{v:.2f}")


def ladder_section(records: list[dict], plots_dir: Path | None = None,
                   per_image: dict[tuple, dict | None] | None = None) -> list[str]:
    """Markdown lines of every pretraining ladder in ``records`` (``eval.ladder``): per strong model
    (by samples seen) and domain, each method's gain over zero-shot and over KD+LP and its PGR;
    with ``plots_dir``, the figure too. Nothing when no group has two strong models of known size."""
    parts = []
    for i, lad in enumerate(ladders(records, per_image)):
        where = f"dataset = {lad.dataset}, weak = {lad.weak}" + (f", protocol = {lad.protocol}" if lad.protocol else "")
        parts += [f"## Pretraining ladder: {where}", "",
                  "Cells: gain over zero-shot / gain over KD+LP (accuracy points, mean over seeds of the paired "
                  "difference) / PGR against the method's own ceiling. Samples seen: "
                  "`w2sclip.models.strong.scale` (docs/experiments.md).", ""]
        if lad.unknown:
            parts += [f"Left out (pretraining size unknown): {', '.join(lad.unknown)}.", ""]
        header = ["strong", "samples seen", "domain", *lad.methods]
        rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for rung in lad.rungs:
            for d in [*lad.domains, "avg"]:
                cells = [f"{_signed(rung.gain.get(('zero_shot', m, d)))} / {_signed(rung.gain.get(('kd_lp', m, d)))}"
                         f" / {_signed(rung.pgr.get((m, d)), pct=False)}" for m in lad.methods]
                rows.append("| " + " | ".join([rung.strong, _samples(rung.samples), d, *cells]) + " |")
        parts += rows + [""]
        if plots_dir is not None:
            path = plots.ladder_figure(lad, plots_dir / f"ladder_{i:02d}.png")
            parts += plots.image_markdown(f"pretraining ladder, {where}", path)
    return parts


def markdown_report(records: list[dict], title: str = "w2sclip results", notes: str = "") -> str:
    """The whole report: regime and method tables per group (accuracy, PGR, agreement, calibration)."""
    parts = [f"# {title}", ""]
    if notes:
        parts += [notes, ""]
    parts += targets_section(records)
    for key, recs in groups(records).items():
        parts += group_section(key, recs)
    parts += ladder_section(records)
    return "\n".join(parts)


@dataclass
class RunInfo:
    """One run folder as the report sees it: finished or not, and which group, domain and seed."""

    folder: RunFolder
    complete: bool = False
    n_records: int = 0
    group: tuple | None = None  # group_key of its records (finished runs)
    domain: str | None = None
    seed: int | None = None

    @property
    def path(self) -> Path:
        return self.folder.path

    def describe(self) -> str:
        keys = ("dataset", "domain", "strong", "weak", "protocol", "seed")
        vals = {k: self.folder.config_value(k) for k in keys}
        return f"`{self.path.name}` ({', '.join(f'{k}={v}' for k, v in vals.items() if v is not None)})"


def per_image_correctness(runs: list[RunInfo], key: tuple) -> dict | None:
    """``{(domain, seed): {method: bool array}}`` of a group's finished runs, from their
    ``labels.npz`` (images ordered by their row in the test split, the same for every seed);
    None when a run lacks the file (the PGR bootstrap then resamples seeds only)."""
    out = {}
    for r in runs:
        if not r.complete or r.group != key:
            continue
        z = r.folder.npz("labels.npz")
        if z is None:
            return None
        order = np.argsort(z["test_index"], kind="stable")
        y = z["y_true"][order]
        out[(r.domain, r.seed)] = {k: v[order] == y for k, v in z.items()
                                   if k not in ("y_true", "test_index", "paths") and v.ndim == 1}
    return out or None


def load_runs(runs_dir: str | Path, only: Iterable[str] | None = None) -> tuple[list[dict], list[RunInfo]]:
    """Every run folder under ``runs_dir`` -> (records of the finished runs, one RunInfo per folder).

    A folder is a run when it holds ``config.json`` or ``records.jsonl``; only folders with the
    ``done`` marker contribute records (the others are listed with ``complete=False``).
    Records repeated in several runs with equal numbers are kept once; repeated with different
    numbers they raise ValueError, since pooling them would count a seed twice. ``only`` limits
    the folders to those names (e.g. the runs of one sweep).
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist; pass the folder `w2sclip sweep` wrote into")
    top = RunFolder(runs_dir)
    folders = [top] if top.is_run() else [RunFolder(p) for p in sorted(runs_dir.iterdir())
                                          if p.is_dir() and RunFolder(p).is_run()]
    if only is not None:
        keep = set(only)
        folders = [f for f in folders if f.name in keep]
    if not folders:
        raise ValueError(f"no run folders in {runs_dir} (a run folder holds config.json, records.jsonl "
                         f"and done); run `w2sclip sweep CONFIG --runs-dir {runs_dir}` first")
    runs, done = [], []
    for folder in folders:
        info = RunInfo(folder, complete=folder.is_done)
        runs.append(info)
        if not info.complete:
            continue
        recs = folder.records(REQUIRED)
        check_records(recs, folder.path / "records.jsonl")
        folder.config()  # a config.json that is not a JSON object is an error naming the file
        info.n_records = len(recs)
        for r in recs:
            r.setdefault("protocol", folder.config_value("protocol"))
        done.append((folder, info, recs))
    separate_datasets([r for _, _, recs in done for r in recs])
    records, seen = [], {}
    for folder, info, recs in done:
        for r in recs:
            key = (*group_key(r), r["domain"], r["seed"], r["method"])
            if key not in seen:
                seen[key] = (folder, r)
                records.append(r)
            elif seen[key][1].get("accuracy") != r.get("accuracy"):
                raise ValueError(f"runs {seen[key][0].name} and {folder.name} both hold {r['method']} on "
                                 f"{r['domain']} (seed {r['seed']}) with different accuracies; move one "
                                 f"of them out of {runs_dir} and report again")
        if recs:
            info.group, info.domain, info.seed = group_key(recs[0]), recs[0]["domain"], recs[0]["seed"]
    rank = {m: i for i, m in enumerate(method_order({r["method"] for r in records}))}
    records.sort(key=lambda r: (tuple(str(x) for x in group_key(r)), r["domain"], r["seed"], rank[r["method"]]))
    return records, runs


def separate_datasets(records: list[dict]) -> None:
    """Runs of one dataset name and domain whose data differ (``dataset_id``: the evaluated
    split's class list, templates and samples, ``ImageDataset.fingerprint``) are never pooled:
    two datasets at different roots (``dataset_root``) become one report group each, their
    ``dataset`` renamed ``"name [root]"``, with a warning; different data under the same root
    (changed in place between runs) is refused with the fix. Runs of different w2sclip versions in
    one group get a warning."""
    ids: dict[tuple, set] = defaultdict(set)
    for r in records:
        if r.get("dataset_id") is not None:  # older records carry none: nothing to compare
            ids[(r["dataset"], r["domain"], r.get("dataset_root"))].add(r["dataset_id"])
    for (name, domain, root), found in ids.items():
        if len(found) > 1:
            raise ValueError(f"runs of dataset {name!r}, domain {domain!r} under root {root} hold {len(found)} "
                             f"different data (the files or the class list changed between runs); rerun the "
                             f"old runs (delete their folders) or report them from separate runs dirs")
    clash = {name for name, domain, _ in ids
             if len({i for (n, d, _), v in ids.items() if n == name and d == domain for i in v}) > 1}
    for name in sorted(clash):
        roots = sorted({str(r.get("dataset_root")) for r in records if r["dataset"] == name})
        short = {root: Path(root).name or root for root in roots}
        if len(set(short.values())) < len(roots):
            short = {root: hashlib.sha256(root.encode()).hexdigest()[:8] for root in roots}
        log.warning("runs of dataset %r come from %d different datasets (roots %s; their images or class lists "
                    "differ): reported as separate groups %s", name, len(roots), ", ".join(roots),
                    ", ".join(f"{name} [{short[root]}]" for root in roots))
        for r in records:
            if r["dataset"] == name:
                r["dataset"] = f"{name} [{short[str(r.get('dataset_root'))]}]"
    versions: dict[tuple, set] = defaultdict(set)
    for r in records:
        versions[group_key(r)].add(r.get("w2sclip_version"))
    for key, found in versions.items():
        if len(found) > 1:
            log.warning("%s: runs of w2sclip versions %s are pooled; rerun the old ones for one version",
                        group_title(key), ", ".join(sorted(str(v) for v in found)))


def check_records(records: list[dict], where: str | Path) -> None:
    """Types and ranges of the fields the report reads; a bad value is a ValueError naming the
    file, the record and the field (a records file altered by hand or written by another tool)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for i, r in enumerate(records, 1):
        problems = [f"{k} is {r[k]!r}, expected a string" for k in TEXT_FIELDS if not isinstance(r[k], str)]
        if not isinstance(r["seed"], int) or isinstance(r["seed"], bool):
            problems.append(f"seed is {r['seed']!r}, expected an integer")
        for k in RATE_FIELDS:
            v = r.get(k)
            if (k == "accuracy" or v is not None) and not (number(v) and 0 <= v <= 1):
                problems.append(f"{k} is {v!r}, expected a number in [0, 1]")
        problems += [f"{k} is {r[k]!r}, expected a number or null" for k in NUMBER_FIELDS
                     if r.get(k) is not None and not number(r[k])]
        if problems:
            raise ValueError(f"{where}, record {i} (method {r.get('method')!r}): {'; '.join(problems)}; the "
                             f"file was altered or written by another tool: fix the value, or delete the run "
                             f"folder's 'done' file and rerun it")


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1,h2,h3{line-height:1.2}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;margin:.5em 0}code{background:#f3f3f3;padding:0 .2em}"""


def to_html(markdown: str, base: str | Path, title: str) -> str:
    """A self-contained HTML page of ``markdown``: PNGs under ``base`` are embedded as base64."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def embed(m: re.Match) -> str:
        png = Path(base) / html.unescape(m.group(1))
        if not png.is_file():
            return m.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n{body}</body></html>\n")


def _coverage_note(recs: list[dict]) -> list[str]:
    """A line naming the cells averaged over fewer seeds than the group has (else nothing)."""
    seeds = {r["seed"] for r in recs}
    count = defaultdict(set)
    for r in recs:
        count[(r["method"], r["domain"])].add(r["seed"])
    short = [f"{m}/{d} ({len(s)})" for (m, d), s in count.items() if len(s) < len(seeds)]
    if not short:
        return []
    more = f" and {len(short) - 10} more" if len(short) > 10 else ""
    return [f"Cells over fewer than the group's {len(seeds)} seeds: {', '.join(short[:10])}{more}.", ""]


def build_report(runs_dir: str | Path, out: str | Path, *, confusion_domain: str | None = None,
                 confusion_method: str | None = None, projection: str = "pca",
                 title: str | None = None, only: Iterable[str] | None = None) -> Path:
    """Read the run folders under ``runs_dir`` and write into ``out``: ``report.md``,
    ``report.html`` (self-contained), ``results.csv``/``results.json`` and ``plots/*.png``.

    ``confusion_domain`` picks the domain of the confusion matrix and the projection (default:
    each group's first domain); ``confusion_method`` the method of the confusion matrix
    (default ``cpl``, else the first student present); ``projection`` is ``pca`` or ``tsne``.
    Unfinished runs are listed and left out. Returns the path of ``report.md``.
    """
    records, runs = load_runs(runs_dir, only)
    pending = [r for r in runs if not r.complete]
    if not records:
        raise ValueError(f"no finished runs in {runs_dir} ({len(pending)} run folder(s) without the 'done' "
                         f"marker); finish them with `w2sclip sweep` first")
    domains = sorted({r["domain"] for r in records})
    if confusion_domain is not None and confusion_domain not in domains:
        raise KeyError(f"unknown confusion domain {confusion_domain!r}; the runs hold: {', '.join(domains)}")
    if projection not in plots.PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; valid: {', '.join(plots.PROJECTIONS)}")
    out, title = Path(out), title or "w2sclip report"
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    for stale in plots_dir.glob("*.png"):  # figures of an earlier report into the same folder
        stale.unlink()
    done = [r for r in runs if r.complete]
    write_results(records, out, {"runs_dir": str(runs_dir), "runs": [r.path.name for r in done],
                                 "incomplete": [r.path.name for r in pending]})
    intro = (f"{len(done)} finished runs in `{runs_dir}`, {len(records)} records (all of them in "
             f"`results.csv`). Tables: mean ± std (sample std) over seeds.")
    parts = [f"# {title}", "", intro, ""]
    if pending:
        log.warning("incomplete: %d runs skipped (no 'done' marker)", len(pending))
        parts += [(f"**incomplete: {len(pending)} runs skipped** (no `done` marker; none of their "
                   f"numbers are in the tables or plots; rerun the sweep to finish them):"), ""]
        parts += [f"- {r.describe()}" for r in pending] + [""]
    parts += targets_section(records)
    notes, images = [], {}
    grouped = groups(records)
    for i, (key, recs) in enumerate(grouped.items()):
        per_image = images[key] = per_image_correctness(runs, key)
        parts += group_section(key, recs, per_image) + _coverage_note(recs)
        lines, skipped = plots.group_figures(key, recs, runs, plots_dir, f"group{i:02d}", domain=confusion_domain,
                                             method=confusion_method, projection=projection, per_image=per_image)
        parts += lines
        notes += skipped
    parts += plots.strong_figures(grouped, plots_dir)
    parts += ladder_section(records, plots_dir, images)
    if notes:
        parts += ["## Skipped plots", ""] + [f"- {n}" for n in notes] + [""]
    markdown = "\n".join(parts)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(to_html(markdown, out, title))
    return out / "report.md"
