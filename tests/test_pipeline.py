"""The pipeline never lets D_test (features or labels) reach a fit or a selection rule."""

import numpy as np

import w2sclip.pipeline as pipeline
from w2sclip.data.manifest import ImageDataset
from w2sclip.data.splits import protocol_splits
from w2sclip.pipeline import Task, Timer, run_seed


def _task(n_per_class=10, c=4):
    labels = np.repeat(np.arange(c), n_per_class)
    samples = [(f"img{i}.png", int(y)) for i, y in enumerate(labels)]
    ds = ImageDataset("toy", [f"c{i}" for i in range(c)], ["a photo of a {}."], samples, "real", "test")
    return Task("toy", "real", ds, ds), labels


def test_no_test_rows_reach_any_fit(monkeypatch):
    task, labels = _task()
    n, c, d = len(labels), 4, 8
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, d)).astype(np.float32)
    feats[:, 0] = np.arange(n)  # each row carries its own index
    weak = rng.normal(size=(n, c)).astype(np.float32)
    seen = []
    real_get = pipeline.get_method

    def spy(name, **kw):
        m = real_get(name, **kw)
        orig = m.fit

        def fit(X, y, **kwargs):
            rows = {int(round(v)) for v in X[:, 0]} | {int(round(v)) for v in kwargs["X_val"][:, 0]}
            seen.append((name, kw.get("selection"), rows, np.asarray(y)))
            return orig(X, y, **kwargs)

        m.fit = fit
        return m

    monkeypatch.setattr(pipeline, "get_method", spy)
    text = rng.normal(size=(c, d)).astype(np.float32)
    records = run_seed(task, "s", feats, text, 10.0, weak, "w", seed=3,
                       methods=("cpl", "kd_lp", "zero_shot"), timer=Timer())
    test_rows = set(protocol_splits(labels, 3)["test"].tolist())
    assert seen and all(not (rows & test_rows) for _, _, rows, _ in seen)
    for name, sel, _, y in seen:
        if sel == "val_acc":  # the ceilings: ground truth of D_hold only
            assert y.ndim == 1
        else:  # students: weak soft labels, never ground truth
            assert y.ndim == 2 and np.allclose(y.sum(1), 1)
    assert {r["method"] for r in records} == {"weak", "ceiling", "ceiling_lp", "cpl", "kd_lp", "zero_shot"}
    assert all(r["n_test"] == len(test_rows) for r in records)


def test_methods_get_the_text_weights_of_their_template_set():
    task, labels = _task()
    rng = np.random.default_rng(1)
    n, c, d = len(labels), 4, 8
    feats = rng.normal(size=(n, d)).astype(np.float32)
    weak = rng.normal(size=(n, c)).astype(np.float32)
    asked = []

    def text_for(name):
        asked.append(name)
        return np.eye(c, d, dtype=np.float32) if name == "dataset" else np.eye(c, d, k=1, dtype=np.float32)

    import w2sclip.pipeline as pl
    real_get = pl.get_method
    try:
        pl.get_method = lambda name, **kw: real_get(name, **({"templates": "simple"} if name == "zero_shot" else {}), **kw)
        recs = run_seed(task, "s", feats, text_for, 10.0, weak, "w", 0, ("zero_shot",), Timer())
    finally:
        pl.get_method = real_get
    assert "simple" in asked and "dataset" in asked  # ceilings use the dataset's set
    assert any(r["method"] == "zero_shot" and '"templates": "simple"' in r["hparams"] for r in recs)
