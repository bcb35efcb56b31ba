"""Images per second of the project's feature extraction next to a bare ``encode_image`` loop.

Same model, same pre-decoded batches, same process, interleaved repeats (median):

* ``bare``: ``for x in batches: normalize(model.encode_image(x.to(device)))``, results to the host;
* ``encoder``: ``w2sclip.features.extract.encode_batches`` (the loop inside ``extract``: device
  copies, precision, per-shard hand-over to the host through pinned memory) on those batches;
* ``decode``: the DataLoader alone (read, decode, preprocess in ``--workers`` processes);
* ``end-to-end``: ``extract()`` from image files into a fresh cache (decode + encode + atomic
  shard writes + merge).

The ratio encoder / bare is printed last (target >= 0.95).

``--realistic`` (docs/decoding.md) measures decoding on a DomainNet-like mix instead: photo-like
images (1/f noise, about 2 bits per pixel as JPEG) with the longer side uniform in 200-1200 px and
aspect 0.6-1.0 (70 % landscape): 87 % RGB JPEG (quality 75-95), 4 % greyscale JPEG, 2 % CMYK JPEG,
5 % RGB PNG, 2 % palette PNG (DomainNet itself is all JPEG), written to a temporary folder. It prints img/s of the naive PIL path (``preprocess(Image.open(f)
.convert("RGB"))`` in the same DataLoader), of the project's decode path, of the encoder alone,
of ``extract()`` end to end, and the cosine between the fast path's and the reference (``pil``)
path's features; the last line is ``decode speedup X.XX, overlap Y.YY, cosine Z.ZZZZ``.
``--zero-shot`` adds zero-shot accuracy on the built-in benchmark (PNG, and JPEG copies blown up
to 256-768 px) with the reference and the fast path.

    python benchmarks/extract.py --quick                 # built-in tiny CLIP, 64 px, seconds
    python benchmarks/extract.py                         # ViT-B-32 (random weights), 224 px
    python benchmarks/extract.py --device cuda --precision amp_bf16 --n 8192 --batch-size 256
    python benchmarks/extract.py --realistic --batch-size 16   # CPU: ViT-B-32 (random weights), ~5 min
    python benchmarks/extract.py --zero-shot             # only the zero-shot comparison (built-in full)
    python benchmarks/extract.py --realistic --device cuda --precision bf16 --n 8192 --batch-size 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
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


def loader(strong, dataset, batch_size: int, workers: int, device: torch.device, decode: str = "auto"):
    """The batches ``extract`` encodes: the project's decode path, normalised on ``device``."""
    from w2sclip.data.decode import ImageDecoder, resolve_decode
    from w2sclip.features.loading import image_batches, image_source

    images = image_source(dataset, ImageDecoder(strong.preprocess, resolve_decode(decode, device)))
    sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(images), batch_size, False)
    return image_batches(images, sampler, num_workers=workers, device=device)


class _Naive(torch.utils.data.Dataset):
    """What anyone would write: ``preprocess(Image.open(path).convert("RGB"))``."""

    def __init__(self, paths: list[str], preprocess) -> None:
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return self.preprocess(img.convert("RGB"))


def naive_loader(strong, dataset, batch_size: int, workers: int, device: torch.device):
    return torch.utils.data.DataLoader(_Naive([p for p, _ in dataset.samples], strong.preprocess),
                                       batch_size=batch_size, num_workers=workers,
                                       pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)


def _texture_bank(rng: np.random.Generator, n: int = 4, side: int = 1280) -> list[np.ndarray]:
    """Photo-like colour textures: 1/f^1.3 amplitude spectrum noise (JPEG ~2 bits per pixel)."""
    fy, fx = np.fft.fftfreq(side)[:, None], np.fft.rfftfreq(side)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1
    bank = []
    for _ in range(n):
        a = np.stack([np.fft.irfft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** 1.3,
                                    s=(side, side)) for _ in range(3)], -1)
        bank.append(np.clip(128 + 45 * (a - a.mean()) / a.std(), 0, 255).astype(np.uint8))
    return bank


_BANK: list[np.ndarray] = []  # textures shared with forked generator processes


