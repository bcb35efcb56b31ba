"""Inputs that used to pass silently: label-order files, Excel CSVs, duplicated YAML keys, special
files in a dataset folder, numeric CLI options out of range, the suffix list of ``predict``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from w2sclip.data import get_dataset
from w2sclip.data.check import check_dataset
from w2sclip.data.classnames import read_classnames


def _img(path: Path, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format=fmt)


def test_classnames_with_a_duplicate_name_is_refused_naming_both_lines(tmp_path):
    f = tmp_path / "classnames.txt"
    f.write_text("circle\nsquare\ncircle\nstar\n")
    with pytest.raises(ValueError, match=r"line 3: class name 'circle' already on line 1"):
        read_classnames(f)


def test_classnames_with_a_blank_line_between_names_is_refused(tmp_path):
    f = tmp_path / "classnames.txt"
    f.write_text("circle\n\nsquare\nstar\n")
    with pytest.raises(ValueError, match=r"line 2: blank line between class names; remove it"):
        read_classnames(f)
    f.write_text("circle\n   \nsquare\n")
    with pytest.raises(ValueError, match=r"line 2: blank line"):
        read_classnames(f)


def test_classnames_bom_crlf_and_trailing_blank_lines_read_as_the_plain_file(tmp_path):
    f = tmp_path / "classnames.txt"
    f.write_bytes("\ufeffcircle\r\nsquare\r\nstar\r\n\r\n".encode("utf-8"))
    assert read_classnames(f) == ["circle", "square", "star"]
    f.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_classnames(f)


def _csv_dataset(root: Path, classnames: str) -> None:
    for k in range(4):
        _img(root / "imgs" / f"{k}.png")
    (root / "classnames.txt").write_text(classnames)
    (root / "data.csv").write_text("path,label\n" + "".join(f"imgs/{k}.png,{k}\n" for k in range(4)))


def test_a_csv_dataset_and_data_check_refuse_a_shifted_label_order(tmp_path):
    _csv_dataset(tmp_path, "circle\nsquare\n\nstar\ntriangle\n")
    with pytest.raises(ValueError, match="blank line between class names"):
        get_dataset("csv", root=tmp_path, split="test")
    report = check_dataset("csv", tmp_path, images=False)
    assert not report.ok and any("blank line" in p for p in report.problems)
    _csv_dataset(tmp_path, "circle\nsquare\ncircle\nstar\n")
    report = check_dataset("csv", tmp_path, images=False)
    assert not report.ok and any("already on line 1" in p for p in report.problems)


def test_a_folder_dataset_refuses_a_duplicated_class_name(tmp_path):
    for c in ("a", "b"):
        _img(tmp_path / c / "0.png")
    (tmp_path / "classnames.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="already on line 1"):
        get_dataset("folder", root=tmp_path, split="test")


def test_an_excel_csv_with_bom_and_crlf_is_read(tmp_path):
    for k in range(4):
        _img(tmp_path / "imgs" / f"{k}.png")
    rows = "path,label\r\n" + "".join(f"imgs/{k}.png,{'cat' if k % 2 else 'dog'}\r\n" for k in range(4))
    (tmp_path / "data.csv").write_bytes(("\ufeff" + rows).encode("utf-8"))
    ds = get_dataset("csv", root=tmp_path / "data.csv")
    assert ds.classnames == ["cat", "dog"] and len(ds) == 4


def test_a_fifo_named_like_an_image_is_never_read(tmp_path):
    for c in ("a", "b"):
        _img(tmp_path / c / "0.png")
    os.mkfifo(tmp_path / "a" / "pipe.png")
    ds = get_dataset("folder", root=tmp_path)
    assert sorted(Path(p).name for p, _ in ds.samples) == ["0.png", "0.png"]
    assert check_dataset("folder", tmp_path, images=True).ok  # returns: nothing opens the FIFO


def test_data_check_on_class_folders_without_images_says_so(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir(parents=True)
        (tmp_path / c / "notes.txt").write_text("x")
    report = check_dataset("folder", tmp_path, images=False)
    text = report.format()
    assert not report.ok and "no images found" in text


def test_a_preset_with_a_duplicated_key_is_refused(tmp_path):
    from w2sclip.config import load_sweep

    f = tmp_path / "p.yaml"
    f.write_text("name: p\nbase:\n  domain: real\n  domain: sketch\n")
    with pytest.raises(ValueError, match=r"key 'domain' is given twice \(lines 3 and 4\); keep one"):
        load_sweep(f)
    with pytest.raises(ValueError, match="given twice"):
        load_sweep("builtin", ["weak_options={epochs: 1, epochs: 2}"])


@pytest.mark.parametrize("value", ["0", "-3"])
def test_top_k_below_one_is_refused(value):
    from typer.testing import CliRunner

    from w2sclip.cli import app

    res = CliRunner().invoke(app, ["predict", "clf", "img.png", "--top-k", value])
    assert res.exit_code == 2 and "--top-k" in res.output and "greater than or equal to 1" in res.output


def test_predict_finds_every_suffix_the_datasets_accept(tmp_path):
    from w2sclip.data.images import IMAGE_EXTENSIONS
    from w2sclip.export import image_files

    _img(tmp_path / "x.ppm", "PPM")
    _img(tmp_path / "y.png")
    assert [p.name for p in image_files([tmp_path])] == ["x.ppm", "y.png"]
    assert ".ppm" in IMAGE_EXTENSIONS


class _DS:
    def __init__(self, root: Path, n: int, classnames):
        self.samples = [(str(root / f"{i}.png"), i % len(classnames)) for i in range(n)]
        self.classnames = list(classnames)
        self.root = str(root)


def _weak_file(tmp_path, rows, name="w.csv"):
    path = tmp_path / name
    path.write_text("path,circle,square,star,heart\n" + "".join(
        f"{i}.png," + ",".join(str(v) for v in r) + "\n" for i, r in enumerate(rows)))
    return path


def test_rounded_probabilities_are_read_as_probabilities_with_a_warning(tmp_path):
    import numpy as np

    from w2sclip.models.weak.predictions_file import FileWeak

    rows = [[0.64, 0.11, 0.11, 0.11], [0.11, 0.64, 0.11, 0.11]] * 3
    weak = FileWeak(str(_weak_file(tmp_path, rows)))
    with pytest.warns(UserWarning, match=r"6 of 6 probability rows sum to 0.970..0.970, not 1 \(rounded\?\): renormalised"):
        z = weak.predict_logits(_DS(tmp_path, 6, ["circle", "square", "star", "heart"]))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert p[0, 0] == pytest.approx(0.64 / 0.97, rel=1e-5)  # a 0.64 soft label stays ~0.66, not 0.36


def test_a_negative_value_among_probabilities_is_an_error_not_a_switch_to_logits(tmp_path):
    from w2sclip.models.weak.predictions_file import FileWeak

    rows = [[0.7, 0.1, 0.1, 0.1]] * 5 + [[0.7, 0.2, 0.2, -0.1]]
    weak = FileWeak(str(_weak_file(tmp_path, rows)))
    ds = _DS(tmp_path, 6, ["circle", "square", "star", "heart"])
    with pytest.raises(ValueError, match=r"5 rows hold values in \[0, 1\] like probabilities and 1 do not \(first rows \[5\]\)"):
        weak.predict_logits(ds)
    z = FileWeak(str(_weak_file(tmp_path, rows)), values="logits").predict_logits(ds)
    assert z[5, 3] == pytest.approx(-0.1)  # declared logits are taken as they are
    with pytest.raises(ValueError, match="must be non-negative"):
        FileWeak(str(_weak_file(tmp_path, rows)), values="probs").predict_logits(ds)


def test_logits_and_extra_keys_of_another_split_pass_quietly(tmp_path, recwarn):
    from w2sclip.models.weak.predictions_file import FileWeak

    rows = [[2.0, -1.0, 0.5, 3.0]] * 8  # 8 keys, the split has 6 images
    z = FileWeak(str(_weak_file(tmp_path, rows))).predict_logits(_DS(tmp_path, 6, ["circle", "square", "star", "heart"]))
    assert z.shape == (6, 4) and z[0, 3] == pytest.approx(3.0)
    assert not [w for w in recwarn if "match no image" in str(w.message)]


_ORPHAN_SCRIPT = """
import multiprocessing as mp, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from w2sclip.sweep import die_with_parent

