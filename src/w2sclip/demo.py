"""``w2sclip demo``: the whole weak-to-strong study on the built-in benchmark, offline."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator

from w2sclip.data.builtin import make_builtin
from w2sclip.data.builtin_render import DOMAINS
from w2sclip.data.manifest import load_manifest
from w2sclip.features.cache import ArrayCache
from w2sclip.pipeline import Task, Timer, dataset_key, run_seed, weak_logits
from w2sclip.report import markdown_report, write_results
from w2sclip.models.weak.timm_weak import WeakConfig

log = logging.getLogger(__name__)

DEMO_METHODS = ("zero_shot", "kd_lp", "cpl", "cpl_hard", "cpl_poe", "logconf", "adaptconf",
                "tip_adapter_f", "clip_adapter", "coop")
DEMO_WEAK = WeakConfig()
QUICK_WEAK = replace(DEMO_WEAK, epochs=10)


def weak_config(quick: bool) -> WeakConfig:
    """The demo's weak-supervisor budget (fewer epochs with ``--quick``)."""
    return QUICK_WEAK if quick else DEMO_WEAK


def default_cache_dir() -> Path:
    """``$W2SCLIP_CACHE`` or ``~/.cache/w2sclip``: generated data and cached arrays."""
    return Path(os.environ.get("W2SCLIP_CACHE", Path.home() / ".cache" / "w2sclip"))


def iter_builtin_runs(quick: bool, n_seeds: int, strong: tuple[str, ...], domains: tuple[str, ...],
                      cache_dir: Path, timer: Timer, progress: bool = True) -> Iterator[dict]:
    """Prepare every (strong, domain, seed) of the built-in study through the caches.

    Yields dicts with ``task, strong, feats, text, logit_scale, weak, weak_name, seed``.
    """
    from tqdm.auto import tqdm

    from w2sclip.experiment import text_weights_by_set
    from w2sclip.features.extract import cached_features
    from w2sclip.models.strong.openclip import load_strong

    bad = [d for d in domains if d not in DOMAINS]
    if bad:
        raise KeyError(f"unknown domain(s) {bad}; valid: {', '.join(DOMAINS)}")
    size = "quick" if quick else "default"
    weak_cfg = weak_config(quick)
    cache = ArrayCache(cache_dir / "arrays")
    with timer.stage("generate"):
        root = make_builtin(cache_dir / f"builtin-{size}", size=size, seed=0)
    tasks = [Task("builtin", d, load_manifest(root, d, "train", "builtin"),
                  load_manifest(root, d, "test", "builtin"), dataset_key(root, "builtin", d))
             for d in domains]
    weak = {}
    for task in tqdm(tasks, desc="weak supervisors", disable=not progress):
        for seed in range(n_seeds):
            weak[(task.domain, seed)] = weak_logits(task, weak_cfg, seed, cache, timer)
    for name in strong:
        with timer.stage("pretrain-load"):
            model = load_strong(name)
        for task in tqdm(tasks, desc=f"strong={name}", disable=not progress):
            with timer.stage("extraction"):
                feats = cached_features(model, task.test, cache, task.key)
                text = text_weights_by_set(model, task)
            for seed in range(n_seeds):
                yield {"task": task, "strong": name, "feats": feats, "text": text,
                       "prompt_encoder": lambda m=model, t=task: m.prompt_encoder(t.classnames),
                       "logit_scale": model.logit_scale, "weak": weak[(task.domain, seed)],
                       "weak_name": weak_cfg.slug, "seed": seed}


def run_demo(out: str | Path = "w2sclip-out", quick: bool = False, seeds: int | None = None,
             strong: tuple[str, ...] = ("full", "limited"), domains: tuple[str, ...] = DOMAINS,
             methods: tuple[str, ...] = DEMO_METHODS, cache_dir: str | Path | None = None,
             progress: bool = True) -> dict:
    """Run the study and write results.csv, results.json and report.md into ``out``."""
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out, cache_dir = Path(out), Path(cache_dir) if cache_dir else default_cache_dir()
    n_seeds = seeds if seeds is not None else (1 if quick else 3)
    weak_cfg = weak_config(quick)
    timer, t0 = Timer(), time.perf_counter()
    records = []
    for r in iter_builtin_runs(quick, n_seeds, strong, domains, cache_dir, timer, progress):
        records += run_seed(r["task"], r["strong"], r["feats"], r["text"], r["logit_scale"], r["weak"],
                            r["weak_name"], r["seed"], methods, timer, r["prompt_encoder"])
    with timer.stage("report"):
        timings = {k: round(v, 2) for k, v in timer.seconds.items()}
        timings["total"] = round(time.perf_counter() - t0, 2)
        meta = {"command": "demo", "quick": quick, "seeds": n_seeds, "strong": list(strong),
                "domains": list(domains), "methods": list(methods), "weak": asdict(weak_cfg),
                "data": str(cache_dir), "selection": "val_loss on hold_val weak labels (ceilings: val_acc on ground truth)",
                "timings_s": timings}
        write_results(records, out, meta)
        report = markdown_report(records, "w2sclip demo: built-in benchmark",
                                 notes=f"Weak supervisor: {weak_cfg.slug}. Model selection: early "
                                       f"stopping on the weak-label loss of hold_val (ceilings: "
                                       f"accuracy on the ground truth of hold_val).")
        (out / "report.md").write_text(report)
    return {"records": records, "report": report, "timings": timings, "out": out}
