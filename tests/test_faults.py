"""Fault injection at the level a user meets it (a run, a sweep, the CLI): every case ends in a
clear error naming the problem and the fix, or in a correct recovery, and no finished work is
lost. The table of cases and what each produces is docs/faults.md.

One tiny CSV dataset (4 classes x 12 images of 16 px), bring-your-own weak predictions and the
built-in ``full`` CLIP keep each run under a second once the module fixture has warmed up.
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import w2sclip.run as run_mod
from test_extract_procs import encoded_rows_by_pid, finish, release_when_ready
from w2sclip.run import steps
from w2sclip.config import load_sweep, make_run_config
from w2sclip.fileio import DiskFullError
from w2sclip.run import RunFolder, run, run_folder

COLORS = {"red": (230, 40, 40), "green": (40, 230, 40), "blue": (40, 40, 230), "yellow": (230, 230, 40)}
PER, SHARD, BATCH = 12, 16, 8
N = PER * len(COLORS)


def save_image(path: Path, c: int, rng: np.random.Generator) -> None:
    """A noisy 16 px image of colour class ``c``."""
    pixels = np.array(list(COLORS.values())[c]) + rng.normal(0, 30, (16, 16, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def make_data(root: Path, per: int = PER, classes: int = len(COLORS), domain: str = "a") -> Path:
    """A CSV dataset: ``per`` images of each colour class, all in the test split."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["path,label,domain,split"]
    for c in range(classes):
        for k in range(per):
            save_image(root / "img" / f"{domain}_{c}_{k}.png", c, rng)
            rows.append(f"img/{domain}_{c}_{k}.png,{c},{domain},test")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "classnames.txt").write_text("\n".join(list(COLORS)[:classes]) + "\n")
    return root


def write_preds(root: Path, out: Path, n_classes: int = len(COLORS), bad_rows: dict | None = None) -> Path:
    """Weak logits for every manifest row (key = relative path): noisy one-hot of the label."""
    rows = [r.split(",") for r in (root / "manifest.csv").read_text().splitlines()[1:]]
    labels = np.minimum([int(r[1]) for r in rows], n_classes - 1)
    logits = 2 * np.eye(n_classes)[labels] + np.random.default_rng(1).normal(0, 1, (len(rows), n_classes))
    for i, value in (bad_rows or {}).items():
        logits[i, 0] = value
    np.savez(out, paths=np.array([r[0] for r in rows]), logits=logits)
    return out


def fast(root: Path, preds: Path, cache: Path, **kw) -> dict:
    return {"dataset": "csv", "root": str(root), "domain": "a", "strong": "full", "weak": f"file:{preds}",
            "methods": ["zero_shot", "cpl"], "method_params": {"cpl": {"epochs": 30}}, "progress": False,
            "cache_dir": str(cache), "shard_size": SHARD, "batch_size": BATCH, **kw}


