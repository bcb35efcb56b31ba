import json

import numpy as np
import pytest

from w2sclip.features.cache import ArrayCache, digest


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
