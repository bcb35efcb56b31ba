"""Cost of a dataset's content identity (``w2sclip.data.identity``) on a DomainNet-sized split.

Writes ``--n`` files (default 120,000, sizes log-normal around DomainNet's ~40 KB JPEGs) into a
scratch folder, then times ``content_id``: first without a memo (every file hashed), then with
the memo (only ``stat`` calls), next to the time the CPU extraction of the same number of images
would take with a ViT-B-32 at 224 px (measured here on a few batches of decoded images).

    python benchmarks/identity.py --out /tmp/idbench            # ~5 GB of scratch files
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def make_files(root: Path, n: int, seed: int = 0) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.lognormal(np.log(40_000), 0.5, n), 2_000, 400_000).astype(int)
    samples = []
    block = rng.bytes(int(sizes.max()) + 4096)
    for i, s in enumerate(sizes):
        folder = root / f"class_{i % 345:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.jpg"
        off = int(rng.integers(0, 4096))
        path.write_bytes(i.to_bytes(8, "little") + block[off:off + int(s)])
        samples.append((str(path), i % 345))
    return samples


def extraction_rate(batches: int = 4, batch_size: int = 32) -> float:
    """Images per second of a ViT-B-32 forward pass at 224 px on this CPU (decode not counted)."""
    import torch

    from w2sclip.models.strong.openclip import load_strong

    strong = load_strong("ViT-B-32:random")
    x = torch.randn(batch_size, 3, 224, 224)
    strong.encode_images(x)
    t = time.perf_counter()
    for _ in range(batches):
        strong.encode_images(x)
    return batches * batch_size / (time.perf_counter() - t)


def main() -> None:
    import torch

    from w2sclip.data.identity import content_id
    from w2sclip.data.manifest import ImageDataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=120_000)
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (deleted afterwards)")
    args = ap.parse_args()
    a = torch.randn(3000, 3000)
    a @ a
    t = time.perf_counter()
    a @ a
    print(f"machine: {os.cpu_count()} cores, matmul {54 / (time.perf_counter() - t):.0f} GFLOP/s")
    root = args.out or Path(tempfile.mkdtemp(prefix="idbench-"))
    memo = root / "_memo"
    try:
        t = time.perf_counter()
        samples = make_files(root / "data", args.n)
        total = sum(os.path.getsize(p) for p, _ in samples)
        print(f"wrote {args.n} files, {total / 1e9:.2f} GB, in {time.perf_counter() - t:.0f} s")
        ds = lambda: ImageDataset("bench", [f"c{i}" for i in range(345)], ["{}"], samples, "real", "test")
        t = time.perf_counter()
        first = content_id(ds(), memo)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        again = content_id(ds(), memo)
        warm = time.perf_counter() - t
        assert first == again
        rate = extraction_rate()
        extract = args.n / rate
        print(f"identity without memo (hash {total / 1e9:.2f} GB): {cold:.1f} s ({total / 1e6 / cold:.0f} MB/s)")
        print(f"identity with memo (stat only): {warm:.2f} s")
        print(f"ViT-B-32 CPU encoding alone: {rate:.1f} img/s -> {extract:.0f} s for {args.n} images")
        print(f"identity / extraction: first {cold / extract:.4f}, later {warm / extract:.5f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
