"""Contract test over every registered method, plus method-specific checks."""

import numpy as np
import pytest

from w2sclip.methods import METHODS, NotFittedError, get_method

N, D, C = 120, 16, 5


def _data(seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(C, D))
    y = rng.integers(C, size=N)
    X = centers[y] + 0.8 * rng.normal(size=(N, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    text = centers + 0.5 * rng.normal(size=(C, D))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    logits = 3 * np.eye(C)[y] + rng.normal(size=(N, C))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return X.astype(np.float32), y, probs.astype(np.float32), text.astype(np.float32)


def _fit(name, X, y, text, **params):
    return get_method(name, **params).fit(X[:90], y[:90], text_weights=text, logit_scale=50.0,
                                          X_val=X[90:], y_val=y[90:])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_shapes_and_probabilities(name):
    X, _, probs, text = _data()
    m = _fit(name, X, probs, text)
    p = m.predict_proba(X)
    assert p.shape == (N, C) and np.allclose(p.sum(1), 1, atol=1e-5) and (p >= 0).all()
    assert m.predict(X).shape == (N,)
    assert np.array_equal(m.predict(X), p.argmax(1))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_deterministic_under_seed(name):
    X, _, probs, text = _data()
    a = _fit(name, X, probs, text, seed=3).predict_proba(X)
    b = _fit(name, X, probs, text, seed=3).predict_proba(X)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_hard_labels_equal_one_hot(name):
    X, y, _, text = _data()
    a = _fit(name, X, y, text).predict_proba(X)
    b = _fit(name, X, np.eye(C, dtype=np.float32)[y], text).predict_proba(X)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unknown_hyperparameter_lists_valid(name):
    with pytest.raises(ValueError, match="valid:.*seed"):
        get_method(name, not_a_param=1)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_use_before_fit_is_clear(name):
    with pytest.raises(NotFittedError, match="fit"):
        get_method(name).predict(np.zeros((2, D), np.float32))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_bad_targets_and_features_are_clear(name):
    X, _, probs, text = _data()
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _fit(name, bad, probs, text)
    if name != "zero_shot":
        with pytest.raises(ValueError, match="probabilities"):
            _fit(name, X, probs * 2, text)


def test_unknown_method_lists_valid():
    with pytest.raises(KeyError, match="cpl"):
        get_method("cpl2")


def test_cpl_before_training_predicts_exactly_like_zero_shot():
    X, _, probs, text = _data()
    zs = get_method("zero_shot").fit(X, text_weights=text, logit_scale=50.0)
    cpl = get_method("cpl", epochs=0).fit(X, probs, text_weights=text, logit_scale=50.0)
    assert np.array_equal(zs.predict(X), cpl.predict(X))
    np.testing.assert_allclose(zs.decision_function(X), cpl.decision_function(X), rtol=1e-5, atol=1e-5)


def test_cpl_learns_from_labels_and_keeps_scale_fixed_by_default():
    X, y, _, text = _data()
    rng = np.random.default_rng(1)
    bad_text = rng.normal(size=text.shape).astype(np.float32)  # uninformative init
    before = get_method("zero_shot").fit(X, text_weights=bad_text, logit_scale=50.0).predict(X)
    m = get_method("cpl", lr=1e-2, selection="fixed").fit(X, y, text_weights=bad_text, logit_scale=50.0)
    assert (m.predict(X) == y).mean() > (before == y).mean() + 0.3
    assert m.logit_scale_ == pytest.approx(50.0)
    learn = get_method("cpl", lr=1e-2, selection="fixed", learn_scale=True).fit(
        X, y, text_weights=bad_text, logit_scale=50.0)
    assert learn.logit_scale_ != pytest.approx(50.0)


def test_cpl_needs_text_weights():
    X, _, probs, _ = _data()
    with pytest.raises(ValueError, match="text_weights"):
        get_method("cpl").fit(X, probs)
