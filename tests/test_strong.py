"""The built-in CLIP through open_clip, and the CoOp prompt encoder over its text tower."""

import numpy as np
import pytest
import torch

from w2sclip.models.strong.openclip import load_strong


@pytest.fixture(scope="module")
def limited():
    return load_strong("limited")


def test_builtin_checkpoint_loads_through_open_clip(limited):
    assert limited.arch == "w2s-vit-tiny" and limited.image_size == 64
    assert 1.0 < limited.logit_scale <= 100.0
    w = limited.text_weights(["star", "heart"], ["a photo of a {}.", "a sketch of a {}."])
    assert w.shape == (2, 128) and np.allclose(np.linalg.norm(w, axis=1), 1, atol=1e-5)


def test_prompt_encoder_at_its_init_equals_the_text_encoder(limited):
    classes = ["star", "heart", "tree"]
    enc = limited.prompt_encoder(classes)
    ctx = enc.prepare("a photo of a")
    assert ctx.shape == (4, 128) and enc.n_ctx == 4
    with torch.no_grad():
        ours = enc(ctx).numpy()
    ref = limited.text_weights(classes, ["a photo of a {}."])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_coop_at_init_predicts_like_zero_shot(limited):
    from w2sclip.methods import get_method

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 128)).astype(np.float32)
    classes = ["star", "heart", "tree"]
    text = limited.text_weights(classes, ["a photo of a {}."])
    zs = get_method("zero_shot").fit(X, text_weights=text, logit_scale=limited.logit_scale)
    coop = get_method("coop", epochs=0).fit(X, rng.integers(3, size=40), logit_scale=limited.logit_scale,
                                            prompt_encoder=limited.prompt_encoder(classes))
    np.testing.assert_allclose(coop.decision_function(X), zs.decision_function(X), rtol=1e-4, atol=1e-4)


def test_unknown_strong_model_names_the_options():
    with pytest.raises(ValueError, match="full, limited"):
        load_strong("clip-large")


def test_template_sets_by_name(limited):
    from w2sclip.models.strong.openclip import template_set

    assert template_set("dataset", ["a {}"]) == ["a {}"]
    imagenet = template_set("openai_imagenet", [])
    assert len(imagenet) == 80 and all("{}" in t for t in imagenet)
    w1 = limited.text_weights(["star", "heart"], template_set("simple", []))
    w2 = limited.text_weights(["star", "heart"], imagenet)
    assert not np.allclose(w1, w2)
    with pytest.raises(KeyError, match="openai_imagenet"):
        template_set("imagenet80", [])
