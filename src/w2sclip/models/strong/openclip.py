"""The only place that imports open_clip: create the strong model, encode images and prompts."""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.models.hub import hf_cache_dir, hub_offline
from w2sclip.models.strong.spec import parse_spec
from w2sclip.models.strong.weights import resolve_weights


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


PRECISIONS = {"fp32": ("fp32", None), "fp16": ("fp16", torch.float16), "bf16": ("bf16", torch.bfloat16),
              "amp": ("fp32", torch.float16), "amp_bf16": ("fp32", torch.bfloat16)}
"""precision -> (open_clip weight precision, CUDA autocast dtype). ``fp16``/``bf16`` store the weights in
low precision (OpenAI-style, LayerNorms in fp32); ``amp``/``amp_bf16`` keep fp32 weights. Autocast is
used on CUDA only; on CPU every precision runs as stored."""


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
    """Content hash of local weights (empty for open_clip tags; the snapshot revision for hub ids)."""
    precision: str = "fp32"

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.float().exp())

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def quick_gelu(self) -> bool:
        """Whether the built model uses QuickGELU (read from its modules, not from a config)."""
        from open_clip.transformer import QuickGELU

        return any(isinstance(m, QuickGELU) for m in self.model.modules())

    def preprocess_cfg(self) -> dict:
        """size, mean, std, interpolation, resize_mode, fill_color of this model's preprocessing."""
        from open_clip.model import get_model_preprocess_cfg

        cfg = dict(get_model_preprocess_cfg(self.model))
        return {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in sorted(cfg.items())}

    def identity(self) -> dict:
        """What a feature cache key needs to know about this model."""
        import open_clip

        return {"name": self.name, "arch": self.arch, "pretrained": self.pretrained,
                "weights_sha256": self.weights_sha256, "preprocess": self.preprocess_cfg(),
                "quick_gelu": self.quick_gelu, "precision": self.precision,
                "open_clip": open_clip.__version__, "torch": torch.__version__}

    def _autocast(self):
        dtype = PRECISIONS[self.precision][1]
        on = dtype is not None and self.device.type == "cuda"
        return torch.autocast("cuda", dtype=dtype or torch.float16, enabled=on) if on else nullcontext()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features (N, D) float32 on the CPU of preprocessed images (N, 3, H, W)."""
        from open_clip.model import get_input_dtype

        x = images.to(self.device, dtype=get_input_dtype(PRECISIONS[self.precision][0]), non_blocking=True)
        with self._autocast():
            feats = self.model.encode_image(x)
        return F.normalize(feats.float(), dim=-1).cpu()

    def prompt_encoder(self, classnames: list[str], templates: list[str] | None = None) -> PromptEncoder:
        """A CoOp prompt encoder over this model's frozen text tower; ``templates`` are the
        dataset's prompt templates (CoOp's ``templates="dataset"`` starts from them)."""
        return PromptEncoder(self.model, self.tokenizer, classnames, templates)

    @torch.no_grad()
    def text_weights(self, classnames: list[str], templates: list[str]) -> np.ndarray:
        """Class prototypes (C, D): per class, mean over templates of normalised text
        embeddings, normalised again (PROTOCOL.md section 3)."""
        prompts = [t.format(c.replace("_", " ")) for c in classnames for t in templates]
        chunks = []
        for i in range(0, len(prompts), 512):
            with self._autocast():
                emb = self.model.encode_text(self.tokenizer(prompts[i:i + 512]).to(self.device))
            chunks.append(F.normalize(emb.float(), dim=-1).cpu())
        w = torch.cat(chunks).view(len(classnames), len(templates), -1).mean(1)
        return F.normalize(w, dim=-1).numpy()


def load_strong(name: str, device: str = "cpu", precision: str = "fp32", offline: bool = False,
                cache_dir: str | None = None) -> StrongModel:
    """Load a frozen strong CLIP named by a spec (grammar in :mod:`w2sclip.models.strong.spec`).

    ``full``/``limited``, ``ARCH:TAG`` (``ViT-B-32:openai``), ``ARCH:/path/to/weights``,
    ``ARCH:/path/to/folder``, ``hf-hub:org/name`` or ``ARCH:random``. Preprocessing always comes from
    the model's own configuration. ``offline`` (or ``HF_HUB_OFFLINE=1``) reads only the local cache
    (``cache_dir`` or the HF hub cache) and raises a short FileNotFoundError naming the missing file.
    ``precision`` is one of PRECISIONS.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} unknown; valid: {', '.join(PRECISIONS)}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    spec = parse_spec(name)
    w = resolve_weights(spec, offline=offline, cache_dir=cache_dir)
    if spec.kind == "random":
        # a fixed init seed, and the hash of the initial weights in the identity: two loads (two
        # processes, two torchrun ranks) of ARCH:random are the same model and share cache entries
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, preprocess = _create(spec, w, device, precision, cache_dir)
        sha = _state_sha256(model)
    else:
        model, preprocess = _create(spec, w, device, precision, cache_dir)
        sha = w.sha256
    return StrongModel(name=name, arch=w.arch, pretrained=w.tag, model=model, preprocess=preprocess,
                       tokenizer=w.tokenizer(), weights_sha256=sha, precision=precision)


