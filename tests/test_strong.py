"""The built-in CLIP through open_clip, and the CoOp prompt encoder over its text tower."""

import json
import shutil
import socket

import numpy as np
import pytest
import torch

from w2sclip.models.strong.builtin import CHECKPOINT_DIR, CONFIG_DIR
from w2sclip.models.strong.openclip import load_strong


@pytest.fixture(scope="module")
def limited():
    return load_strong("limited")


def test_builtin_checkpoint_loads_through_open_clip(limited):
    assert limited.arch == "w2s-rn-tiny" and limited.image_size == 64
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


# specs, weights sources, QuickGELU guard, offline mode ----------------------------------------

LIMITED = CHECKPOINT_DIR / "limited.safetensors"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and an empty HF_HOME: the hub cache is ``tmp/hf/hub``."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "hf" / "hub"


def _snapshot(cache, repo: str):
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("a" * 40)
    snap = folder / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    return snap


def _features(model, seed=0):
    x = torch.rand(4, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(seed))
    return model.encode_images(x).numpy()


def test_spec_errors_name_close_matches_and_valid_tags():
    from w2sclip.models.strong.spec import parse_spec

    with pytest.raises(ValueError, match=r"close matches: ViT-B-32.*list_models"):
        parse_spec("ViT-B-33:openai")
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'opneai' for ViT-B-32 \(close: openai\)"):
        parse_spec("ViT-B-32:opneai")
    with pytest.raises(ValueError, match="trained with GELU.*use ViT-B-32:laion2b_s34b_b79k"):
        parse_spec("ViT-B-32-quickgelu:laion2b_s34b_b79k")
    with pytest.raises(FileNotFoundError, match="not found"):
        parse_spec("ViT-B-32:/nonexistent/weights.bin")
    with pytest.raises(ValueError, match="hf-hub:org/name"):
        parse_spec("hf-hub:laion")
    assert parse_spec("RN50:cc12m").kind == "tag" and parse_spec("ViT-B-32").kind == "random"
    assert parse_spec("ViT-B-32:datacomp_s_s13m_b4k").source == "datacomp_s_s13m_b4k"
    assert parse_spec(f"w2s-rn-tiny:{LIMITED}").kind == "file"


def test_quickgelu_follows_the_tag_metadata(caplog):
    from w2sclip.models.strong.quickgelu import identify_checkpoint, tag_quick_gelu

    assert tag_quick_gelu("ViT-B-32", "openai") is True
    assert "trained with QuickGELU" in caplog.text and "ViT-B-32-quickgelu:openai" in caplog.text
    assert tag_quick_gelu("RN50", "yfcc15m") is True and tag_quick_gelu("RN50", "cc12m") is True
    caplog.clear()
    assert tag_quick_gelu("ViT-B-32-quickgelu", "openai") is True
    assert tag_quick_gelu("ViT-B-32", "datacomp_s_s13m_b4k") is False
    assert caplog.text == ""
    assert identify_checkpoint("x.pt", "40d365715913c9da") == ("ViT-B-32", "openai", True)  # OpenAI's sha256


