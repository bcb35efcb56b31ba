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


CLASSNAMES = ["cat", "dog", "car", "tree", "star"]


def _fit(name, X, y, text, **params):
    extra = {}
    if METHODS[name].needs_prompt_encoder:  # methods that train through the text encoder
        from conftest import tiny_prompt_encoder

        extra["prompt_encoder"] = tiny_prompt_encoder(CLASSNAMES, X.shape[1])
    return get_method(name, **params).fit(X[:90], y[:90], text_weights=text, logit_scale=50.0,
                                          X_val=X[90:], y_val=y[90:], **extra)


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


# -- logconf, adaptconf, tip_adapter_f, clip_adapter ------------------------------------------

def test_logconf_alpha_schedule():
    from w2sclip.methods.logconf import logconf_alpha

    assert logconf_alpha(0.0) == 0.0
    assert logconf_alpha(0.1) == pytest.approx(0.25)
    assert logconf_alpha(0.2) == pytest.approx(0.5)
    assert logconf_alpha(0.5) == pytest.approx(0.5)
    assert logconf_alpha(1.0, alpha_max=0.75, warmup=0.5) == pytest.approx(0.75)
    assert logconf_alpha(0.25, alpha_max=0.8, warmup=0.5) == pytest.approx(0.4)
    assert logconf_alpha(0.0, alpha_max=0.3, warmup=0.0) == pytest.approx(0.3)


@pytest.mark.parametrize("selection", ["fixed", "val_loss"])
def test_logconf_without_confidence_term_equals_cpl(selection):
    X, _, probs, text = _data()
    a = _fit("cpl", X, probs, text, seed=2, lr=3e-3, epochs=50, selection=selection)
    b = _fit("logconf", X, probs, text, seed=2, lr=3e-3, epochs=50, selection=selection, alpha_max=0.0)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), rtol=0, atol=1e-6)
    assert a.history_["best_step"] == b.history_["best_step"]


def test_logconf_confidence_term_changes_training():
    X, _, probs, text = _data()
    a = _fit("logconf", X, probs, text, lr=3e-3, epochs=50, selection="fixed", alpha_max=0.0)
    b = _fit("logconf", X, probs, text, lr=3e-3, epochs=50, selection="fixed", alpha_max=0.9)
    assert np.abs(a.decision_function(X) - b.decision_function(X)).max() > 1e-3


def test_logconf_uses_the_ramp_during_training():
    from w2sclip.methods.logconf import LogConf

    m = LogConf(alpha_max=0.5, warmup=0.2)
    seen = []
    m._alpha = (lambda orig: lambda prog: (seen.append(prog), orig(prog))[1])(m._alpha)
    X, _, probs, text = _data()
    m.fit(X, probs, text_weights=text, logit_scale=50.0)
    assert seen[0] == 0.0 and max(seen) < 1.0 and len(seen) == m.defaults["epochs"]


def test_adaptconf_differs_from_cpl_and_theta_matters():
    X, _, probs, text = _data()
    kw = dict(lr=3e-3, epochs=50, selection="fixed")
    cpl = _fit("cpl", X, probs, text, **kw).decision_function(X)
    lo = _fit("adaptconf", X, probs, text, theta=0.1, **kw).decision_function(X)
    hi = _fit("adaptconf", X, probs, text, theta=5.0, **kw).decision_function(X)
    assert np.abs(cpl - lo).max() > 1e-3 and np.abs(lo - hi).max() > 1e-3


def test_tip_adapter_f_without_cache_and_training_is_zero_shot():
    X, _, probs, text = _data()
    zs = get_method("zero_shot").fit(X, text_weights=text, logit_scale=50.0)
    tip = get_method("tip_adapter_f", epochs=0, alpha=0.0).fit(X, probs, text_weights=text,
                                                               logit_scale=50.0)
    assert np.array_equal(zs.predict(X), tip.predict(X))
    np.testing.assert_allclose(zs.decision_function(X), tip.decision_function(X), rtol=1e-5, atol=1e-5)


