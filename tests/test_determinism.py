"""Same config and seed -> identical results on the CPU (docs/determinism.md)."""

import json

import numpy as np
import pytest

from w2sclip.methods import METHODS, get_method

N, D, C = 150, 16, 5
CLASSNAMES = ["cat", "dog", "car", "tree", "star"]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(C, D))
    y = rng.integers(C, size=N)
    X = (centers[y] + rng.normal(size=(N, D))).astype(np.float32)
    logits = 2 * np.eye(C)[y] + rng.normal(size=(N, C))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    text = (centers + 0.5 * rng.normal(size=(C, D))).astype(np.float32)
    return X, probs, text


def _fit(name, **params):
    X, probs, text = _data()
    extra = {}
    if METHODS[name].needs_prompt_encoder:
        from conftest import tiny_prompt_encoder

        extra["prompt_encoder"] = tiny_prompt_encoder(CLASSNAMES, D)
    m = get_method(name, **params).fit(X[:100], probs[:100], text_weights=text, logit_scale=30.0,
                                       X_val=X[100:], y_val=probs[100:], **extra)
    return m.predict_proba(X), getattr(m, "history_", None)


@pytest.mark.parametrize("batch_size", [0, 32])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_same_seed_same_bits(name, batch_size):
    if "batch_size" not in METHODS[name].defaults and batch_size:
        pytest.skip(f"{name} has no batch size")
    params = {"seed": 5}
    if "epochs" in METHODS[name].defaults:
        params |= {"epochs": 20, "batch_size": batch_size}
    (a, ha), (b, hb) = _fit(name, **params), _fit(name, **params)
    assert np.array_equal(a, b) and ha == hb


@pytest.mark.parametrize("name", ["cpl", "kd_lp", "clip_adapter"])
def test_the_seed_matters_where_it_should(name):
    """Minibatch order (and CLIP-Adapter's init) follow the method seed."""
    a, _ = _fit(name, seed=0, epochs=10, batch_size=32, selection="fixed")
    b, _ = _fit(name, seed=1, epochs=10, batch_size=32, selection="fixed")
    assert not np.array_equal(a, b)


def _inputs():
    from conftest import tiny_prompt_encoder
    from w2sclip.run.fit import FitInputs

    labels = np.repeat(np.arange(C), 24)
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(C, D))
    feats = (centers[labels] + rng.normal(size=(len(labels), D))).astype(np.float32)
    weak = (2 * np.eye(C)[labels] + rng.normal(size=(len(labels), C))).astype(np.float32)
    text = (centers + 0.5 * rng.normal(size=(C, D))).astype(np.float32)
    return FitInputs(feats, weak, labels, lambda name: text, 30.0,
                     prompt_encoder=lambda: tiny_prompt_encoder(CLASSNAMES, D))


def test_run_records_are_identical_across_runs():
    from w2sclip.methods import METHODS
    from w2sclip.run.fit import fit_and_evaluate

    ids = {"dataset": "toy", "domain": "real", "strong": "s", "weak": "w", "seed": 2}
    runs = [fit_and_evaluate(_inputs(), seed=2, methods=tuple(METHODS), ids=ids).records for _ in range(2)]
    assert runs[0] == runs[1]
    assert {r["method"] for r in runs[0]} >= set(METHODS)


@pytest.mark.slow
def test_quick_demo_twice_gives_identical_records(tmp_path):
    """The quick demo on one domain and checkpoint: data generation, weak training, extraction,
    fits; the second run (another runs folder) reads the first run's features and weak logits
    from the cache and fits again (reuse_runs=false: not a copy of the first run's results)."""
    from w2sclip.demo import run_demo

    kw = {"quick": True, "progress": False,
          "overrides": ("grid.strong=[full]", "grid.domain=[real]", f"cache_dir={tmp_path / 'cache'}")}
    a = run_demo(tmp_path / "a", **kw)["records"]
    b = run_demo(tmp_path / "b", quick=True, progress=False, overrides=(*kw["overrides"], "reuse_runs=false"))
    done = [json.loads(p.read_text()) for p in (tmp_path / "b").glob("runs/*/done")]
    assert len(done) == 1 and done[0]["reused_from"] is None and "fits" in done[0]["stages_s"]
    assert a == b["records"] and len(a) > 10
