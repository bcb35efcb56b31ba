"""The fits of one run never let D_test (features or labels) reach a fit or a selection rule."""

import numpy as np

import w2sclip.run.fit as fitmod
from w2sclip.run.fit import FitInputs, fit_and_evaluate, make_splits

IDS = {"dataset": "toy", "domain": "real", "strong": "s", "weak": "w", "seed": 3, "protocol": "in_domain"}


def _inputs(text, n_per_class=10, c=4, d=8, seed=0):
    labels = np.repeat(np.arange(c), n_per_class)
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(len(labels), d)).astype(np.float32)
    weak = rng.normal(size=(len(labels), c)).astype(np.float32)
    return FitInputs(feats, weak, labels, text, 10.0)


def test_no_test_rows_reach_any_fit(monkeypatch):
    rng = np.random.default_rng(0)
    text = rng.normal(size=(4, 8)).astype(np.float32)
    x = _inputs(lambda name: text)
    x.features[:, 0] = np.arange(len(x.labels))  # each row carries its own index
    seen = []
    real_get = fitmod.get_method

    def spy(name, **kw):
        m = real_get(name, **kw)
        orig = m.fit

        def fit(X, y, **kwargs):
            rows = {int(round(v)) for v in X[:, 0]} | {int(round(v)) for v in kwargs["X_val"][:, 0]}
            seen.append((name, kw.get("selection"), rows, np.asarray(y)))
            return orig(X, y, **kwargs)

        m.fit = fit
        return m

    monkeypatch.setattr(fitmod, "get_method", spy)
    res = fit_and_evaluate(x, seed=3, methods=("cpl", "kd_lp", "zero_shot"), ids=IDS)
    test_rows = set(make_splits(x, 3)["test"].tolist())
    assert seen and all(not (rows & test_rows) for _, _, rows, _ in seen)
    gt = [name for name, _, _, y in seen if y.ndim == 1]  # ground truth of D_hold: the ceilings only
    assert sorted(gt) == ["cpl", "kd_lp"]  # one per head: CPL's (cpl, zero_shot) and the linear one
    assert all(np.allclose(y.sum(1), 1) for _, _, _, y in seen if y.ndim == 2)  # students: weak soft labels
    assert {r["method"] for r in res.records} == {"weak", "ceiling_cpl", "ceiling_kd_lp", "cpl", "kd_lp", "zero_shot"}
    own = {r["method"]: r["ceiling"] for r in res.records}
    assert own["cpl"] == own["zero_shot"] == "ceiling_cpl" and own["kd_lp"] == "ceiling_kd_lp"
    assert all(r["n_test"] == len(test_rows) and r["n_classes"] == 4 for r in res.records)


def test_methods_get_the_text_weights_of_their_template_set(monkeypatch):
    c, d = 4, 8
    asked = []

    def text_for(name):
        asked.append(name)
        return np.eye(c, d, dtype=np.float32) if name == "dataset" else np.eye(c, d, k=1, dtype=np.float32)

    real_get = fitmod.get_method
    monkeypatch.setattr(fitmod, "get_method", lambda name, **kw: real_get(
        name, **({"templates": "simple"} if name == "zero_shot" else {}), **kw))
    res = fit_and_evaluate(_inputs(text_for, seed=1), seed=0, methods=("zero_shot",), ids=IDS)
    assert "simple" in asked and "dataset" in asked  # ceilings use the dataset's set
    assert any(r["method"] == "zero_shot" and '"templates": "simple"' in r["hparams"] for r in res.records)


def test_the_benchmark_split_is_fixed_and_the_seed_moves_only_hold_fit_and_hold_val():
    x = _inputs(lambda name: None, n_per_class=20)
    a, b = make_splits(x, 0), make_splits(x, 7)
    assert np.array_equal(a["test"], b["test"]) and np.array_equal(a["hold"], b["hold"])
    assert not np.array_equal(a["hold_fit"], b["hold_fit"])
    for s in (a, b):
        assert set(s["hold_fit"]) | set(s["hold_val"]) == set(s["hold"]) and not set(s["hold"]) & set(s["test"])
    # hold_fit / hold_val follow the weak argmax (stratified), not the ground truth of D_hold
    x.weak_logits[:] = 0.0
    x.weak_logits[:, 0] = 1.0  # one weak class for every image: a plain random 80/20 split
    c = make_splits(x, 0)
    assert np.array_equal(c["hold"], a["hold"]) and len(c["hold_fit"]) == round(0.8 * len(c["hold"]))
