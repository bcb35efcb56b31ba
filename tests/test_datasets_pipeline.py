"""The weak-to-strong building blocks on datasets laid out like the real ones (features faked).

Image features are random vectors nudged towards a per-class direction, so this checks the
plumbing (labels in the official order through D_hold / D_test, classes missing from a split)
without a CLIP; the real runner is exercised in docs/datasets.md's smoke command.
"""

from __future__ import annotations

import numpy as np

from w2sclip.data import get_dataset
from w2sclip.data.miniature import make_miniature
from w2sclip.run.fit import FitInputs, fit_and_evaluate


def _fake_features(labels: np.ndarray, n_classes: int, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(n_classes, dim))
    feats = protos[labels] + 0.5 * rng.normal(size=(len(labels), dim))
    norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return norm(feats), norm(protos + 0.8 * rng.normal(size=protos.shape))


def _run(name: str, root, domain: str):
    train = get_dataset(name, root=root, domain=domain, split="train")
    test = get_dataset(name, root=root, domain=domain, split="test")
    y = np.asarray(test.labels)
    c = len(test.classnames)
    feats, text = _fake_features(y, c)
    rng = np.random.default_rng(1)
    weak = np.eye(c)[np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, c, len(y)))] * 4.0
    x = FitInputs(feats, weak.astype(np.float32), y, lambda name: text, 100.0)
    res = fit_and_evaluate(x, seed=0, methods=("zero_shot", "cpl"),
                           ids={"dataset": name, "domain": domain, "strong": "fake", "weak": "noisy", "seed": 0})
    return train, test, {r["method"]: r for r in res.records}


def test_domainnet_miniature_through_the_fits(tmp_path):
    domain = "painting"
    root = make_miniature("domainnet", tmp_path / "dn", domains=(domain,), images_per_class=3)
    train, test, rec = _run("domainnet", root, domain)
    assert test.classnames[327] == "t-shirt" and len(test.classnames) == 345
    assert 327 not in train.labels  # t-shirt has no painting training images
    r = rec["cpl"]
    assert r["n_fit"] + r["n_val"] + r["n_test"] == len(test)
    assert 0.0 <= r["accuracy"] <= 1.0 and rec["weak"]["accuracy"] > 0.4
    assert rec["cpl"]["accuracy"] > 0.5  # the class signal of the fake features is learnable


def test_user_folder_dataset_through_the_fits(tmp_path):
    root = make_miniature("folder", tmp_path / "f", images_per_class=6)
    _, test, rec = _run("folder", root, "sketch")
    assert test.classnames == ["alarm clock", "TV", "the Eiffel Tower", "cat", "t-shirt", "teddy bear"]
    assert set(rec) >= {"weak", "zero_shot", "cpl", "ceiling_cpl"}
    assert rec["cpl"]["n_test"] > 0
