"""Contrastive pretraining of the built-in CLIP on the generator's captioned corpus.

The recipe that made each shipped checkpoint is stored beside it (``<name>.json``) and in
docs/backbones.md. The image-text loss is CLIP's symmetric InfoNCE, except that pairs whose
captions are identical within a batch (frequent in a 24-class world) count as positives of
each other instead of as negatives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.data.builtin import (CLASSNAMES, TEMPLATES, caption_profile, corpus_caption,
                                  corpus_definition, render_corpus)
from w2sclip.data.builtin_render import DOMAINS, WORLD, check_world
from w2sclip.fileio import file_sha256
from w2sclip.models.strong.builtin import register_builtin_archs, resolve_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that decides the pretrained weights."""

    arch: str = "w2s-rn-tiny"
    steps: int = 2400
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    corpus_size: int = 80_000
    domains: tuple[str, ...] = DOMAINS
    captions: str = "clean"
    world: int = WORLD
    seed: int = 0
    init: str | None = None
    eval_every: int = 300
    threads: int = 2
    history: list = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        caption_profile(self.captions)  # fail early, naming the valid values
        check_world(self.world)

    def command(self) -> str:
        """The `w2sclip pretrain` command line that reproduces these weights, every option
        spelled out (``threads`` and ``eval_every`` change only float rounding and logging)."""
        parts = ["w2sclip pretrain --out OUT.safetensors"]
        for key in ("arch", "steps", "batch_size", "lr", "weight_decay", "warmup", "corpus_size",
                    "captions", "world", "seed"):
            parts.append(f"--{key.replace('_', '-')} {getattr(self, key)}")
        parts.append(f"--domains {','.join(self.domains)}")
        if self.init:
            parts.append(f"--init {self.init}")
        return " ".join(parts)


def sha256_json(obj) -> str:
    """sha256 of a canonical JSON encoding (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _image_tensor(batch_uint8: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(batch_uint8).permute(0, 3, 1, 2).float().div_(255)
    return (x - mean) / std


def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, keys: list[str]
              ) -> torch.Tensor:
    """Symmetric InfoNCE; rows with identical caption keys share the target mass."""
    logits = scale * img @ txt.T
    _, inv = np.unique(np.asarray(keys), return_inverse=True)
    inv = torch.from_numpy(inv)
    same = (inv[:, None] == inv[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())


@torch.no_grad()
def probe_zero_shot(model, tokenizer, images: np.ndarray, meta: np.ndarray, mean, std
                    ) -> dict[str, float]:
    """Zero-shot accuracy per domain with the dataset's template ensemble (monitoring only)."""
    model.eval()
    prompts = [t.format(c) for c in CLASSNAMES for t in TEMPLATES]
    txt = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    w = F.normalize(txt.view(len(CLASSNAMES), len(TEMPLATES), -1).mean(1), dim=-1)
    feats = torch.cat([F.normalize(model.encode_image(_image_tensor(images[i:i + 512], mean, std)), dim=-1)
                       for i in range(0, len(images), 512)])
    pred = (feats @ w.T).argmax(1).numpy()
    model.train()
    return {d: float((pred[meta[:, 1] == k] == meta[meta[:, 1] == k, 0]).mean())
            for k, d in enumerate(DOMAINS) if (meta[:, 1] == k).any()}


def pretrain(cfg: PretrainConfig, out: str | Path) -> Path:
    """Pretrain ``cfg.arch`` and write ``out`` (.safetensors, fp16) plus ``out``.json recipe."""
    import open_clip
    from safetensors.torch import save_file

    register_builtin_archs()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    init = str(resolve_checkpoint(cfg.init)) if cfg.init else None
    model = open_clip.create_model(cfg.arch, pretrained=init)
    tokenizer = open_clip.get_tokenizer(cfg.arch)
    mean = torch.tensor(model.visual.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std).view(1, 3, 1, 1)
    t0 = time.time()
    images, meta = render_corpus(cfg.corpus_size, cfg.seed, cfg.domains, world=cfg.world)
    probe_imgs, probe_meta = render_corpus(1440, cfg.seed + 10_000, DOMAINS, world=cfg.world)
    log.info("rendered %d corpus images in %.0fs", len(images), time.time() - t0)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5
                                              * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    rng = np.random.default_rng(cfg.seed)
    history = []
    model.train()
    for step in range(1, cfg.steps + 1):
        idx = rng.integers(len(images), size=cfg.batch_size)
        batch = images[idx]
        flip = rng.random(cfg.batch_size) < 0.5
        batch[flip] = batch[flip, :, ::-1]
        caps = [corpus_caption(meta[i], rng, cfg.captions) for i in idx]
        img, txt, scale = model(_image_tensor(batch, mean, std), tokenizer(caps))[:3]
        loss = clip_loss(img, txt, scale, caps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            zs = probe_zero_shot(model, tokenizer, probe_imgs, probe_meta, mean, std)
            history.append({"step": step, "loss": round(loss.item(), 4), "minutes": round((time.time() - t0) / 60, 1),
                            "zero_shot": {k: round(v, 3) for k, v in zs.items()}})
            log.info("%s", history[-1])
            _save(model, out, save_file)
    _save(model, out, save_file)
    recipe = {k: v for k, v in asdict(cfg).items() if k != "history"}
    recipe.update(corpus_sha256=sha256_json(corpus_definition(cfg.captions, cfg.corpus_size, cfg.seed,
                                                             tuple(cfg.domains), world=cfg.world)),
                  init_sha256=file_sha256(init) if init else None, command=cfg.command(),
                  history=history, minutes=round((time.time() - t0) / 60, 1),
                  torch=torch.__version__, open_clip=open_clip.__version__)
    out.with_suffix(".json").write_text(json.dumps(recipe, indent=1))
    return out


def _save(model, out: Path, save_file) -> None:
    tmp = out.with_suffix(".tmp")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    tmp.replace(out)