def snapshot(paths) -> dict:
    """(inode, size, mtime) of every file under ``paths`` except lock files."""
    out = {}
    for p in paths:
        for f in sorted(Path(p).rglob("*")) if Path(p).is_dir() else [Path(p)]:
            if f.is_file() and f.suffix != ".lock":
                st = f.stat()
                out[str(f)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


@dataclass
class World:
    """A finished run and its cache entries, which no fault may touch."""

    base: Path
    root: Path
    preds: Path
    cache: Path
    runs: Path
    folder: Path = Path()
    before: dict | None = None
    entry: Path = Path()
    """The finished feature-store entry of the run."""
    arrays: Path = Path()
    """The finished weak-logits entry of the run."""
    paths: list = field(default_factory=list)

    def cfg(self, **kw):
        return make_run_config(fast(self.root, self.preds, self.cache, **kw))

    def kept(self) -> None:
        assert snapshot(self.paths) == self.before, "finished work was touched"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    os.environ["W2SCLIP_THREADS"] = "1"  # bit-identical features in this process and its children
    base = tmp_path_factory.mktemp("faults")
    root = make_data(base / "data")
    preds = write_preds(root, base / "weak.npz")
    w = World(base, root, preds, base / "cache", base / "runs")
    w.folder = run(w.cfg(), w.runs)
    w.entry = features_entry(w.cache)
    (w.arrays,) = (w.cache / "arrays").iterdir()
    w.paths = [w.folder, w.entry, w.arrays]
    w.before = snapshot(w.paths)
    yield w
    os.environ.pop("W2SCLIP_THREADS", None)


def features_entry(cache: Path) -> Path:
    (entry,) = (cache / "features").iterdir()
    return entry


def count_encoded(monkeypatch, nan_at: int | None = None) -> dict:
    """Wrap the strong model each run loads: counts encoded rows; row ``nan_at`` comes out inf/NaN."""
    real, seen = steps.load_strong_model, {"rows": 0}

    def load(cfg):
        strong = real(cfg)
        encode = strong.model.encode_image

        def counted(x, *a, **k):
            out = encode(x, *a, **k)
            if nan_at is not None and seen["rows"] <= nan_at < seen["rows"] + len(x):
                out[nan_at - seen["rows"], 0] = float("inf")
            seen["rows"] += len(x)
            return out

        strong.model.encode_image = counted
        return strong

    monkeypatch.setattr(steps, "load_strong_model", load)
    return seen


def cli_run(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``w2sclip ARGS`` through the console entry point, in this process: (exit code, stdout, stderr)."""
    from w2sclip.cli import run as entry

    monkeypatch.setattr(sys, "argv", ["w2sclip", *args])
    with pytest.raises(SystemExit) as e:
        entry()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def set_args(**values) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v)}")]


# ----- data ------------------------------------------------------------------------------------

def test_corrupt_and_truncated_images_are_skipped_and_listed_or_stop_the_run(world, tmp_path):
    root = make_data(tmp_path / "data")
    png = (root / "img" / "a_0_1.png").read_bytes()
    (root / "img" / "a_0_1.png").write_bytes(png[: len(png) // 2])  # truncated
    (root / "img" / "a_1_1.png").write_bytes(png[:60] + bytes(len(png) - 60))  # corrupt data stream
    (root / "img" / "a_2_1.png").write_bytes(b"")  # empty
    preds = write_preds(root, tmp_path / "weak.npz")
    folder = run(make_run_config(fast(root, preds, tmp_path / "cache")), tmp_path / "runs")
    bad = dict(line.split("\t") for line in (folder / "bad_files.txt").read_text().splitlines())
    assert sorted(Path(p).name for p in bad) == ["a_0_1.png", "a_1_1.png", "a_2_1.png"]
    assert "truncated" in bad[str(root / "img" / "a_0_1.png")]
    assert bad[str(root / "img" / "a_2_1.png")] == "empty file (0 bytes)"
    rec = RunFolder(folder).records()[0]
    assert rec["n_fit"] + rec["n_val"] + rec["n_test"] == N - 3
    strict = make_run_config(fast(root, preds, tmp_path / "cache", bad_files="error"))
    with pytest.raises(ValueError, match=r"3 unreadable image\(s\) in csv/a, first .*a_0_1\.png.*"
                                          r"`w2sclip data check`.*bad_files=skip"):
        run(strict, tmp_path / "runs")  # the cached entry remembers the bad files
    with pytest.raises(ValueError, match=r"a_0_1\.png.*truncated.*fix or remove it, or pass bad_files='skip'"):
        run(strict.model_copy(update={"cache_dir": str(tmp_path / "fresh")}), tmp_path / "runs")
    assert not RunFolder(run_folder(strict, tmp_path / "runs")).is_done and RunFolder(folder).is_done
    world.kept()


def test_non_image_files_are_skipped_or_ignored(world, tmp_path):
    from typer.testing import CliRunner

    from w2sclip.cli import app
    from w2sclip.data import get_dataset

    root = make_data(tmp_path / "data")
    (root / "img" / "a_3_0.png").write_text("just text\n")
    folder = run(make_run_config(fast(root, write_preds(root, tmp_path / "w.npz"), tmp_path / "c")), tmp_path / "r")
    assert (folder / "bad_files.txt").read_text() == f"{root}/img/a_3_0.png\tnot an image (unrecognised format)\n"
    res = CliRunner().invoke(app, ["data", "check", "csv", "--root", str(root), "--summary", "--workers", "0"])
    assert res.exit_code == 1 and "a_3_0.png" in res.output and "not an image" in res.output, res.output
    tree = tmp_path / "folder" / "photo"
    for cls in ("cat", "dog"):
        (tree / cls).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (8, 8), (80 * k, 0, 0)).save(tree / cls / f"{k}.png")
    (tree / "cat" / "README.txt").write_text("notes")  # not an image suffix: never a sample
    (tree / "cat" / ".DS_Store").write_bytes(b"\0\1")
    assert len(get_dataset("folder", tmp_path / "folder", "photo")) == 4
    world.kept()


def test_class_list_size_differs_from_the_weak_outputs(world, tmp_path, monkeypatch):
    preds = write_preds(world.root, tmp_path / "five.npz", n_classes=5)
    with pytest.raises(ValueError, match=r"five\.npz: predictions have 5 classes but the dataset has 4 "
                                          r"\(red, green, blue, yellow\)"):
        run(world.cfg(weak=f"file:{preds}"), world.runs)

    class ImageNetHead:  # a weak model that kept its 1000-class head
        needs_training = False

        def identity(self):
            return {"kind": "fake", "classes": 1000}

        def predict_logits(self, dataset):
            return np.zeros((len(dataset), 1000), np.float32)

    monkeypatch.setattr("w2sclip.models.weak.get_weak", lambda spec, **kw: ImageNetHead())
    with pytest.raises(ValueError, match="outputs 1000 classes but the dataset has 4 .*use a weak model "
                                         "trained on this class list or fix the class-names file"):
        run(make_run_config(fast(world.root, preds, tmp_path / "cache")), world.runs)
    assert not list(tmp_path.glob("cache/arrays/*"))  # nothing wrong was cached
    world.kept()


def test_domainnet_label_that_disagrees_with_its_class_folder(world, tmp_path):
    from typer.testing import CliRunner

    from w2sclip.cli import app
    from w2sclip.data.domainnet_classes import DOMAINNET_CLASSES
    from w2sclip.data.miniature import make_miniature

    mini = make_miniature("domainnet", tmp_path / "dn", domains=("clipart",), images_per_class=1)
    split = mini / "splits" / "clipart_test.txt"
    lines = split.read_text().splitlines()
    path, label = lines[5].rsplit(" ", 1)
    folder_name = path.split("/")[1]
    lines[5] = f"{path} {int(label) + 1}"
    split.write_text("\n".join(lines) + "\n")
    cfg = make_run_config({"dataset": "domainnet", "root": str(mini), "domain": "clipart",
                           "methods": ["zero_shot"], "cache_dir": str(world.cache), "progress": False})
    with pytest.raises(ValueError, match=rf"clipart_test\.txt:6: label {int(label) + 1} but the image is in "
                                         rf"folder '{folder_name}', which is label "
                                         rf"{DOMAINNET_CLASSES.index(folder_name)} in the official class "
                                         r"order; fix or re-download the split file"):
        run(cfg, world.runs)
    res = CliRunner().invoke(app, ["data", "check", "domainnet", "--root", str(mini), "--no-images", "--summary"])
    assert res.exit_code == 1 and "clipart_test.txt:6: label" in res.output, res.output
    world.kept()


@pytest.mark.filterwarnings("ignore:weak predictions .* keys match no image")  # the seeded split's train half
def test_empty_domain_is_an_error_and_a_sweep_goes_on(world, tmp_path):
    from w2sclip.config import SweepConfig
    from w2sclip.data.miniature import make_miniature
    from w2sclip.sweep import run_sweep

    with pytest.raises(KeyError, match="unknown domain 'b' for csv; valid: a"):
        run(world.cfg(domain="b"), world.runs)
    mini = make_miniature("domainnet", tmp_path / "dn", domains=("sketch",), images_per_class=1)
    (mini / "splits" / "sketch_train.txt").write_text("")
    dn = {"dataset": "domainnet", "root": str(mini), "domain": "sketch", "methods": ["zero_shot"]}
    with pytest.raises(ValueError, match=r"'sketch' of 'domainnet' has no train images .* cannot be trained; "
                                         r"check the folder with `w2sclip data check domainnet --root"):
        run(make_run_config({**dn, "cache_dir": str(world.cache)}), world.runs)
    (mini / "splits" / "sketch_test.txt").write_text("")
    with pytest.raises(ValueError, match=r"'sketch' of 'domainnet' has no test images .*`w2sclip data check"):
        run(make_run_config({**dn, "cache_dir": str(world.cache)}), world.runs)
    # a sweep over a good and an empty domain (class folders, no images): the good run is kept
    rng, tree, paths, labels = np.random.default_rng(0), tmp_path / "folder", [], []
    for c, name in enumerate(COLORS):
        (tree / "photo" / name).mkdir(parents=True)
        (tree / "sketch" / name).mkdir(parents=True)
        for k in range(PER):
            save_image(tree / "photo" / name / f"{k}.png", c, rng)
            paths, labels = [*paths, f"photo/{name}/{k}.png"], [*labels, c]
    np.savez(tmp_path / "w.npz", paths=np.array(paths), logits=2 * np.eye(len(COLORS))[labels])
    base = fast(tree, tmp_path / "w.npz", world.cache, dataset="folder")
    sweep = SweepConfig(name="e", base={k: v for k, v in base.items() if k != "domain"},
                        grid={"domain": ["photo", "sketch"]})
    res = run_sweep(sweep, world.runs, progress=False)
    assert res["ran"] == 1 and len(res["failed"]) == 1, res
    assert "'sketch' of 'folder' has no test images" in res["failed"][0]["error"]
    done = run_folder(sweep.runs()[0], world.runs) / "done"
    before = done.stat().st_mtime_ns
    res = run_sweep(sweep, world.runs, progress=False)  # rerun: only the failed run is retried
    assert (res["skipped"], res["ran"], len(res["failed"])) == (1, 0, 1) and done.stat().st_mtime_ns == before
    world.kept()


def test_single_class_dataset(world, tmp_path):
    root = make_data(tmp_path / "one", classes=1)
    cfg = make_run_config(fast(root, write_preds(root, tmp_path / "w.npz", n_classes=1), world.cache))
    with pytest.raises(ValueError, match="has a single class in its test split: a classifier cannot be "
                                         "evaluated; use a dataset with >= 2 classes"):
        run(cfg, world.runs)
    world.kept()


# ----- numbers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_infinite_weak_logits(world, tmp_path, monkeypatch, value):
    preds = write_preds(world.root, tmp_path / "nan.npz", bad_rows={3: value})
    with pytest.raises(ValueError, match=r"nan\.npz: 1 rows hold NaN or infinite values"):
        run(world.cfg(weak=f"file:{preds}"), world.runs)

    class Diverged:  # a trained weak model whose training blew up
        needs_training = False

        def identity(self):
            return {"kind": "diverged"}

        def predict_logits(self, dataset):
            return np.full((len(dataset), 4), value, np.float32)

    monkeypatch.setattr("w2sclip.models.weak.get_weak", lambda spec, **kw: Diverged())
    with pytest.raises(ValueError, match=rf"NaN or infinite values in {N} rows; check the weak model "
                                         r"\(learning rate, precision\) or the predictions file"):
        run(make_run_config(fast(world.root, preds, tmp_path / "cache")), world.runs)
    assert not list(tmp_path.glob("cache/arrays/*"))  # never cached
    world.kept()


def test_nan_or_infinite_features_are_never_stored(world, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cfg = make_run_config(fast(world.root, world.preds, cache))
    count_encoded(monkeypatch, nan_at=SHARD + 5)  # one image of shard 1
    with pytest.raises(ValueError, match=r"NaN or infinite features for 1 readable image\(s\) of shard 1 "
                                         r"\(first: .*a_1_9\.png\); the shard was not stored\. Check the "
                                         r"model's precision \(fp32; .*\) and its weights, then rerun"):
        run(cfg, tmp_path / "runs")
    entry = features_entry(cache)
    assert (entry / "shard-00000.json").exists() and not (entry / "shard-00001.json").exists()
    kept = snapshot([entry / "shard-00000.json"])
    seen = count_encoded(monkeypatch)
    folder = run(cfg, tmp_path / "runs")
    assert seen["rows"] == N - SHARD and snapshot(kept) == kept  # shard 0 was kept, not recomputed
    assert [r["accuracy"] for r in RunFolder(folder).records()] == [r["accuracy"] for r in RunFolder(world.folder).records()]
    world.kept()


# ----- caches and processes ----------------------------------------------------------------------

CHILD = r"""
import json, os, sys, time
from pathlib import Path
import w2sclip.run as run_mod
from w2sclip.run import steps
from w2sclip.config import make_run_config
from w2sclip.run import run

cfg, runs_dir, log, sleep = make_run_config(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3], float(sys.argv[4])
real = steps.load_strong_model

def slow(c):
    strong = real(c)
    encode = strong.model.encode_image
    def enc(x, *a, **k):
        time.sleep(sleep)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {len(x)}\n")
        return encode(x, *a, **k)
    strong.model.encode_image = enc
    return strong

steps.load_strong_model = slow
Path(f"{log}.ready{os.getpid()}").touch()
while sys.argv[5:] and not Path(log + ".go").exists():
    time.sleep(0.02)
print("RUN", run(cfg, runs_dir).name, flush=True)
"""


CHILD_START = 300
"""Seconds a child process may take to start (import torch, load the models) on a loaded machine."""


def child(tmp_path, cfg: dict, runs: Path, sleep: float, start_line: bool = False):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [str(script), json.dumps(cfg), str(runs), str(tmp_path / "log"), str(sleep)] + (["go"] if start_line else [])
    return subprocess.Popen([sys.executable, *args], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_run_killed_during_extraction_resumes_without_redoing_finished_shards(world, tmp_path, monkeypatch):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    cfg = fast(world.root, world.preds, cache)
    p = child(tmp_path, cfg, runs, sleep=0.3)
    t0 = time.time()
    while len(list(cache.glob("features/*/shard-*.json"))) < 1:
        assert p.poll() is None and time.time() - t0 < CHILD_START, p.stdout.read() if p.poll() is not None else "slow"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    folder = run_folder(make_run_config(cfg), runs)
    entry = features_entry(cache)
    done = sorted(entry.glob("shard-*.json"))
    assert 1 <= len(done) < N // SHARD + 1 and not (entry / "complete").exists() and not RunFolder(folder).is_done
    kept = snapshot(done)
    seen = count_encoded(monkeypatch)
    assert run(make_run_config(cfg), runs) == folder and RunFolder(folder).is_done
    assert seen["rows"] == N - len(done) * SHARD and snapshot(kept) == kept
    assert np.allclose(np.load(entry / "features.npy"), np.load(world.entry / "features.npy"), atol=1e-6)
    world.kept()


def test_two_processes_write_one_cache(world, tmp_path):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    procs = [child(tmp_path, fast(world.root, world.preds, cache, seed=s), runs, sleep=0.1, start_line=True)
             for s in (0, 1)]
    release_when_ready(tmp_path, procs, timeout=CHILD_START)
    names = [finish(p, timeout=CHILD_START + 180).split("RUN ")[1].split()[0] for p in procs]
    rows = encoded_rows_by_pid(tmp_path / "log")
    assert sum(rows.values()) == N  # every shard encoded once, by one of the two
    assert all(RunFolder(runs / name).is_done for name in names) and names[0] != names[1]
    entry = features_entry(cache)
    assert (entry / "complete").exists() and not list(cache.rglob("*.tmp")) and not list(cache.rglob(".tmp-*"))
    assert all({f.name for f in a.iterdir()} == {"meta.json", "data.npy"} for a in (cache / "arrays").iterdir())
    assert np.allclose(np.load(entry / "features.npy"), np.load(world.entry / "features.npy"), atol=1e-6)
    world.kept()


def test_second_process_on_one_run_waits_then_skips_it(world, tmp_path, monkeypatch, caplog):
    import logging
    import threading

    from w2sclip.fileio import FileLock

    runs, cfg, result = tmp_path / "runs", world.cfg(), {}
    folder = run_folder(cfg, runs)
    folder.path.mkdir(parents=True)
    other = FileLock(folder / "run.lock")  # another process is computing this run
    assert other.try_acquire()
    seen = count_encoded(monkeypatch)
    thread = threading.Thread(target=lambda: result.update(folder=run(cfg, runs)))
    with caplog.at_level(logging.WARNING, logger="w2sclip.run"):
        thread.start()
        t0 = time.time()
        while "another process is computing this run; waiting for it" not in caplog.text:
            assert thread.is_alive() and time.time() - t0 < 60
            time.sleep(0.02)
        assert not (folder / "log.jsonl").exists()  # waiting, not computing
        shutil.copytree(world.folder, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock"))
        other.release()  # the other process finished
        thread.join(60)
    assert result["folder"] == folder and seen["rows"] == 0
    assert (folder / "log.jsonl").read_text() == (world.folder / "log.jsonl").read_text()  # not rerun
    world.kept()


def _corrupt(cache: Path, entry: Path, how: str) -> None:
    if how == "flipped":
        with open(entry / "features.npy", "r+b") as f:
            f.seek(2000)
            f.write(b"\x01\x02\x03")
    elif how == "truncated":
        os.truncate(entry / "features.npy", 5000)
    elif how == "garbled-meta":
        (entry / "meta.json").write_text("{not json")
    elif how == "deleted-valid":
        (entry / "valid.npy").unlink()
    elif how == "weak-logits":
        (arrays,) = (cache / "arrays").iterdir()
        with open(arrays / "data.npy", "r+b") as f:
            f.seek(200)
            f.write(b"\x01\x02\x03")


@pytest.mark.parametrize("how, problem", [("flipped", r"spot checksum differs"), ("truncated", r"size differs"),
                                          ("garbled-meta", r"meta\.json is unreadable"),
                                          ("deleted-valid", r"valid\.npy / bad_files\.json unreadable"),
                                          ("weak-logits", r"checksum mismatch")])
def test_cache_file_altered_on_disk(world, tmp_path, how, problem):
    cache = tmp_path / "cache"
    shutil.copytree(world.entry, cache / "features" / world.entry.name)
    shutil.copytree(world.arrays, cache / "arrays" / world.arrays.name)
    _corrupt(cache, cache / "features" / world.entry.name, how)
    cfg = make_run_config(fast(world.root, world.preds, cache))
    with pytest.raises(ValueError, match=rf"{problem}.*; delete the folder to recompute it") as e:
        run(cfg, tmp_path / "runs")
    named = Path(str(e.value).split("cache entry " if how == "weak-logits" else "feature cache ")[1].split()[0]
                 .rstrip(":"))
    assert named.parent.parent == cache and not RunFolder(run_folder(cfg, tmp_path / "runs")).is_done
    shutil.rmtree(named)  # the fix the message names
    folder = run(cfg, tmp_path / "runs")
    assert [r["accuracy"] for r in RunFolder(folder).records()] == [r["accuracy"] for r in RunFolder(world.folder).records()]
    world.kept()


@pytest.mark.parametrize("spec, missing", [("ViT-B-32:openai", "weights file ViT-B-32/openai"),
                                           ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_config.json")])
def test_missing_weights_while_offline(world, tmp_path, monkeypatch, capsys, spec, missing):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    fix = r"not in the local cache .* and offline mode is on; download it on a machine with network .* or pass a local"
    with pytest.raises(FileNotFoundError, match=rf"strong model '{spec}': {missing}.*{fix}"):
        run(world.cfg(strong=spec), world.runs)
    code, _, err = cli_run(monkeypatch, capsys, "run", "-", "--quiet", "--runs-dir", str(world.runs),
                             *set_args(**fast(world.root, world.preds, world.cache, strong=spec)))
    assert code == 2 and err.startswith(f"error: strong model '{spec}'") and err.count("\n") == 1, err
    assert "Traceback" not in err and not run_folder(world.cfg(strong=spec), world.runs).is_done
    world.kept()


# ----- configs -----------------------------------------------------------------------------------

def test_unknown_config_key(world, tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'domian' \(did you mean 'domain'\?\); valid keys: "
                                         r"dataset, root"):
        make_run_config({"domian": "a"})
    with pytest.raises(ValueError, match=r"unknown method \['cpll'\] \(did you mean 'cpl'\?\); valid: zero_shot"):
        world.cfg(method_params={"cpll": {"epochs": 3}})
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) of 'cpl' \['epochz'\] \(did you mean "
                                         r"'epochs'\?\); valid: .*epochs"):
        world.cfg(method_params={"cpl": {"epochz": 3}})
    preset = tmp_path / "p.yaml"
    preset.write_text("name: p\nbase: {domain: a, sed: 1}\ngrid: {seed: [0, 1]}\n")
    with pytest.raises(ValueError, match=r"p\.yaml: unknown config key\(s\) 'sed' \(did you mean 'seed'\?\)"):
        load_sweep(preset)
    preset.write_text("name: p\nbase: {domain: a}\ngrid: {seeds: [0, 1]}\n")
    with pytest.raises(ValueError, match=r"unknown grid key\(s\) \['seeds'\]; valid: dataset"):
        load_sweep(preset)
    runs = tmp_path / "runs"
    res = subprocess.run([sys.executable, "-m", "w2sclip.cli", "run", "-", "--set", "domian=a", "--runs-dir",
                          str(runs)], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: unknown config key 'domian' (did you mean "
                                                         "'domain'?)"), res.stderr
    assert res.stderr.count("\n") == 1 and not runs.exists()
    world.kept()


# ----- disk full ---------------------------------------------------------------------------------

def full_disk_on(monkeypatch, modules, name: str) -> None:
    """``atomic_write`` of ``modules`` fails with ENOSPC for file ``name``, after writing part of it."""
    from w2sclip import fileio

    real = fileio.atomic_write

    def write(path, fn, *a, **kw):
        if Path(path).name == name:
            def partial(f):
                f.write(b"\x93NUMPY partial")
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, partial, *a, **kw)
        return real(path, fn, *a, **kw)

    for module in modules:
        monkeypatch.setattr(module, "atomic_write", write)


@pytest.mark.parametrize("name", ["shard-00001.npy", "shard-00001.json"])
def test_disk_full_during_extraction(world, tmp_path, monkeypatch, name):
    from w2sclip import fileio
    from w2sclip.features import store

    cache = tmp_path / "cache"
    cfg = make_run_config(fast(world.root, world.preds, cache))
    full_disk_on(monkeypatch, [store, fileio], name)
    with pytest.raises(DiskFullError, match=rf"disk full: no space left on the device holding {cache}/features/"
                                            rf".* \(\d+ MiB free\) while writing {name}; free some space there or "
                                            r"point --cache-dir or W2SCLIP_CACHE to a disk with room, then rerun"):
        run(cfg, tmp_path / "runs")
    monkeypatch.undo()
    entry = features_entry(cache)
    assert (entry / "shard-00000.json").exists() and not (entry / "shard-00001.json").exists()
    assert not list(entry.glob(".*tmp")) and not (entry / "complete").exists()
    kept = snapshot([entry / "shard-00000.json"])
    seen = count_encoded(monkeypatch)
    folder = run(cfg, tmp_path / "runs")
    assert seen["rows"] == N - SHARD and snapshot(kept) == kept
    assert np.array_equal(np.load(entry / "features.npy"), np.load(world.entry / "features.npy"))
    assert RunFolder(folder).is_done
    world.kept()


def test_disk_full_writing_the_run_folder_leaves_no_done_marker(world, tmp_path, monkeypatch, capsys):
    import w2sclip.run.folder

    full_disk_on(monkeypatch, [w2sclip.run.folder], "records.jsonl")
    cfg = fast(world.root, world.preds, world.cache, seed=3)
    code, _, err = cli_run(monkeypatch, capsys, "run", "-", "--quiet", "--runs-dir", str(tmp_path / "runs"),
                           *set_args(**cfg))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: disk full: no space left on the device holding {tmp_path / 'runs'}/")
    assert "while writing records.jsonl; free some space there or point --runs-dir to a disk with room" in err
    folder = run_folder(make_run_config(cfg), tmp_path / "runs")
    assert not RunFolder(folder).is_done and not (folder / "records.jsonl").exists() and not list(folder.path.glob(".*tmp"))
    assert '"run_failed"' in (folder / "log.jsonl").read_text()
    monkeypatch.undo()
    seen = count_encoded(monkeypatch)
    assert run(make_run_config(cfg), tmp_path / "runs") == folder and RunFolder(folder).is_done
    assert seen["rows"] == 0 and len(RunFolder(folder).records()) == len(RunFolder(world.folder).records())
    world.kept()


# ----- cache identity: entries follow what the data is, not where it sits --------------------------

def cache_entries(cache: Path) -> set[str]:
    """Names of the finished feature and weak-logits entries of a cache."""
    feats = {f"features/{p.name}" for p in (cache / "features").glob("*") if (p / "complete").exists()}
    return feats | {f"arrays/{p.name}" for p in (cache / "arrays").glob("*") if (p / "data.npy").exists()}


def recolour(root: Path) -> Path:
    """Every image of class c redrawn in the colour of class c + 1 (same names, other content)."""
    rng = np.random.default_rng(7)
    for path in sorted((root / "img").glob("*.png")):
        c = int(path.stem.split("_")[1])
        save_image(path, (c + 1) % len(COLORS), rng)
    return root


def test_cache_entries_follow_the_content_of_the_data_not_its_path(world, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(world.entry, cache / "features" / world.entry.name)
    shutil.copytree(world.arrays, cache / "arrays" / world.arrays.name)
    before = cache_entries(cache)
    ref = {r["method"]: r["accuracy"] for r in RunFolder(world.folder).records()}
    # an unchanged copy at another root reuses the entries (and gives the same numbers)
    copy = shutil.copytree(world.root, tmp_path / "copy")
    folder = run(make_run_config(fast(copy, world.preds, cache)), tmp_path / "runs")
    assert cache_entries(cache) == before
    assert {r["method"]: r["accuracy"] for r in RunFolder(folder).records()} == ref
    # the same file names with other pixels: new entries, other numbers
    altered = recolour(shutil.copytree(world.root, tmp_path / "altered"))
    folder = run(make_run_config(fast(altered, world.preds, cache)), tmp_path / "runs")
    new = cache_entries(cache) - before
    assert sorted(n.split("/")[0] for n in new) == ["arrays", "features"], new
    got = {r["method"]: r["accuracy"] for r in RunFolder(folder).records()}
    assert got["zero_shot"] < ref["zero_shot"] - 0.5, (got, ref)
    world.kept()


def test_another_dataset_with_the_same_file_names_never_reuses_the_cache(tmp_path):
    """make_builtin(B1, seed=1) has the seed-0 benchmark's relative paths and other images."""
    from w2sclip.data.builtin import DOMAINS, make_builtin

    cache, runs, domain = tmp_path / "cache", tmp_path / "runs", DOMAINS[0]

    def cfg(root: Path):
        return make_run_config({"dataset": "builtin", "root": str(root), "domain": domain, "strong": "full",
                                "methods": ["zero_shot"], "weak_options": {"epochs": 2, "labels_per_class": 2},
                                "cache_dir": str(cache), "progress": False, "shard_size": 64, "batch_size": 32})

    small = {"size": "quick", "domains": (domain,), "workers": 1, "image_size": 32}  # 32 px: half the rendering
    b0 = make_builtin(tmp_path / "b0", seed=0, **small)
    b1 = make_builtin(tmp_path / "b1", seed=1, **small)
    assert (b0 / "manifest.csv").read_text() == (b1 / "manifest.csv").read_text()  # same paths and labels
    run(cfg(b0), runs)
    first = cache_entries(cache)
    run(cfg(b1), runs)
    second = cache_entries(cache)
    new = second - first
    assert sorted(n.split("/")[0] for n in new) == ["arrays", "features"], new
    (f0,), (f1,) = ([cache / n for n in s if n.startswith("features/")] for s in (first, new))
    (a0,), (a1,) = ([cache / n for n in s if n.startswith("arrays/")] for s in (first, new))
    assert not np.array_equal(np.load(f0 / "features.npy"), np.load(f1 / "features.npy"))
    assert not np.array_equal(np.load(a0 / "data.npy"), np.load(a1 / "data.npy"))
    # an unchanged copy of B0 at another root reuses B0's entries
    run(cfg(shutil.copytree(b0, tmp_path / "b0-copy")), runs)
    assert cache_entries(cache) == second


# ----- configs: every value checked when the config loads --------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("seed=-5", r"config key 'seed': Input should be greater than or equal to 0, got -5; a seed is an integer "
                r"with 0 <= seed < 2\*\*32"),
    ("seed=147573952589676412928", r"config key 'seed': Input should be less than 4294967296, got "
                                   r"147573952589676412928"),
    ("method_params={cpl: {epochs: ten}}", r"method_params\.cpl\.epochs: must be None or an int in \[0, inf\), "
                                           r"got 'ten' \(str\)"),
    ("method_params={cpl: {lr: -1}}", r"method_params\.cpl\.lr: must be a float in \(0, inf\), got -1"),
    ("domain=[real", r"--set 'domain=\[real': the value is not valid YAML \(.*\); close brackets and quotes"),
])
@pytest.mark.parametrize("command", ["sweep", "run"])
def test_bad_values_fail_in_a_dry_run_naming_the_key(world, tmp_path, monkeypatch, capsys, override, message,
                                                     command):
    runs = tmp_path / "runs"
    code, _, err = cli_run(monkeypatch, capsys, command, "builtin", "--dry-run", "--set", override,
                           "--runs-dir", str(runs))
    one_error(code, err, message)
    assert not runs.exists()
    world.kept()


