"""Time and peak memory of a minibatch CPL fit read from memory-mapped features, against N and C.

Features (N, D) and weak probabilities (N, C) are written as ``.npy`` files (block by block, so
writing is bounded too), opened with ``np.load(mmap_mode="r")`` in a fresh process and fitted
with ``cpl`` (``batch_size`` rows per step, ``selection="fixed"``). Peak memory is the process's
peak anonymous resident memory during ``fit`` above what it held before (pages of the mapped
files are page cache the kernel can drop, not memory of the process; they are reported
separately as the peak total RSS). The ratio to one batch of features, ``batch_size * D * 4``
bytes, is printed last: it stays flat in N when nothing of size N is materialised.

    python benchmarks/scaling.py                 # N = 10k, 100k, 1M; C = 345, 1000 (minutes, ~6 GB of disk)
    python benchmarks/scaling.py --quick         # small shapes, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np

ROWS = 1 << 16  # rows written per block


def write_features(path: Path, n: int, d: int, seed: int = 0) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    for i in range(0, n, ROWS):
        out[i:i + ROWS] = rng.standard_normal((min(ROWS, n - i), d), dtype=np.float32)
    out.flush()
    del out


def write_probs(path: Path, n: int, c: int, seed: int = 1) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, c))
    rng = np.random.default_rng(seed)
    for i in range(0, n, ROWS):
        z = 3 * rng.standard_normal((min(ROWS, n - i), c), dtype=np.float32)
        z = np.exp(z - z.max(1, keepdims=True))
        out[i:i + ROWS] = z / z.sum(1, keepdims=True)
    out.flush()
    del out


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakAnon:
    """Samples the anonymous resident memory (RssAnon) every ``interval`` seconds."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kb("RssAnon"))
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kb("RssAnon"))


def child(x_path: str, p_path: str, batch_size: int, epochs: int) -> dict:
    """Runs in a fresh process: fit cpl on the memory maps, report time and memory."""
    from w2sclip.methods import get_method

    X, P = np.load(x_path, mmap_mode="r"), np.load(p_path, mmap_mode="r")
    text = np.random.default_rng(2).standard_normal((P.shape[1], X.shape[1]), dtype=np.float32)
    m = get_method("cpl", batch_size=batch_size, epochs=epochs, selection="fixed")
    m.fit(X[:batch_size], P[:batch_size], text_weights=text, logit_scale=100.0)  # warm-up
    del m
    before = _status_kb("RssAnon")
    m = get_method("cpl", batch_size=batch_size, epochs=epochs, selection="fixed")
    with PeakAnon() as peak:
        t0 = time.perf_counter()
        m.fit(X, P, text_weights=text, logit_scale=100.0)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "steps": m.history_["steps_run"], "peak_anon_mb": (peak.peak - before) / 1024,
            "anon_before_mb": before / 1024, "peak_rss_mb": _status_kb("VmHWM") / 1024}


def run_case(x_path: Path, p_path: Path, batch_size: int, epochs: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(x_path), str(p_path), str(batch_size), str(epochs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (a smoke run, seconds)")
    ap.add_argument("--n", type=int, nargs="+", help="rows (default 10000 100000 1000000)")
    ap.add_argument("--c", type=int, nargs="+", help="classes (default 345 1000)")
    ap.add_argument("--d", type=int, help="feature dimension (default 512)")
    ap.add_argument("--batch-size", type=int, help="rows per step (default 4096)")
    ap.add_argument("--epochs", type=int, default=1, help="passes over the data (default 1)")
    ap.add_argument("--dir", default="/work/scratch/w2sclip-scaling", help="where the .npy files go")
    ap.add_argument("--keep", action="store_true", help="keep the .npy files")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        x, p, bs, ep = args.child
        print(json.dumps(child(x, p, int(bs), int(ep))))
        return []
    ns = args.n or ([2000, 20000] if args.quick else [10_000, 100_000, 1_000_000])
    cs = args.c or ([10, 50] if args.quick else [345, 1000])
    d = args.d or (32 if args.quick else 512)
    bs = args.batch_size or (256 if args.quick else 4096)
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.2f}, D = {d}, batch {bs}, {args.epochs} epoch(s), "
          f"files in {root}")
    print("| N | C | GB on disk | steps | seconds | rows/s | peak anon MB | peak RSS MB (incl. mapped pages) | peak / batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows, batch_mb = [], bs * d * 4 / 2**20
    try:
        for n in ns:
            x_path = root / f"x-{n}-{d}.npy"
            write_features(x_path, n, d)
            for c in cs:
                p_path = root / f"p-{n}-{c}.npy"
                write_probs(p_path, n, c)
                r = {"N": n, "C": c, **run_case(x_path, p_path, bs, args.epochs)}
                r["ratio"] = r["peak_anon_mb"] / batch_mb
                gb = (x_path.stat().st_size + p_path.stat().st_size) / 1e9
                print(f"| {n} | {c} | {gb:.2f} | {r['steps']} | {r['seconds']:.2f} | "
                      f"{n * args.epochs / r['seconds']:.0f} | {r['peak_anon_mb']:.1f} | "
                      f"{r['peak_rss_mb']:.0f} | {r['ratio']:.1f} |", flush=True)
                rows.append(r)
                if not args.keep:
                    p_path.unlink()
            if not args.keep:
                x_path.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    ratios = [r["ratio"] for r in rows]
    print(f"\npeak memory / one batch of features ({batch_mb:.3g} MB): max {max(ratios):.1f}, "
          f"min {min(ratios):.1f} over N = {ns}, C = {cs}")
    return rows


if __name__ == "__main__":
    main()