def work(_):
    time.sleep(120)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    futures = [pool.submit(work, i) for i in range(2)]
    time.sleep(8)  # the workers start
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(120)
"""


def test_sweep_workers_die_with_a_sigkilled_parent(tmp_path):
    """``kill -9`` of a sweep used to leave its workers (about 1 GB each) running."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "orphans.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(Path(f"/proc/{p}").exists() for p in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() and
                                         "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2] for p in pids):
        time.sleep(0.2)
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
    assert not alive, f"workers {alive} outlived their killed parent"


def test_set_replaces_a_whole_mapping_and_null_clears_a_key():
    from w2sclip.config import apply_overrides, load_sweep, parse_overrides

    base = load_sweep("builtin").base["weak_options"]
    assert "model_kwargs" in base and base["epochs"] == 20
    assert load_sweep("builtin", ["weak_options={epochs: 3}"]).base["weak_options"] == {"epochs": 3}
    assert load_sweep("builtin", ["weak_options={}"]).base["weak_options"] == {}
    assert "weak_options" not in load_sweep("builtin", ["weak_options=null"]).base  # the field's default, {}
    cleared = load_sweep("builtin", ["weak_options.model_kwargs=null"]).base["weak_options"]
    assert "model_kwargs" not in cleared and cleared["epochs"] == 20  # the preset's own advice works
    merged = load_sweep("builtin", ["weak_options.epochs=5"]).base["weak_options"]
    assert merged["epochs"] == 5 and "model_kwargs" in merged  # a dotted key still updates
    cfg = apply_overrides({}, parse_overrides(["domain=real", "weak_options=null", "root=null"]))
    assert cfg == {"domain": "real"}


def test_data_check_notes_byte_identical_copies_across_train_and_test(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("W2SCLIP_CACHE", str(tmp_path / "cache"))
    for split in ("train", "test"):
        for c, colour in (("a", (200, 30, 30)), ("b", (30, 200, 30))):
            p = tmp_path / "photo" / split / c / "0.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), colour if split == "train" else (9, 9, 9)).save(p)
    shutil.copy(tmp_path / "photo" / "train" / "a" / "0.png", tmp_path / "photo" / "test" / "a" / "copy.png")
    report = check_dataset("folder", tmp_path, images=True)
    assert report.ok  # legal, so a note and not a failure
    notes = [n for n in report.notes if "byte-identical" in n]
    assert len(notes) == 1 and "1 test image(s)" in notes[0] and "copy.png" in notes[0]


def test_data_check_says_how_many_files_it_leaves_out_and_why(tmp_path):
    for c in ("a", "b"):
        _img(tmp_path / c / "0.png")
    for name in ("x.heic", "y.avif", "z.svg", "w.heic"):
        (tmp_path / "a" / name).write_bytes(b"not read")
    os.mkfifo(tmp_path / "b" / "pipe.jpg")
    report = check_dataset("folder", tmp_path, images=False)
    assert report.ok
    assert any("4 image file(s) in formats w2sclip does not read are left out (1 .avif, 2 .heic, 1 .svg)" in n
               for n in report.notes), report.notes
    assert any("1 special file(s)" in n for n in report.notes)


def test_a_fifo_listed_in_a_csv_manifest_is_a_bad_file_not_a_hang(tmp_path):
    from w2sclip.data.images import BadImageError, open_image

    for k in range(2):
        _img(tmp_path / "imgs" / f"{k}.png")
    os.mkfifo(tmp_path / "imgs" / "pipe.png")
    (tmp_path / "data.csv").write_text("path,label\nimgs/0.png,cat\nimgs/1.png,dog\nimgs/pipe.png,dog\n")
    with pytest.raises(BadImageError, match="not a regular file"):
        open_image(tmp_path / "imgs" / "pipe.png")
    report = check_dataset("csv", tmp_path, images=True)  # returns, listing the FIFO as a bad image
    assert any("pipe.png" in p and "not a regular file" in p for p in report.problems), report.problems


def test_rounded_probabilities_over_many_classes_are_still_probabilities(tmp_path):
    """24 classes rounded to two decimals sum to 1.10: still a distribution, not logits."""
    import numpy as np

    from w2sclip.models.weak.predictions_file import FileWeak

    names = [f"c{i}" for i in range(24)]
    q = np.full(24, 0.36 / 23)
    q[0] = 0.64
    path = tmp_path / "w.csv"
    path.write_text("path," + ",".join(names) + "\n" + "".join(
        f"{i}.png," + ",".join(f"{v:.2f}" for v in q) + "\n" for i in range(4)))
    with pytest.warns(UserWarning, match="sum to 1.100..1.100, not 1"):
        z = FileWeak(str(path)).predict_logits(_DS(tmp_path, 4, names))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert p[0, 0] == pytest.approx(0.64 / 1.10, rel=1e-4)
    path.write_text("path," + ",".join(names) + "\n" + "".join(  # independent sigmoids: sums ~ 12
        f"{i}.png," + ",".join("0.5" for _ in names) + "\n" for i in range(4)))
    with pytest.raises(ValueError, match=r"probability rows must sum to 1 \(within 0.17 for rounding over 24 classes\)"):
        FileWeak(str(path)).predict_logits(_DS(tmp_path, 4, names))


def test_zero_sum_rows_and_percentages_are_errors_not_nan_or_logits(tmp_path):
    from w2sclip.models.weak.predictions_file import FileWeak

    ds = _DS(tmp_path, 6, ["circle", "square", "star", "heart"])
    rows = [[0.7, 0.1, 0.1, 0.1]] * 5 + [[0.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match=r"probability rows must sum to 1 .* 1 sum to 0\.\.0 \(first rows \[5\]\)"):
        FileWeak(str(_weak_file(tmp_path, rows))).predict_logits(ds)
    with pytest.raises(ValueError, match="sums to 100: percentages"):
        FileWeak(str(_weak_file(tmp_path, [[40, 35, 20, 5]] * 6))).predict_logits(ds)
    z = FileWeak(str(_weak_file(tmp_path, [[40, 35, 20, 5]] * 6)), values="logits").predict_logits(ds)
    assert z[0, 0] == 40  # declared: taken as they are
