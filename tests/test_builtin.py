import csv

import numpy as np
import pytest

from w2sclip.data.builtin import (CLASSNAMES, TEMPLATES, draw, image_rng, make_builtin,
                                  render_corpus, BuiltinSize)
from w2sclip.data.builtin_render import DOMAINS
from w2sclip.data.manifest import load_manifest


def test_world_has_24_word_classes_and_six_domainnet_domains():
    assert len(CLASSNAMES) >= 24 and all(c.isalpha() for c in CLASSNAMES)
    assert DOMAINS == ("real", "clipart", "painting", "sketch", "quickdraw", "infograph")
    assert all("{}" in t for t in TEMPLATES)


@pytest.mark.parametrize("domain", DOMAINS)
def test_image_is_pure_function_of_seed(domain):
    d = DOMAINS.index(domain)
    a, ca = draw(3, domain, image_rng("dataset", 0, d, 3, 7))
    b, cb = draw(3, domain, image_rng("dataset", 0, d, 3, 7))
    c, _ = draw(3, domain, image_rng("dataset", 1, d, 3, 7))
    assert np.array_equal(np.asarray(a), np.asarray(b)) and ca == cb
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert a.size == (64, 64) and a.mode == "RGB"


def test_domains_look_different():
    means = [np.asarray(draw(0, d, image_rng("dataset", 0, i, 0, 0))[0], float).mean()
             for i, d in enumerate(DOMAINS)]
    assert len({round(m) for m in means}) >= 5


def test_corpus_disjoint_from_dataset_stream():
    imgs, meta = render_corpus(4, seed=0, workers=1)
    assert imgs.shape == (4, 64, 64, 3) and meta.shape == (4, 3)
    for img, (label, dom, _) in zip(imgs, meta):
        for i in range(4):
            ds, _ = draw(int(label), DOMAINS[dom], image_rng("dataset", 0, int(dom), int(label), i))
            assert not np.array_equal(np.asarray(ds), img)


def test_make_builtin_is_deterministic_and_readable(tmp_path):
    size = BuiltinSize(train=2, test=3)
    a = make_builtin(tmp_path / "a", size=size, seed=5, domains=("sketch", "real"), workers=1)
    b = make_builtin(tmp_path / "b", size=size, seed=5, domains=("sketch", "real"), workers=1)
    assert (a / "manifest.csv").read_text() == (b / "manifest.csv").read_text()
    rows = list(csv.DictReader(open(a / "manifest.csv")))
    assert len(rows) == 2 * 24 * 5
    for r in rows[:10]:
        assert (a / r["path"]).read_bytes() == (b / r["path"]).read_bytes()
    ds = load_manifest(a, domain="sketch", split="test")
    assert len(ds) == 24 * 3 and ds.classnames == list(CLASSNAMES)
    img, label = ds[0]
    assert img.size == (64, 64) and 0 <= label < 24
    with pytest.raises(ValueError, match="domains present"):
        load_manifest(a, domain="quickdraw")


def test_unknown_size_and_domain_name_valid_options(tmp_path):
    with pytest.raises(KeyError, match="quick"):
        make_builtin(tmp_path, size="huge")
    with pytest.raises(KeyError, match="infograph"):
        make_builtin(tmp_path, size="quick", domains=("photos",))


# world versions (issue 11) ------------------------------------------------------------------------

def _world_digest(world: int) -> str:
    import hashlib

    h = hashlib.sha256()
    for i, d in enumerate(DOMAINS):
        for label in (0, 7, 23):
            h.update(np.asarray(draw(label, d, image_rng("dataset", 0, i, label, 3, 1), world=world)[0]).tobytes())
    return h.hexdigest()


def test_world_1_is_unchanged_pixel_for_pixel():
    # world 1's run folders and the first checkpoints' recipes refer to it: its images must never
    # change (if this fails after a Pillow upgrade, Pillow's drawing changed under them)
    assert _world_digest(1) == "b03ec33677cbe99994f6f707a9407638746936c299d1cd9d1321713d70532c50"


def test_world_2_is_the_default_and_unchanged_pixel_for_pixel():
    # the shipped checkpoints were pretrained on world 2, the default everywhere
    from w2sclip.config import RunConfig
    from w2sclip.data.builtin_render import WORLD

    assert WORLD == 2 and RunConfig(domain="real").builtin_world == 2
    # the shipped checkpoints and the recalibration measurements (docs/backbones.md) use these pixels
    assert _world_digest(2) == "48443aaeae5324ef4455bdabf4b575c1438ce59c194bc185da85945ee905ee72"


def test_world_2_changes_every_domain_but_infograph(tmp_path):
    for i, d in enumerate(DOMAINS):
        a = np.asarray(draw(5, d, image_rng("dataset", 0, i, 5, 1), world=1)[0])
        b = np.asarray(draw(5, d, image_rng("dataset", 0, i, 5, 1), world=2)[0])
        assert np.array_equal(a, b) == (d == "infograph"), d
    imgs, meta = render_corpus(6, seed=0, workers=1, world=2)
    assert imgs.shape == (6, 64, 64, 3) and not np.array_equal(imgs, render_corpus(6, seed=0, workers=1, world=1)[0])
    root = make_builtin(tmp_path / "w2", size=BuiltinSize(train=1, test=1), domains=("quickdraw",), world=2,
                        workers=1)
    import json
    assert json.loads((root / "builtin.json").read_text())["world"] == 2


def test_unknown_world_names_the_valid_ones(tmp_path):
    from w2sclip.models.strong.pretrain import PretrainConfig

    with pytest.raises(KeyError, match="valid: 1, 2"):
        make_builtin(tmp_path / "x", size="quick", world=3)
    with pytest.raises(KeyError, match="valid: 1, 2"):
        PretrainConfig(world=0)
    assert "--world 2" in PretrainConfig(world=2).command()


def _make_tiny(out: str) -> str:
    return str(make_builtin(out, size=BuiltinSize(train=2, test=1), domains=("sketch", "real"), workers=1))


def test_parallel_runs_generating_one_folder_wait_for_each_other(tmp_path):
    """Two sweep workers starting from an empty cache: the second waits for the first's lock,
    then finds the finished benchmark instead of writing the same files at once."""
    import multiprocessing
    import threading

    from w2sclip.fileio import FileLock

    out = tmp_path / "b"
    out.mkdir()
    lock = FileLock(out / ".generate.lock")
    lock.acquire()
    waiter = threading.Thread(target=_make_tiny, args=(str(out),))
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and not (out / "manifest.csv").exists()  # blocked behind the holder
    lock.release()
    waiter.join(timeout=60)
    assert not waiter.is_alive() and (out / "manifest.csv").exists()

    with multiprocessing.get_context("fork").Pool(2) as pool:  # a real race, two processes
        roots = pool.map(_make_tiny, [str(tmp_path / "c")] * 2)
    assert roots[0] == roots[1]
    assert len(load_manifest(roots[0]).samples) == 2 * (2 + 1) * len(CLASSNAMES)
    assert not list((tmp_path / "c").glob("*.tmp*"))
