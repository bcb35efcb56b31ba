"""Shared test helpers."""

import functools

import pytest


@functools.lru_cache(maxsize=None)
def _tiny_clip(dim: int):
    import open_clip
    import torch
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(embed_dim=dim, vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16,
                                                         patch_size=8, image_size=16),
                 text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))
    model.eval().requires_grad_(False)
    return model, open_clip.tokenizer.SimpleTokenizer(context_length=16)


def tiny_prompt_encoder(classnames, dim: int):
    """A CoOp prompt encoder over a tiny random open_clip text tower (offline, instant)."""
    from w2sclip.models.strong.openclip import PromptEncoder

    model, tok = _tiny_clip(dim)
    return PromptEncoder(model, tok, list(classnames))


@pytest.fixture
def prompt_encoder_factory():
    return tiny_prompt_encoder
