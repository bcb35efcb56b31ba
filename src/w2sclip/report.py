"""Tables from result records only (never from models): markdown, CSV and JSON; run folders -> report.

:func:`markdown_report` turns records into tables; :func:`load_runs` reads the run folders a
sweep wrote (``config.json``, ``records.jsonl``, ``done``; see docs/report.md) and
:func:`build_report` writes ``report.md``, ``report.html``, ``results.csv`` and ``plots/*.png``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from w2sclip.eval.metrics import mean_std, pgr

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["dataset", "domain", "strong", "weak", "method", "seed", "accuracy", "pgr",
                  "agreement", "top5", "ece", "weak_accuracy", "ceiling_accuracy", "labels",
                  "criterion", "best_step", "protocol", "n_fit", "n_val", "n_test", "hparams"]
METHOD_ORDER = ["weak", "zero_shot", "kd_lp", "cpl", "cpl_hard", "cpl_poe", "logconf", "adaptconf",
                "tip_adapter_f", "clip_adapter", "coop", "ceiling_lp", "ceiling"]
REQUIRED = ("dataset", "domain", "strong", "weak", "method", "seed", "accuracy")
TABLES = [("accuracy", "Accuracy on D_test (%), mean ± std over seeds:"),
          ("pgr", ("PGR = (student - weak) / (ceiling - weak); kd_lp and ceiling_lp against "
                   "ceiling_lp, the rest against ceiling (the CPL head on ground truth):")),
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


def _order(methods: Iterable[str]) -> list[str]:
    methods = set(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


def _fmt(values: list, pct: bool = True) -> str:
    """``mean ± std``; when some values are undefined (PGR), ``(k/n defined)`` is appended."""
    mean, std, k = mean_std(values)
    if mean is None:  # PGR: undefined; other metrics: not measured
        return "undef." if values and not pct else "–"
    cell = f"{100 * mean:.1f} ± {100 * std:.1f}" if pct else f"{mean:.2f} ± {std:.2f}"
    return cell if k == len(values) else f"{cell} ({k}/{len(values)} defined)"


def cell_values(recs: list[dict], metric: str) -> tuple[list[str], list[str], dict]:
    """Per-seed values of one group: ``(domains, methods, {(method, domain | "avg"): [value per seed]})``.

    The ``avg`` entry averages over domains within each seed first (seeds that cover every
    domain); for ``pgr`` it is the PGR of that seed's domain-averaged accuracies (None when
    that ceiling <= weak). Tables and plots both use it, so they always show the same numbers.
    """
    domains = list(dict.fromkeys(r["domain"] for r in recs))
    methods = _order({r["method"] for r in recs})
    cells, per_seed = defaultdict(list), defaultdict(list)
    for r in recs:
        cells[(r["method"], r["domain"])].append(r.get(metric))
        per_seed[(r["method"], r["seed"])].append(r)
    for (m, _seed), rs in per_seed.items():
        if len(rs) != len(domains):
            continue
        if metric == "pgr":
            mean = {k: sum(r[k] for r in rs) / len(rs) for k in ("accuracy", "weak_accuracy", "ceiling_accuracy")}
            cells[(m, "avg")].append(pgr(mean["accuracy"], mean["weak_accuracy"], mean["ceiling_accuracy"]))
        else:
            vals = [r.get(metric) for r in rs]
            cells[(m, "avg")].append(None if None in vals else sum(vals) / len(vals))
    return domains, methods, cells


def _table(recs: list[dict], metric: str) -> str:
    domains, methods, cells = cell_values(recs, metric)
    lines = [f"| method | {' | '.join(domains)} | avg |", "|---" * (len(domains) + 2) + "|"]
    for m in methods:
        row = [_fmt(cells[(m, d)], pct=metric != "pgr") for d in domains + ["avg"]]
        lines.append(f"| {m} | {' | '.join(row)} |")
    return "\n".join(lines)


def summary_table(records: list[dict], strong: str, metric: str = "accuracy",
                  weak: str | None = None, dataset: str | None = None,
                  protocol: str | None = None) -> str:
    """Markdown: rows = methods, columns = domains + average, mean ± std over seeds.

    The average column averages over domains within each seed first; for ``pgr`` it is the PGR
    of the domain-averaged accuracies of that seed (undefined if that ceiling <= weak).
    """
    want = {"strong": strong, "weak": weak, "dataset": dataset, "protocol": protocol}
    recs = [r for r in records if all(v is None or r.get(k) == v for k, v in want.items())]
    return _table(recs, metric)


def group_key(r: dict) -> tuple:
    """``(dataset, strong, weak, protocol)``: records of different groups are never pooled."""
    return r.get("dataset"), r["strong"], r["weak"], r.get("protocol")


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


def group_section(key: tuple, recs: list[dict]) -> list[str]:
    """Markdown lines: the heading and the four tables of one group."""
    seeds = sorted({r["seed"] for r in recs})
    parts = [f"## {group_title(key)} (seeds {seeds})", ""]
    for metric, caption in TABLES:
        parts += [caption, "", _table(recs, metric), ""]
    return parts


def markdown_report(records: list[dict], title: str = "w2sclip results", notes: str = "") -> str:
    """The whole report: accuracy, PGR, agreement and calibration tables per group."""
    parts = [f"# {title}", ""]
    if notes:
        parts += [notes, ""]
    for key, recs in groups(records).items():
        parts += group_section(key, recs)
    return "\n".join(parts)


@dataclass
class RunInfo:
    """One run folder: its resolved config, whether it finished, and its record count."""

    path: Path
    config: dict = field(default_factory=dict)
    complete: bool = False
    n_records: int = 0
    group: tuple | None = None  # group_key of its records (finished runs)
    domain: str | None = None
    seed: int | None = None

    def get(self, key: str, default=None):
        """A config field, looked up at the top level, then under ``semantic`` / ``resolved``."""
        for d in (self.config, self.config.get("semantic", {}), self.config.get("resolved", {})):
            if isinstance(d, dict) and key in d:
                return d[key]
        return default

    def describe(self) -> str:
        keys = ("dataset", "domain", "strong", "weak", "protocol", "seed")
        return f"`{self.path.name}` ({', '.join(f'{k}={self.get(k)}' for k in keys if self.get(k) is not None)})"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix it or rerun that run") from None


def _read_records(folder: Path) -> list[dict]:
    path = folder / "records.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is marked done but has no records.jsonl; delete its 'done' "
                                f"file and rerun the sweep to recompute it")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {i}: not valid JSON ({e.msg}); delete the run folder's "
                             f"'done' file and rerun it, or fix the line") from None
        missing = [k for k in REQUIRED if k not in r] if isinstance(r, dict) else list(REQUIRED)
        if missing:
            raise ValueError(f"{path}, line {i}: record lacks field(s) {missing}; a record needs {list(REQUIRED)}")
        records.append(r)
    return records


def load_runs(runs_dir: str | Path) -> tuple[list[dict], list[RunInfo]]:
    """Every run folder under ``runs_dir`` -> (records of the finished runs, one RunInfo per folder).

    A folder is a run when it holds ``config.json`` or ``records.jsonl``; only folders with the
    ``done`` marker contribute records (the others are listed with ``complete=False``).
    Records repeated in several runs with equal numbers are kept once; repeated with different
    numbers they raise ValueError, since pooling them would count a seed twice.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist; pass the folder `w2sclip sweep` wrote into")
    is_run = lambda p: (p / "config.json").exists() or (p / "records.jsonl").exists()
    folders = [runs_dir] if is_run(runs_dir) else sorted(p for p in runs_dir.iterdir()
                                                          if p.is_dir() and is_run(p))
    if not folders:
        raise ValueError(f"no run folders in {runs_dir} (a run folder holds config.json, records.jsonl "
                         f"and done); run `w2sclip sweep CONFIG --out {runs_dir}` first")
    runs, records, seen = [], [], {}
    for folder in folders:
        info = RunInfo(folder, _read_json(folder / "config.json") if (folder / "config.json").exists() else {},
                       complete=(folder / "done").exists())
        runs.append(info)
        if not info.complete:
            continue
        recs = _read_records(folder)
        info.n_records = len(recs)
        for r in recs:
            r.setdefault("protocol", info.get("protocol"))
        if recs:
            info.group, info.domain, info.seed = group_key(recs[0]), recs[0]["domain"], recs[0]["seed"]
        for r in recs:
            key = (*group_key(r), r["domain"], r["seed"], r["method"])
            if key not in seen:
                seen[key] = (folder, r)
                records.append(r)
            elif seen[key][1].get("accuracy") != r.get("accuracy"):
                raise ValueError(f"runs {seen[key][0].name} and {folder.name} both hold {r['method']} on "
                                 f"{r['domain']} (seed {r['seed']}) with different accuracies; move one "
                                 f"of them out of {runs_dir} and report again")
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    records.sort(key=lambda r: (tuple(str(x) for x in group_key(r)), r["domain"], r["seed"],
                                rank.get(r["method"], len(rank)), r["method"]))
    return records, runs


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1,h2,h3{line-height:1.2}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;margin:.5em 0}code{background:#f3f3f3;padding:0 .2em}"""


def to_html(markdown: str, base: str | Path, title: str) -> str:
    """A self-contained HTML page of ``markdown``: PNGs under ``base`` are embedded as base64."""
    import base64
    import html
    import re

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
                 title: str | None = None) -> Path:
    """Read the run folders under ``runs_dir`` and write into ``out``: ``report.md``,
    ``report.html`` (self-contained), ``results.csv``/``results.json`` and ``plots/*.png``.

    ``confusion_domain`` picks the domain of the confusion matrix and the projection (default:
    each group's first domain); ``confusion_method`` the method of the confusion matrix
    (default ``cpl``, else the first student present); ``projection`` is ``pca`` or ``tsne``.
    Unfinished runs are listed and left out. Returns the path of ``report.md``.
    """
    from w2sclip import plots

    records, runs = load_runs(runs_dir)
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
    notes = []
    grouped = groups(records)
    for i, (key, recs) in enumerate(grouped.items()):
        parts += group_section(key, recs) + _coverage_note(recs)
        lines, skipped = plots.group_figures(key, recs, runs, plots_dir, f"group{i:02d}", domain=confusion_domain,
                                             method=confusion_method, projection=projection)
        parts += lines
        notes += skipped
    parts += plots.strong_figures(grouped, plots_dir)
    if notes:
        parts += ["## Skipped plots", ""] + [f"- {n}" for n in notes] + [""]
    markdown = "\n".join(parts)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(to_html(markdown, out, title))
    return out / "report.md"
