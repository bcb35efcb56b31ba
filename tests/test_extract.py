"""``extract``: the sharded feature store driven by the built-in tiny CLIP, in one process."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from w2sclip.data.manifest import load_manifest
from w2sclip.features.extract import extract, open_features
from w2sclip.fileio import FileLock

N, SHARD, BATCH = 40, 8, 4


def make_toy(root, n: int = N, bad: tuple[int, ...] = ()) -> str:
    """``n`` random images of varied sizes as a manifest dataset; indices in ``bad`` are garbage."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["path,label,domain,split"]
    for i in range(n):
        path = root / "img" / f"{i:03d}.png"
        pixels = rng.integers(0, 255, (32 + 8 * (i % 3), 40, 3), dtype=np.uint8)
        if i in bad:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(pixels).save(path)
        rows.append(f"img/{path.name},{i % 3},d,test")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "classnames.txt").write_text("a\nb\nc\n")
    return str(root)


def toy_dataset(root):
    return load_manifest(root, "d", "test", "toy")


@pytest.fixture(scope="module")
def strong():
    from w2sclip.models.strong.openclip import load_strong

    return load_strong("full", device="cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as in the subprocess tests, so results are bit-identical."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Counter:
    """Wraps ``model.encode_image``: counts encoded rows, optionally fails after some batches."""

    def __init__(self, model, fail_after: int | None = None) -> None:
        self.model, self.orig, self.rows, self.batches, self.fail_after = model, model.encode_image, 0, 0, fail_after

    def __call__(self, x, *a, **k):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.batches += 1
        self.rows += len(x)
        return self.orig(x, *a, **k)

    def __enter__(self):
        self.model.encode_image = self
        return self

    def __exit__(self, *exc):
        self.model.encode_image = self.orig


@torch.no_grad()
def extract_features(strong, dataset, batch_size: int) -> np.ndarray:
    """The reference: a plain DataLoader over the model's own preprocess, no cache, no shards."""
    loader = torch.utils.data.DataLoader(dataset.with_transform(strong.preprocess), batch_size=batch_size)
    return torch.cat([strong.encode_images(x) for x, _ in loader]).numpy()


def run(strong, root, cache, **kw):
    kw = {"batch_size": BATCH, "shard_size": SHARD, "progress": False, "device": "cpu", **kw}
    return extract(strong, toy_dataset(root), cache, **kw)


def test_extract_layout_equals_plain_loop_and_is_cached(tmp_path, strong):
    root = make_toy(tmp_path / "data")
    fs = run(strong, root, tmp_path / "cache")
    ref = extract_features(strong, toy_dataset(root), batch_size=BATCH)
    assert isinstance(fs.features, np.memmap) and fs.features.shape == (N, 128)
    assert np.array_equal(np.asarray(fs.features), ref)
    assert np.allclose(np.linalg.norm(fs.features, axis=1), 1, atol=1e-5)
    assert fs.valid.all() and fs.bad_files == []
    meta = json.loads((fs.path / "meta.json").read_text())
    assert (meta["n"], meta["dim"], meta["shard_size"], meta["n_shards"], meta["dtype"]) == (N, 128, 8, 5, "float32")
    assert meta["key"]["model"]["weights_sha256"] and meta["key"]["layer"] == "image_embedding"
    assert {"torch", "open_clip_torch", "w2sclip"} <= set(meta["key"]["versions"])
    assert (fs.path / "complete").exists() and not list(fs.path.glob("shard-*.npy"))
    assert len(list(fs.path.glob("shard-*.json"))) == 5 and not list(fs.path.glob(".*tmp"))
    with Counter(strong.model) as c:
        again = run(strong, root, tmp_path / "cache")
    assert c.rows == 0 and np.array_equal(again.features, fs.features)
    assert np.array_equal(open_features(strong, toy_dataset(root), tmp_path / "cache", verify=True).features, ref)


def test_fp16_storage_and_bf16_compute_are_separate_entries(tmp_path, strong):
    root = make_toy(tmp_path / "data")
    f32 = run(strong, root, tmp_path / "cache")
    f16 = run(strong, root, tmp_path / "cache", dtype="float16")
    from w2sclip.models.strong.openclip import load_strong

    bf16 = run(load_strong("full", device="cpu", precision="bf16"), root, tmp_path / "cache")
    assert len({f32.path, f16.path, bf16.path}) == 3
    assert f16.features.dtype == np.float16 and f16.features.nbytes == f32.features.nbytes // 2
    assert np.abs(f16.features.astype(np.float32) - f32.features).max() < 1e-3
    assert bf16.key["precision"] == "bf16" and bf16.features.dtype == np.float32
    assert 0 < np.abs(bf16.features - f32.features).max() < 0.05


def test_decode_paths_are_separate_entries(tmp_path, strong):
    """Features of different decode paths never mix: the decoder's identity is in the key."""
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = ["path,label,domain,split"]
    for i in range(4):  # JPEGs 4x the model's side: pil decodes in full, turbo at a reduced scale
        lo = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(lo).resize((300, 260), Image.BICUBIC).save(root / "img" / f"{i}.jpg", quality=90)
        rows.append(f"img/{i}.jpg,{i % 3},d,test")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "classnames.txt").write_text("a\nb\nc\n")
    ref = run(strong, root, tmp_path / "cache", decode="pil")
    fast = run(strong, root, tmp_path / "cache", decode="turbo")
    assert ref.path != fast.path and (ref.key["decode"]["path"], fast.key["decode"]["path"]) == ("pil", "turbo")
    assert np.abs(ref.features - fast.features).max() > 0  # mixing them would have been silent
    with Counter(strong.model) as c:
        again = run(strong, root, tmp_path / "cache", decode="pil")
    assert c.rows == 0 and np.array_equal(again.features, ref.features)
    opened = open_features(strong, toy_dataset(root), tmp_path / "cache", decode="pil")
    assert np.array_equal(opened.features, ref.features)
    assert np.array_equal(open_features(strong, toy_dataset(root), tmp_path / "cache").features, fast.features)


