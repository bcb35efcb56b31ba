"""The only place that imports open_clip: create the strong model, encode images and prompts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.models.strong.builtin import BUILTIN_CHECKPOINTS, register_builtin_archs, resolve_checkpoint

log = logging.getLogger(__name__)


@dataclass
class StrongModel:
    """A frozen CLIP: the open_clip model, its preprocessing and tokenizer, and its identity."""

    name: str
    arch: str
    pretrained: str
    model: torch.nn.Module = field(repr=False)
    preprocess: object = field(repr=False)
    tokenizer: object = field(repr=False)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def identity(self) -> dict:
        """What a feature cache key needs to know about this model."""
        import open_clip

        return {"arch": self.arch, "pretrained": self.pretrained, "preprocess": repr(self.preprocess),
                "open_clip": open_clip.__version__, "torch": torch.__version__}

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features (N, D) of preprocessed images (N, 3, H, W)."""
        return F.normalize(self.model.encode_image(images).float(), dim=-1)

    @torch.no_grad()
    def text_weights(self, classnames: list[str], templates: list[str]) -> np.ndarray:
        """Class prototypes (C, D): per class, mean over templates of normalised text
        embeddings, normalised again (PROTOCOL.md section 3)."""
        prompts = [t.format(c.replace("_", " ")) for c in classnames for t in templates]
        emb = torch.cat([F.normalize(self.model.encode_text(self.tokenizer(prompts[i:i + 512])).float(), dim=-1)
                         for i in range(0, len(prompts), 512)])
        w = emb.view(len(classnames), len(templates), -1).mean(1)
        return F.normalize(w, dim=-1).numpy()


def load_strong(name: str, device: str = "cpu") -> StrongModel:
    """Load a strong CLIP.

    ``name`` is a built-in checkpoint (``full``, ``limited``), ``ARCH:TAG`` for open_clip's
    pretrained tags (``ViT-B-32:openai``), ``ARCH:/path/to/weights`` or ``hf-hub:org/repo``.
    """
    import open_clip

    register_builtin_archs()
    if name in BUILTIN_CHECKPOINTS:
        arch, pretrained = BUILTIN_CHECKPOINTS[name], str(resolve_checkpoint(name))
    elif name.startswith("hf-hub:"):
        arch, pretrained = name, None
    elif ":" in name:
        arch, pretrained = name.split(":", 1)
    else:
        raise ValueError(f"strong model {name!r}: use a built-in name ({', '.join(BUILTIN_CHECKPOINTS)}), "
                         f"ARCH:TAG (e.g. ViT-B-32:openai), ARCH:/path/to/weights or hf-hub:org/repo")
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(arch)
    tag = Path(pretrained).name if pretrained and Path(pretrained).exists() else (pretrained or "")
    return StrongModel(name=name, arch=arch, pretrained=tag, model=model, preprocess=preprocess,
                       tokenizer=tokenizer)