def test_hyper_parameters_are_checked_before_any_data_is_loaded(world, tmp_path, monkeypatch, capsys):
    def no_work(*a, **k):
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr(run_mod, "load_task", no_work)
    for params, message in [({"epochs": "ten"}, r"method_params\.cpl\.epochs: must be None or an int"),
                            ({"lr": -1}, r"method_params\.cpl\.lr: must be a float in \(0, inf\)")]:
        with pytest.raises(ValueError, match=message):
            world.cfg(method_params={"cpl": params})
        code, _, err = cli_run(monkeypatch, capsys, "run", "-", "--quiet", "--runs-dir", str(tmp_path / "runs"),
                               *set_args(**fast(world.root, world.preds, world.cache, method_params={"cpl": params})))
        one_error(code, err, message)
    world.kept()


@pytest.mark.parametrize("params", [{"epochs": 0}, {"max_steps": 0}, {"lr": -1}, {"lr": "1e-3"}, {"epochs": 3.5},
                                    {"hard_labels": "yes"}, {"epochs": 3, "lr": 0.01}])
def test_the_config_accepts_exactly_what_the_method_accepts(params):
    """``RunConfig`` defers to ``w2sclip.methods.check_params`` (the methods' own constraints)."""
    from w2sclip.methods import check_params

    try:
        check_params("cpl", params)
        valid = True
    except ValueError:
        valid = False
    if valid:
        assert make_run_config({"domain": "a", "method_params": {"cpl": params}}).method_params == {"cpl": params}
    else:
        with pytest.raises(ValueError, match=r"method_params\.cpl\."):
            make_run_config({"domain": "a", "method_params": {"cpl": params}})


