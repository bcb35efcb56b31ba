"""``w2sclip demo``: the built-in preset through the ordinary sweep and report code.

``w2sclip demo --out A`` is ``w2sclip sweep builtin --runs-dir A/runs`` followed by
``w2sclip report A/runs --out A``; ``--quick`` adds ``--set builtin_size=quick --set
grid.seed=[0]``. The demo's runs are ordinary run folders in the ordinary cache, so a sweep
of the same preset afterwards (or before) recomputes nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from w2sclip.config import load_sweep, resolve_preset
from w2sclip.report import build_report, load_runs
from w2sclip.run import run_folder
from w2sclip.run.folder import RunFolder
from w2sclip.sweep import run_sweep

QUICK = ("builtin_size=quick", "grid.seed=[0]")
"""What ``--quick`` adds to the preset (the preset's quick size, one seed)."""
TITLE = "w2sclip demo: built-in benchmark"


def demo_sweep(quick: bool = False, overrides: tuple[str, ...] = ()):
    """The built-in preset with the ``--quick`` overrides (if any) and then ``overrides``."""
    return load_sweep(resolve_preset("builtin"), [*(QUICK if quick else ()), *overrides])


def stage_seconds(runs_dir: Path, names: list[str]) -> dict[str, float]:
    """Seconds per stage summed over the named run folders (from their ``done`` files)."""
    total: dict[str, float] = defaultdict(float)
    for name in names:
        done = RunFolder(runs_dir / name).read_json("done", {})
        for k, v in (done.get("stages_s") or {}).items():
            total[k] += v
    return {k: round(v, 2) for k, v in total.items()}


def run_demo(out: str | Path = "w2sclip-out", quick: bool = False, overrides: tuple[str, ...] = (),
             workers: int = 2, progress: bool = True) -> dict:
    """Run the built-in study into ``out/runs`` and write the report into ``out``.

    Returns ``{"sweep", "report" (path of report.md), "records", "timings", "reused", "failed"}``
    (``reused``: runs copied from the cache's finished runs, see :mod:`w2sclip.run.reuse`).
    """
    out = Path(out)
    t0 = time.perf_counter()
    sweep = demo_sweep(quick, overrides)
    runs_dir = out / "runs"
    res = run_sweep(sweep, runs_dir, workers=workers, progress=progress)
    names = [run_folder(c, runs_dir).name for c in sweep.runs()]
    report = build_report(runs_dir, out, title=TITLE, only=names)
    timings = {**stage_seconds(runs_dir, names), "total": round(time.perf_counter() - t0, 2)}
    records, _ = load_runs(runs_dir, only=names)
    return {"sweep": sweep, "report": report, "records": records, "timings": timings, "reused": res["reused"],
            "failed": res["failed"]}
