"""``clip:SPEC``: a weaker CLIP as the weak supervisor: its zero-shot predictions, no ground truth at all."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from w2sclip.models.strong.openclip import TEMPLATE_SETS, load_strong, template_set
from w2sclip.models.strong.spec import parse_spec
from w2sclip.models.strong.weights import spec_identity
from w2sclip.models.weak.base import WeakSupervisor, make_loader


@dataclass
class ClipTeacher(WeakSupervisor):
    """Zero-shot logits ``logit_scale * f(x) @ W.T`` of the strong-model spec ``name`` (any
    ``load_strong`` spec: ``RN50:yfcc15m``, ``limited``, ``ARCH:/path``...), with class prototypes
    from the dataset's class names and the template set ``templates`` (``dataset``, ``simple``,
    ``openai_imagenet``, ``simple_imagenet``). Labels are never read; ``fit`` does nothing.
    """

    templates: str = "dataset"
    precision: str = "fp32"
    batch_size: int = 64
    num_workers: int = 0
    device: str = "cpu"
    offline: bool = False
    cache_dir: str | None = None
    kind = "clip"
    needs_training = False
    protocol = "weak_clip"

    def __post_init__(self) -> None:
        parse_spec(self.name)  # fail early on a bad spec
        if self.templates not in TEMPLATE_SETS:
            raise ValueError(f"weak model 'clip:{self.name}': template set {self.templates!r} unknown; "
                             f"valid: {', '.join(TEMPLATE_SETS)}")

    def identity(self) -> dict:
        import open_clip

        return {**super().identity(), "strong": spec_identity(self.name), "open_clip": open_clip.__version__}

    def strong_model(self):
        """The teacher CLIP (loaded once)."""
        if getattr(self, "strong_", None) is None:
            self.strong_ = load_strong(self.name, device=self.device, precision=self.precision,
                                       offline=self.offline, cache_dir=self.cache_dir)
        return self.strong_

    def predict_logits(self, dataset) -> np.ndarray:
        """Zero-shot logits (N, C); unreadable images get all-zero (uniform) rows and a warning."""
        strong = self.strong_model()
        w = strong.text_weights(list(dataset.classnames), template_set(self.templates, list(dataset.templates)))
        out = np.zeros((len(dataset), len(w)), dtype=np.float32)
        bad: list[int] = []
        for x, _, idx, bad_idx in make_loader(dataset, strong.preprocess, self.batch_size,
                                              num_workers=self.num_workers, device=self.device):
            bad += bad_idx
            if x is not None:
                out[idx] = strong.logit_scale * (strong.encode_images(x).numpy() @ w.T)
        if bad:
            warnings.warn(f"weak model clip:{self.name}: {len(bad)} unreadable images got uniform predictions "
                          f"(first: {[dataset.samples[i][0] for i in bad[:3]]})", UserWarning, stacklevel=2)
        return out
