"""The weak-supervisor interface and the shared fine-tuning loop (DataLoader over an ImageDataset).

A weak supervisor is addressed by a spec ``KIND:ARG`` (``timm:resnet18``, ``cvt:microsoft/cvt-13``,
``clip:RN50:yfcc15m``, ``file:/path/preds.csv``, ``lowres:resnet10t``) plus keyword options; every
kind implements :class:`WeakSupervisor`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.data.images import BadImageError
from w2sclip.data.splits import subsample_per_class

log = logging.getLogger(__name__)

EXECUTION_OPTIONS = ("num_workers", "device", "offline", "cache_dir")
"""Options that change how, not what, is computed: left out of ``identity()``."""


@dataclass
class WeakSupervisor:
    """Base of every weak kind: ``fit(train, seed) -> self``, ``predict_logits(dataset) -> (N, C)``.

    Subclasses are dataclasses whose first field ``name`` is the spec's argument and whose other
    fields are the options (``get_weak`` rejects unknown ones). ``needs_training`` is False for kinds
    that use no ground truth (weak-CLIP teacher, bring-your-own predictions).
    """

    name: str
    needs_training = True
    protocol = "in_domain"
    """The protocol of runs with this weak kind (label-free kinds name their own; PROTOCOL.md 1)."""
    kind = ""

    def fit(self, train, seed: int = 0) -> WeakSupervisor:
        """Train on ``train`` (an ImageDataset with labels) under ``seed``; no-op for label-free kinds."""
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        """Logits (N, C) float32 of every sample of ``dataset``, in dataset order."""
        raise NotImplementedError

    def identity(self) -> dict:
        """What changes the predictions (for cache keys): kind, name and non-execution options."""
        opts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in EXECUTION_OPTIONS and f.name != "name"}
        return {"kind": self.kind, "name": self.name, **opts, "torch": torch.__version__}

    def _check_fitted(self, attr: str = "model_") -> None:
        if getattr(self, attr, None) is None:
            raise RuntimeError(f"weak model {self.kind}:{self.name} is not fitted; call fit(train, seed) first")


def seed_all(seed: int) -> None:
    """Seed torch, Python's ``random`` (timm's random crops) and NumPy's global generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def subsample(dataset, labels_per_class: int | None, seed: int):
    """``dataset`` restricted to at most ``labels_per_class`` samples per class (the labelled budget)."""
    if labels_per_class is None:
        return dataset
    idx = subsample_per_class(np.asarray(dataset.labels), labels_per_class, seed)
    return dataclasses.replace(dataset, samples=[dataset.samples[i] for i in idx])


class _Safe(torch.utils.data.Dataset):
    """Yields (image, label, index), or (None, label, index) for an unreadable image. With
    ``draft``, images are read by ``dataset.load_image(i, draft=draft)`` (JPEGs at reduced size)."""

    def __init__(self, dataset, draft: int | None = None) -> None:
        self.dataset, self.draft = dataset, draft

    def __len__(self) -> int:
        return len(self.dataset)

    def _read(self, i: int):
        if not self.draft:
            return self.dataset[i]
        img, y = self.dataset.load_image(i, draft=self.draft), self.dataset.samples[i][1]
        return (self.dataset.transform(img) if self.dataset.transform else img), y

    def __getitem__(self, i: int):
        try:
            x, y = self._read(i)
        except BadImageError as e:
            log.debug("skipping %s", e)
            return None, -1, i
        return x, y, i


def _collate(batch):
    good = [b for b in batch if b[0] is not None]
    bad = [b[2] for b in batch if b[0] is None]
    if not good:
        return None, None, [], bad
    x = torch.stack([b[0] for b in good])
    return x, torch.as_tensor([b[1] for b in good]), [b[2] for b in good], bad


def make_loader(dataset, transform, batch_size: int, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, device: str = "cpu", draft: int | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader of (x, y, indices, bad_indices) batches; unreadable images are left out.
    ``draft``: decode JPEGs at reduced size, shorter side >= ``draft`` px (``open_image``)."""
    gen = torch.Generator().manual_seed(seed)
    draft = draft if hasattr(dataset, "samples") else None
    return torch.utils.data.DataLoader(_Safe(dataset.with_transform(transform), draft), batch_size=batch_size,
                                       shuffle=shuffle, generator=gen, num_workers=num_workers,
                                       collate_fn=_collate, pin_memory=str(device).startswith("cuda"))


def autocast(device: str):
    """bf16 autocast on CUDA, nothing on CPU (CPU results stay exact)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") else nullcontext()


def finetune(model: torch.nn.Module, forward, loader, epochs: int, lr: float, weight_decay: float,
             device: str = "cpu", what: str = "weak model") -> torch.nn.Module:
    """AdamW + per-step cosine decay, cross-entropy on ground truth; returns the model in eval mode.

    ``forward(model, x) -> logits``. Unreadable images are skipped (a warning counts them); if no
    image of the training set can be read the error names the problem.
    """
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    bad: set[int] = set()
    for epoch in range(epochs):
        seen, loss_sum = 0, 0.0
        for x, y, _, bad_idx in loader:
            bad.update(bad_idx)
            if x is None:
                continue
            with autocast(device):
                loss = F.cross_entropy(forward(model, x.to(device, non_blocking=True)).float(),
                                       y.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen, loss_sum = seen + len(y), loss_sum + float(loss.detach()) * len(y)
        if seen == 0:
            raise ValueError(f"{what}: no training image could be read ({len(bad)} bad files); "
                             f"run `w2sclip data check` on the dataset")
        log.info("%s epoch %d/%d: loss %.4f", what, epoch + 1, epochs, loss_sum / seen)
    if bad:
        warnings.warn(f"{what}: {len(bad)} unreadable training images were skipped", UserWarning, stacklevel=2)
    return model.eval()


@torch.no_grad()
def predict(model: torch.nn.Module, forward, loader, n: int, n_classes: int, device: str = "cpu",
            what: str = "weak model") -> np.ndarray:
    """Logits (n, n_classes) float32 in dataset order; unreadable images get all-zero (uniform) rows."""
    model.to(device).eval()
    out = np.zeros((n, n_classes), dtype=np.float32)
    bad: list[int] = []
    for x, _, idx, bad_idx in loader:
        bad += bad_idx
        if x is not None:
            with autocast(device):
                out[idx] = forward(model, x.to(device, non_blocking=True)).float().cpu().numpy()
    if bad:
        paths = [loader.dataset.dataset.samples[i][0] for i in bad[:3]]
        warnings.warn(f"{what}: {len(bad)} unreadable images got uniform weak predictions (first: {paths})",
                      UserWarning, stacklevel=2)
    return out
