"""A sweep: every run of a :class:`~w2sclip.config.SweepConfig`, skipping finished ones.

Runs execute in grid order, sequentially, in ``workers`` local processes, or as Ray tasks on a
cluster (``ray_address``; the runs folder and the cache must then be on a shared filesystem).
A failed run is logged and the sweep goes on; rerunning the sweep retries only what is missing.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import suppress
from pathlib import Path
from typing import Callable, Optional

from tqdm.auto import tqdm

from w2sclip.config import RunConfig, SweepConfig
from w2sclip.run import run, run_folder

log = logging.getLogger(__name__)


def plan(sweep: SweepConfig, runs_dir: str | Path) -> tuple[list[RunConfig], list[RunConfig]]:
    """(all runs, runs still to do)."""
    cfgs = sweep.runs()
    return cfgs, [c for c in cfgs if not run_folder(c, runs_dir).is_done]


def run_sweep(sweep: SweepConfig, runs_dir: str | Path, *, workers: int = 1,
              ray_address: Optional[str] = None, progress: bool = True,
              on_result: Optional[Callable[[dict], None]] = None) -> dict:
    """Execute the missing runs; returns ``{"total", "skipped", "ran", "reused", "failed": [...]}``
    (``reused``: runs among ``ran`` copied from the cache's finished runs, :mod:`w2sclip.run.reuse`).

    ``sweep.jsonl`` in ``runs_dir`` gets one JSON line per finished or failed run.
    """
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    cfgs, todo = plan(sweep, runs_dir)
    (runs_dir / f"sweep-{sweep.name}.json").write_text(json.dumps(
        {"sweep": sweep.model_dump(mode="json"),
         "runs": [run_folder(c, runs_dir).name for c in cfgs]}, indent=1))
    log.info("%s: %d runs, %d done, %d to do", sweep.name, len(cfgs), len(cfgs) - len(todo), len(todo))
    if not progress:
        todo = [c.model_copy(update={"progress": False}) for c in todo]
    if ray_address:
        results = _run_ray(todo, runs_dir, ray_address)
    elif workers > 1:
        results = _run_pool(todo, runs_dir, workers)
    else:
        results = (_run_safely(c.model_dump(mode="json"), str(runs_dir)) for c in todo)
    failed, ran, reused = [], 0, 0
    for res in tqdm(results, total=len(todo), desc=f"sweep {sweep.name}", disable=not progress):
        with open(runs_dir / "sweep.jsonl", "a") as f:
            f.write(json.dumps({"t": round(time.time(), 3), **res}) + "\n")
        if res["status"] == "done":
            ran += 1
            reused += bool(res.get("reused_from"))
        else:
            failed.append(res)
            log.error("run %s failed: %s", res["run"], res["error"])
        if on_result is not None:
            on_result(res)
    return {"total": len(cfgs), "skipped": len(cfgs) - len(todo), "ran": ran, "reused": reused, "failed": failed}


def _run_safely(cfg_dict: dict, runs_dir: str) -> dict:
    """Run one config; never raises (a sweep outlives a failing run)."""
    cfg = RunConfig(**cfg_dict)
    t0 = time.perf_counter()
    try:
        folder = run(cfg, runs_dir)
        return {"run": folder.name, "status": "done", "seconds": round(time.perf_counter() - t0, 2),
                "reused_from": folder.read_json("done", {}).get("reused_from")}
    except Exception as e:  # noqa: BLE001 - reported per run, the sweep continues
        return {"run": run_folder(cfg, runs_dir).name, "status": "failed",
                "error": f"{type(e).__name__}: {e}", "seconds": round(time.perf_counter() - t0, 2)}


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when the sweep's process dies, also by SIGKILL (which
    runs no clean-up in the parent). Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; elsewhere (and as
    a second guard) a daemon thread that exits once the parent's pid is no longer our parent."""
    with suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="w2sclip-parent-watch", daemon=True).start()


def _run_pool(todo: list[RunConfig], runs_dir: Path, workers: int):
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["W2SCLIP_THREADS"] = str(threads)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_run_safely, c.model_dump(mode="json"), str(runs_dir)): c for c in todo}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as e:  # noqa: BLE001 - a worker died (e.g. killed for memory)
                yield _worker_died(futures[fut], runs_dir, e)


def _run_ray(todo: list[RunConfig], runs_dir: Path, address: str):
    """Ray tasks (one CPU each); ``address="local"`` starts a local Ray instance."""
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'w2sclip[ray]' (or pip install ray)") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False,
                 runtime_env={"env_vars": {"W2SCLIP_THREADS": "1",
                                           **{k: v for k, v in os.environ.items()
                                              if k in ("HF_HUB_OFFLINE", "W2SCLIP_CACHE")}}})
    remote = ray.remote(num_cpus=1)(_run_safely)
    refs = {remote.options(num_gpus=1 if c.device.startswith("cuda") else 0)
            .remote(c.model_dump(mode="json"), str(runs_dir.resolve())): c for c in todo}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            yield ray.get(ready[0])
        except Exception as e:  # noqa: BLE001 - the Ray worker died; the sweep goes on
            yield _worker_died(refs[ready[0]], runs_dir, e)


def _worker_died(cfg: RunConfig, runs_dir: Path, e: Exception) -> dict:
    return {"run": run_folder(cfg, runs_dir).name, "status": "failed",
            "error": f"worker died: {type(e).__name__}: {e}", "seconds": None}
