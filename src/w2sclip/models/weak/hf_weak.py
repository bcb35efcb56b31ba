"""``cvt:ID`` / ``hf:ID``: a Hugging Face transformers image classifier (CvT: ``microsoft/cvt-13``)
with a new head of C classes, fine-tuned on D_train. ``ID`` is a hub id or a local folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from w2sclip.models.hub import hf_cache_dir, hub_offline, is_offline, offline_missing, sha256_file
from w2sclip.models.weak.base import (
    WeakSupervisor,
    finetune,
    make_loader,
    predict,
    seed_all,
    subsample,
)
from w2sclip.models.weak.decoded import TRAIN_DECODE, augmented_loader, store_side, train_transform


def _call(model, x):
    return model(pixel_values=x).logits


class _Processor:
    """An image processor as a per-image transform: PIL image -> pixel tensor (3, H, W)."""

    def __init__(self, processor, **overrides) -> None:
        self.processor, self.overrides = processor, overrides

    def __call__(self, img) -> torch.Tensor:
        return self.processor(images=img, return_tensors="pt", **self.overrides)["pixel_values"][0]


def _side(processor) -> int:
    for src in (getattr(processor, "crop_size", None), getattr(processor, "size", None)):
        src = dict(src or {})
        side = src.get("shortest_edge") or src.get("height")
        if side:
            return int(side)
    raise ValueError(f"cannot read the input size of {type(processor).__name__}; pass input_size=")


@dataclass
class HFWeak(WeakSupervisor):
    """``AutoModelForImageClassification`` + ``AutoImageProcessor`` from ``name`` (hub id or folder),
    head replaced by C classes (``ignore_mismatched_sizes``), AdamW + cosine for ``epochs``.

    Evaluation uses the model's own image processor; training adds a random resized crop and a flip
    at the processor's size (``input_size`` overrides it) with its mean/std.
    """

    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.05
    batch_size: int = 32
    labels_per_class: int | None = None
    input_size: int | None = None
    num_workers: int = 0
    device: str = "cpu"
    offline: bool = False
    cache_dir: str | None = None
    kind = "hf"

    def identity(self) -> dict:
        import transformers

        ident = super().identity()
        ident["transformers"], ident["decode"] = transformers.__version__, TRAIN_DECODE
        if Path(self.name).expanduser().is_dir():
            ident["files"] = {p.name: sha256_file(p) for p in sorted(Path(self.name).expanduser().iterdir())
                              if p.is_file()}
        return ident

    def _load(self, classnames: list[str]):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        offline = is_offline(self.offline)
        local = Path(self.name).expanduser()
        if self.name.startswith((".", "/", "~")) and not local.is_dir():
            raise FileNotFoundError(f"weak model '{self.kind}:{self.name}': folder {local} not found")
        source = str(local) if local.is_dir() else self.name
        labels = {i: c for i, c in enumerate(classnames)}
        cache = str(hf_cache_dir(self.cache_dir))
        try:
            with hub_offline(offline):
                processor = AutoImageProcessor.from_pretrained(source, local_files_only=offline,
                                                               cache_dir=cache)
                model = AutoModelForImageClassification.from_pretrained(
                    source, id2label=labels, label2id={c: i for i, c in labels.items()},
                    ignore_mismatched_sizes=True, local_files_only=offline, cache_dir=cache)
        except OSError as e:
            if offline and not local.is_dir():
                raise offline_missing(
                    f"weak model '{self.kind}:{self.name}'",
                    f"config, preprocessor or weights of hf-hub {self.name}",
                    f"python -c \"import transformers as t; t.AutoModelForImageClassification.from_pretrained("
                    f"'{self.name}'); t.AutoImageProcessor.from_pretrained('{self.name}')\"",
                    "pass a local folder (save_pretrained of model and processor) as the spec's ID",
                    self.cache_dir) from None
            raise FileNotFoundError(f"weak model '{self.kind}:{self.name}': {str(e).splitlines()[0][:300]} "
                                    f"(cache: {hf_cache_dir(self.cache_dir)})") from None
        return processor, model

    def _train_transform(self, processor):
        """Random resized crop (scale 0.5-1, bicubic) and flip of uint8 tensors, then the processor's mean/std."""
        side = self.input_size or _side(processor)
        return train_transform(side, processor.image_mean, processor.image_std, scale=(0.5, 1.0),
                               interpolation="bicubic")

    def _decode_side(self, processor) -> int:
        """The side images are decoded at (>= the processor's resize before its crop)."""
        return store_side(self.input_size or _side(processor), getattr(processor, "crop_pct", None))

    def _eval_transform(self, processor):
        n = self.input_size
        if not n:
            return _Processor(processor)
        over = {"size": {"shortest_edge": n} if dict(processor.size or {}).get("shortest_edge")
                else {"height": n, "width": n}}
        if dict(getattr(processor, "crop_size", None) or {}):
            over["crop_size"] = {"height": n, "width": n}
        return _Processor(processor, **over)

    def fit(self, train, seed: int = 0) -> HFWeak:
        """Fine-tune on ``train`` (at most ``labels_per_class`` per class) under ``seed``."""
        seed_all(seed)
        processor, model = self._load(list(train.classnames))
        loader = augmented_loader(subsample(train, self.labels_per_class, seed), self._train_transform(processor),
                                  self._decode_side(processor), self.batch_size, seed, self.num_workers,
                                  self.device, what=f"weak model {self.kind}:{self.name}")
        self.model_ = finetune(model, _call, loader, self.epochs, self.lr, self.weight_decay, self.device,
                               what=f"weak model {self.kind}:{self.name}")
        self.processor_, self.n_classes_ = processor, len(train.classnames)
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        """Logits (N, C) through the model's own image processor."""
        self._check_fitted()
        loader = make_loader(dataset, self._eval_transform(self.processor_), 2 * self.batch_size,
                             num_workers=self.num_workers, device=self.device,
                             draft=self._decode_side(self.processor_))
        return predict(self.model_, _call, loader, len(dataset), self.n_classes_, self.device,
                       what=f"weak model {self.kind}:{self.name}")


@dataclass
class CvtWeak(HFWeak):
    """``cvt:microsoft/cvt-13`` (and cvt-21, cvt-w24, or a local folder): CvT through transformers."""

    kind = "cvt"