def test_interrupted_run_resumes_without_recomputing_finished_shards(tmp_path, strong):
    root = make_toy(tmp_path / "data")
    reference = run(strong, root, tmp_path / "ref").features
    with Counter(strong.model, fail_after=5), pytest.raises(RuntimeError, match="simulated"):
        run(strong, root, tmp_path / "cache")  # crashes inside shard 2 (batches of 4, shards of 8)
    entry = next((tmp_path / "cache").iterdir())
    done = sorted(p.name for p in entry.glob("shard-*.json"))
    assert done == ["shard-00000.json", "shard-00001.json"] and not (entry / "complete").exists()
    lock = FileLock(entry / "shard-00002.lock")
    assert lock.try_acquire()  # the crash released its lock
    lock.release()
    stat = {p: (os.stat(entry / p).st_ino, os.stat(entry / p).st_mtime_ns) for p in done}
    with Counter(strong.model) as c:
        fs = run(strong, root, tmp_path / "cache")
    assert c.rows == N - 2 * SHARD  # only the unfinished shards were encoded
    assert {p: (os.stat(entry / p).st_ino, os.stat(entry / p).st_mtime_ns) for p in done} == stat
    assert np.array_equal(fs.features, reference)


def test_explicit_parts_and_torchrun_env_split_whole_shards(tmp_path, strong, monkeypatch):
    root = make_toy(tmp_path / "data")
    reference = run(strong, root, tmp_path / "ref").features
    assert run(strong, root, tmp_path / "a", shard=(0, 2)) is None  # part 1/2 still missing
    entry = next((tmp_path / "a").iterdir())
    assert sorted(p.name for p in entry.glob("shard-*.json")) == [f"shard-{j:05d}.json" for j in (0, 2, 4)]
    fs = run(strong, root, tmp_path / "a", shard="1/2")  # the last part merges
    assert np.array_equal(fs.features, reference)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert run(strong, root, tmp_path / "b", wait=False) is None
    entry = next((tmp_path / "b").iterdir())
    assert sorted(p.name for p in entry.glob("shard-*.json")) == ["shard-00001.json", "shard-00004.json"]


def test_bad_images_are_recorded_or_raise(tmp_path, strong):
    root = make_toy(tmp_path / "data", bad=(3, 17))
    fs = run(strong, root, tmp_path / "cache")
    assert fs.valid.sum() == N - 2 and not fs.valid[3] and not fs.valid[17]
    assert np.isnan(fs.features[[3, 17]]).all() and np.isfinite(fs.features[fs.valid]).all()
    assert [p.rsplit("/", 1)[1] for p, _ in fs.bad_files] == ["003.png", "017.png"]
    assert all(reason for _, reason in fs.bad_files)
    good = extract_features(strong, toy_dataset(make_toy(tmp_path / "good")), batch_size=BATCH)
    assert np.array_equal(fs.features[fs.valid], good[fs.valid])
    with pytest.raises(ValueError, match=r"003\.png.*bad_files='skip'"):
        run(strong, root, tmp_path / "strict", bad_files="error")


