"""Weak supervisors: registry, timm / transformers fine-tuning with tiny configs, weak-CLIP teacher,
bring-your-own predictions, the demo recipe, offline errors. CPU, offline."""

import json
import socket
from dataclasses import replace

import numpy as np
import pytest
import torch

from w2sclip.data.manifest import ImageDataset
from w2sclip.models.weak import WEAK_MODELS, get_weak, weak_options

CLASSES = ["red", "green", "blue"]
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 40, 230)]


def _write_images(root, per_class: int, seed: int, bad: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    samples = []
    for c, colour in enumerate(COLOURS):
        for i in range(per_class):
            arr = np.clip(np.array(colour) + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
            path = root / CLASSES[c] / f"{seed}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
            samples.append((str(path), c))
    for i in range(bad):
        path = root / "red" / f"bad_{i}.png"
        path.write_bytes(b"not an image")
        samples.append((str(path), 0))
    return samples


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    train = ImageDataset("colours", CLASSES, ["a {} square."], _write_images(root / "train", 6, 0),
                         split="train", root=str(root))
    test = ImageDataset("colours", CLASSES, ["a {} square."], _write_images(root / "test", 3, 1),
                        split="test", root=str(root))
    return train, test


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def empty_offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "hf" / "hub"


def _fake_hub_file(cache, repo: str, filename: str, write) -> None:
    """Lay out ``repo``'s ``filename`` like huggingface_hub's cache (refs/main + snapshots/<rev>)."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True, exist_ok=True)
    write(snap / filename)


# registry -------------------------------------------------------------------------------------

def test_registry_lists_kinds_and_rejects_unknown_specs_and_options():
    assert {"timm", "cvt", "clip", "file", "lowres"} <= set(WEAK_MODELS)
    with pytest.raises(KeyError, match="timm, cvt"):
        get_weak("resnet:50")
    with pytest.raises(ValueError, match="needs an argument"):
        get_weak("timm:")
    with pytest.raises(ValueError, match="valid: pretrained, pretrained_file, epochs"):
        get_weak("timm:resnet10t", epoch=3)
    with pytest.raises(ValueError, match="resnet10t"):
        get_weak("timm:resnet10x")
    assert weak_options("timm")["epochs"] == 10 and get_weak("clip:limited").needs_training is False


# lowres ---------------------------------------------------------------------------------------

def test_lowres_half_width_learns_and_its_width_is_part_of_its_identity(data):
    train, test = data
    opts = dict(input_size=16, decode_size=16, labels_per_class=6, epochs=10, batch_size=6)
    half = get_weak("lowres:resnet10t", model_kwargs={"channels": [32, 64, 128, 256]}, **opts).fit(train, seed=0)
    convs = [m for m in half.model_.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(m.out_channels for m in convs) == 256  # full width ends at 512
    logits = half.predict_logits(test)
    assert logits.shape == (9, 3) and (logits.argmax(1) == np.asarray(test.labels)).mean() >= 2 / 3
    full = get_weak("lowres:resnet10t", **opts)
    assert half.identity() != full.identity() and half.identity()["model_kwargs"] == {"channels": [32, 64, 128, 256]}


def test_lowres_model_kwargs_timm_rejects_are_a_clear_error(data):
    train, _ = data
    weak = get_weak("lowres:resnet10t", model_kwargs={"chanels": [8, 8, 8, 8]}, input_size=16, decode_size=16,
                    labels_per_class=1, epochs=1)
    with pytest.raises(ValueError, match=r"timm.create_model rejects model_kwargs \{'chanels'"):
        weak.fit(train, seed=0)
    with pytest.raises(ValueError, match="must be a mapping"):
        get_weak("lowres:resnet10t", model_kwargs=[32, 64], labels_per_class=1, epochs=1).fit(train, seed=0)


# timm -----------------------------------------------------------------------------------------

def test_timm_from_scratch_learns_colours_through_a_dataloader(data):
    train, test = data
    weak = get_weak("timm:resnet10t", pretrained=False, input_size=32, epochs=8, lr=3e-3, batch_size=6)
    logits = weak.fit(train, seed=0).predict_logits(test)
    assert logits.shape == (9, 3) and logits.dtype == np.float32
    assert (logits.argmax(1) == np.asarray(test.labels)).mean() >= 2 / 3
    ident = weak.identity()
    assert ident["kind"] == "timm" and ident["pretrained"] is False and "num_workers" not in ident
    again = get_weak("timm:resnet10t", pretrained=False, input_size=32, epochs=8, lr=3e-3, batch_size=6)
    np.testing.assert_array_equal(again.fit(train, seed=0).predict_logits(test), logits)


def test_timm_labels_per_class_and_unreadable_images(data, tmp_path):
    train, test = data
    extra = _write_images(tmp_path, 1, 5, bad=1)
    noisy = replace(test, samples=test.samples + extra)
    weak = get_weak("timm:resnet10t", pretrained=False, input_size=32, epochs=1, labels_per_class=2)
    weak.fit(replace(train, samples=train.samples + extra), seed=0)
    with pytest.warns(UserWarning, match="1 unreadable images"):
        logits = weak.predict_logits(noisy)
    assert logits.shape == (len(noisy), 3) and np.all(logits[-1] == 0)
    with pytest.raises(RuntimeError, match="not fitted"):
        get_weak("timm:resnet10t", pretrained=False).predict_logits(test)


def test_timm_pretrained_offline_missing_is_a_short_error(data, empty_offline_cache, no_network):
    weak = get_weak("timm:resnet10t")  # timm has ImageNet weights for it -> pretrained by default
    assert weak.uses_pretrained
    with pytest.raises(FileNotFoundError) as e:
        weak.fit(data[0], seed=0)
    msg = str(e.value)
    assert "weak model 'timm:resnet10t'" in msg and "timm/resnet10t.c3_in1k" in msg
    assert "offline mode is on" in msg and "pretrained_file=" in msg and str(empty_offline_cache) in msg


def test_timm_pretrained_from_fake_hub_cache_and_from_a_file(data, empty_offline_cache, no_network, tmp_path):
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("resnet10t", pretrained=False)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    _fake_hub_file(empty_offline_cache, "timm/resnet10t.c3_in1k", "model.safetensors", lambda p: save_file(state, p))
    weak = get_weak("timm:resnet10t", epochs=0, input_size=32)
    weak.fit(data[0], seed=0)
    torch.testing.assert_close(weak.model_.conv1[0].weight, ref.conv1[0].weight)
    assert weak.model_.fc.out_features == 3
    save_file(state, tmp_path / "w.safetensors")
    own = get_weak("timm:resnet10t", pretrained_file=str(tmp_path / "w.safetensors"), epochs=0, input_size=32)
    own.fit(data[0], seed=0)
    torch.testing.assert_close(own.model_.conv1[0].weight, ref.conv1[0].weight)
    assert own.identity()["pretrained_file"] and own.data_config_["input_size"] == (3, 32, 32)


# transformers CvT -----------------------------------------------------------------------------

def _tiny_cvt(folder):
    from transformers import (
        ConvNextImageProcessor,
        CvtConfig,
        CvtForImageClassification,
    )

    torch.manual_seed(0)
    cfg = CvtConfig(embed_dim=[8, 16], num_heads=[1, 2], depth=[1, 2], patch_sizes=[7, 3], patch_stride=[4, 2],
                    patch_padding=[2, 1], mlp_ratio=[2.0, 2.0], attention_drop_rate=[0.0, 0.0],
                    drop_rate=[0.0, 0.0], drop_path_rate=[0.0, 0.0], qkv_bias=[True, True],
                    cls_token=[False, True], qkv_projection_method=["dw_bn", "dw_bn"], kernel_qkv=[3, 3],
                    padding_kv=[1, 1], stride_kv=[2, 2], padding_q=[1, 1], stride_q=[1, 1], num_labels=10)
    CvtForImageClassification(cfg).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(folder)
    return folder


def test_cvt_from_a_local_folder_gets_a_new_head_and_learns(data, tmp_path, no_network):
    train, test = data
    weak = get_weak(f"cvt:{_tiny_cvt(tmp_path / 'cvt')}", epochs=6, lr=3e-3, batch_size=6)
    logits = weak.fit(train, seed=0).predict_logits(test)
    assert logits.shape == (9, 3) and weak.model_.config.id2label[2] == "blue"
    assert (logits.argmax(1) == np.asarray(test.labels)).mean() >= 2 / 3
    assert set(weak.identity()["files"]) >= {"config.json", "preprocessor_config.json"}


def test_cvt_offline_from_fake_hub_cache_and_missing(data, tmp_path, empty_offline_cache, no_network):
    folder = _tiny_cvt(tmp_path / "cvt")
    for f in folder.iterdir():
        _fake_hub_file(empty_offline_cache, "microsoft/cvt-13", f.name, lambda p, f=f: p.write_bytes(f.read_bytes()))
    weak = get_weak("cvt:microsoft/cvt-13", epochs=1, batch_size=6).fit(data[0], seed=0)
    assert weak.predict_logits(data[1]).shape == (9, 3)
    with pytest.raises(FileNotFoundError, match="weak model 'cvt:microsoft/cvt-21'.*offline mode is on"):
        get_weak("cvt:microsoft/cvt-21").fit(data[0], seed=0)


# weak-CLIP teacher ---------------------------------------------------------------------------

def test_clip_teacher_is_zero_shot_and_reads_no_labels(data):
    from w2sclip.models.strong.openclip import load_strong

    _, test = data
    teacher = get_weak("clip:limited", templates="dataset")
    assert teacher.fit(None) is teacher  # nothing to train, no data needed
    logits = teacher.predict_logits(test)
    shuffled = replace(test, samples=[(p, (y + 1) % 3) for p, y in test.samples])
    np.testing.assert_allclose(get_weak("clip:limited").predict_logits(shuffled), logits, rtol=1e-6)
    strong = load_strong("limited")
    x = torch.stack([strong.preprocess(test[i][0]) for i in range(len(test))])
    ref = strong.logit_scale * strong.encode_images(x).numpy() @ strong.text_weights(CLASSES, ["a {} square."]).T
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-4)
    assert teacher.identity()["strong"]["kind"] == "builtin" and len(teacher.identity()["strong"]["sha256"]) == 16
    with pytest.raises(ValueError, match="openai_imagenet"):
        get_weak("clip:limited", templates="imagenet")


# bring your own predictions ------------------------------------------------------------------

def _probs(n: int, seed: int = 0) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=(n, 3))
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def test_byo_csv_relative_keys_probabilities_and_reordered_columns(data, tmp_path):
    _, test = data
    p = _probs(len(test))
    rel = [s.split("/test/", 1)[1] for s, _ in test.samples]  # 'red/1_0.png'
    with open(tmp_path / "preds.csv", "w") as f:
        f.write("path,blue,red,green\n")
        f.writelines(f"{'test/' + k},{row[2]},{row[0]},{row[1]}\n" for k, row in zip(rel, p))
        f.write("test/red/extra.png,0.2,0.3,0.5\n")
    logits = get_weak(f"file:{tmp_path / 'preds.csv'}").predict_logits(test)  # an extra key: logged, legal
    np.testing.assert_allclose(logits, np.log(p), rtol=1e-5)


@pytest.mark.parametrize("fmt", ["npz", "pt", "json"])
def test_byo_mapping_formats_absolute_keys_and_logits(data, tmp_path, fmt):
    _, test = data
    z = np.random.default_rng(1).normal(size=(len(test), 3)).astype(np.float32)
    paths = [s for s, _ in reversed(test.samples)]
    logits = z[::-1]
    out = tmp_path / f"p.{fmt}"
    if fmt == "npz":
        np.savez(out, paths=np.array(paths), logits=logits)
    elif fmt == "pt":
        torch.save({"paths": paths, "logits": torch.from_numpy(logits.copy())}, out)
    else:
        out.write_text(json.dumps({"paths": paths, "logits": logits.tolist(), "classnames": CLASSES}))
    weak = get_weak(f"file:{out}")
    assert weak.needs_training is False and len(weak.identity()["sha256"]) == 16
    np.testing.assert_allclose(weak.predict_logits(test), z, rtol=1e-6)


def test_byo_checks_class_count_missing_keys_and_ambiguity(data, tmp_path):
    _, test = data
    paths = [s for s, _ in test.samples]
    np.savez(tmp_path / "four.npz", paths=np.array(paths), logits=np.zeros((len(paths), 4)))
    with pytest.raises(ValueError, match="4 classes but the dataset has 3"):
        get_weak(f"file:{tmp_path / 'four.npz'}").predict_logits(test)
    np.savez(tmp_path / "short.npz", paths=np.array(paths[:-2]), logits=np.zeros((len(paths) - 2, 3)))
    with pytest.raises(ValueError, match="2 of 9 dataset images have no prediction"):
        get_weak(f"file:{tmp_path / 'short.npz'}").predict_logits(test)
    names = sorted({p.rsplit("/", 1)[1] for p in paths})  # '1_0.png' exists in every class folder
    np.savez(tmp_path / "amb.npz", paths=np.array(names), logits=np.zeros((len(names), 3)))
    with pytest.raises(ValueError, match="matches both"):
        get_weak(f"file:{tmp_path / 'amb.npz'}").predict_logits(test)
    np.savez(tmp_path / "bad.npz", paths=np.array(paths), probs=np.full((len(paths), 3), 0.5))
    with pytest.raises(ValueError, match="sum to 1"):
        get_weak(f"file:{tmp_path / 'bad.npz'}").predict_logits(test)
    with pytest.raises(FileNotFoundError, match="not found"):
        get_weak(f"file:{tmp_path / 'nope.csv'}")


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, w2sclip.models.weak, w2sclip.models.strong.openclip; "
            "print(any(m in sys.modules for m in ('timm', 'transformers', 'open_clip')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
