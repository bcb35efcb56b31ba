"""Office-Home, PACS, VLCS, generic folder, CSV and builtin through get_dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from w2sclip.data import get_dataset, list_domains
from w2sclip.data.check import check_dataset
from w2sclip.data.manifest import load_manifest
from w2sclip.data.miniature import make_miniature
from w2sclip.data.office_home import OFFICE_HOME_CLASSES


def _img(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _paths(ds) -> set[str]:
    return {p for p, _ in ds.samples}


def test_office_home_layout_and_seeded_split(tmp_path):
    root = make_miniature("office_home", tmp_path / "oh", images_per_class=3)
    assert (root / "OfficeHomeDataset_10072016" / "Real World").is_dir()
    assert len(OFFICE_HOME_CLASSES) == 65 and list(OFFICE_HOME_CLASSES) == sorted(OFFICE_HOME_CLASSES)
    assert list_domains("office_home", root) == ["art", "clipart", "product", "real_world"]
    tr = get_dataset("office_home", root=root, domain="real_world", split="train")
    te = get_dataset("office_home", root=root, domain="real_world", split="test")
    assert tr.classnames[0] == "alarm clock" and tr.classnames[58] == "TV" and len(tr.classnames) == 65
    assert not _paths(tr) & _paths(te) and len(tr) == len(te) == 3 * 64  # one class absent per domain
    for path, label in tr.samples:
        assert Path(path).parent.name == OFFICE_HOME_CLASSES[label]
    again = get_dataset("office_home", root=root, domain="real_world", split="test")
    assert again.samples == te.samples  # deterministic
    other = get_dataset("office_home", root=root, domain="real_world", split="test", split_seed=1)
    assert other.samples != te.samples
    t8 = get_dataset("office_home", root=root, domain="real_world", split="test", test_fraction=1 / 6)
    assert len(t8) == 64


def test_office_home_folder_variants(tmp_path):
    # "Real_World" for "Real World", lower-case class folders, no top folder
    _img(tmp_path / "Real_World" / "alarm_clock" / "a.jpg")
    _img(tmp_path / "Real_World" / "alarm_clock" / "b.jpg")
    _img(tmp_path / "Real_World" / "tv" / "c.jpg")
    ds = get_dataset("office_home", root=tmp_path, domain="real_world")
    assert sorted(ds.labels) == [0, 0, 58]
    _img(tmp_path / "Real_World" / "Sofa" / "d.jpg")
    with pytest.raises(ValueError, match=r"unknown class folder\(s\) \['Sofa'\]"):
        get_dataset("office_home", root=tmp_path, domain="real_world", split="train")
    with pytest.raises(FileNotFoundError, match="domain 'art' not found"):
        get_dataset("office_home", root=tmp_path, domain="art", split="train")


def test_pacs_official_kfold_files(tmp_path):
    root = make_miniature("pacs", tmp_path / "pacs", domains=("sketch",), images_per_class=4)
    assert (root / "splits" / "sketch_train_kfold.txt").read_text().startswith("sketch/dog/pic_001.jpg 1")
    tr = get_dataset("pacs", root=root, domain="sketch", split="train")
    te = get_dataset("pacs", root=root, domain="sketch", split="test")
    al = get_dataset("pacs", root=root, domain="sketch", split="all")
    assert len(al) == 7 * 8 and len(tr) + len(te) == len(al)
    assert not _paths(tr) & _paths(te)  # test = crossval_kfold, never the whole-domain test_kfold
    for path, label in al.samples:  # 1-based labels in the files, 0-based here
        assert Path(path).parent.name == tr.raw_classnames[label]
    seeded = get_dataset("pacs", root=root, domain="sketch", split="test", splits="seeded")
    assert len(seeded) == 28
    f = root / "splits" / "sketch_crossval_kfold.txt"
    f.write_text(f.read_text().replace(" 7\n", " 6\n", 1))
    with pytest.raises(ValueError, match=r"sketch_crossval_kfold\.txt:\d+: label 6 but the image is in folder 'person'"):
        get_dataset("pacs", root=root, domain="sketch", split="test")


def test_pacs_without_split_files_is_seeded(tmp_path):
    root = make_miniature("pacs", tmp_path / "pacs", domains=("photo",))
    shutil.rmtree(root / "splits")
    tr = get_dataset("pacs", root=root, domain="photo", split="train")
    te = get_dataset("pacs", root=root, domain="photo", split="test")
    assert len(tr) == len(te) == 14 and not _paths(tr) & _paths(te)
    with pytest.raises(KeyError, match="valid: train, test"):
        get_dataset("pacs", root=root, domain="photo", split="all")
    with pytest.raises(FileNotFoundError, match="splits='official'"):
        get_dataset("pacs", root=root, domain="photo", split="train", splits="official")


def test_vlcs_domainbed_and_jigen_layouts(tmp_path):
    root = make_miniature("vlcs", tmp_path / "vlcs", domains=("pascal",))
    assert (root / "VLCS" / "VOC2007" / "person").is_dir()
    ds = get_dataset("vlcs", root=root, domain="pascal", split="test")
    assert ds.classnames == ["bird", "car", "chair", "dog", "person"] and len(ds) == 10
    jig = tmp_path / "jigen"
    for split, n in (("train", 3), ("crossval", 1), ("test", 2), ("full", 6)):
        for c in range(5):
            for k in range(n):
                _img(jig / "SUN" / split / str(c) / f"{k}.jpg")
    tr = get_dataset("vlcs", root=jig, domain="sun", split="train")
    te = get_dataset("vlcs", root=jig, domain="sun", split="test")
    assert len(tr) == 15 and len(te) == 10 and sorted(set(te.labels)) == [0, 1, 2, 3, 4]
    assert all(f"/test/{lab}/" in p for p, lab in te.samples)
    assert list_domains("vlcs", jig) == ["sun"]


def test_generic_folder_layouts(tmp_path):
    root = make_miniature("folder", tmp_path / "f", images_per_class=2)
    assert list_domains("folder", root) == ["photo", "sketch"]
    ds = get_dataset("folder", root=root, domain="sketch", split="train")
    assert ds.raw_classnames == ["Alarm_Clock", "TV", "The_Eiffel_Tower", "cat", "t-shirt", "teddy-bear"]
    assert ds.classnames == ["alarm clock", "TV", "the Eiffel Tower", "cat", "t-shirt", "teddy bear"]
    assert 2 not in ds.labels  # no The_Eiffel_Tower images in sketch
    (root / "classnames.txt").write_text("cat\nteddy-bear\nt-shirt\nTV\nThe_Eiffel_Tower\nAlarm_Clock\n")
    (root / "templates.txt").write_text("a drawing of a {}.\n")
    ds = get_dataset("folder", root=root, domain="photo", split="test")
    assert ds.classnames[0] == "cat" and ds.templates == ["a drawing of a {}."]
    for path, label in ds.samples:
        assert Path(path).parent.name == ds.raw_classnames[label]
    single = tmp_path / "single"
    for cls in ("dog", "cat"):
        for k in range(4):
            _img(single / cls / f"{k}.png")
    assert list_domains("folder", single) == ["default"]
    s = get_dataset("folder", root=single, split="test")
    assert s.classnames == ["cat", "dog"] and len(s) == 4
    split_root = tmp_path / "splitroot"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            _img(split_root / split / cls / "x.png")
    assert len(get_dataset("folder", root=split_root, domain="default", split="test")) == 2


def test_csv_manifest(tmp_path):
    for k in range(6):
        _img(tmp_path / "imgs" / f"{k}.png")
    (tmp_path / "data.csv").write_text(
        "path,label,domain\n" + "".join(f"imgs/{k}.png,{'cat' if k % 2 else 'dog'},{'a' if k < 4 else 'b'}\n"
                                        for k in range(6)))
    assert list_domains("csv", tmp_path / "data.csv") == ["a", "b"]
    ds = get_dataset("csv", root=tmp_path / "data.csv", domain="a")
    assert ds.classnames == ["cat", "dog"] and len(ds) == 4 and ds.labels.count(0) == 2
    tr = get_dataset("csv", root=tmp_path, domain="a", split="train")
    assert len(tr) == 2 and sorted(tr.labels) == [0, 1]
    (tmp_path / "classnames.txt").write_text("dog\ncat\n")
    (tmp_path / "data.csv").write_text("path,label,split\nimgs/0.png,0,train\nimgs/1.png,1,test\nimgs/2.png,5,test\n")
    with pytest.raises(ValueError, match=r"data\.csv:4: label '5'"):
        get_dataset("csv", root=tmp_path, split="test")
    (tmp_path / "data.csv").write_text("path,label,split\nimgs/0.png,0,train\nimgs/1.png,cat,test\n")
    te = get_dataset("csv", root=tmp_path, split="test")
    assert te.samples == [(str(tmp_path / "imgs/1.png"), 1)] and te.domain is None
    (tmp_path / "data.csv").write_text("file,label\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['path'\]"):
        get_dataset("csv", root=tmp_path, split="test")


def test_builtin_through_the_registry(tmp_path):
    from w2sclip.data.builtin import make_builtin

    root = make_builtin(tmp_path / "b", size="quick", seed=0, domains=("sketch",), workers=1)
    ds = get_dataset("builtin", root=root, domain="sketch", split="test")
    ref = load_manifest(root, "sketch", "test", "builtin")
    assert ds.samples == ref.samples and ds.classnames == ref.classnames
    assert list_domains("builtin", root) == ["sketch"]
    assert check_dataset("builtin", root, images=False).ok