# ----- the CLI rule: one `error:` line naming the file or key and the fix, status 2 ------------------

def one_error(code, err: str, pattern: str) -> None:
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    assert re.search(pattern, err), err


@contextmanager
def read_only(path: Path):
    """``path`` read-only for this process: without write permission for a normal user; root
    ignores permissions, so a read-only bind mount then (skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        dirs = [path, *(p for p in path.rglob("*") if p.is_dir())]
        modes = {d: d.stat().st_mode for d in dirs}
        for d in dirs:
            d.chmod(modes[d] & ~0o222)
        try:
            yield path
        finally:
            for d in reversed(dirs):
                d.chmod(modes[d])
        return
    mount = shutil.which("mount")
    if mount is None or subprocess.run([mount, "--bind", str(path), str(path)], capture_output=True).returncode:
        pytest.skip("running as root without permission to mount: cannot make a folder read-only")
    try:
        if subprocess.run([mount, "-o", "remount,ro,bind", str(path)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only")
        yield path
    finally:  # lazily: memory maps of the cache's arrays may still be open
        subprocess.run(["umount", "-l", str(path)], check=True)


def copy_run(world, tmp_path: Path) -> Path:
    """A copy of the world's finished run folder in a runs folder of its own."""
    runs = tmp_path / "runs-copy"
    shutil.copytree(world.folder, runs / world.folder.name, ignore=shutil.ignore_patterns("*.lock"))
    return runs / world.folder.name


