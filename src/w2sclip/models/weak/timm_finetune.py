"""``timm:NAME``: any timm image classifier, ImageNet-pretrained when timm has weights, fine-tuned on D_train."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from w2sclip.models.hub import (
    cached_hf_file,
    hf_cache_dir,
    hub_offline,
    is_offline,
    offline_missing,
    sha256_file,
)
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
    return model(x)


def _interpolation(cfg: dict) -> str:
    """timm's interpolation name as torchvision's (``random`` -> bilinear)."""
    name = cfg.get("interpolation", "bilinear")
    return name if name in ("nearest", "bilinear", "bicubic") else "bilinear"


@dataclass
class TimmWeak(WeakSupervisor):
    """A timm model fine-tuned on ground truth: new head of C classes, AdamW + cosine for ``epochs``.

    ``pretrained``: None = ImageNet weights when timm has them (else from scratch), True = required,
    False = from scratch. ``pretrained_file`` loads local weights instead of the hub (timm's
    ``pretrained_cfg_overlay=dict(file=...)``). Preprocessing comes from the model's pretrained_cfg
    (``resolve_data_config``; ``create_transform`` for prediction); ``input_size`` overrides its side.
    Training images are decoded once and augmented as tensors (``w2sclip.models.weak.decoded``). ``lr``
    defaults to 1e-4 with pretrained weights and 2e-3 from scratch. ``labels_per_class`` caps the
    labelled budget (None: all of D_train).
    """

    pretrained: bool | None = None
    pretrained_file: str | None = None
    epochs: int = 10
    lr: float | None = None
    weight_decay: float = 0.05
    batch_size: int = 32
    labels_per_class: int | None = None
    input_size: int | None = None
    num_workers: int = 0
    device: str = "cpu"
    offline: bool = False
    cache_dir: str | None = None
    kind = "timm"

    def __post_init__(self) -> None:
        import timm

        if not timm.is_model(self.name):
            close = difflib.get_close_matches(self.name, timm.list_models(), n=5, cutoff=0.6)
            hint = f"close matches: {', '.join(close)}; " if close else ""
            raise ValueError(f"weak model 'timm:{self.name}': unknown timm model; {hint}all names: "
                             f"python -c \"import timm; print(timm.list_models())\"")
        if self.pretrained_file and not Path(self.pretrained_file).expanduser().is_file():
            raise FileNotFoundError(f"weak model 'timm:{self.name}': pretrained_file {self.pretrained_file} not found")
        if self.pretrained is True and not self.pretrained_file and not self._hub_source():
            raise ValueError(f"weak model 'timm:{self.name}': timm has no pretrained weights for it; use "
                             f"pretrained=False (from scratch) or pretrained_file=/path/to/weights")

    def _hub_source(self) -> dict:
        """timm's default pretrained source of ``name``: hf_hub_id / hf_hub_filename / url (may be empty)."""
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.name)
        if cfg is None:
            return {}
        return {k: getattr(cfg, k) for k in ("hf_hub_id", "hf_hub_filename", "url") if getattr(cfg, k, None)}

    @property
    def uses_pretrained(self) -> bool:
        if self.pretrained is None:
            return bool(self.pretrained_file) or bool(self._hub_source())
        return self.pretrained

    def identity(self) -> dict:
        import timm

        file = sha256_file(Path(self.pretrained_file).expanduser()) if self.pretrained_file else None
        return {**super().identity(), "pretrained": self.uses_pretrained, "timm": timm.__version__,
                "pretrained_file": file, "decode": TRAIN_DECODE}

    def _weights_file(self) -> str | None:
        """A local weights file: ``pretrained_file``, or (offline) the cached hub file; None = let timm fetch."""
        if self.pretrained_file:
            return str(Path(self.pretrained_file).expanduser())
        if not is_offline(self.offline):
            return None
        src = self._hub_source()
        names = [src["hf_hub_filename"]] if "hf_hub_filename" in src else ["model.safetensors", "pytorch_model.bin"]
        found = cached_hf_file(src["hf_hub_id"], names, self.cache_dir) if "hf_hub_id" in src else None
        if found is None and "url" in src:
            legacy = Path(torch.hub.get_dir()) / "checkpoints" / Path(src["url"]).name
            found = legacy if legacy.is_file() else None
        if found is None:
            where = f"hf-hub {src['hf_hub_id']}" if "hf_hub_id" in src else src.get("url", "?")
            raise offline_missing(
                f"weak model 'timm:{self.name}'", f"pretrained weights file ({' or '.join(names)} from {where})",
                f"python -c \"import timm; timm.create_model('{self.name}', pretrained=True)\"",
                "pass pretrained_file=/path/to/weights (timm pretrained_cfg_overlay=dict(file=...)), or "
                "pretrained=False to train from scratch", self.cache_dir)
        return str(found)

    def _create(self, n_classes: int) -> torch.nn.Module:
        import timm

        use = self.uses_pretrained
        file = self._weights_file() if use else None
        overlay = {"file": file} if file else None
        try:
            with hub_offline(is_offline(self.offline)):
                return timm.create_model(self.name, pretrained=use, num_classes=n_classes,
                                         pretrained_cfg_overlay=overlay, cache_dir=str(hf_cache_dir(self.cache_dir)))
        except (OSError, RuntimeError) as e:
            if not use or file:
                raise
            raise FileNotFoundError(f"weak model 'timm:{self.name}': could not download its pretrained weights "
                                    f"({str(e).splitlines()[0][:200]}); check the network, or pass "
                                    f"pretrained_file=/path/to/weights, or pretrained=False") from None

    def _data_config(self, model) -> dict:
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=model)
        if self.input_size:
            cfg["input_size"] = (3, self.input_size, self.input_size)
        return cfg

    def fit(self, train, seed: int = 0) -> TimmWeak:
        """Fine-tune on ``train`` (at most ``labels_per_class`` per class) under ``seed``."""
        seed_all(seed)
        model = self._create(len(train.classnames))
        self.data_config_ = cfg = self._data_config(model)
        size = cfg["input_size"][-1]
        # timm's ImageNet training recipe (random resized crop, flip, colour jitter 0.4) on tensors
        # decoded once, instead of decoding every file again each epoch
        transform = train_transform(size, cfg["mean"], cfg["std"], interpolation=_interpolation(cfg),
                                    color_jitter=0.4)
        loader = augmented_loader(subsample(train, self.labels_per_class, seed), transform,
                                  store_side(size, cfg.get("crop_pct")), self.batch_size, seed,
                                  self.num_workers, self.device, what=f"weak model timm:{self.name}")
        lr = self.lr if self.lr is not None else (1e-4 if self.uses_pretrained else 2e-3)
        self.model_ = finetune(model, _call, loader, self.epochs, lr, self.weight_decay, self.device,
                               what=f"weak model timm:{self.name}")
        self.n_classes_ = len(train.classnames)
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        """Logits (N, C) with the model's eval transform (resize, centre crop, normalise)."""
        from timm.data import create_transform

        self._check_fitted()
        cfg = self.data_config_
        loader = make_loader(dataset, create_transform(**cfg, is_training=False), 2 * self.batch_size,
                             num_workers=self.num_workers, device=self.device,
                             draft=store_side(cfg["input_size"][-1], cfg.get("crop_pct")))
        return predict(self.model_, _call, loader, len(dataset), self.n_classes_, self.device,
                       what=f"weak model timm:{self.name}")