def test_quickgelu_guard_refuses_mismatched_local_weights(tmp_path):
    openai = _snapshot(tmp_path, "timm/vit_base_patch32_clip_224.openai") / "open_clip_pytorch_model.bin"
    laion = _snapshot(tmp_path, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K") / "open_clip_pytorch_model.bin"
    for f in (openai, laion):
        f.write_bytes(b"never loaded: the guard runs first")
    with pytest.raises(ValueError, match=f"trained with QuickGELU.*use ViT-B-32-quickgelu:{openai}"):
        load_strong(f"ViT-B-32:{openai}")
    with pytest.raises(ValueError, match=f"trained with GELU.*use ViT-B-32:{laion}"):
        load_strong(f"ViT-B-32-quickgelu:{laion}")
    hinted = tmp_path / "my-openai-clip.pt"
    hinted.write_bytes(b"x")
    with pytest.warns(UserWarning, match="suggests openai"), pytest.raises(ValueError, match="could not build"):
        load_strong(f"ViT-B-32:{hinted}")


def test_offline_missing_weights_is_one_short_error_without_network(offline_cache, no_network):
    with pytest.raises(FileNotFoundError) as e:
        load_strong("ViT-B-32:openai")
    assert str(e.value) == (
        "strong model 'ViT-B-32:openai': weights file ViT-B-32/openai (open_clip_pytorch_model.bin from "
        f"hf-hub timm/vit_base_patch32_clip_224.openai) is not in the local cache ({offline_cache}) and "
        "offline mode is on; download it on a machine with network (python -c \"import open_clip; "
        "open_clip.create_model('ViT-B-32', pretrained='openai')\") and copy the cache, or pass a local "
        "file with ViT-B-32:/path/to/weights")
    with pytest.raises(FileNotFoundError, match="open_clip_config.json of hf-hub laion/CLIP-ViT-B-32"):
        load_strong("hf-hub:laion/CLIP-ViT-B-32-DataComp.S-s13M-b4K")


def test_offline_flag_without_the_environment(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(FileNotFoundError, match="RN50/cc12m.*offline mode is on"):
        load_strong("RN50:cc12m", offline=True, cache_dir=str(tmp_path))


def test_tag_from_a_fake_hub_cache_uses_its_activation_and_preprocessing(offline_cache, no_network, monkeypatch,
                                                                         limited, caplog):
    import open_clip
    from open_clip.pretrained import _PRETRAINED

    cfg = {"hf_hub": "fake/w2s-tiny/", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
           "interpolation": "bilinear", "resize_mode": "squash", "quick_gelu": True}
    monkeypatch.setitem(_PRETRAINED, "w2s-rn-tiny", {"fake": cfg})
    shutil.copy(LIMITED, _snapshot(offline_cache, "fake/w2s-tiny") / "open_clip_model.safetensors")
    assert open_clip.is_pretrained_cfg("w2s-rn-tiny", "fake")
    m = load_strong("w2s-rn-tiny:fake")
    assert "building it with QuickGELU" in caplog.text
    ident = m.identity()
    assert ident["quick_gelu"] is True and limited.identity()["quick_gelu"] is False
    assert ident["preprocess"]["mean"] == [0.5, 0.5, 0.5] and ident["preprocess"]["resize_mode"] == "squash"
    assert ident["pretrained"] == "fake" and ident["weights_sha256"] == ""
    sd, ref = m.model.state_dict(), limited.model.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)  # the cached weights were loaded
    # QuickGELU changes the text tower's numbers (the ModifiedResNet image tower uses ReLU)
    prompts = (["star", "heart"], ["a photo of a {}."])
    assert not np.allclose(m.text_weights(*prompts), limited.text_weights(*prompts), atol=1e-3)


def test_hub_id_folder_and_file_specs_load_the_same_weights(offline_cache, no_network, tmp_path, limited):
    config = {"model_cfg": json.loads((CONFIG_DIR / "w2s-rn-tiny.json").read_text()),
              "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                 "std": [0.26862954, 0.26130258, 0.27577711]}}
    snap = _snapshot(offline_cache, "fake/w2s-hub")
    (snap / "open_clip_config.json").write_text(json.dumps(config))
    shutil.copy(LIMITED, snap / "open_clip_model.safetensors")
    folder = tmp_path / "export"
    shutil.copytree(snap, folder)
    ref = _features(limited)
    hub = load_strong("hf-hub:fake/w2s-hub")
    assert hub.identity()["pretrained"] == "hf-hub:fake/w2s-hub"
    for model in (hub, load_strong(f"w2s-rn-tiny:{folder}"), load_strong(f"w2s-rn-tiny:{LIMITED}")):
        np.testing.assert_allclose(_features(model), ref, atol=1e-6)
    assert load_strong(f"w2s-rn-tiny:{LIMITED}").weights_sha256 == limited.weights_sha256
    (folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_strong(f"w2s-rn-tiny:{folder}")


def test_random_weights_warn_loudly():
    with pytest.warns(UserWarning, match="RANDOM weights.*meaningless"):
        m = load_strong("w2s-rn-tiny:random")
    assert m.identity()["pretrained"] == "random" and _features(m).shape == (4, 128)


def test_identity_precision_and_device():
    m = load_strong("limited", precision="bf16")
    ident = m.identity()
    assert ident["precision"] == "bf16" and ident["preprocess"]["size"] in (64, [64, 64])  # int for ResNet towers
    assert set(ident) >= {"arch", "pretrained", "weights_sha256", "quick_gelu", "open_clip", "torch"}
    np.testing.assert_allclose(_features(m), _features(load_strong("limited")), atol=0.02)
    with pytest.raises(ValueError, match="fp32, fp16, bf16, amp"):
        load_strong("limited", precision="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_strong("limited", device="cuda")


def test_random_weights_are_reproducible_and_hashed():
    from w2sclip.models.strong.openclip import load_strong

    a, b = load_strong("w2s-rn-tiny:random"), load_strong("w2s-rn-tiny:random")
    assert a.identity()["weights_sha256"] == b.identity()["weights_sha256"] is not None
    pa, pb = next(a.model.parameters()), next(b.model.parameters())
    assert torch.equal(pa, pb)
