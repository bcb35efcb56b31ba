"""Decoding: every PIL mode faithfully to RGB, JPEG draft decoding, the GPU dispatch and its CPU
fallback (monkeypatched: no GPU needed), decode identities, prefetching, weak decode-once. CPU, offline."""

import io
import time
import types

import numpy as np
import pytest
import torch
from PIL import Image

from w2sclip.data.decode import (
    ImageDecoder,
    decode_identity,
    fused_resize_crop,
    gpu_decodable,
    resolve_decode,
    split_preprocess,
    turbo_decode,
)
from w2sclip.data.images import BadImageError, open_image, to_rgb
from w2sclip.features.loading import prefetch


def smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 (h, w, 3) image: a bicubic blow-up of random 6x6 colours."""
    lo = np.random.default_rng(seed).integers(0, 255, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(lo).resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def preprocess():
    from open_clip.transform import image_transform

    return image_transform(64, is_train=False)


def rgb(path, **kw) -> np.ndarray:
    img = open_image(path, **kw)
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


# faithful modes --------------------------------------------------------------------------------

def test_png_rgb_and_grey_are_exact(tmp_path):
    a = smooth(20, 30)
    Image.fromarray(a).save(tmp_path / "c.png")
    Image.fromarray(a[..., 0]).save(tmp_path / "g.png")
    assert np.array_equal(rgb(tmp_path / "c.png"), a)
    g = rgb(tmp_path / "g.png")
    assert np.array_equal(g[..., 0], a[..., 0]) and np.array_equal(g[..., 0], g[..., 2])


def test_16_bit_png_is_rescaled_not_white(tmp_path):
    v = np.linspace(0, 65535, 16 * 16).astype(np.uint16).reshape(16, 16)
    Image.fromarray(v).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode == "I;16"
    got = rgb(tmp_path / "d.png")[..., 0]
    assert np.array_equal(got, np.rint(v / 257).astype(int))
    assert got.min() == 0 and got.max() == 255 and 100 < got.mean() < 155  # PIL's convert: all 255


@pytest.mark.parametrize("peak,top", [(255, 255), (65535, 65535), (2**31 - 1, 2**31 - 1)])
def test_32_bit_integer_tiff_scales_by_the_smallest_range_that_holds_it(tmp_path, peak, top):
    v = np.linspace(0, peak, 64).astype(np.int64).reshape(8, 8)
    v[0, 0] = -5  # negatives become 0
    Image.fromarray(v.astype(np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    got = rgb(tmp_path / "i.tif")[..., 0]
    want = (np.clip(v, 0, None) * 255 + top // 2) // top
    assert np.array_equal(got, want) and got[0, 0] == 0 and got.max() == 255


def test_float_tiff_unit_range_scaled_else_stretched_and_nan_black(tmp_path):
    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(unit).save(tmp_path / "u.tif")
    assert np.array_equal(rgb(tmp_path / "u.tif")[..., 0], np.rint(unit * 255).astype(int))
    wide = unit * 4000 - 1000
    wide[0, 0] = np.nan
    Image.fromarray(wide).save(tmp_path / "w.tif")
    got = rgb(tmp_path / "w.tif")[..., 0]
    assert got[0, 0] == 0 and got.max() == 255 and got[0, 1] == 0  # min (after the NaN) -> 0


def test_one_bit_palette_transparency_and_alpha_on_white(tmp_path):
    bits = Image.fromarray(np.eye(8, dtype=bool))
    assert bits.mode == "1"
    bits.save(tmp_path / "b.png")
    assert np.array_equal(rgb(tmp_path / "b.png")[..., 1], np.eye(8, dtype=int) * 255)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "p.png", transparency=0)  # index 0 (black) is transparent
    p = rgb(tmp_path / "p.png")
    assert p[0, 0].tolist() == [255, 255, 255] and p[1, 1].tolist() == [200, 10, 10]
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [10, 20, 30, 255]
    rgba[0, 1] = [0, 0, 0, 128]
    Image.fromarray(rgba).save(tmp_path / "a.png")
    a = rgb(tmp_path / "a.png")
    assert a[0, 0].tolist() == [10, 20, 30] and a[1, 1].tolist() == [255, 255, 255]
    assert 120 <= a[0, 1, 0] <= 135  # half-transparent black over white
    la = Image.new("LA", (2, 1), (0, 0))
    la.save(tmp_path / "la.png")
    assert rgb(tmp_path / "la.png").min() == 255


def test_cmyk_jpeg_and_unconvertible_mode(tmp_path):
    a = np.full((16, 16, 3), (200, 40, 40), np.uint8)
    Image.fromarray(a).convert("CMYK").save(tmp_path / "k.jpg", quality=95)
    assert Image.open(tmp_path / "k.jpg").mode == "CMYK"
    assert np.abs(rgb(tmp_path / "k.jpg") - a).max() <= 12
    assert np.abs(rgb(tmp_path / "k.jpg", draft=4) - a[:1, :1]).max() <= 12  # draft keeps the colours
    with pytest.raises(BadImageError, match="mode La cannot be converted to RGB") as e:
        to_rgb(Image.new("La", (2, 2)), "x.png")
    assert e.value.path == "x.png" and "save the file as RGB" in str(e.value)


def test_truncated_and_empty_jpegs_are_bad_files(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(smooth(64, 64)).save(buf, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match="truncated"):
        open_image(tmp_path / "t.jpg")
    with pytest.raises(BadImageError, match="truncated"):
        open_image(tmp_path / "t.jpg", draft=16)
    with pytest.raises(BadImageError, match="empty file"):
        open_image(tmp_path / "e.jpg")


def _rotated_jpeg(path, a: np.ndarray, orientation: int = 6) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((40, 80, 3), np.uint8)
    a[:10, :10] = 255  # white top-left corner as stored
    _rotated_jpeg(tmp_path / "r.jpg", a)  # 6: rotate 90 degrees clockwise to display
    got = rgb(tmp_path / "r.jpg")
    assert got.shape == (80, 40, 3)
    assert got[:10, -10:].mean() > 200 and got[:10, :10].mean() < 50  # the corner is now top-right
    assert rgb(tmp_path / "r.jpg", draft=20).shape == (40, 20, 3)  # half scale, then rotated


# draft decoding ----------------------------------------------------------------------------------

def test_draft_decodes_jpegs_smaller_but_never_below_the_target(tmp_path, preprocess):
    Image.fromarray(smooth(600, 900)).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(smooth(600, 900)).save(tmp_path / "big.png")
    assert open_image(tmp_path / "big.jpg", draft=64).size == (113, 75)  # 1/8 scale, shorter >= 64
    assert open_image(tmp_path / "big.jpg", draft=200).size == (450, 300)  # 1/2: 1/4 is < 200
    assert open_image(tmp_path / "big.png", draft=64).size == (900, 600)  # PNG: full size
    ref, fast = ImageDecoder(preprocess, "pil"), ImageDecoder(preprocess, "pil-draft")
    assert fast.draft == 64 and ref.draft is None
    r, f = ref.read(str(tmp_path / "big.jpg")), fast.read(str(tmp_path / "big.jpg"))
    assert r.dtype == f.dtype == torch.uint8 and r.shape == f.shape == (3, 64, 64)
    assert (r.float() - f.float()).abs().mean() < 2.0  # about one grey level of 255
    assert torch.equal(ref.read(str(tmp_path / "big.png")), fast.read(str(tmp_path / "big.png")))


def test_fused_resize_crop_matches_resize_then_crop(preprocess):
    from open_clip.transform import image_transform

    fused = fused_resize_crop(split_preprocess(preprocess)[0])
    rng = np.random.default_rng(3)
    # shrink both ways, odd sizes, no resize, enlarge (a 40 px image), and 9:1 (PIL on the crop's box)
    for w, h in [(300, 200), (201, 640), (64, 64), (999, 333), (40, 30), (27, 250), (600, 66)]:
        img = Image.fromarray(smooth(h, w) if w * h > 2000 else rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        want = np.asarray(preprocess.transforms[1](preprocess.transforms[0](img))).astype(int)
        for x in (img, np.asarray(img).copy()):  # a PIL image or the uint8 array turbo_decode gives
            got = fused(x)
            assert got.dtype == torch.uint8 and got.shape == (3, 64, 64)
            diff = np.abs(got.permute(1, 2, 0).numpy().astype(int) - want)
            assert diff.max() <= 2 and (diff > 0).mean() < 0.05, (w, h, diff.max(), (diff > 0).mean())
    squash = image_transform(64, is_train=False, resize_mode="squash")
    assert fused_resize_crop(split_preprocess(squash)[0]) is None  # other steps: run as they are


def test_uint8_handover_equals_the_models_preprocess_bit_for_bit(tmp_path, preprocess):
    Image.fromarray(smooth(50, 70)).save(tmp_path / "a.png")
    dec = ImageDecoder(preprocess, "pil")
    x = dec.to_device(dec.collate([(dec.read(str(tmp_path / "a.png")), 0, "")])[0], torch.device("cpu"))
    assert torch.equal(x[0], preprocess(Image.open(tmp_path / "a.png").convert("RGB")))
    assert split_preprocess(lambda img: img) is None
    whole = ImageDecoder(lambda img: torch.ones(3, 8, 8), "pil-draft")  # not a Compose: run as it is
    assert whole.read(str(tmp_path / "a.png")).dtype == torch.float32 and whole.zeros().shape == (3, 8, 8)


def test_decode_identity_and_resolution(preprocess):
    strong = types.SimpleNamespace(preprocess=preprocess, device=torch.device("cpu"))
    ids = {p: decode_identity(strong, "cpu", p) for p in ("pil", "pil-draft", "turbo")}
    assert len({str(v) for v in ids.values()}) == 3 and ids["pil-draft"]["draft"] == ids["turbo"]["draft"] == 64
    assert ids["turbo"]["simplejpeg"] and ids["turbo"]["pyspng"]  # the library versions decide the pixels too
    assert decode_identity(strong) == ids["turbo"]  # auto on the CPU
    assert resolve_decode("auto", "cpu") == "turbo"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_decode("nvjpeg", "cpu")
    with pytest.raises(ValueError, match="valid: auto, pil, pil-draft, turbo, nvjpeg"):
        resolve_decode("fast", "cpu")
    gpu = ImageDecoder(preprocess, "nvjpeg").identity()
    assert gpu["path"] == "nvjpeg" and gpu["resize"] == "torch" and gpu != ids["pil-draft"]


def test_turbo_decodes_at_the_finest_scale_that_keeps_the_target(tmp_path):
    Image.fromarray(smooth(600, 900)).save(tmp_path / "big.jpg", quality=90)
    data = (tmp_path / "big.jpg").read_bytes()
    assert turbo_decode(data, 64).shape == (75, 113, 3)  # 1/8, like PIL's draft
    assert turbo_decode(data, 200).shape == (225, 338, 3)  # 3/8; PIL's draft stops at 1/2 (450 x 300)
    assert turbo_decode(data, 400).shape == (450, 675, 3)  # 6/8; PIL's draft decodes in full
    assert turbo_decode(data, 2000).shape == (600, 900, 3)  # never upscaled
    full = turbo_decode(data, 600)
    assert np.array_equal(full, np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB")))  # scale 1 = PIL


def test_turbo_leaves_every_other_file_to_pil(files, preprocess):
    took = {k: turbo_decode(open(p, "rb").read(), 64) is not None for k, p in files.items()}
    assert took == {"jpg": True, "png": False, "cmyk": False, "rot": False, "trunc": False, "grey": True}
    grey = turbo_decode(open(files["grey"], "rb").read(), 10_000)
    assert np.array_equal(grey, np.asarray(Image.open(files["grey"]).convert("RGB")))
    turbo, draft = ImageDecoder(preprocess, "turbo"), ImageDecoder(preprocess, "pil-draft")
    for k in ("png", "cmyk", "rot"):  # decoded by the pil-draft path itself
        assert torch.equal(turbo.read(files[k]), draft.read(files[k]))
    assert (turbo.read(files["jpg"]).float() - draft.read(files["jpg"]).float()).abs().mean() < 2.0
    with pytest.raises(BadImageError, match="truncated"):
        turbo.read(files["trunc"])
    with pytest.raises(BadImageError, match="file not found"):
        turbo.read(files["jpg"] + ".missing.jpg")


def _png(img: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, "PNG", **kw)
    return b.getvalue()


def _with_chunk(png: bytes, kind: bytes, body: bytes, at_end: bool = False) -> bytes:
    """``png`` with a chunk (valid CRC) inserted after IHDR, or before IEND with ``at_end``."""
    import zlib

    chunk = len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    return png[:-12] + chunk + png[-12:] if at_end else png[:33] + chunk + png[33:]


def test_spng_decodes_plain_8_bit_pngs_like_pil_and_leaves_the_rest(tmp_path, preprocess, monkeypatch):
    import pyspng

    import w2sclip.data.decode as decode
    from w2sclip.data.decode import spng_decode

    a = smooth(50, 70, 3)
    rgb = _png(Image.fromarray(a))
    plain = {"rgb": rgb, "grey": _png(Image.fromarray(a[..., 0])), "palette": _png(Image.fromarray(a).convert("P")),
             "gamma": _with_chunk(rgb, b"gAMA", (45455).to_bytes(4, "big")),
             "text": _with_chunk(rgb, b"tEXt", b"Comment\0made by a test")}
    for name, data in plain.items():
        img = spng_decode(data)
        assert img is not None and img.mode == "RGB", name
        assert np.array_equal(np.asarray(img), np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))), name
    stored = bytearray(_png(Image.fromarray(a), compress_level=0))  # stored deflate blocks: a flipped pixel
    stored[len(stored) // 2] ^= 0xFF  # byte keeps the stream valid, only the CRC (and adler32) say it is damaged
    assert pyspng.load(bytes(stored), "RGB").shape == a.shape  # libspng alone decodes it
    xmp = b'XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    others = {"rgba": _png(Image.fromarray(np.dstack([a, np.full(a.shape[:2], 128, np.uint8)]))),
              "16-bit": _png(Image.fromarray(a[..., 0].astype(np.uint16) * 257)),
              "1-bit": _png(Image.fromarray(a[..., 0] > 128)),
              "tRNS": _png(Image.fromarray(a).convert("P"), transparency=0),
              "eXIf": _with_chunk(rgb, b"eXIf", b"MM\0*\0\0\0\x08\0\0"),
              "text exif": _with_chunk(rgb, b"zTXt", b"Raw profile type exif\0\0x"),
              "tEXt exif": _with_chunk(rgb, b"tEXt", b"exif\0MM\0*\0\0\0\x08\0\0"),
              "XMP orientation": _with_chunk(rgb, b"iTXt", xmp),
              "text after the image": _with_chunk(rgb, b"tEXt", b"Comment\0late", at_end=True),
              "short gAMA": _with_chunk(rgb, b"gAMA", b"\0\1"),
              "APNG": _with_chunk(rgb, b"acTL", (1).to_bytes(4, "big") * 2),
              "truncated": rgb[: len(rgb) // 2], "no IEND": rgb[:-12], "flipped": bytes(stored),
              "jpeg": open_bytes_jpeg(a), "empty": b""}
    for name, data in others.items():
        assert spng_decode(data) is None, name
    turbo, draft = ImageDecoder(preprocess, "turbo"), ImageDecoder(preprocess, "pil-draft")
    took = []
    monkeypatch.setattr(decode, "spng_decode", lambda data: took.append(spng_decode(data)) or took[-1])
    for name in ("rgb", "palette", "gamma"):  # through the model's own steps: the reference's numbers
        (tmp_path / f"{name}.png").write_bytes(plain[name])
        assert torch.equal(turbo.read(str(tmp_path / f"{name}.png")), draft.read(str(tmp_path / f"{name}.png")))
    assert len(took) == 3 and all(t is not None for t in took)  # and the turbo path did go through libspng
    (tmp_path / "flipped.png").write_bytes(others["flipped"])
    with pytest.raises(BadImageError):  # still a bad file, reported by PIL's path
        turbo.read(str(tmp_path / "flipped.png"))


def open_bytes_jpeg(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=90)
    return b.getvalue()


# GPU dispatch, on the CPU ------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    a = smooth(120, 160, 1)
    out = {"jpg": tmp_path / "a.jpg", "png": tmp_path / "b.png", "cmyk": tmp_path / "c.jpg",
           "rot": tmp_path / "d.jpg", "trunc": tmp_path / "e.jpg", "grey": tmp_path / "f.jpg"}
    Image.fromarray(a).save(out["jpg"], quality=92)
    Image.fromarray(a).save(out["png"])
    Image.fromarray(a).convert("CMYK").save(out["cmyk"])
    _rotated_jpeg(out["rot"], a)
    out["trunc"].write_bytes(out["jpg"].read_bytes()[:900])
    Image.fromarray(a[..., 1]).save(out["grey"])
    return {k: str(v) for k, v in out.items()}


def test_gpu_path_takes_only_complete_plain_jpegs(files, preprocess):
    dec = ImageDecoder(preprocess, "nvjpeg")
    took = {k: gpu_decodable(open(p, "rb").read()) for k, p in files.items()}
    assert took == {"jpg": True, "png": False, "cmyk": False, "rot": False, "trunc": False, "grey": True}
    assert dec.read(files["jpg"]).dim() == 1 and dec.read(files["png"]).shape == (3, 64, 64)
    assert dec.read(files["cmyk"]).shape == (3, 64, 64) and dec.read(files["rot"]).shape == (3, 64, 64)
    with pytest.raises(BadImageError, match="truncated"):
        dec.read(files["trunc"])


def test_gpu_batches_fall_back_to_the_cpu_per_image(files, preprocess, monkeypatch):
    import torchvision.io as tvio

    real, calls = tvio.decode_jpeg, []

    def fake(data, mode=tvio.ImageReadMode.UNCHANGED, device="cpu", **kw):  # "the GPU", run on the CPU
        calls.append(len(data))
        if any(d.numel() == broken.numel() for d in data):
            raise RuntimeError("nvjpeg: bad data")
        return real(data, mode=mode, device="cpu")

    monkeypatch.setattr(tvio, "decode_jpeg", fake)
    dec, ref = ImageDecoder(preprocess, "nvjpeg"), ImageDecoder(preprocess, "pil-draft")
    order = ["jpg", "png", "grey", "jpg"]
    items = [(dec.read(files[k]), i, "") for i, k in enumerate(order)]
    broken = torch.frombuffer(bytearray(open(files["jpg"], "rb").read()[:-40] + b"\xff\xd9"), dtype=torch.uint8)
    items.append((broken, 4, ""))  # looks complete, fails "on the GPU", and on the CPU too
    x, idx, reasons = dec.collate(items)
    assert isinstance(x, list) and idx.tolist() == [0, 1, 2, 3, 4]
    paths = [files[k] for k in order] + [files["trunc"]]
    out = dec.to_device(x, torch.device("cpu"), reasons, paths)
    assert calls[0] == 4 and calls[1:] == [1, 1, 1, 1]  # the batch failed: one by one
    want = torch.stack([ref.to_device(ref.read(files[k])[None], torch.device("cpu"))[0] for k in order])
    assert out.shape == (5, 3, 64, 64) and torch.equal(out[1], want[1])  # PNG: the CPU path itself
    assert (out[:4] - want).abs().mean() < 0.05  # torch resize vs PIL resize
    assert reasons[:4] == ["", "", "", ""] and "truncated" in reasons[4]
    assert torch.equal(out[4], dec.to_device(dec.zeros()[None], torch.device("cpu"))[0])


def test_extract_runs_the_gpu_path_with_bad_files_recorded(files, tmp_path, monkeypatch):
    import torchvision.io as tvio

    from w2sclip.data.manifest import ImageDataset
    from w2sclip.features import extract as ex
    from w2sclip.models.strong.openclip import load_strong

    real = tvio.decode_jpeg
    monkeypatch.setattr(tvio, "decode_jpeg", lambda data, mode, device, **kw: real(data, mode=mode, device="cpu"))
    monkeypatch.setattr(ex, "resolve_decode", lambda decode, device: "nvjpeg" if decode == "nvjpeg" else "pil-draft")
    strong = load_strong("full")
    ds = ImageDataset("f", ["a", "b"], ["{}"], [(p, i % 2) for i, p in enumerate(files.values())], "d", "test",
                      root=str(tmp_path))
    got = ex.extract(strong, ds, tmp_path / "gpu", batch_size=4, shard_size=4, progress=False, decode="nvjpeg")
    ref = ex.extract(strong, ds, tmp_path / "cpu", batch_size=4, shard_size=4, progress=False, decode="pil-draft")
    assert got.valid.tolist() == ref.valid.tolist() == [True, True, True, True, False, True]
    assert "truncated" in dict((p, r) for p, r in got.bad_files)[files["trunc"]]
    cos = (np.asarray(got.features)[got.valid] * np.asarray(ref.features)[ref.valid]).sum(1)
    assert cos.min() > 0.99
    with pytest.raises(ValueError, match="decode='fast'; valid: auto, pil"):
        ex.extract(strong, ds, tmp_path / "x", decode="fast")


def test_draft_features_stay_close_to_the_reference(tmp_path):
    from w2sclip.data.manifest import ImageDataset
    from w2sclip.features.extract import extract
    from w2sclip.models.strong.openclip import load_strong

    strong = load_strong("full")
    samples = []
    for i in range(6):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(smooth(300 + 60 * i, 500, i)).save(path, quality=90)
        samples.append((str(path), i % 2))
    ds = ImageDataset("j", ["a", "b"], ["{}"], samples, "d", "test", root=str(tmp_path))
    ref = extract(strong, ds, tmp_path / "ref", batch_size=3, progress=False, decode="pil")
    for path in ("pil-draft", "turbo"):
        fast = extract(strong, ds, tmp_path / path, batch_size=3, progress=False, decode=path)
        assert (np.asarray(ref.features) * np.asarray(fast.features)).sum(1).mean() >= 0.995


# prefetching and the weak models' decode-once -----------------------------------------------------

def test_prefetch_keeps_order_raises_and_stops():
    assert list(prefetch(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(prefetch(failing()))
    made = []

    def endless():
        while True:
            made.append(1)
            yield len(made)

    it = prefetch(endless(), depth=2)
    assert next(it) == 1
    it.close()
    n = len(made)
    time.sleep(0.3)
    assert len(made) == n <= 5  # the producer stopped


def test_decode_once_memory_map_and_bad_files(files, tmp_path):
    from w2sclip.data.manifest import ImageDataset
    from w2sclip.models.weak.decoded import decode_once

    ds = ImageDataset("f", ["a"], ["{}"], [(p, 0) for p in files.values()], root=str(tmp_path))
    with pytest.warns(UserWarning, match="1 unreadable training images"):
        mem, ok = decode_once(ds, 32)
    with pytest.warns(UserWarning):
        mapped, ok2 = decode_once(ds, 32, budget=0)
    assert isinstance(mapped, np.memmap) and np.array_equal(mem, mapped) and ok.tolist() == ok2.tolist()
    assert mem.shape == (6, 3, 32, 32) and ok.tolist() == [True, True, True, True, False, True]
    assert mem[0].mean() > 20 and mem[4].max() == 0


# the benchmark and the real GPU path -------------------------------------------------------------

@pytest.mark.slow
def test_realistic_benchmark_prints_the_ratios_last(capsys):
    import importlib.util
    import re
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "extract.py"
    spec = importlib.util.spec_from_file_location("bench_extract", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rate = bench.main(["--realistic", "--strong", "ViT-S-32:random", "--n", "12", "--batch-size", "4", "--workers", "0",
                       "--repeats", "1", "--decode-repeats", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"decode speedup \d+\.\d\d, overlap \d+\.\d\d, cosine \d\.\d{4}", last), last
    assert rate["cosine"] > 0.99 and rate["decode"] > 0 and rate["naive"] > 0
    assert set(rate["by_format"]) == {"jpg", "png"} and rate["by_format"]["jpg"]["project"] > 0


@pytest.mark.gpu
def test_nvjpeg_on_cuda_matches_the_cpu_path(files, tmp_path):
    from w2sclip.data.manifest import ImageDataset
    from w2sclip.features.extract import extract
    from w2sclip.models.strong.openclip import load_strong

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    strong = load_strong("full", device="cuda")
    ds = ImageDataset("f", ["a", "b"], ["{}"], [(p, i % 2) for i, p in enumerate(files.values())], "d", "test",
                      root=str(tmp_path))
    assert resolve_decode("auto", "cuda") == "nvjpeg"
    gpu = extract(strong, ds, tmp_path / "gpu", batch_size=4, progress=False, decode="nvjpeg")
    cpu = extract(strong, ds, tmp_path / "cpu", batch_size=4, progress=False, decode="pil-draft")
    assert gpu.valid.tolist() == cpu.valid.tolist() == [True, True, True, True, False, True]
    ok = gpu.valid
    assert (np.asarray(gpu.features)[ok] * np.asarray(cpu.features)[ok]).sum(1).min() > 0.99