def _state_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (name, then raw bytes), in state-dict order."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _create(spec, w, device: str, precision: str, cache_dir: str | None):
    import open_clip

    try:
        with hub_offline(w.offline):
            model, _, preprocess = open_clip.create_model_and_transforms(
                w.model_name, pretrained=w.pretrained, device=device, precision=PRECISIONS[precision][0],
                force_quick_gelu=w.force_quick_gelu, **w.preprocess_kwargs(),
                require_pretrained=spec.kind != "random", cache_dir=w.cache_dir)
    except OSError as e:
        if not w.offline:
            raise
        raise FileNotFoundError(f"strong model {spec.name!r}: a file open_clip needs to build {w.model_name} "
                                f"is not in the local cache ({hf_cache_dir(cache_dir)}) and offline mode is on: "
                                f"{str(e).splitlines()[0][:300]}; load the model once with network and copy "
                                f"the cache") from None
    except Exception as e:
        if isinstance(e, torch.OutOfMemoryError) or not (isinstance(e, RuntimeError) or spec.kind in ("file", "folder")):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ValueError(f"strong model {spec.name!r}: open_clip could not build {w.model_name} with "
                         f"weights {w.pretrained or w.model_name}: {first}; check that the weights belong "
                         f"to this architecture (open_clip.list_models())") from None
    model.eval().requires_grad_(False)
    return model, preprocess


