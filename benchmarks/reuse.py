"""Issue 13: `w2sclip demo --quick` and the `builtin` preset as a sweep into another runs dir, one cache.

Runs, in fresh folders, ``w2sclip demo --quick --out A`` then ``w2sclip sweep builtin --set
builtin_size=quick --set 'grid.seed=[0]' --runs-dir R`` with the same cache (and, with
``--both-orders``, the reverse), each as its own process like a user would, timing each with
the cache's entries (features, weak logits, stored runs) counted after it. Prints the second
command's time as a fraction of the first's last:
``second / first: X.XXX (demo then sweep)[, Y.YYY (sweep then demo)]``.

    python benchmarks/reuse.py [--both-orders] [--set key=value ...]

``--set`` goes to both commands (e.g. ``--set 'grid.domain=[real]'`` for a one-domain smoke run).
Each command runs with its own default workers, as the issue's commands do (the demo 2, the
sweep 1), so the two orders' first commands are not comparable with each other; features and
weak logits were already shared before stored runs, so the second command's time is what is
left once nothing is computed again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def gflops() -> float:
    """float32 matmul speed of this machine (the brief's yardstick for wall times)."""
    import torch

    a = torch.randn(3000, 3000)
    a @ a
    t = time.perf_counter()
    a @ a
    return 54 / (time.perf_counter() - t)


def entries(cache: Path) -> dict[str, int]:
    return {k: sum(1 for p in (cache / k).glob("*") if not p.name.startswith(".")) if (cache / k).exists() else 0
            for k in ("features", "arrays", "runs")}


def timed(cmd: list[str], env: dict, log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(cmd[2:])} failed (exit status {done.returncode}):\n{tail}")
    return time.perf_counter() - t


def one_order(tmp: Path, first: str, sets: list[str]) -> tuple[float, float, list[str]]:
    cache = tmp / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "W2SCLIP_CACHE": str(cache)}
    w2s = [sys.executable, "-m", "w2sclip.cli"]
    extra = [x for s in sets for x in ("--set", s)]
    demo = [*w2s, "demo", "--quick", "--quiet", "--out", str(tmp / "A"), *extra]
    sweep = [*w2s, "sweep", "builtin", "--quiet", "--set", "builtin_size=quick", "--set", "grid.seed=[0]",
             "--runs-dir", str(tmp / "R"), *extra]
    cmds = {"demo": demo, "sweep": sweep}
    second = "sweep" if first == "demo" else "demo"
    lines, times = [], []
    for name in (first, second):
        times.append(timed(cmds[name], env, tmp / f"{name}.log"))
        tail = [x for x in (tmp / f"{name}.log").read_text().splitlines() if "copied from the cache" in x]
        lines.append(f"{first} then {second}: {name:5s} {times[-1]:7.1f} s; cache entries {entries(cache)}"
                     + (f"; {tail[0].strip()}" if tail else ""))
    return times[0], times[1], lines


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--both-orders", action="store_true", help="also the sweep first, then the demo")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override for both commands")
    args = ap.parse_args(argv)
    before = gflops()
    ratios = {}
    for first in ("demo", "sweep") if args.both_orders else ("demo",):
        tmp = Path(tempfile.mkdtemp(prefix="w2s-reuse-"))
        try:
            a, b, lines = one_order(tmp, first, args.sets)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print("\n".join(lines), flush=True)
        ratios[f"{first} then {'sweep' if first == 'demo' else 'demo'}"] = b / a
    print(f"float32 matmul {before:.0f} GFLOP/s before, {gflops():.0f} after; {os.cpu_count()} cpus")
    print("second / first: " + ", ".join(f"{r:.3f} ({k})" for k, r in ratios.items()))
    return ratios


if __name__ == "__main__":
    main()
