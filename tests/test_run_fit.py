"""The fits of one run never let D_test (features or labels) reach a fit or a selection rule."""

import json

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
    # one ceiling per head (CPL's for cpl and zero_shot, the linear one), each tuned on its 3-point grid
    assert sorted(gt) == ["cpl"] * 3 + ["kd_lp"] * 3
    assert {sel for name, sel, _, y in seen if y.ndim == 1 and name == "cpl"} == {"val_acc"}  # GT accuracy
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


def _tuning_spy(monkeypatch):
    seen = []
    real_get = fitmod.get_method

    def spy(name, **kw):
        seen.append((name, kw))
        return real_get(name, **kw)

    monkeypatch.setattr(fitmod, "get_method", spy)
    return seen


def test_tuning_fits_every_grid_point_and_keeps_the_rules_pick(monkeypatch):
    rng = np.random.default_rng(1)
    text = rng.normal(size=(4, 8)).astype(np.float32)
    x = _inputs(lambda name: text, n_per_class=20)
    seen = _tuning_spy(monkeypatch)
    res = fit_and_evaluate(x, seed=0, methods=("cpl",), ids=IDS)
    students = [kw["lr"] for name, kw in seen if name == "cpl" and "selection" not in kw]
    assert students == [1e-3, 3e-4, 3e-3]  # the published value first
    rec = {r["method"]: r for r in res.records}
    scores = json.loads(rec["cpl"]["tuning_scores"])
    best = min(scores, key=lambda s: (-s["agreement"], s["cross_entropy"]))
    assert json.loads(rec["cpl"]["tuned"]) == {"lr": best["lr"]} and rec["cpl"]["tuning"] == "grid"
    assert json.loads(rec["cpl"]["hparams"])["lr"] == best["lr"]
    # the ceiling: CPL on ground truth, ranked by ground-truth accuracy on hold_val
    assert {s["recipe"] for s in json.loads(rec["ceiling_cpl"]["tuning_scores"])} == {"cpl"}
    assert rec["ceiling_cpl"]["labels"] == "ground_truth"


def test_tuning_none_fits_the_published_defaults_once(monkeypatch):
    rng = np.random.default_rng(1)
    text = rng.normal(size=(4, 8)).astype(np.float32)
    x = _inputs(lambda name: text, n_per_class=20)
    seen = _tuning_spy(monkeypatch)
    res = fit_and_evaluate(x, seed=0, methods=("cpl", "kd_lp"), ids=IDS, tuning="none")
    assert sorted(name for name, _ in seen) == ["cpl", "cpl", "kd_lp", "kd_lp"]  # student + ceiling each
    from w2sclip.methods import METHODS

    assert all(kw.get("lr", METHODS[name].defaults["lr"]) == METHODS[name].defaults["lr"] for name, kw in seen)
    assert {r["tuning"] for r in res.records} == {"none"}


def test_user_fixed_keys_are_not_tuned(monkeypatch):
    rng = np.random.default_rng(1)
    text = rng.normal(size=(4, 8)).astype(np.float32)
    x = _inputs(lambda name: text, n_per_class=20)
    seen = _tuning_spy(monkeypatch)
    fit_and_evaluate(x, seed=0, methods=("kd_lp",), ids=IDS, method_params={"kd_lp": {"lr": 5e-3}})
    assert [kw["lr"] for _, kw in seen] == [5e-3, 5e-3]  # the ceiling and the student, once each


def test_a_ceiling_takes_the_strongest_recipe_of_its_head():
    from w2sclip.run.fit import ceiling_recipes

    recipes = ceiling_recipes("cpl", ("zero_shot", "cpl", "cpl_hard", "logconf", "product_loss", "adaptconf"), {})
    names = [m for m, _ in recipes]
    assert names == ["cpl", "logconf", "adaptconf"]  # zero_shot trains nothing; duplicates dropped
    by = dict(recipes)
    assert by["cpl"]["selection"] == "val_acc"  # CPL's early stopping, on ground-truth accuracy
    assert (by["logconf"]["batch_size"], by["logconf"]["max_steps"], by["logconf"]["schedule"]) == (100, 4000, "cosine")
    assert (by["adaptconf"]["optimizer"], by["adaptconf"]["epochs"]) == ("adamw", 100)
    assert "seed" not in by["logconf"]