def _write_realistic(args: tuple) -> list[tuple[str, str]]:
    """Write images ``start..stop`` of the mix (each from its own seeded generator)."""
    from PIL import Image

    root, seed, start, stop = args
    out, side = [], _BANK[0].shape[0]
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        long, aspect = int(rng.integers(200, 1201)), rng.uniform(0.6, 1.0)
        w, h = (long, int(long * aspect)) if rng.random() < 0.7 else (int(long * aspect), long)
        y, x = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
        img = Image.fromarray(_BANK[i % len(_BANK)][y:y + h, x:x + w])
        kind = str(rng.choice(["jpeg", "png", "grey", "cmyk", "palette"], p=[0.87, 0.05, 0.04, 0.02, 0.02]))
        name = f"{i:06d}.{'png' if kind in ('png', 'palette') else 'jpg'}"
        img = {"grey": img.convert("L"), "cmyk": img.convert("CMYK"), "palette": img.convert("P")}.get(kind, img)
        img.save(root / "img" / name, **({"quality": int(rng.integers(75, 96))} if name.endswith("jpg") else {}))
        out.append((name, kind))
    return out


def make_realistic(root: Path, n: int, seed: int = 0) -> dict:
    """``n`` images of the DomainNet-like mix (module docstring) and a manifest; returns counts.
    Written by one process per core (fork), the same files whatever the number of cores."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _BANK[:] = _texture_bank(np.random.default_rng(seed))
    (root / "img").mkdir(parents=True, exist_ok=True)
    step = 64
    jobs = [(root, seed, a, min(a + step, n)) for a in range(0, n, step)]
    if len(jobs) > 1 and (os.cpu_count() or 1) > 1:
        with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("fork")) as pool:
            written = [x for part in pool.map(_write_realistic, jobs) for x in part]
    else:
        written = [x for job in jobs for x in _write_realistic(job)]
    rows, counts = ["path,label,domain,split"], {}
    for i, (name, kind) in enumerate(written):
        counts[kind] = counts.get(kind, 0) + 1
        rows.append(f"img/{name},{i % 10},bench,test")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "classnames.txt").write_text("\n".join(f"c{k}" for k in range(10)) + "\n")
    return counts


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


def _drain(batches, device, first: list | None = None) -> int:
    """Images in ``batches``; appends the seconds to the first batch (workers' start-up) to ``first``."""
    n, t0 = 0, time.perf_counter()
    for x, *_ in batches:
        if n == 0 and first is not None:
            sync(device)
            first.append(time.perf_counter() - t0)
        n += len(x)
    sync(device)
    return n


def _mean_cosine(a, b) -> float:
    ok = a.valid & b.valid
    return float((np.asarray(a.features)[ok] * np.asarray(b.features)[ok]).sum(1).mean())


def _note(text: str) -> None:
    """Progress on stderr as each stage ends (long CPU runs)."""
    print(text, file=sys.stderr, flush=True)


def realistic(args) -> dict:
    """Decode paths on the realistic mix: naive PIL, the project's, encoder, end to end, cosine."""
    from w2sclip.data.decode import resolve_decode
    from w2sclip.data.manifest import load_manifest
    from w2sclip.features.extract import extract

    device = torch.device(args.device)
    spec = args.strong or "ViT-B-32:random"
    strong = load_strong_quiet(spec, device, args.precision)
    tmp = Path(tempfile.mkdtemp(prefix="w2s-bench-"))
    try:
        counts = make_realistic(tmp / "data", args.n or 3072)
        full = load_manifest(tmp / "data", "bench", "test", "bench")
        m = min(len(full), args.n_encode or (192 if device.type == "cpu" else len(full)))
        part = full.without(p for p, _ in full.samples[m:])
        path = resolve_decode("auto", device)
        bs, w = args.batch_size, args.workers
        first: dict[str, list] = {"naive": [], "decode": []}
        stages = {"naive": lambda: _drain(naive_loader(strong, full, bs, w, device), device, first["naive"]),
                  "decode": lambda: _drain(loader(strong, full, bs, w, device), device, first["decode"])}
        times = {k: [] for k in ("naive", "decode", "encoder", "end-to-end")}
        if device.type == "cuda":
            times["bare"] = []
        for r in range(args.decode_repeats):  # interleaved, alternating order: load changes hit both alike
            order = list(stages.items())
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                times[name].append(timed(fn, device))
                _note(f"{name}: {len(full) / times[name][-1]:.1f} img/s")
        batches = list(loader(strong, part, bs, w, device))
        run_bare(strong.model, batches[:1], device, args.precision)  # warm-up
        for r in range(args.repeats):
            times["encoder"].append(timed(lambda: run_encoder(strong.model, batches, device, args.precision,
                                                              args.shard_size), device))
            if "bare" in times:
                times["bare"].append(timed(lambda: run_bare(strong.model, batches, device, args.precision), device))
            times["end-to-end"].append(timed(lambda r=r: extract(strong, part, tmp / f"cache{r}", batch_size=bs,
                                                                 num_workers=w, shard_size=args.shard_size,
                                                                 device=device, progress=False), device))
            _note(f"encoder {m / times['encoder'][-1]:.2f} img/s, end-to-end {m / times['end-to-end'][-1]:.2f} img/s")
        n_of = {"naive": len(full), "decode": len(full)}
        rate = {k: n_of.get(k, m) / statistics.median(v) for k, v in times.items()}
        fast = extract(strong, part, tmp / "cache0", batch_size=bs, num_workers=w, device=device, progress=False)
        ref = extract(strong, part, tmp / "ref", batch_size=bs, num_workers=w, device=device, progress=False,
                      decode="pil")
        cosine = _mean_cosine(fast, ref)
        _note(f"cosine {cosine:.5f}")
        by_format = per_format(strong, full, path)
        zero_shot = _zero_shot(strong_for_zero_shot(args, device), tmp, args) if args.zero_shot else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first_batch = {k: statistics.median(v) for k, v in first.items()}
    _print_realistic(args, strong, spec, device, path, counts, m, rate, first_batch, cosine, zero_shot, by_format)
    return {**rate, "cosine": cosine, "zero_shot": zero_shot, "by_format": by_format, "first_batch": first_batch}


def per_format(strong, dataset, path: str) -> dict:
    """ms per image of the naive and the project's worker function, by file format, in this
    process on one thread (no DataLoader): where decoding time goes."""
    from w2sclip.data.decode import ImageDecoder

    naive, dec = _Naive([p for p, _ in dataset.samples], strong.preprocess), ImageDecoder(strong.preprocess, path)
    if path == "nvjpeg":
        return {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[str, dict[str, float]] = {}
    try:
        for fmt in ("jpg", "png"):
            idx = [i for i, (p, _) in enumerate(dataset.samples) if p.endswith("." + fmt)]
            best = {"naive": float("inf"), "project": float("inf")}
            for _ in range(2):
                t0 = time.perf_counter()
                for i in idx:
                    naive[i]
                t1 = time.perf_counter()
                for i in idx:
                    dec.read(dataset.samples[i][0])
                t2 = time.perf_counter()
                best = {"naive": min(best["naive"], t1 - t0), "project": min(best["project"], t2 - t1)}
            out[fmt] = {"n": len(idx), **{k: 1000 * v / max(1, len(idx)) for k, v in best.items()}}
    finally:
        torch.set_num_threads(threads)
    return out


def zero_shot_only(args) -> dict:
    """``--zero-shot`` without ``--realistic``: only the zero-shot comparison."""
    tmp = Path(tempfile.mkdtemp(prefix="w2s-bench-"))
    try:
        acc = _zero_shot(strong_for_zero_shot(args, torch.device(args.device)), tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _print_zero_shot(acc)
    return acc


def _print_zero_shot(zero_shot: dict) -> None:
    for fmt in ("png", "jpeg"):
        ref, fast = zero_shot[(fmt, "pil")], zero_shot[(fmt, "auto")]
        print(f"zero-shot accuracy, built-in real/test as {fmt.upper():4s}: reference {ref:.2f} %, "
              f"fast path {fast:.2f} %, difference {fast - ref:+.2f} points; identical features: "
              f"{zero_shot[(fmt, 'same features')]}")


def load_strong_quiet(spec: str, device: torch.device, precision: str):
    import warnings

    from w2sclip.models.strong.openclip import load_strong

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        return load_strong(spec, device=str(device), precision=precision)


def strong_for_zero_shot(args, device: torch.device):
    """The built-in checkpoint ``full`` (trained on the built-in world, 64 px): zero-shot means something."""
    return load_strong_quiet("full", device, "fp32")


def _zero_shot(strong, tmp: Path, args) -> dict:
    """Zero-shot accuracy (%) on the built-in benchmark's ``real`` test split with decode=pil and
    the fast path, on its PNGs and on JPEG copies blown up to 256-768 px (quality 85-95)."""
    from PIL import Image

    from w2sclip.data.builtin import make_builtin
    from w2sclip.data.manifest import load_manifest
    from w2sclip.features.extract import extract

    # the default size's real/test split (1,920 images; one image = 0.05 points): the quick one has
    # 576 (0.17 points), too coarse for a guard of 0.5 points
    root = make_builtin(tmp / "builtin", size="default", domains=("real",))
    rng = np.random.default_rng(0)
    (tmp / "builtin_jpg").mkdir()
    lines = (root / "manifest.csv").read_text().splitlines()
    out = [lines[0]]
    for k, line in enumerate(lines[1:]):
        rel, rest = line.split(",", 1)
        with Image.open(root / rel) as img:
            side = int(rng.integers(256, 769))
            big = img.convert("RGB").resize((side, side), Image.BICUBIC)
        name = f"{k:06d}.jpg"
        big.save(tmp / "builtin_jpg" / name, quality=int(rng.integers(85, 96)))
        out.append(f"{name},{rest}")
    for f in ("classnames.txt", "templates.txt"):
        shutil.copy(root / f, tmp / "builtin_jpg" / f)
    (tmp / "builtin_jpg" / "manifest.csv").write_text("\n".join(out) + "\n")
    acc, feats = {}, {}
    for fmt, folder in (("png", root), ("jpeg", tmp / "builtin_jpg")):
        ds = load_manifest(folder, "real", "test", f"builtin-{fmt}")
        w = strong.text_weights(ds.classnames, ds.templates)
        for decode in ("pil", "auto"):
            fs = extract(strong, ds, tmp / f"zs-{fmt}-{decode}", batch_size=args.batch_size, num_workers=args.workers,
                         device=strong.device, progress=False, decode=decode)
            pred = (np.asarray(fs.features) @ w.T).argmax(1)
            acc[(fmt, decode)] = 100 * float((pred == np.asarray(ds.labels)).mean())
            _note(f"zero-shot {fmt} decode={decode}: {acc[(fmt, decode)]:.2f} %")
            feats[decode] = np.asarray(fs.features)
        acc[(fmt, "same features")] = bool(np.array_equal(feats["pil"], feats["auto"]))
    return acc


def _print_realistic(args, strong, spec, device, path, counts, m, rate, first_batch, cosine, zero_shot,
                     by_format) -> None:
    load = os.getloadavg()
    print(f"torch {torch.__version__}, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, cpus {os.cpu_count()}, "
          f"threads {torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"realistic mix: {sum(counts.values())} images {counts}, longer side 200-1200 px; model {spec} "
          f"({strong.image_size} px, {args.precision}); decode path {path}; batch {args.batch_size}, "
          f"workers {args.workers}; encoder / end-to-end on the first {m}; median of {args.decode_repeats} "
          f"(decode) and {args.repeats} (encoder, end to end)")
    names = {"naive": "decode, naive PIL (open+convert+preprocess)", "decode": f"decode, project ({path})",
             "bare": "encoder, bare encode_image loop", "encoder": "encoder, extract's loop",
             "end-to-end": "extract end to end (files -> cache)"}
    for k, label in names.items():
        if k in rate:
            start = f" (first batch after {first_batch[k]:.2f} s)" if k in first_batch else ""
            print(f"{label:46s}: {rate[k]:9.1f} img/s{start}")
    overlap = rate["end-to-end"] / min(rate["decode"], rate["encoder"])
    vs_bare = f"end-to-end / bare encoder: {rate['end-to-end'] / rate['bare']:.3f}; " if "bare" in rate else ""
    print(f"{vs_bare}end-to-end / min(decode, encoder): {overlap:.3f}; mean cosine fast vs reference (pil) "
          f"features: {cosine:.5f}")
    for fmt, v in by_format.items():
        print(f"one worker, {fmt.upper()} ({v['n']} files): naive {v['naive']:.2f} ms/img, project "
              f"{v['project']:.2f} ms/img, speedup {v['naive'] / v['project']:.2f}")
    if zero_shot:
        _print_zero_shot(zero_shot)
    print(f"decode speedup {rate['decode'] / rate['naive']:.2f}, overlap {overlap:.2f}, cosine {cosine:.4f}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="built-in tiny CLIP at 64 px (seconds)")
    ap.add_argument("--strong", default=None, help="model spec (default ViT-B-32:random; --quick: full)")
    ap.add_argument("--n", type=int, default=None, help="images (default 256; --quick 1024; --realistic 3072)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for decode / end-to-end")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", help="fp32, amp, amp_bf16, fp16, bf16")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median)")
    ap.add_argument("--realistic", action="store_true", help="decode paths on a DomainNet-like size mix")
    ap.add_argument("--n-encode", type=int, default=None,
                    help="--realistic: images for encoder / end to end (default: 192 on CPU, all on GPU)")
    ap.add_argument("--zero-shot", action="store_true", help="zero-shot accuracy on the built-in benchmark, reference vs fast path")
    ap.add_argument("--decode-repeats", type=int, default=5, help="--realistic: repeats of the decode stages")
    args = ap.parse_args(argv)
    if args.realistic or args.zero_shot:
        args.repeats = min(args.repeats, 3) if "--repeats" not in (argv or sys.argv) else args.repeats
        return realistic(args) if args.realistic else zero_shot_only(args)
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
