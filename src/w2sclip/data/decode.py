"""Image files -> model input batches, fast: the decode paths of feature extraction (docs/decoding.md).

Every path decodes through ``open_image`` (faithful modes, EXIF orientation, bad files raise
``BadImageError``) or a faster decoder of the same pixels, and then resizes and crops as the
model's preprocess does (its own PIL steps, or for JPEGs torch's equivalent on uint8):

* ``pil``: full-size decode, the reference;
* ``pil-draft``: JPEGs decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg-turbo through
  PIL ``Image.draft``), never below the model's input side, then resized and cropped in one step
  by torch's antialiased uint8 resampling (``fused_resize_crop``); other formats exactly as ``pil``;
* ``turbo``: as ``pil-draft``, but plain JPEGs (YCbCr or grey, no EXIF block, complete) are
  decoded by libjpeg-turbo through ``simplejpeg`` at the smallest of its sixteen M/8 scales
  (not only 1/2, 1/4, 1/8) that keeps both sides >= the model's input side: a 400 px photo is
  decoded at 5/8 instead of in full; plain 8-bit PNGs (grey, RGB or palette, no transparency, no
  EXIF, every chunk CRC valid) are decoded by libspng through ``pyspng`` (inflated 1.8x faster
  than by PIL, about 1.5x per file; the same pixels). Any other file goes through ``pil-draft``.
  The default on CPU;
* ``nvjpeg``: baseline RGB/grey JPEGs (no EXIF rotation, complete files) decoded in batches on
  the GPU (``torchvision.io.decode_jpeg(list, device="cuda")``) and resized there; every other
  file, and any JPEG the GPU rejects, goes through ``pil-draft`` on the CPU. The default on CUDA.

Workers hand over uint8 images (4x less to copy than float); ``ImageDecoder.to_device`` scales
and normalises whole batches on the device with the same float32 operations as ``ToTensor`` +
``Normalize``, so ``pil`` gives exactly the numbers of the model's ``preprocess``.
``decode_identity`` is what the feature-cache key records, so features from different decode
paths never mix.
"""

from __future__ import annotations

import functools
import io
import logging
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from w2sclip.data.images import FAITHFUL_VERSION, BadImageError, read_image
from w2sclip.data.manifest import ImageDataset

log = logging.getLogger(__name__)

DECODE_VERSION = 2
"""Bumped when a decode path changes its numbers (part of ``decode_identity``). 2: JPEGs of
``pil-draft`` and ``turbo`` (and nvjpeg's CPU fallback) resized by torch's uint8 resampling, not PIL."""

DECODE_PATHS = ("pil", "pil-draft", "turbo", "nvjpeg")
DECODE_CHOICES = ("auto", *DECODE_PATHS)
"""``decode=`` values: ``auto`` is ``nvjpeg`` on CUDA (when torchvision can decode there), else ``turbo``."""

JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_SCAN = 1 << 16  # the APP segments (EXIF included) sit before the image data


def split_preprocess(preprocess) -> tuple[Callable, tuple, tuple] | None:
    """``(PIL steps, mean, std)`` of a torchvision ``Compose`` that ends in ToTensor + Normalize
    (every open_clip preprocess does); None for any other transform."""
    from torchvision.transforms import Compose, Normalize

    steps = list(getattr(preprocess, "transforms", [])) if isinstance(preprocess, Compose) else []
    if len(steps) < 2 or not isinstance(steps[-1], Normalize) or \
            type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor"):
        return None
    norm = steps[-1]
    return Compose(steps[:-2]), tuple(map(float, norm.mean)), tuple(map(float, norm.std))


def resolve_decode(decode: str, device: str | torch.device | None) -> str:
    """The decode path ``decode`` means on ``device`` (``auto``: nvjpeg on CUDA when available)."""
    if decode not in DECODE_CHOICES:
        raise ValueError(f"decode={decode!r}; valid: {', '.join(DECODE_CHOICES)}")
    cuda = torch.device(device or "cpu").type == "cuda"
    if decode == "auto":
        return "nvjpeg" if cuda and nvjpeg_available(str(device)) else "turbo"
    if decode == "nvjpeg" and not cuda:
        raise ValueError(f"decode='nvjpeg' needs a CUDA device, got device={str(device or 'cpu')!r}; "
                         f"use decode='turbo' (or 'auto') on the CPU")
    return decode


