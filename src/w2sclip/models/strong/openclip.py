"""The only place that imports open_clip: create the strong model, encode images and prompts."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.models.strong.builtin import BUILTIN_CHECKPOINTS, register_builtin_archs, resolve_checkpoint

log = logging.getLogger(__name__)


TEMPLATE_SETS = ("dataset", "simple", "openai_imagenet", "simple_imagenet")
"""Prompt-template sets by name: the dataset's own, one plain prompt, open_clip's 80 OpenAI
ImageNet templates, or its 7 simple ImageNet templates."""


def template_set(name: str, dataset_templates: list[str]) -> list[str]:
    """Templates (with ``{}`` for the class name) of a named set."""
    if name == "dataset":
        return list(dataset_templates)
    if name == "simple":
        return ["a photo of a {}."]
    if name in ("openai_imagenet", "simple_imagenet"):
        from open_clip import zero_shot_metadata as z

        fns = z.OPENAI_IMAGENET_TEMPLATES if name == "openai_imagenet" else z.SIMPLE_IMAGENET_TEMPLATES
        return [f("{}") for f in fns]
    raise KeyError(f"unknown template set {name!r}; valid: {', '.join(TEMPLATE_SETS)}")


@dataclass
class StrongModel:
    """A frozen CLIP: the open_clip model, its preprocessing and tokenizer, and its identity."""

    name: str
    arch: str
    pretrained: str
    model: torch.nn.Module = field(repr=False)
    preprocess: object = field(repr=False)
    tokenizer: object = field(repr=False)
    weights_sha256: str = ""
    """Content hash of a local weights file (empty for open_clip tags and hub ids)."""

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

        return {"arch": self.arch, "pretrained": self.pretrained, "weights_sha256": self.weights_sha256,
                "preprocess": repr(self.preprocess),
                "open_clip": open_clip.__version__, "torch": torch.__version__}

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features (N, D) of preprocessed images (N, 3, H, W)."""
        return F.normalize(self.model.encode_image(images).float(), dim=-1)

    def prompt_encoder(self, classnames: list[str]) -> "PromptEncoder":
        """A CoOp prompt encoder over this model's frozen text tower."""
        return PromptEncoder(self.model, self.tokenizer, classnames)

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
    local = bool(pretrained) and Path(pretrained).is_file()
    tag = Path(pretrained).name if local else (pretrained or "")
    sha = hashlib.sha256(Path(pretrained).read_bytes()).hexdigest()[:16] if local else ""
    return StrongModel(name=name, arch=arch, pretrained=tag, model=model, preprocess=preprocess,
                       tokenizer=tokenizer, weights_sha256=sha)


class PromptEncoder(torch.nn.Module):
    """CoOp's text side: prompts ``[V_1 .. V_M] <class>.`` through the frozen CLIP text tower.

    ``prepare(ctx_init)`` tokenises ``"<ctx_init> <class>."`` for every class and returns the
    token embeddings of the ``ctx_init`` words as the initial context (M, width); ``forward(ctx)``
    replaces those M positions by ``ctx`` and returns normalised class features (C, D). Only
    open_clip's ``CLIP`` text tower (token embedding + transformer) is supported.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, classnames: list[str]) -> None:
        super().__init__()
        if not hasattr(model, "token_embedding"):
            raise ValueError(f"CoOp needs an open_clip CLIP text tower with a token embedding; "
                             f"{type(model).__name__} has none (HF text towers are not supported)")
        self.model, self.tokenizer = model, tokenizer
        self.classnames = [c.replace("_", " ") for c in classnames]
        self.n_ctx = 0

    def prepare(self, ctx_init: str = "a photo of a") -> torch.Tensor:
        """Set the context words; returns their embeddings (M, width) as the initial context."""
        n_ctx = int((self.tokenizer([ctx_init])[0] > 0).sum()) - 2  # minus start and end tokens
        if n_ctx < 1:
            raise ValueError(f"ctx_init {ctx_init!r} has no words")
        tokens = self.tokenizer([f"{ctx_init} {c}." for c in self.classnames])
        with torch.no_grad():
            emb = self.model.token_embedding(tokens)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", emb[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", emb[:, 1 + n_ctx:].clone(), persistent=False)
        self.n_ctx = n_ctx
        return emb[0, 1:1 + n_ctx].clone()

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        m = self.model
        c = len(self.classnames)
        x = torch.cat([self.prefix, ctx.unsqueeze(0).expand(c, -1, -1), self.suffix], dim=1)
        x = m.transformer(x + m.positional_embedding, attn_mask=m.attn_mask)
        x = m.ln_final(x)[torch.arange(c), self.tokens.argmax(dim=-1)]
        x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        return F.normalize(x, dim=-1)
