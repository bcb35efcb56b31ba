"""DomainNet loading (official order, split files, errors), the registry, prompt names, bad images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from w2sclip.data import DATASETS, BadImageError, get_dataset, list_domains, prompt_name
from w2sclip.data.check import check_dataset
from w2sclip.data.domainnet_classes import DOMAINNET_CLASSES
from w2sclip.data.images import (
    find_bad_images,
    open_image,
    screen_images,
    write_bad_files,
)
from w2sclip.data.miniature import make_miniature
from w2sclip.data.splits import hashed_train_test, protocol_splits

SHARED_CLASSES = Path("/work/shared/data/domainnet_classes.txt")


@pytest.fixture(scope="module")
def dn(tmp_path_factory) -> Path:
    """DomainNet miniature: clipart + painting, all 345 class folders, 2 bad files in clipart."""
    return make_miniature("domainnet", tmp_path_factory.mktemp("dn") / "domainnet",
                          domains=("clipart", "painting"), images_per_class=2, corrupt=2)


def test_official_class_order():
    assert len(DOMAINNET_CLASSES) == 345 == len(set(DOMAINNET_CLASSES))
    assert DOMAINNET_CLASSES.index("aircraft_carrier") == 0
    assert DOMAINNET_CLASSES.index("t-shirt") == 327
    assert sum(a != b for a, b in zip(DOMAINNET_CLASSES, sorted(DOMAINNET_CLASSES))) == 328
    if SHARED_CLASSES.exists():
        assert list(DOMAINNET_CLASSES) == SHARED_CLASSES.read_text().split()


def test_domainnet_labels_follow_official_order(dn):
    ds = get_dataset("domainnet", root=dn, domain="clipart", split="train")
    assert ds.raw_classnames == list(DOMAINNET_CLASSES)
    assert ds.classnames[0] == "aircraft carrier" and ds.classnames[327] == "t-shirt"
    assert "the Eiffel Tower" in ds.classnames and "teddy bear" in ds.classnames
    assert ds.templates == ["a photo of a {}.", "a clipart image of a {}."]
    for path, label in ds.samples:
        assert Path(path).parent.name == DOMAINNET_CLASSES[label]
    assert len(ds) == 345 * 2 and set(ds.labels) == set(range(345))


def test_domainnet_missing_classes_and_protocol_splits(dn):
    train = get_dataset("domainnet", root=dn, domain="painting", split="train")
    assert 327 not in set(train.labels) and len(set(train.labels)) == 344  # t-shirt, as in the real files
    test = get_dataset("domainnet", root=dn, domain="clipart", split="test")
    missing = set(range(345)) - set(test.labels)
    assert len(missing) == 3
    s = protocol_splits(test.labels, test.labels, seed=0)  # a perfect weak supervisor
    assert len(s["hold"]) + len(s["test"]) == len(test)
    assert not set(s["hold"]) & set(s["test"])
    y = np.asarray(test.labels)
    assert set(y[s["test"]]) == set(y) and not missing & set(y[s["hold"]])


def test_both_split_file_layouts_give_the_same_dataset(tmp_path, dn):
    other = make_miniature("domainnet", tmp_path / "dn2", domains=("clipart",), corrupt=2,
                           split_layout="image_list")
    assert (other / "image_list" / "clipart_train.txt").read_text().startswith("aircraft_carrier/")
    a = get_dataset("domainnet", root=dn, domain="clipart", split="test")
    b = get_dataset("domainnet", root=other, domain="clipart", split="test")
    assert a.relative_samples() == b.relative_samples()
    assert a.fingerprint() == b.fingerprint()  # independent of where the data lives
    assert a.fingerprint() != get_dataset("domainnet", root=dn, domain="clipart", split="train").fingerprint()
    assert len(a.without([a.samples[0][0]])) == len(a) - 1


def test_split_file_label_mismatch_names_file_and_line(tmp_path, dn):
    root = tmp_path / "dn"
    shutil.copytree(dn / "splits", root / "splits")
    (root / "clipart").symlink_to(dn / "clipart")
    f = root / "splits" / "clipart_train.txt"
    lines = f.read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0] + " 7"  # an alarm_clock image (label 2) labelled 7
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"clipart_train\.txt:5: label 7 but the image is in folder 'alarm_clock', which is label 2"):
        get_dataset("domainnet", root=root, domain="clipart", split="train")
    report = check_dataset("domainnet", root, domains=["clipart"], images=False)
    assert not report.ok and any("clipart_train.txt:5" in p for p in report.problems)


def test_domainnet_errors(tmp_path, dn):
    with pytest.raises(FileNotFoundError, match="w2sclip data download domainnet"):
        get_dataset("domainnet", root=dn, domain="real", split="train")
    with pytest.raises(KeyError, match="valid: clipart, infograph"):
        get_dataset("domainnet", root=dn, domain="photo", split="train")
    with pytest.raises(KeyError, match="valid: train, test"):
        get_dataset("domainnet", root=dn, domain="clipart", split="val")
    with pytest.raises(ValueError, match="unknown option"):
        get_dataset("domainnet", root=dn, domain="clipart", split="train", bogus=1)
    with pytest.raises(KeyError, match="valid: domainnet, office_home, pacs, vlcs, folder, csv, builtin"):
        get_dataset("imagenet", root=dn)
    assert list_domains("domainnet", dn) == ["clipart", "painting"]
    assert list_domains("domainnet") == list(DATASETS["domainnet"].domains)


def test_verify_files_finds_missing_images(tmp_path, dn):
    root = tmp_path / "dn"
    shutil.copytree(dn, root, symlinks=True)
    (root / "clipart" / "zigzag" / "clipart_345_000001.jpg").unlink()
    assert len(get_dataset("domainnet", root=root, domain="clipart", split="train")) == 690  # cheap: no check
    with pytest.raises(FileNotFoundError, match="1 image"):
        get_dataset("domainnet", root=root, domain="clipart", split="train", verify_files=True)


def test_seeded_split_of_domainnet_folders(dn):
    ds = get_dataset("domainnet", root=dn, domain="clipart", split="test", splits="seeded")
    tr = get_dataset("domainnet", root=dn, domain="clipart", split="train", splits="seeded")
    assert not {p for p, _ in ds.samples} & {p for p, _ in tr.samples}
    assert len(ds) + len(tr) == 345 * 4 - 3 * 2


def test_check_reports_counts_notes_and_bad_images(dn):
    report = check_dataset("domainnet", dn, images=True, num_workers=2)
    assert report.counts[("painting", "train")][327] == 0
    assert any("painting/train: 1 class(es) without images: t-shirt (327)" in n for n in report.notes)
    assert len(report.bad_images) == 2 and not report.ok
    text = report.format()
    assert "t-shirt" in text and "FAILED" in text


def test_prompt_names():
    cases = {"teddy-bear": "teddy bear", "The_Eiffel_Tower": "the Eiffel Tower", "t-shirt": "t-shirt",
             "The_Great_Wall_of_China": "the Great Wall of China", "Alarm_Clock": "alarm clock",
             "ToothBrush": "tooth brush", "TV": "TV", "aircraft_carrier": "aircraft carrier",
             "Real World": "real world", "x-ray": "x-ray"}
    assert {k: prompt_name(k) for k in cases} == cases


def test_bad_images_are_found_skipped_or_fatal(tmp_path, dn):
    ds = get_dataset("domainnet", root=dn, domain="clipart", split="test")
    bad = find_bad_images(ds, num_workers=2)
    assert len(bad) == 2 and {r.split(" ")[0] for _, r in bad} == {"unreadable", "not"}
    with pytest.raises(BadImageError) as e:
        ds[ds.samples.index(next(s for s in ds.samples if s[0] == bad[0][0]))]
    assert e.value.path == bad[0][0] and "w2sclip data check" in str(e.value)
    kept, listed = screen_images(ds, bad_files="skip")
    assert len(kept) == len(ds) - 2 and listed == bad
    with pytest.raises(BadImageError, match="1 more bad file"):
        screen_images(ds, bad_files="error")
    with pytest.raises(ValueError, match="valid: skip, error"):
        screen_images(ds, bad_files="ignore")
    out = write_bad_files(listed, tmp_path / "bad_files.txt")
    assert out.read_text().count("\n") == 2
    img, label = kept[0]
    assert img.mode == "RGB" and img.size == (32, 32) and label == kept.samples[0][1]
    with pytest.raises(BadImageError, match="file not found"):
        open_image(tmp_path / "nope.jpg")


def test_hashed_split_is_pure_stratified_and_stable():
    keys = [f"c{i % 3}/img{i}.jpg" for i in range(60)]
    labels = [i % 3 for i in range(60)]
    tr, te = hashed_train_test(keys, labels, 0.5, seed=0)
    assert len(tr) + len(te) == 60 and not set(tr) & set(te)
    assert len(te) == 30 and np.bincount(np.asarray(labels)[te]).tolist() == [10, 10, 10]
    perm = np.random.default_rng(1).permutation(60)
    _, te2 = hashed_train_test([keys[i] for i in perm], [labels[i] for i in perm], 0.5, seed=0)
    assert sorted(keys[i] for i in te) == sorted(keys[perm[i]] for i in te2)  # order-independent
    _, te3 = hashed_train_test(keys[1:], labels[1:], 0.5, seed=0)
    moved = {keys[i] for i in te} ^ {keys[1:][i] for i in te3}
    assert len(moved - {keys[0]}) <= 1
    assert hashed_train_test(keys, labels, 0.5, seed=1)[1].tolist() != te.tolist()
    assert hashed_train_test(["a"], [0], 0.5)[0].tolist() == [0]  # a single file stays in train