@functools.lru_cache(maxsize=None)
def nvjpeg_available(device: str) -> bool:
    """Whether torchvision decodes JPEGs on ``device`` (tries a tiny in-memory JPEG once)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 60)).save(buf, "JPEG")
    try:
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        decode_jpeg([data], mode=ImageReadMode.RGB, device=device)
        return True
    except (RuntimeError, ValueError, TypeError) as e:
        log.warning("GPU JPEG decoding unavailable on %s (%s); decoding on the CPU", device, e)
        return False


class ImageDecoder:
    """How feature extraction turns image files into normalised model inputs.

    ``read(path)`` runs in DataLoader workers: a uint8 image (3, H, W) at the model's input size
    (for ``nvjpeg``: the file's bytes, 1-D uint8, when the GPU can take it); ``collate`` batches
    those; ``to_device`` gives the float batch (B, 3, H, W) on the device, normalised. ``preprocess``
    is the model's transform (PIL image -> normalised tensor); one that does not end in ToTensor +
    Normalize is run whole in the workers (float tensors handed over as they are).
    """

    def __init__(self, preprocess, method: str = "turbo") -> None:
        if method not in DECODE_PATHS:
            raise ValueError(f"decode path {method!r}; valid: {', '.join(DECODE_PATHS)}")
        self.preprocess, self.method = preprocess, method
        split = split_preprocess(preprocess)
        self.steps, self.mean, self.std = split if split else (None, None, None)
        self.shape = tuple(preprocess(Image.new("RGB", (32, 32))).shape)
        self.draft = max(self.shape[-2:]) if method != "pil" else None
        self.fused = fused_resize_crop(self.steps) if self.draft else None
        if method == "nvjpeg" and not self._steps_take_tensors():
            raise ValueError("decode='nvjpeg' needs a preprocess whose resize and crop also work on "
                             "tensors (open_clip's resize_mode 'shortest' or 'squash'); use decode='pil-draft'")

    def _steps_take_tensors(self) -> bool:
        try:
            out = self.steps(torch.zeros(3, 40, 56, dtype=torch.uint8)) if self.steps else None
        except (TypeError, AttributeError, ValueError):
            return False
        return out is not None and tuple(out.shape) == self.shape

    def identity(self) -> dict:
        """What the feature-cache key records about decoding (values change the numbers)."""
        torch_resize = self.method == "nvjpeg" or self.fused is not None  # JPEGs resized by torch
        ident = {"path": self.method, "version": DECODE_VERSION, "draft": self.draft,
                 "faithful": FAITHFUL_VERSION, "resize": "torch" if torch_resize else "pil"}
        if self.method == "turbo":
            import simplejpeg

            ident["simplejpeg"] = simplejpeg.__version__  # its libjpeg-turbo decides the pixels
            ident["pyspng"] = _pyspng_version()
        return ident

    # --- in the workers ---------------------------------------------------------------------
    def read(self, path: str) -> torch.Tensor:
        """uint8 (3, H, W) of the file at ``path`` (nvjpeg: maybe its bytes); raises BadImageError."""
        if self.method == "nvjpeg":
            data = Path(path).read_bytes() if Path(path).is_file() else b""
            if gpu_decodable(data):
                return torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return self._read_cpu(path)

    def read_sample(self, dataset, i: int) -> torch.Tensor:
        """``read`` for sample ``i`` of ``dataset``: a file path goes through ``read``; images that
        are not files (``dataset.read_image`` overridden, e.g. ``hf:``) are decoded on the CPU."""
        if type(dataset).read_image is ImageDataset.read_image:
            return self.read(str(dataset.samples[i][0]))
        return self._finish(*dataset.read_image(i, draft=self.draft))

    def _read_cpu(self, path: str) -> torch.Tensor:
        name = str(path).lower()
        if self.method == "turbo" and name.endswith((*JPEG_SUFFIXES, ".png")):
            try:
                data = Path(path).read_bytes()
            except OSError:
                data = b""  # read_image below names the problem
            jpeg = not name.endswith(".png")
            img = turbo_decode(data, self.draft) if jpeg else spng_decode(data)
            if img is not None:
                return self._finish(img, jpeg)
        return self._finish(*read_image(path, draft=self.draft))

    def _finish(self, img, jpeg: bool) -> torch.Tensor:
        # JPEGs are resized and cropped in one step by torch's uint8 resampling (see
        # fused_resize_crop); lossless formats go through the model's own steps, so they give
        # exactly the reference's numbers
        if jpeg and self.fused:
            return self.fused(img)
        img = Image.fromarray(img) if isinstance(img, np.ndarray) else img
        return self.preprocess(img) if self.steps is None else _hwc_to_chw(self.steps(img))

    def zeros(self) -> torch.Tensor:
        """The placeholder of an unreadable image."""
        return torch.zeros(self.shape, dtype=torch.uint8 if self.steps else torch.float32)

    @staticmethod
    def collate(batch: list) -> tuple:
        """``[(x, index, reason), ...]`` -> (x stacked, or a list when nvjpeg bytes are in it,
        indices (B,), reasons)."""
        xs, idx, reasons = zip(*batch)
        stack = all(x.dim() == 3 for x in xs)
        return (torch.stack(xs) if stack else list(xs)), torch.as_tensor(idx), list(reasons)

    # --- in the main process -----------------------------------------------------------------
    def to_device(self, x, device: torch.device, reasons: list[str] | None = None,
                  paths: list[str] | None = None) -> torch.Tensor:
        """Float (B, 3, H, W) on ``device``, normalised as the model's preprocess does.

        A list ``x`` (nvjpeg) is decoded on the GPU first; images it cannot decode are read on
        the CPU, and unreadable ones become zeros with their reason written into ``reasons``.
        """
        if isinstance(x, list):
            x = self._gpu_decode(x, device, reasons, paths)
        x = x.to(device, non_blocking=True)
        if self.steps is None:
            return x
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        return x.to(torch.float32).div_(255).sub_(mean).div_(std)  # = ToTensor + Normalize, bit for bit

    def _gpu_decode(self, xs: list, device, reasons, paths) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        jpeg = [i for i, x in enumerate(xs) if x.dim() == 1]
        out = [x.to(device, non_blocking=True) if x.dim() == 3 else None for x in xs]
        try:
            decoded = decode_jpeg([xs[i] for i in jpeg], mode=ImageReadMode.RGB, device=device) if jpeg else []
        except RuntimeError:  # one bad file fails the whole call: retry one by one
            decoded = [self._gpu_decode_one(xs[i], device) for i in jpeg]
        for i, img in zip(jpeg, decoded):
            out[i] = self.steps(img) if img is not None else self._cpu_fallback(i, device, reasons, paths)
        return torch.stack(out)

    @staticmethod
    def _gpu_decode_one(data: torch.Tensor, device):
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg([data], mode=ImageReadMode.RGB, device=device)[0]
        except RuntimeError:
            return None

    def _cpu_fallback(self, i: int, device, reasons, paths) -> torch.Tensor:
        try:
            if paths is None:
                raise BadImageError(f"#{i}", "the GPU could not decode this JPEG")
            x = self._read_cpu(paths[i])
        except BadImageError as e:
            if reasons is not None:
                reasons[i] = e.reason
            x = self.zeros()
        return x.to(device)


def fused_resize_crop(steps) -> Callable | None:
    """For PIL steps ``Resize(S)`` (shorter side, bicubic or bilinear) + ``CenterCrop(S)``: one
    function from an RGB image (PIL or uint8 (H, W, 3) array) to the uint8 (3, S, S) crop, resized by
    torch's antialiased uint8 resampling (``interpolate(..., antialias=True)`` on uint8, a port of
    Pillow-SIMD's: about 3x faster than PIL here, and on the benchmark's JPEGs equal to PIL's
    Resize + CenterCrop on 99.7 % of the values, never off by more than 2); None for any other
    steps. Images over 8:1 resize only the crop's source box, with PIL (a full resize of a
    1 x 5000 strip would take gigabytes)."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    ts = [t for t in getattr(steps, "transforms", []) if type(t).__name__ != "MaybeConvertMode"]
    if len(ts) != 2 or not isinstance(ts[0], Resize) or not isinstance(ts[1], CenterCrop) or ts[0].max_size:
        return None
    size = ts[0].size if isinstance(ts[0].size, int) else (ts[0].size[0] if len(ts[0].size) == 1 else None)
    mode = {InterpolationMode.BICUBIC: "bicubic", InterpolationMode.BILINEAR: "bilinear"}.get(ts[0].interpolation)
    if size is None or tuple(ts[1].size) != (size, size) or mode is None:
        return None

    def resize_crop(img) -> torch.Tensor:
        arr = img if isinstance(img, np.ndarray) else np.array(img)
        h, w = arr.shape[:2]
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)  # torchvision's rule
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        if max(nw, nh) > 8 * size:
            sx, sy = w / nw, h / nh
            box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
            resample = Image.BICUBIC if mode == "bicubic" else Image.BILINEAR
            return _hwc_to_chw(Image.fromarray(arr).resize((size, size), resample, box=box))
        x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)  # channels-last, as the fast kernel wants
        out = torch.nn.functional.interpolate(x, size=(nh, nw), mode=mode, antialias=True)
        return out[0, :, top:top + size, left:left + size].contiguous()

    return resize_crop