def test_tip_adapter_f_cache_formula_and_state():
    X, _, probs, text = _data()
    s, alpha, beta = 50.0, 2.0, 3.0
    m = get_method("tip_adapter_f", epochs=0, alpha=alpha, beta=beta).fit(
        X[:90], probs[:90], text_weights=text, logit_scale=s)
    keys = X[:90] / np.linalg.norm(X[:90], axis=1, keepdims=True)
    np.testing.assert_allclose(m.keys_.detach().numpy(), keys, atol=1e-6)
    np.testing.assert_array_equal(m.values_.numpy(), probs[:90])
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    want = s * X @ t.T + alpha * np.exp(-beta * (1 - X @ keys.T)) @ probs[:90]
    np.testing.assert_allclose(m.decision_function(X), want, rtol=1e-4, atol=1e-4)


def test_tip_adapter_f_trains_only_the_keys():
    X, _, probs, text = _data()
    m = _fit("tip_adapter_f", X, probs, text, selection="fixed", lr=1e-2)
    keys0 = X[:90] / np.linalg.norm(X[:90], axis=1, keepdims=True)
    assert np.abs(m.keys_.detach().numpy() - keys0).max() > 1e-3
    np.testing.assert_array_equal(m.values_.numpy(), probs[:90])
    assert m.history_["steps_run"] == m.params["epochs"]


def test_clip_adapter_without_residual_is_zero_shot():
    X, _, probs, text = _data()
    zs = get_method("zero_shot").fit(X, text_weights=text, logit_scale=50.0)
    ad = _fit("clip_adapter", X, probs, text, ratio=0.0)
    assert np.array_equal(zs.predict(X), ad.predict(X))
    np.testing.assert_allclose(zs.decision_function(X), ad.decision_function(X), rtol=1e-5, atol=1e-5)


def test_clip_adapter_learns_and_seed_controls_init():
    X, y, _, text = _data()
    rng = np.random.default_rng(1)
    bad_text = rng.normal(size=text.shape).astype(np.float32)
    before = get_method("zero_shot").fit(X, text_weights=bad_text, logit_scale=50.0).predict(X)
    m = get_method("clip_adapter", ratio=0.8, lr=1e-2, selection="fixed").fit(
        X, y, text_weights=bad_text, logit_scale=50.0)
    assert (m.predict(X) == y).mean() > (before == y).mean() + 0.2
    a = _fit("clip_adapter", X, y, text, seed=0, epochs=0).adapter_[0].weight.detach().numpy()
    b = _fit("clip_adapter", X, y, text, seed=1, epochs=0).adapter_[0].weight.detach().numpy()
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", ["tip_adapter_f", "clip_adapter"])
def test_adapters_need_text_weights(name):
    X, _, probs, _ = _data()
    with pytest.raises(ValueError, match="text_weights"):
        get_method(name).fit(X, probs)


def test_cpl_poe_without_prior_is_cpl_and_prior_pulls_to_zero_shot():
    X, _, probs, text = _data()
    a = _fit("cpl", X, probs, text, selection="fixed", epochs=50, lr=1e-2).predict_proba(X)
    b = _fit("cpl_poe", X, probs, text, selection="fixed", epochs=50, lr=1e-2, prior_weight=0.0).predict_proba(X)
    np.testing.assert_allclose(a, b, atol=1e-5)  # same targets up to float renormalisation
    # wrong, confident weak labels: the zero-shot prior keeps CPL-PoE closer to zero-shot
    wrong = np.roll(np.eye(C, dtype=np.float32)[probs.argmax(1)], 1, axis=1) * 0.6 + 0.4 / C
    zs = get_method("zero_shot").fit(X, text_weights=text, logit_scale=50.0).predict(X)
    cpl = _fit("cpl", X, wrong, text, selection="fixed", epochs=100, lr=1e-2).predict(X)
    poe = _fit("cpl_poe", X, wrong, text, selection="fixed", epochs=100, lr=1e-2).predict(X)
    assert (poe == zs).mean() > (cpl == zs).mean()