class PromptEncoder(torch.nn.Module):
    """CoOp's text side: prompts ``[V_1 .. V_M] <class><suffix>`` through the frozen CLIP text tower.

    ``prepare_templates(templates)`` takes prompt templates ``"<prefix> {}<suffix>"`` (e.g.
    ``"a sketch of a {}."``): per template, the token embeddings of the prefix words are the
    initial context (M_t, width), learned; the start token, the class name, the suffix and the
    end token stay fixed (CoOp's class token at the "end", its suffix "." generalised to the
    template's). ``forward(ctxs)`` with one context per template returns the class features (C, D):
    per template the normalised text features, averaged over templates, normalised again: the
    prompt ensemble of ``StrongModel.text_weights``, so at its initialisation it reproduces them.
    ``prepare(ctx_init)`` is the one-template form ``"<ctx_init> {}."`` and ``forward(ctx)`` then
    takes a single tensor. ``templates`` given at construction are the dataset's (what a
    method's ``templates="dataset"`` means). Only open_clip's ``CLIP`` text tower (token
    embedding + transformer) is supported.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, classnames: list[str],
                 templates: list[str] | None = None) -> None:
        super().__init__()
        if not hasattr(model, "token_embedding"):
            raise ValueError(f"CoOp needs an open_clip CLIP text tower with a token embedding; "
                             f"{type(model).__name__} has none (HF text towers are not supported)")
        self.model, self.tokenizer = model, tokenizer
        self.classnames = [c.replace("_", " ") for c in classnames]
        self.templates = list(templates) if templates is not None else None
        self.n_ctx = 0
        self._slots: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (tokens, prefix, suffix)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _n_words(self, text: str) -> int:
        return int((self.tokenizer([text])[0] > 0).sum()) - 2  # minus start and end tokens

    def _slot(self, template: str) -> torch.Tensor:
        """Prepare one template; returns its initial context (M, width)."""
        if template.count("{}") != 1:
            raise ValueError(f"prompt template {template!r} must contain '{{}}' exactly once (the class name)")
        prefix = template.split("{}")[0].strip()
        n_ctx = self._n_words(prefix) if prefix else 0
        if n_ctx < 1:
            raise ValueError(f"CoOp learns the words before the class name and template {template!r} "
                             f"has none; use templates with a prefix (e.g. 'a photo of a {{}}.')")
        tokens = self.tokenizer([template.format(c) for c in self.classnames]).to(self._device())
        ref = self.tokenizer([prefix])[0, 1:1 + n_ctx].to(tokens.device)
        if not torch.equal(tokens[:, 1:1 + n_ctx], ref.expand(len(self.classnames), -1)):
            raise ValueError(f"template {template!r}: its prefix does not tokenise the same with the "
                             f"class names inserted; put a space before '{{}}'")
        with torch.no_grad():
            emb = self.model.token_embedding(tokens)
        self._slots.append((tokens, emb[:, :1].clone(), emb[:, 1 + n_ctx:].clone()))
        return emb[0, 1:1 + n_ctx].clone()

    def prepare_templates(self, templates: list[str]) -> list[torch.Tensor]:
        """Set the templates; returns their initial contexts, one (M_t, width) tensor each."""
        if not templates:
            raise ValueError("CoOp needs at least one prompt template")
        self._slots = []
        ctxs = [self._slot(t) for t in templates]
        if getattr(self.model, "attn_mask", None) is not None:
            # causal text tower: each end token's features depend only on the tokens up to it, so
            # the padding after the longest prompt is cut (the same features, several times less work)
            n = max(int(tok.argmax(dim=-1).max()) + 1 for tok, _, _ in self._slots)
            self._slots = [(tok[:, :n], pre, suf[:, :n - 1 - (tok.shape[1] - 1 - suf.shape[1])])
                           for tok, pre, suf in self._slots]
        self.n_ctx = ctxs[0].shape[0]
        return ctxs

    def prepare(self, ctx_init: str = "a photo of a") -> torch.Tensor:
        """Set the context words (one template ``"<ctx_init> {}."``); returns their embeddings (M, width)."""
        if self._n_words(ctx_init) < 1:
            raise ValueError(f"ctx_init {ctx_init!r} has no words")
        return self.prepare_templates([f"{ctx_init} {{}}."])[0]

    def _encode(self, ctxs: list[torch.Tensor]) -> torch.Tensor:
        """Normalised features (T, C, D) of every (template, class) prompt, in one batch."""
        m = self.model
        c = len(self.classnames)
        x = torch.cat([torch.cat([pre, ctx.unsqueeze(0).expand(c, -1, -1), suf], dim=1)
                       for ctx, (_, pre, suf) in zip(ctxs, self._slots)])
        if len({t.shape[1] for t, _, _ in self._slots}) != 1:  # a non-causal tower keeps 77 tokens each
            raise AssertionError("prompt slots of different lengths")
        tokens = torch.cat([t for t, _, _ in self._slots])
        n = x.shape[1]
        mask = m.attn_mask[:n, :n] if m.attn_mask is not None else None
        x = m.transformer(x + m.positional_embedding[:n], attn_mask=mask)
        x = m.ln_final(x)[torch.arange(len(x), device=x.device), tokens.argmax(dim=-1)]
        x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        return F.normalize(x, dim=-1).view(len(ctxs), c, -1)

    def forward(self, ctx) -> torch.Tensor:
        """Class features (C, D) of one context (M, width) or of one context per template."""
        ctxs = [ctx] if isinstance(ctx, torch.Tensor) else list(ctx)
        if len(ctxs) != len(self._slots):
            raise ValueError(f"{len(ctxs)} context(s) for {len(self._slots)} prepared template(s)")
        feats = self._encode(ctxs)
        return feats[0] if len(ctxs) == 1 else F.normalize(feats.mean(0), dim=-1)
