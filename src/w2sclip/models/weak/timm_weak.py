"""The demo's weak supervisor: a small timm CNN trained from scratch on low-resolution images in memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.data.splits import subsample_per_class
from w2sclip.models.weak.base import WeakSupervisor
from w2sclip.models.weak.decoded import TRAIN_DECODE

log = logging.getLogger(__name__)

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _to_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - _MEAN) / _STD


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 1/8 of the side (reflect padding)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = h // 8
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return xp[:, :, dy:dy + h, dx:dx + w]


def check_model_kwargs(extra) -> dict:
    """``model_kwargs`` as a dict (None -> {}); anything but a mapping is an error."""
    if extra is not None and not isinstance(extra, dict):
        raise ValueError(f"weak option model_kwargs must be a mapping of timm.create_model arguments "
                         f"(e.g. {{channels: [32, 64, 128, 256]}}) or null, got {extra!r}")
    return extra or {}


def _train(images: np.ndarray, labels: np.ndarray, num_classes: int, cfg: LowResWeak,
           seed: int) -> torch.nn.Module:
    """Train ``cfg.name`` from scratch (or ImageNet weights) on uint8 images (N, H, W, 3)."""
    import timm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    extra = check_model_kwargs(cfg.model_kwargs)
    try:
        model = timm.create_model(cfg.name, pretrained=cfg.pretrained, num_classes=num_classes, **extra)
    except TypeError as e:
        raise ValueError(f"weak model 'lowres:{cfg.name}': timm.create_model rejects model_kwargs {extra} "
                         f"({e}); pass only arguments of the architecture's constructor") from e
    x_all, y_all = _to_tensor(images, cfg.input_size), torch.as_tensor(labels, dtype=torch.long)
    steps_per_epoch = max(1, int(np.ceil(len(x_all) / cfg.batch_size)))
    # fused: one kernel for all parameters (4x faster steps on CPU than the default foreach)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x_all), generator=gen)
        for i in range(0, len(perm), cfg.batch_size):
            b = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(_augment(x_all[b], gen)), y_all[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def _predict(model: torch.nn.Module, images: np.ndarray, input_size: int,
                   batch_size: int = 256) -> np.ndarray:
    """Logits (N, C) of a weak model on uint8 images (N, H, W, 3) seen at ``input_size``."""
    model.eval()
    return torch.cat([model(_to_tensor(images[i:i + batch_size], input_size))
                      for i in range(0, len(images), batch_size)]).numpy()


def _decode(dataset, size: int):
    """``(images, ok)``: all images of ``dataset`` as uint8 (N, size, size, 3) (bicubic resize),
    unreadable ones black, and ``ok`` (N,) marking the readable ones.

    Images are read by ``dataset.load_image(i, draft=size)`` (JPEGs decoded at reduced size).
    """
    from PIL import Image

    out, ok = [], np.ones(len(dataset), dtype=bool)
    for i in range(len(dataset)):
        try:
            img = dataset.load_image(i, draft=size) if hasattr(dataset, "load_image") else dataset[i][0]
        except Exception:  # noqa: BLE001 - any decode failure of a user file
            ok[i] = False
            out.append(np.zeros((size, size, 3), np.uint8))
            continue
        if img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        out.append(np.asarray(img, dtype=np.uint8))
    images = np.stack(out)
    if not ok.all():
        log.warning("weak model: %d unreadable image(s) skipped (first: %s)", int((~ok).sum()),
                    dataset.samples[int(np.flatnonzero(~ok)[0])][0])
    return images, ok


@dataclass
class LowResWeak(WeakSupervisor):
    """``lowres:ARCH``: the built-in benchmark's weak supervisor, a small CNN trained in memory.

    Images are decoded into memory at ``decode_size`` px, ``labels_per_class`` per class are drawn
    with the seed, and ``ARCH`` (built by ``timm.create_model(ARCH, **model_kwargs)``) is trained
    from scratch at ``input_size`` px with flips and shifts. Fast on small images; for real
    photos use ``timm:NAME``.
    """

    input_size: int = 32
    decode_size: int = 64
    """Images are decoded at decode_size (bounded memory, mixed sizes), then seen at input_size."""
    labels_per_class: int = 10
    epochs: int = 20
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 5e-4
    pretrained: bool = False
    model_kwargs: dict | None = None
    """Keyword arguments of ``timm.create_model`` (e.g. ``{"channels": [32, 64, 128, 256]}``: a
    ResNet at half width)."""
    kind = "lowres"

    @property
    def config(self) -> dict:
        """The recipe (architecture and training budget) as a dict."""
        return {"arch": self.name, **{f.name: getattr(self, f.name) for f in fields(self)
                                      if f.name not in ("name", "pretrained_file") and not f.name.endswith("_")}}

    def identity(self) -> dict:
        import timm

        return {"kind": self.kind, **self.config, "timm": timm.__version__, "torch": torch.__version__,
                "decode": TRAIN_DECODE}

    def fit(self, train, seed: int = 0) -> LowResWeak:
        labels = np.asarray(train.labels)
        idx = subsample_per_class(labels, self.labels_per_class, seed)
        subset = replace(train, samples=[train.samples[i] for i in idx])
        images, ok = _decode(subset, self.decode_size)
        if not ok.any():
            raise ValueError(f"weak model 'lowres:{self.name}': none of the {len(idx)} training images "
                             f"could be read; check the dataset with `w2sclip data check`")
        self.model_ = _train(images[ok], labels[idx][ok], len(train.classnames), self, seed)
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        self._check_fitted()
        images, ok = _decode(dataset, self.decode_size)
        logits = _predict(self.model_, images, self.input_size)
        logits[~ok] = 0.0  # unreadable: uniform (those rows are dropped with the image features)
        return logits
