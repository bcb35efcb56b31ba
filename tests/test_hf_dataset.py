"""``dataset=hf:<source>``: a small dataset written with ``datasets`` here, read back offline."""

import io
import shutil

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from w2sclip.data import BadImageError, get_dataset, get_spec, list_domains  # noqa: E402

CLASSES = ["cat", "dog", "hot_air_balloon"]
COLORS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]


def _png(rgb, size=12) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, "PNG")
    return buf.getvalue()


def _split(n_per: int, corrupt_row: int | None = None, shade: int = 0):
    rows = {"img": [], "label": [], "domain": []}
    for d in ("photo", "sketch"):
        for c, rgb in enumerate(COLORS):
            for k in range(n_per):
                rows["img"].append({"bytes": _png(tuple(max(0, v - 5 * k - shade) for v in rgb)), "path": None})
                rows["label"].append(c)
                rows["domain"].append(d)
    if corrupt_row is not None:
        rows["img"][corrupt_row] = {"bytes": b"not a png at all", "path": None}
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES),
                                  "domain": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two splits (train 4, test 3 images per class and domain); test row 1 is corrupt."""
    root = tmp_path_factory.mktemp("hf") / "toy"
    datasets.DatasetDict(train=_split(4), test=_split(3, corrupt_row=1)).save_to_disk(str(root))
    return root


OPTS = {"image_column": "img", "domain_column": "domain"}


def test_classes_splits_domains_labels(saved):
    name = f"hf:{saved}"
    assert get_spec(name).name == "hf"
    assert list_domains(name, **OPTS) == ["photo", "sketch"]
    assert list_domains(name) == ["default"]
    test = get_dataset(name, domain="sketch", split="test", **OPTS)
    assert test.raw_classnames == CLASSES and test.classnames == ["cat", "dog", "hot air balloon"]
    assert len(test) == 9 and test.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert (test.domain, test.split) == ("sketch", "test")
    img, label = test[3]  # decoded from the arrow row, not a file
    assert img.size == (12, 12) and img.getpixel((0, 0))[1] > 200 and label == 1
    assert len(get_dataset(name, split="train", **OPTS)) == 24
    both = get_dataset("hf", root=saved, **OPTS)  # library spelling: name + root
    assert len(both) == 24 + 18
    assert get_dataset(name, split="test", image_column="img").domain is None
    assert test.templates == ["a photo of a {}."]
    assert get_dataset(name, split="test", templates=["a sketch of a {}."], **OPTS).templates == ["a sketch of a {}."]
    with pytest.raises(ValueError, match=r"every template needs '\{\}'"):
        get_dataset(name, split="test", templates=["a sketch"], **OPTS)


def test_corrupt_image_is_a_bad_file_not_a_crash(saved):
    from w2sclip.features.loading import SafeImages

    test = get_dataset(f"hf:{saved}", domain="photo", split="test", **OPTS)
    with pytest.raises(BadImageError, match=r"bad image hf:[0-9a-f]+/1: not an image") as e:
        test[1]
    assert e.value.reason == "not an image (unrecognised format)"
    safe = SafeImages(test.with_transform(lambda im: np.asarray(im)), (12, 12, 3), bad_files="skip")
    assert safe[1][2] == "not an image (unrecognised format)" and safe[0][2] == ""
    assert len(test.without([test.samples[1][0]])) == len(test) - 1


def test_missing_column_or_split_names_the_available_ones(saved):
    name = f"hf:{saved}"
    with pytest.raises(KeyError, match=r"has no column 'image'; columns: img, label, domain; set image_column"):
        get_dataset(name, split="test")
    with pytest.raises(KeyError, match=r"has no column 'style'.*set domain_column"):
        get_dataset(name, split="test", image_column="img", domain_column="style")
    with pytest.raises(KeyError, match=r"has no split 'validation' \(test_split\); splits: train, test"):
        get_dataset(name, split="test", test_split="validation", **OPTS)
    with pytest.raises(KeyError, match=r"unknown domain 'clipart' for hf:.*; valid: photo, sketch"):
        get_dataset(name, domain="clipart", split="test", **OPTS)
    with pytest.raises(ValueError, match=r"not an image; set image_column"):
        get_dataset(name, split="test", image_column="domain")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['image_col'\] for dataset 'hf'; valid: .*image_column"):
        get_dataset(name, split="test", image_col="img")
    with pytest.raises(ValueError, match=r"'hf:' needs a source: hf:<hub id or local folder>"):
        get_dataset("hf:")
    with pytest.raises(KeyError, match=r"only hf:<source> takes a source"):
        get_spec("folder:/data")


def test_one_split_uses_the_seeded_split_and_plain_labels_need_classnames(tmp_path):
    ds = _split(6)
    plain = ds.cast_column("label", datasets.Value("int64"))
    plain.save_to_disk(str(tmp_path / "one"))
    name = f"hf:{tmp_path / 'one'}"
    with pytest.raises(ValueError, match=r"not a ClassLabel, so it has no class names; pass classnames"):
        get_dataset(name, split="test", **OPTS)
    with pytest.raises(KeyError, match=r"splits='official' but hf:.* has no train/test pair; splits: train"):
        get_dataset(name, split="test", classnames=CLASSES, splits="official", **OPTS)
    train = get_dataset(name, domain="photo", split="train", classnames=CLASSES, **OPTS)
    test = get_dataset(name, domain="photo", split="test", classnames=CLASSES, **OPTS)
    assert not {p for p, _ in train.samples} & {p for p, _ in test.samples}
    assert len(train) + len(test) == 18 and np.bincount(test.labels).tolist() == [3, 3, 3]
    again = get_dataset(name, domain="photo", split="test", classnames=CLASSES, **OPTS)
    assert again.samples == test.samples
    other = get_dataset(name, domain="photo", split="test", classnames=CLASSES, split_seed=1, **OPTS)
    assert other.samples != test.samples
    union = get_dataset(name, split="test", classnames=CLASSES, **OPTS)  # per-domain split, unioned
    assert set(test.samples) < set(union.samples) and len(union) == 18


def test_identity_follows_content_not_location(saved, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(saved, copy)
    a = get_dataset(f"hf:{saved}", domain="photo", split="test", **OPTS)
    b = get_dataset(f"hf:{copy}", domain="photo", split="test", **OPTS)
    assert a.root != b.root and len(a.tables) == 1  # the train split is not part of test's identity
    assert (a.content_id(), a.fingerprint()) == (b.content_id(), b.fingerprint())
    datasets.DatasetDict(train=_split(4), test=_split(3, corrupt_row=1, shade=2)).save_to_disk(str(tmp_path / "d"))
    c = get_dataset(f"hf:{tmp_path / 'd'}", domain="photo", split="test", **OPTS)
    assert len(c) == len(a) and c.labels == a.labels
    assert c.content_id() != a.content_id() and c.fingerprint() != a.fingerprint()
    sketch = get_dataset(f"hf:{saved}", domain="sketch", split="test", **OPTS)
    assert sketch.content_id() != a.content_id()
    assert a.without([a.samples[0][0]]).content_id() != a.content_id()


def test_hub_id_offline_and_not_cached_is_a_clear_error(monkeypatch, tmp_path):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"hf dataset 'nobody/no-such-data' could not be loaded .*"
                                                r"save_to_disk it and use dataset=hf:/path/to/folder"):
        get_dataset("hf:nobody/no-such-data", split="test")


def test_load_image_applies_draft_to_jpeg_rows(tmp_path):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 10)).save(buf, "JPEG")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    rows = {"image": [{"bytes": buf.getvalue(), "path": None}] * 4, "label": [0, 1, 0, 1]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "j"))
    ds = get_dataset(f"hf:{tmp_path / 'j'}")  # one split: the seeded split, union of train and test
    assert len(ds) == 4 and ds[0][0].size == (64, 48)
    assert ds.load_image(0, draft=12).size == (16, 12)  # 1/4 scale keeps the shorter side >= 12


def test_every_image_reader_reads_arrow_rows(saved, tmp_path):
    """The weak model, feature extraction and the bad-image scan read hf rows through
    ``dataset.read_image`` (no reader opens ``samples[i][0]`` as a file path)."""
    from w2sclip.data.images import find_bad_images
    from w2sclip.features.extract import extract
    from w2sclip.models.strong.openclip import load_strong
    from w2sclip.models.weak import get_weak

    train = get_dataset(f"hf:{saved}", domain="photo", split="train", **OPTS)
    test = get_dataset(f"hf:{saved}", domain="photo", split="test", **OPTS)
    assert find_bad_images(test) == [(test.samples[1][0], "not an image (unrecognised format)")]
    weak = get_weak("lowres:resnet10t", labels_per_class=2, epochs=1, input_size=16, decode_size=16)
    logits = weak.fit(train, seed=0).predict_logits(test)
    assert logits.shape == (len(test), 3) and np.isfinite(logits).all() and (logits[1] == 0).all()
    fs = extract(load_strong("full", device="cpu"), test, tmp_path / "cache", batch_size=4, progress=False)
    assert fs.valid.tolist() == [i != 1 for i in range(len(test))]
    assert np.isfinite(fs.features[fs.valid]).all() and fs.bad_files[0][1] == "not an image (unrecognised format)"
