import json

import numpy as np
import pytest

from w2sclip.features.cache import ArrayCache, digest
from w2sclip.fileio import FileLock, atomic_write
from w2sclip.features.store import FeatureStore, load_entry, spot_digest


def test_key_changes_digest_and_roundtrip(tmp_path):
    cache = ArrayCache(tmp_path)
    k1 = {"model": {"arch": "a", "pretrained": "x"}, "data": {"domain": "real"}}
    k2 = {"model": {"arch": "a", "pretrained": "y"}, "data": {"domain": "real"}}
    assert digest(k1) != digest(k2)
    assert digest(k1) == digest(json.loads(json.dumps(k1)))
    assert cache.load(k1) is None
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.save(k1, arr, slug="real-a")
    assert np.array_equal(cache.load(k1, "real-a"), arr)
    assert cache.load(k2, "real-a") is None
    assert not list(tmp_path.glob(".tmp-*"))  # no temporary leftovers


def test_altered_cache_is_an_error(tmp_path):
    cache = ArrayCache(tmp_path)
    key = {"k": 1}
    folder = cache.save(key, np.ones((4, 2), np.float32))
    data = np.load(folder / "data.npy")
    data[0, 0] = 5
    np.save(folder / "data.npy", data)
    with pytest.raises(ValueError, match="corrupt.*delete"):
        cache.load(key)


def test_key_mismatch_is_an_error(tmp_path):
    cache = ArrayCache(tmp_path)
    folder = cache.save({"k": 1}, np.ones(3))
    meta = json.loads((folder / "meta.json").read_text())
    meta["key"] = {"k": 2}
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="different key"):
        cache.load({"k": 1})


def test_second_writer_keeps_first_entry(tmp_path):
    cache = ArrayCache(tmp_path)
    cache.save({"k": 1}, np.zeros(3))
    cache.save({"k": 1}, np.zeros(3))  # e.g. a second process finishing the same entry
    assert np.array_equal(cache.load({"k": 1}), np.zeros(3))


# ----- the sharded feature store -------------------------------------------------------------

KEY = {"kind": "image_features", "model": {"arch": "a"}, "dtype": "float32", "precision": "fp32"}


def _filled_store(root, n=4000, d=128, shard_size=1000, key=KEY):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, d)).astype(key["dtype"])
    store = FeatureStore(root, key, "toy", n, shard_size).open()
    for j in range(store.n_shards):
        a, b = store.shard_range(j)
        bad = [(a, f"img/{a}.png", "truncated")] if j == 1 else []
        store.write_shard(j, data[a:b], bad)
    return store, data


def test_store_merges_shards_into_one_memmap(tmp_path):
    store, data = _filled_store(tmp_path, n=3500)
    assert store.n_shards == 4 and store.shard_range(3) == (3000, 3500)
    assert store.merge() and store.merge()  # the second merge finds the entry complete
    fs = store.load(verify=True)
    assert np.array_equal(fs.features, data) and isinstance(fs.features, np.memmap)
    assert fs.valid.sum() == 3499 and not fs.valid[1000] and fs.bad_files == [("img/1000.png", "truncated")]
    assert np.array_equal(load_entry(store.path, KEY).features, data)
    other = dict(KEY, model={"arch": "b"})
    with pytest.raises(ValueError, match=r"model\.arch: stored 'a' != requested 'b'.*delete the folder"):
        load_entry(store.path, other)


def test_merge_waits_for_missing_shards(tmp_path):
    store = FeatureStore(tmp_path, KEY, "toy", 30, 10).open()
    store.write_shard(0, np.zeros((10, 2), np.float32), [])
    assert store.missing() == [1, 2] and not store.merge() and not store.complete
    with pytest.raises(FileNotFoundError, match="2 of 3 shards missing"):
        store.load()
    with pytest.raises(ValueError, match="expected"):  # wrong number of rows for shard 1
        store.write_shard(1, np.zeros((9, 2), np.float32), [])


def test_altered_files_are_detected(tmp_path):
    store, _ = _filled_store(tmp_path / "a")
    shard = store.shard_file(2)
    raw = bytearray(shard.read_bytes())
    raw[-7] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"shard-00002\.npy is corrupt.*delete both files"):
        store.merge()
    store, _ = _filled_store(tmp_path / "b")
    store.merge()
    f = store.path / "features.npy"
    spot = spot_digest(f)
    size = f.stat().st_size
    # a byte between two spot-checked blocks: only the full check (verify=True) sees it
    offset = 4096 + ((size - 4096) // 63 - 4096) // 2
    raw = bytearray(f.read_bytes())
    raw[offset] ^= 0xFF
    f.write_bytes(bytes(raw))
    assert spot_digest(f) == spot
    store.load()
    with pytest.raises(ValueError, match=r"corrupt \(sha256 differs\)"):
        store.load(verify=True)
    f.write_bytes(bytes(raw[:-100]))  # truncated: caught without verify
    with pytest.raises(ValueError, match="corrupt.*size"):
        store.load()


def test_meta_is_created_once_and_shard_size_is_adopted(tmp_path):
    first = FeatureStore(tmp_path, KEY, "toy", 100, 10).open()
    second = FeatureStore(tmp_path, KEY, "toy", 100, 64).open()
    assert second.shard_size == 10 and second.n_shards == first.n_shards == 10
    with pytest.raises(ValueError, match="n: stored 100 != requested 99"):
        s = FeatureStore(tmp_path, KEY, "toy", 99, 10)
        s.path = first.path
        s.read_meta()


def test_atomic_write_and_locks(tmp_path):
    f = tmp_path / "x.bin"
    assert atomic_write(f, lambda fh: fh.write(b"one"), exclusive=True)
    assert not atomic_write(f, lambda fh: fh.write(b"two"), exclusive=True)  # first writer wins
    assert f.read_bytes() == b"one"
    with pytest.raises(RuntimeError):
        atomic_write(f, lambda fh: (fh.write(b"half"), (_ for _ in ()).throw(RuntimeError())))
    assert f.read_bytes() == b"one" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]
    a, b = FileLock(tmp_path / "l.lock"), FileLock(tmp_path / "l.lock")
    assert a.try_acquire() and not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()