def test_changed_key_or_altered_file_is_a_clear_error(tmp_path, strong):
    root = make_toy(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="w2sclip extract"):
        open_features(strong, toy_dataset(root), tmp_path / "cache")
    fs = run(strong, root, tmp_path / "cache")
    meta = json.loads((fs.path / "meta.json").read_text())
    meta["key"]["model"]["arch"] = "ViT-B-32"
    (fs.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"model\.arch.*delete the folder"):
        run(strong, root, tmp_path / "cache")
    fs = run(strong, root, tmp_path / "other")
    with open(fs.path / "features.npy", "r+b") as f:  # one value changed in place
        f.seek(1000)
        f.write(b"\x01\x02")
    with pytest.raises(ValueError, match="corrupt"):
        open_features(strong, toy_dataset(root), tmp_path / "other", verify=True)


@pytest.mark.parametrize("kw, match", [({"dtype": "float64"}, "float16"), ({"bad_files": "ignore"}, "skip"),
                                       ({"shard": "2/2"}, "0 <= i < N"), ({"shard": "half"}, "i/N"),
                                       ({"precision": "int8"}, "amp_bf16"), ({"shard_size": 0}, "shard_size")])
def test_bad_arguments_name_the_valid_values(tmp_path, strong, kw, match):
    from dataclasses import replace

    root = make_toy(tmp_path / "data", n=4)
    if "precision" in kw:
        strong = replace(strong, precision=kw.pop("precision"))
    with pytest.raises(ValueError, match=match):
        run(strong, root, tmp_path / "cache", **kw)


def test_cli_extract_parts_then_merge(tmp_path):
    from typer.testing import CliRunner

    from w2sclip.cli import app

    root = make_toy(tmp_path / "data")
    base = ["extract", "--dataset", "csv", "--root", root, "--domain", "d", "--split", "test",
            "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--shard-size", "8",
            "--batch-size", "4", "--device", "cpu", "--quiet"]
    res = CliRunner().invoke(app, [*base, "--shard", "0/2"])
    assert res.exit_code == 0 and "part 0/2 done" in res.output, res.output
    res = CliRunner().invoke(app, [*base, "--shard", "1/2"])
    assert res.exit_code == 0 and "features 40x128 float32 in" in res.output, res.output
    res = CliRunner().invoke(app, [*base, "--shard", "2/2"])
    assert isinstance(res.exception, ValueError) and "0 <= i < N" in str(res.exception)
    turbo = CliRunner().invoke(app, base)  # the merged entry (auto = turbo on the CPU)
    pil = CliRunner().invoke(app, [*base, "--decode", "pil"])  # another decode path: its own entry
    assert turbo.exit_code == pil.exit_code == 0, pil.output
    assert turbo.output.split(" in ")[1] != pil.output.split(" in ")[1]
    res = CliRunner().invoke(app, [*base, "--decode", "fast"])
    assert res.exit_code != 0 and "valid: auto, pil, pil-draft, turbo, nvjpeg" in (res.output + str(res.exception))


def test_a_part_waiting_on_another_decode_path_says_so(tmp_path, strong, monkeypatch, caplog):
    """Parts that resolve different decode paths write separate entries that never merge: the
    waiting part names the other entry and the fix instead of waiting in silence."""
    from w2sclip.features import extract as ex

    root = make_toy(tmp_path / "data")
    assert run(strong, root, tmp_path / "cache", shard=(0, 2), decode="pil", wait=False) is None

    class Stop(Exception):
        pass

    real = ex._log_waiting

    def once(store, waited):
        real(store, waited)
        raise Stop

    monkeypatch.setattr(ex, "WAIT_HINT_S", 0.5)
    monkeypatch.setattr(ex, "_log_waiting", once)
    with caplog.at_level("WARNING", logger="w2sclip.features.extract"), pytest.raises(Stop):
        run(strong, root, tmp_path / "cache", shard=(1, 2), decode="turbo", wait=True)
    text = caplog.text
    pil_entry = next(p.name for p in (tmp_path / "cache").iterdir()
                     if json.loads((p / "meta.json").read_text())["key"]["decode"]["path"] == "pil")
    assert "waited" in text and "decode path 'turbo'" in text and pil_entry in text
    assert "pass the same decode= (w2sclip extract --decode) to every part" in text