def exported(world, tmp_path: Path) -> Path:
    from w2sclip.export import export_classifier

    return export_classifier(world.folder, tmp_path / "export", "cpl")


def _case(world, tmp_path, monkeypatch, name):
    """(command line, pattern of the error line) of one user mistake."""
    run_args = ["run", "-", "--quiet", "--runs-dir", str(tmp_path / "runs")]
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    if name == "cache_dir is a file":
        return ([*run_args, *set_args(**fast(world.root, world.preds, a_file))],
                r"cache_dir .*a-file cannot be used: .*a-file is a file, not a folder; point cache_dir")
    if name == "runs dir is a file":
        return (["run", "-", "--runs-dir", str(a_file), *set_args(**fast(world.root, world.preds, world.cache))],
                r"--runs-dir .*a-file cannot be written: .*a-file is a file, not a folder; pass another --runs-dir")
    if name == "preset is a folder":
        return ["sweep", str(tmp_path), "--dry-run"], r"config '.*' is a folder, not a YAML file; pass a preset file"
    if name == "preset not UTF-8":
        (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
        return (["sweep", str(tmp_path / "latin1.yaml"), "--dry-run"],
                r"latin1\.yaml: not UTF-8 text \(invalid continuation byte at byte 9\); save the preset as UTF-8")
    if name == "records accuracy is text":
        folder = copy_run(world, tmp_path)
        recs = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
        recs[1]["accuracy"] = "high"
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return (["report", str(folder.parent), "--out", str(tmp_path / "report")],
                r"records\.jsonl, record 2 \(method '.*'\): accuracy is 'high', expected a number in \[0, 1\]; .*"
                r"fix the value, or delete the run folder's 'done' file and rerun it")
    if name == "config.json is null":
        folder = copy_run(world, tmp_path)
        (folder / "config.json").write_text("null")
        return (["report", str(folder.parent), "--out", str(tmp_path / "report")],
                r"config\.json: expected a JSON object .*, got null; rerun this run \(delete its 'done' file\)")
    if name in ("labels.npz corrupt", "predictions.npz truncated"):
        folder = copy_run(world, tmp_path)
        f = folder / name.split()[0]
        f.write_bytes(b"garbage" * 50 if "corrupt" in name else f.read_bytes()[:300])
        why = r"not an \.npz archive" if "corrupt" in name else r"BadZipFile: File is not a zip file"
        return (["report", str(folder.parent), "--out", str(tmp_path / "report")],
                rf"{re.escape(str(f))} is corrupt \({why}\); rerun this run \(delete its 'done' file\) to rewrite it")
    if name == "hf dataset without the datasets package":
        monkeypatch.setitem(sys.modules, "datasets", None)
        return ([*run_args, *set_args(**{**fast(world.root, world.preds, world.cache), "dataset": "hf:org/name",
                                         "root": None})],
                r"dataset=hf:<source> needs the `datasets` library: pip install 'w2sclip\[hf\]' \(or pip install datasets\)")
    if name in ("empty weak .npz", "empty weak .pt"):
        empty = tmp_path / f"empty{name[-4:]}"
        empty.write_bytes(b"")
        return ([*run_args, *set_args(**fast(world.root, empty, world.cache))],
                rf"weak predictions file {re.escape(str(empty))} is empty \(0 bytes\); write the predictions again")
    if name in ("empty cached data.npy", "empty cached valid.npy"):
        cache = tmp_path / "cache"
        shutil.copytree(world.entry, cache / "features" / world.entry.name)
        shutil.copytree(world.arrays, cache / "arrays" / world.arrays.name)
        if "data.npy" in name:
            (cache / "arrays" / world.arrays.name / "data.npy").write_bytes(b"")
            pattern = r"cache entry .*arrays/.* is corrupt \(data\.npy unreadable: EOFError: empty file \(0 bytes\)\)"
        else:
            (cache / "features" / world.entry.name / "valid.npy").write_bytes(b"")
            pattern = r"feature cache .*features/.* is corrupt \(.*valid\.npy EOFError: empty file \(0 bytes\)\)"
        return [*run_args, *set_args(**fast(world.root, world.preds, cache))], pattern + "; delete the folder to recompute it"
    if name == "predict --out into a missing folder":
        from w2sclip.export import TextFreeClassifier

        monkeypatch.setattr(TextFreeClassifier, "load", lambda *a, **k: pytest.fail("loaded before checking --out"))
        return (["predict", str(tmp_path), str(world.root / "img"), "--out", str(tmp_path / "nope" / "p.csv")],
                r"--out .*nope/p\.csv: the folder .*nope does not exist; create it first \(mkdir -p .*nope\)")
    raise KeyError(name)


CLI_CASES = ["cache_dir is a file", "runs dir is a file", "preset is a folder", "preset not UTF-8",
             "records accuracy is text", "config.json is null", "labels.npz corrupt", "predictions.npz truncated",
             "hf dataset without the datasets package", "empty weak .npz", "empty weak .pt",
             "empty cached data.npy", "empty cached valid.npy", "predict --out into a missing folder"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_a_user_mistake_is_one_error_line(world, tmp_path, monkeypatch, capsys, name):
    args, pattern = _case(world, tmp_path, monkeypatch, name)
    code, _, err = cli_run(monkeypatch, capsys, *args)
    one_error(code, err, pattern)
    world.kept()


def test_debug_shows_the_traceback(world, tmp_path, monkeypatch, capsys):
    from w2sclip.cli import run as entry

    for argv, env in ((["--debug"], None), ([], "1")):
        if env:
            monkeypatch.setenv("W2SCLIP_DEBUG", env)
        monkeypatch.setattr(sys, "argv", ["w2sclip", *argv, "sweep", "builtin", "--dry-run", "--set", "seed=-5"])
        with pytest.raises(ValueError, match=r"config key 'seed'"):
            entry()
    capsys.readouterr()
    world.kept()


def test_a_read_only_cache_is_read_when_complete_and_a_clear_error_when_not(world, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    # no lock file either, and no finished runs: the run below must fit from the read-only entries
    shutil.copytree(world.cache, cache, ignore=shutil.ignore_patterns("*.lock", "runs"))
    args = ["run", "-", "--quiet", "--runs-dir", str(tmp_path / "runs")]
    with read_only(cache):
        seen = count_encoded(monkeypatch)
        code, _, err = cli_run(monkeypatch, capsys, *args, *set_args(**fast(world.root, world.preds, cache)))
        assert code == 0 and seen["rows"] == 0, err
        folder = run_folder(make_run_config(fast(world.root, world.preds, cache)), tmp_path / "runs")
        assert [r["accuracy"] for r in folder.records()] == [r["accuracy"] for r in RunFolder(world.folder).records()]
        read_only_fs = r"\(.*(is on a read-only file system|no permission to write in .*)\); a read-only cache serves " \
                       r"only the entries it holds: point --cache-dir, W2SCLIP_CACHE or cache_dir= to a writable folder"
        code, _, err = cli_run(monkeypatch, capsys, *args,
                               *set_args(**fast(world.root, world.preds, cache, feature_dtype="float16")))
        one_error(code, err, r"feature cache entry .*features/.*float16.* is missing or unfinished and the cache "
                             r"cannot be written " + read_only_fs)
        other = write_preds(world.root, tmp_path / "other.npz", bad_rows={0: 5.0})
        code, _, err = cli_run(monkeypatch, capsys, *args, *set_args(**fast(world.root, other, cache)))
        one_error(code, err, r"cache entry .*arrays/.* is missing or unfinished and the cache cannot be written "
                             + read_only_fs)
    world.kept()


def test_read_only_output_folders_fail_before_any_work(world, tmp_path, monkeypatch, capsys):
    import w2sclip.demo
    import w2sclip.export
    import w2sclip.report
    import w2sclip.sweep

    def no_work(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    for module, name in [(run_mod, "run"), (w2sclip.sweep, "run_sweep"), (w2sclip.report, "build_report"),
                         (w2sclip.export, "export_classifier"), (w2sclip.demo, "run_demo")]:
        monkeypatch.setattr(module, name, no_work)
    monkeypatch.setattr(w2sclip.export.TextFreeClassifier, "load", no_work)
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = set_args(**fast(world.root, world.preds, world.cache))
    with read_only(ro):
        for args, flag in [(["run", "-", "--runs-dir", str(ro / "runs"), *cfg], "--runs-dir"),
                           (["sweep", "builtin", "--runs-dir", str(ro / "runs")], "--runs-dir"),
                           (["report", str(world.runs), "--out", str(ro / "report")], "--out"),
                           (["export", str(world.folder), "--out", str(ro / "export")], "--out"),
                           (["predict", str(tmp_path), str(world.root / "img"), "--out", str(ro / "p.csv")], "--out"),
                           (["demo", "--out", str(ro / "demo")], "--out")]:
            code, _, err = cli_run(monkeypatch, capsys, *args)
            one_error(code, err, rf"{flag} {re.escape(str(ro))}.* cannot be written: .*(is on a read-only file "
                                 rf"system|no permission to write in .*); make it writable or pass another {flag}")
    world.kept()


# ----- the exported classifier is checked when it loads ------------------------------------------------

def _alter_export(folder: Path, how: str) -> None:
    from safetensors.numpy import load_file, save_file

    st = folder / "classifier.safetensors"
    t = load_file(str(st))
    if how == "truncated":
        st.write_bytes(st.read_bytes()[:100])
    elif how == "garbled json":
        (folder / "classifier.json").write_text("{garbled")
    elif how == "json not UTF-8":
        (folder / "classifier.json").write_bytes(b"\xff\xfe{}")
    elif how == "no strong_identity":
        meta = json.loads((folder / "classifier.json").read_text())
        (folder / "classifier.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "strong_identity"}))
    elif how == "one class name too many":
        meta = json.loads((folder / "classifier.json").read_text())
        (folder / "classifier.json").write_text(json.dumps({**meta, "classnames": [*meta["classnames"], "x"]}))
    else:
        changed = {"NaN weight": {"weight": np.full_like(t["weight"], np.nan)},
                   "empty scale": {"scale": np.zeros(0, np.float32)},
                   "negative scale": {"scale": np.array([-1.0], np.float32)},
                   "bias shape": {"bias": np.zeros(len(t["bias"]) + 3, np.float32)},
                   "D differs from the model": {"weight": np.ascontiguousarray(t["weight"][:, :5])},
                   "no bias": {}}[how]
        save_file({k: v for k, v in {**t, **changed}.items() if not (how == "no bias" and k == "bias")}, str(st))


@pytest.mark.parametrize("how, problem", [
    ("NaN weight", r"classifier\.safetensors: weight holds NaN or infinite values"),
    ("empty scale", r"classifier\.safetensors: scale has shape \(0,\), expected \(1,\)"),
    ("negative scale", r"classifier\.safetensors: scale is -1, expected a positive number"),
    ("bias shape", r"classifier\.safetensors: bias has shape \(7,\), expected \(4,\)"),
    ("no bias", r"classifier\.safetensors: missing tensor\(s\) \['bias'\]"),
    ("one class name too many", r"classifier\.safetensors: weight has shape \(4, \d+\), expected \(5, D\) for the "
                                r"5 class names of classifier\.json"),
    ("D differs from the model", r"classifier\.safetensors: weight has D = 5 but the strong model 'full' embeds "
                                 r"images in \d+ dimensions"),
    ("truncated", r"classifier\.safetensors: not a readable safetensors file \(.*\), truncated or corrupt"),
    ("garbled json", r"classifier\.json: not valid JSON \(JSONDecodeError: .*\)"),
    ("json not UTF-8", r"classifier\.json: not valid JSON \(UnicodeDecodeError: .*\)"),
    ("no strong_identity", r"classifier\.json has no strong_identity, so the weights it was trained on cannot be "
                           r"checked against 'full'"),
])
def test_exported_classifier_is_checked_when_it_loads(world, tmp_path, monkeypatch, capsys, how, problem):
    from w2sclip.export import TextFreeClassifier

    folder = exported(world, tmp_path)
    _alter_export(folder, how)
    fix = r"; re-export it with `w2sclip export RUN_FOLDER --method METHOD --out DIR`"
    with pytest.raises(ValueError, match=problem + r".*" + fix):
        TextFreeClassifier.load(folder)
    code, out, err = cli_run(monkeypatch, capsys, "predict", str(folder), str(world.root / "img" / "a_0_0.png"))
    one_error(code, err, problem)
    assert out == ""
    world.kept()


# ----- data check ---------------------------------------------------------------------------------------

def test_data_check_of_a_tree_without_images_fails(tmp_path):
    from typer.testing import CliRunner

    from w2sclip.cli import app

    (tmp_path / "photo" / "cat").mkdir(parents=True)
    (tmp_path / "photo" / "cat" / "notes.txt").write_text("no image here")
    res = CliRunner().invoke(app, ["data", "check", "folder", "--root", str(tmp_path), "--workers", "0"])
    assert res.exit_code == 1, res.output
    assert f"no images found under {tmp_path} (domains photo)" in res.output and "OK" not in res.output, res.output