def turbo_decode(data: bytes, min_side: int):
    """A uint8 RGB (H, W, 3) array of a plain JPEG decoded by libjpeg-turbo (``simplejpeg``) at the
    smallest of its M/8 scales whose sides both stay >= ``min_side``; None for anything that is not a
    complete YCbCr or grey JPEG without an EXIF block (CMYK, EXIF orientation, truncated or
    corrupt data), which ``read_image`` then decodes or reports. At scale 1 the pixels equal PIL's."""
    import simplejpeg

    if data[:2] != b"\xff\xd8" or b"Exif\0\0" in data[:_EXIF_SCAN]:
        return None
    try:
        if simplejpeg.decode_jpeg_header(data)[2] not in ("YCbCr", "Gray"):
            return None
        return simplejpeg.decode_jpeg(data, "RGB", min_height=min_side, min_width=min_side)
    except ValueError:  # strict: truncated or corrupt data
        return None


@functools.lru_cache(maxsize=1)
def _pyspng_version() -> str | None:
    try:
        from importlib.metadata import version

        import pyspng  # noqa: F401

        return version("pyspng")
    except ImportError:  # not installed (or no wheel for this platform): PNGs go through PIL
        return None


_EXIF_INFO = ("exif", "xmp", "XML:com.adobe.xmp", "Raw profile type exif")
"""PNG text/EXIF entries of ``Image.info`` from which PIL may read an EXIF orientation."""


