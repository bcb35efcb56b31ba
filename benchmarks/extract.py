"""Images per second of the project's feature extraction next to a bare ``encode_image`` loop.

Same model, same pre-decoded batches, same process, interleaved repeats (median):

* ``bare``: ``for x in batches: normalize(model.encode_image(x.to(device)))``, results to the host;
* ``encoder``: ``w2sclip.features.extract.encode_batches`` (the loop inside ``extract``: device
  copies, precision, per-shard hand-over to the host through pinned memory) on those batches;
* ``decode``: the DataLoader alone (read, decode, preprocess in ``--workers`` processes);
* ``end-to-end``: ``extract()`` from image files into a fresh cache (decode + encode + atomic
  shard writes + merge).

The ratio encoder / bare is printed last (target >= 0.95).

    python benchmarks/extract.py --quick                 # built-in tiny CLIP, 64 px, seconds
    python benchmarks/extract.py                         # ViT-B-32 (random weights), 224 px
    python benchmarks/extract.py --device cuda --precision amp_bf16 --n 8192 --batch-size 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def make_images(root: Path, n: int, size: int) -> None:
    """``n`` random-content JPEGs (``size`` px, varied aspect) and a manifest, in ``root``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["path,label,domain,split"]
    base = rng.integers(0, 255, (size, size + size // 4, 3), dtype=np.uint8)
    for i in range(n):
        img = np.roll(base, 7 * i, axis=1)[:, : size + (i % 4) * size // 16]
        Image.fromarray(img).save(root / "img" / f"{i:06d}.jpg", quality=90)
        rows.append(f"img/{i:06d}.jpg,{i % 10},bench,test")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "classnames.txt").write_text("\n".join(f"c{k}" for k in range(10)) + "\n")


def loader(strong, dataset, batch_size: int, workers: int, device: torch.device):
    from PIL import Image

    from w2sclip.features.loading import SafeImages

    shape = tuple(strong.preprocess(Image.new("RGB", (32, 32))).shape)
    images = SafeImages(dataset.with_transform(strong.preprocess), shape)
    return torch.utils.data.DataLoader(images, batch_size=batch_size, num_workers=workers,
                                       pin_memory=device.type == "cuda",
                                       prefetch_factor=4 if workers else None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def run_bare(model, batches, device, precision: str) -> np.ndarray:
    """The loop anyone would write: encode, normalise in fp32, collect, copy to the host."""
    from w2sclip.features.extract import precision_dtypes

    inp, amp = precision_dtypes(precision, device)
    outs = []
    for x, _, _ in batches:
        x = x.to(device, dtype=inp, non_blocking=True)
        if amp is not None:
            with torch.autocast("cuda", dtype=amp):
                f = model.encode_image(x)
        else:
            f = model.encode_image(x)
        outs.append(F.normalize(f.float(), dim=-1))
    return torch.cat(outs).cpu().numpy()


def run_encoder(model, batches, device, precision: str, shard_size: int) -> np.ndarray:
    """``encode_batches`` as ``extract`` runs it, shards handed to the host (no disk)."""
    from w2sclip.features.extract import encode_batches

    got = []
    encode_batches(model, batches, device=device, dtype=torch.float32, shard_of=lambda i: i // shard_size,
                   on_shard=lambda j, rows, bad, ev: got.append((rows, ev)), precision=precision)
    for _, ev in got:
        if ev is not None:
            ev.synchronize()
    return np.concatenate([rows.numpy() for rows, _ in got])


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="built-in tiny CLIP at 64 px (seconds)")
    ap.add_argument("--strong", default=None, help="model spec (default ViT-B-32:random; --quick: full)")
    ap.add_argument("--n", type=int, default=None, help="images (default 256; --quick 1024)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for decode / end-to-end")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", help="fp32, amp, amp_bf16, fp16, bf16")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median)")
    args = ap.parse_args(argv)
    from w2sclip.data.manifest import load_manifest
    from w2sclip.features.extract import extract
    from w2sclip.models.strong.openclip import load_strong

    spec = args.strong or ("full" if args.quick else "ViT-B-32:random")
    n = args.n or (1024 if args.quick else 256)
    device = torch.device(args.device)
    strong = load_strong(spec, device=str(device), precision=args.precision)
    tmp = Path(tempfile.mkdtemp(prefix="w2s-bench-"))
    make_images(tmp / "data", n, 80 if args.quick else 256)
    dataset = load_manifest(tmp / "data", "bench", "test", "bench")
    t0 = time.perf_counter()
    batches = list(loader(strong, dataset, args.batch_size, args.workers, device))
    decode_once = time.perf_counter() - t0
    if device.type == "cuda":
        batches = [(x.pin_memory(), i, r) for x, i, r in batches]

    model = strong.model
    a = run_bare(model, batches, device, args.precision)  # warm-up both (allocator, kernels)
    b = run_encoder(model, batches, device, args.precision, args.shard_size)
    assert a.shape == b.shape == (n, a.shape[1]), (a.shape, b.shape)
    max_diff = float(np.abs(a - b).max())
    bare, enc, e2e, dec = [], [], [], []
    for r in range(args.repeats):  # interleaved, alternating order: load changes hit both alike
        pair = [("bare", lambda: run_bare(model, batches, device, args.precision)),
                ("enc", lambda: run_encoder(model, batches, device, args.precision, args.shard_size))]
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            (bare if name == "bare" else enc).append(timed(fn, device))
    for r in range(max(1, args.repeats // 2)):
        dec.append(timed(lambda: [None for _ in loader(strong, dataset, args.batch_size, args.workers, device)],
                         device))
        e2e.append(timed(lambda r=r: extract(strong, dataset, tmp / f"cache{r}", batch_size=args.batch_size,
                                             num_workers=args.workers, shard_size=args.shard_size,
                                             device=device, progress=False), device))
    rate = {k: n / statistics.median(v) for k, v in
            {"bare": bare, "encoder": enc, "decode": dec, "end-to-end": e2e}.items()}
    load = os.getloadavg()
    print(f"torch {torch.__version__}, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"threads {torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"model {spec} ({strong.image_size} px, precision {args.precision}), {n} images, batch "
          f"{args.batch_size}, shard {args.shard_size}, workers {args.workers}, median of {args.repeats} "
          f"(decode/end-to-end: {len(e2e)}); first decode {n / decode_once:.0f} img/s; "
          f"max |bare - encoder| = {max_diff:.2e}")
    print(f"bare encode_image loop        : {rate['bare']:9.1f} img/s")
    print(f"extract encoder part          : {rate['encoder']:9.1f} img/s")
    print(f"decode only (DataLoader)      : {rate['decode']:9.1f} img/s")
    print(f"extract end-to-end (files->cache): {rate['end-to-end']:6.1f} img/s")
    print(f"end-to-end / decode only      : {rate['end-to-end'] / rate['decode']:.3f}   "
          f"end-to-end / bare encode: {rate['end-to-end'] / rate['bare']:.3f}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"ratio extract encoder / bare loop: {rate['encoder'] / rate['bare']:.3f} (target >= 0.95)")
    return rate


if __name__ == "__main__":
    main()