def spng_decode(data: bytes):
    """An RGB PIL image of a plain 8-bit PNG (grey, RGB or palette; one frame; no transparency;
    no EXIF or XMP anywhere; no chunk after the image data but IEND) decoded by libspng
    (``pyspng``); None for anything else, which ``read_image`` then decodes or reports.

    PIL opens the file first (lazily, up to the image data: its own checks of those chunks,
    their CRCs and the pixel limit); then every chunk's CRC is checked, because pyspng ignores
    CRCs. A damaged file is therefore still a bad file, except for one damage PIL may catch and
    libspng does not: a wrong zlib checksum (adler32) in chunks whose CRCs are right, which only a
    writer bug produces. The pixels equal PIL's conversion to RGB."""
    if data[:8] != PNG_SIGNATURE or _pyspng_version() is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            limit = Image.MAX_IMAGE_PIXELS or float("inf")
            plain = (im.format == "PNG" and im.mode in ("RGB", "L", "P") and getattr(im, "n_frames", 1) == 1
                     and not any(k in im.info for k in ("transparency", *_EXIF_INFO))
                     and im.width * im.height <= limit)
    except Exception:  # noqa: BLE001 - read_image's PIL path names the problem
        return None
    if not plain:
        return None
    view, pos, image_data = memoryview(data), 8, False
    while True:
        if pos + 12 > len(data):
            return None  # truncated: no IEND
        length, kind = int.from_bytes(view[pos:pos + 4], "big"), bytes(view[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return None
        if (kind == b"IHDR" and (length != 13 or view[pos + 16] != 8)) or kind in (b"acTL", b"fcTL", b"fdAT"):
            return None  # not 8 bits per sample, or an animation
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            image_data = True
        elif image_data:
            return None  # text, EXIF, ... after the image data: PIL reads those when it loads
        pos = end
    import pyspng

    try:
        return Image.fromarray(pyspng.load(data, "RGB"))
    except RuntimeError:
        return None


def gpu_decodable(data: bytes) -> bool:
    """Whether a file's bytes are a complete baseline-or-progressive JPEG in RGB or grey with no
    EXIF rotation: what the GPU path takes; anything else is decoded on the CPU."""
    if not (data[:2] == b"\xff\xd8" and data.rstrip(b"\0\r\n ")[-2:] == b"\xff\xd9"):
        return False
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format == "JPEG" and im.mode in ("RGB", "L") and im.getexif().get(0x0112, 1) == 1
    except Exception:  # noqa: BLE001 - an unreadable header: the CPU path names the reason
        return False


def _hwc_to_chw(img) -> torch.Tensor:
    """uint8 (3, H, W) of an RGB PIL image (no copy beyond the one from PIL)."""
    if isinstance(img, torch.Tensor):
        return img
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def decode_identity(strong, device: str | torch.device | None = None, decode: str = "auto") -> dict:
    """The decode path's part of a feature-cache key for ``strong`` on ``device`` (default: the
    model's): path, draft size, resize backend, faithful-mode version."""
    device = device if device is not None else getattr(strong, "device", "cpu")
    return ImageDecoder(strong.preprocess, resolve_decode(decode, device)).identity()
