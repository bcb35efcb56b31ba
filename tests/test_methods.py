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

def test_logconf_coefficient_is_burns_warmup():
    """openai/weak-to-strong logconf_loss_fn: coef = step_frac if step_frac <= warmup_frac else 1,
    times aux_coef (defaults 0.5 and 0.1)."""
    from w2sclip.losses import logconf_coef

    assert logconf_coef(0.0) == 0.0
    assert logconf_coef(0.05) == pytest.approx(0.025)
    assert logconf_coef(0.1) == pytest.approx(0.05)
    assert logconf_coef(0.1001) == pytest.approx(0.5)
    assert logconf_coef(0.7) == pytest.approx(0.5)
    assert logconf_coef(0.3, aux_coef=0.8, warmup_frac=0.5) == pytest.approx(0.24)
    assert logconf_coef(0.0, aux_coef=0.3, warmup_frac=0.0) == pytest.approx(0.0)
    assert logconf_coef(0.01, aux_coef=0.3, warmup_frac=0.0) == pytest.approx(0.3)


def _burns_hardened(logits, labels):
    """openai/weak-to-strong weak_to_strong/loss.py logconf_loss_fn's strong_preds (binary)."""
    import torch

    preds = torch.softmax(logits, dim=-1)
    threshold = torch.quantile(preds[:, 0], labels.mean(0)[1])
    return (preds[:, 0] < threshold).long()  # their column 1 is "p0 < threshold"


def test_prior_matched_labels_with_two_classes_are_burns_quantile_threshold():
    import torch

    from w2sclip.losses import prior_matched_labels

    g = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(100):
        n = int(torch.randint(4, 200, (1,), generator=g))
        z = 3 * torch.randn(n, 2, generator=g)
        y = torch.randint(0, 2, (n,), generator=g)
        if y.sum() in (0, n):
            continue
        weak = torch.nn.functional.one_hot(y, 2).float()  # n * prior integral: same counts
        assert torch.equal(prior_matched_labels(z, weak.mean(0)), _burns_hardened(z, weak))
        checked += 1
    assert checked > 80


def test_prior_matched_labels_with_soft_labels_differ_from_burns_by_at_most_one_row():
    import torch

    from w2sclip.losses import prior_matched_labels

    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        n = int(torch.randint(4, 200, (1,), generator=g))
        z = 3 * torch.randn(n, 2, generator=g)
        weak = torch.softmax(2 * torch.randn(n, 2, generator=g), 1)
        ours, theirs = prior_matched_labels(z, weak.mean(0)), _burns_hardened(z, weak)
        assert abs(int(ours.sum()) - int(theirs.sum())) <= 1
        # both are thresholds on p_0: every class-1 row has a lower p_0 than every class-0 row
        p0 = torch.softmax(z, 1)[:, 0]
        if 0 < int(ours.sum()) < n:
            assert p0[ours == 1].max() <= p0[ours == 0].min()


@pytest.mark.parametrize("n,c", [(300, 5), (1000, 24), (2000, 100)])
def test_prior_matched_labels_match_the_prior_with_many_classes(n, c):
    import torch

    from w2sclip.losses import PriorMatcher, prior_counts, prior_matched_labels

    g = torch.Generator().manual_seed(c)
    z = 5 * torch.randn(n, c, generator=g) + 3 * torch.randn(c, generator=g)  # skewed argmax
    prior = torch.softmax(torch.randn(c, generator=g), 0)
    k = prior_counts(prior, n)
    assert int(k.sum()) == n and (k - n * prior).abs().max() < 1
    off = lambda labels: int((torch.bincount(labels, minlength=c) - k).abs().sum()) / 2 / n
    assert off(z.argmax(1)) > 0.2  # the plain argmax is far from the prior
    assert off(prior_matched_labels(z, prior)) < 0.01
    m = PriorMatcher()
    m(z, prior)
    assert off(m(z + 0.01 * torch.randn(n, c, generator=g), prior)) < 0.005  # warm start


@pytest.mark.parametrize("selection", ["fixed", "val_loss"])
def test_logconf_without_confidence_term_equals_cpl(selection):
    X, _, probs, text = _data()
    recipe = {"batch_size": 100, "schedule": "cosine", "max_steps": 0}  # logconf's, on CPL
    a = _fit("cpl", X, probs, text, seed=2, lr=3e-3, epochs=50, selection=selection, **recipe)
    b = _fit("logconf", X, probs, text, seed=2, lr=3e-3, epochs=50, selection=selection, aux_coef=0.0, **recipe)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), rtol=0, atol=1e-6)
    assert a.history_["best_step"] == b.history_["best_step"]


def test_logconf_confidence_term_changes_training():
    X, _, probs, text = _data()
    a = _fit("logconf", X, probs, text, lr=3e-3, epochs=50, selection="fixed", aux_coef=0.0)
    b = _fit("logconf", X, probs, text, lr=3e-3, epochs=50, selection="fixed", aux_coef=0.9)
    assert np.abs(a.decision_function(X) - b.decision_function(X)).max() > 1e-3
    c = _fit("logconf", X, probs, text, lr=3e-3, epochs=50, selection="fixed", aux_coef=0.9, hardening="argmax")
    assert np.abs(c.decision_function(X) - b.decision_function(X)).max() > 1e-3


def test_logconf_uses_the_warmup_during_training():
    from w2sclip.methods.logconf import LogConf

    m = LogConf(max_steps=200)
    seen = []
    m._alpha = (lambda orig: lambda prog: (seen.append(prog), orig(prog))[1])(m._alpha)
    X, _, probs, text = _data()
    m.fit(X, probs, text_weights=text, logit_scale=50.0)
    assert seen == [i / 200 for i in range(200)]  # progress over the budget, one call per step


def test_adaptconf_differs_from_cpl_and_theta_matters():
    X, _, probs, text = _data()
    kw = dict(lr=3e-3, epochs=50, selection="fixed")
    cpl = _fit("cpl", X, probs, text, **kw).decision_function(X)
    lo = _fit("adaptconf", X, probs, text, theta_rel=0.002, **kw).decision_function(X)
    hi = _fit("adaptconf", X, probs, text, theta_rel=0.1, **kw).decision_function(X)
    assert np.abs(cpl - lo).max() > 1e-3 and np.abs(lo - hi).max() > 1e-3


def test_adaptconf_theta_is_relative_to_the_logit_scale():
    """theta = theta_rel * s, so the gate a = sigmoid((cos_weak - cos_max) / theta_rel) depends
    on cosines only, not on the logit scale."""
    from w2sclip.methods.adaptconf import AdaptConf

    X, _, probs, text = _data()
    for s in (20.0, 100.0):
        m = AdaptConf(theta_rel=0.05, max_steps=0).fit(X, probs, text_weights=text, logit_scale=s)
        assert m._theta() == pytest.approx(0.05 * s)


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
    m = _fit("tip_adapter_f", X, probs, text, selection="fixed", lr=1e-2, epochs=None, max_steps=40)
    keys0 = X[:90] / np.linalg.norm(X[:90], axis=1, keepdims=True)
    assert np.abs(m.keys_.detach().numpy() - keys0).max() > 1e-3
    np.testing.assert_array_equal(m.values_.numpy(), probs[:90])
    assert m.history_["stop_step"] == 40 and m.history_["hit_cap"]


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
    m = get_method("clip_adapter", ratio=0.8, lr=1e-2, selection="fixed", epochs=None, max_steps=400).fit(
        X, y, text_weights=bad_text, logit_scale=50.0)
    assert (m.predict(X) == y).mean() > (before == y).mean() + 0.2
    a = _fit("clip_adapter", X, y, text, seed=0, epochs=0).adapter_[0].weight.detach().numpy()
    b = _fit("clip_adapter", X, y, text, seed=1, epochs=0).adapter_[0].weight.detach().numpy()
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("ratio,T", [(0.2, 1.0), (0.6, 2.0)])
def test_clip_adapter_closed_form_gradient_is_autograds(ratio, T):
    import torch

    from w2sclip.losses import kd_loss
    from w2sclip.methods.base import teacher_logits
    from w2sclip.methods.clip_adapter import AdapterGrad

    X, _, probs, text = _data()
    probs = probs.copy()
    probs[0] = np.eye(probs.shape[1])[1]  # a one-hot row: -inf teacher logits
    m = _fit("clip_adapter", X, probs, text, ratio=ratio, T=T, epochs=0)  # initialised, untrained
    x, t = torch.as_tensor(X[:32] * 3.0), teacher_logits(probs[:32])  # rows need not be unit length
    w1, w2 = m.adapter_[0].weight, m.adapter_[2].weight
    kd_loss(m._logits(x), t, T=T).backward()
    auto = [w1.grad.clone(), w2.grad.clone()]
    w1.grad = w2.grad = None
    AdapterGrad(w1, w2, m.text_weights_, m.logit_scale_, ratio, T)(x, t, 0.0, False)
    for got, want in zip((w1.grad, w2.grad), auto):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


@pytest.mark.parametrize("name", ["tip_adapter_f", "clip_adapter"])
def test_adapters_need_text_weights(name):
    X, _, probs, _ = _data()
    with pytest.raises(ValueError, match="text_weights"):
        get_method(name).fit(X, probs)


def test_clip_adapter_raw_features_give_the_same_fit_as_normalised_ones():
    """Gao et al. adapt the raw CLIP feature; a bias-free ReLU MLP is positively homogeneous, so
    rescaling each row changes neither the logits nor the training."""
    X, _, probs, text = _data()
    raw = X * np.random.default_rng(5).uniform(0.5, 20.0, size=(len(X), 1)).astype(np.float32)
    a = _fit("clip_adapter", X, probs, text, epochs=None, max_steps=30, selection="fixed")
    b = _fit("clip_adapter", raw, probs, text, epochs=None, max_steps=30, selection="fixed")
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(raw), rtol=1e-4, atol=1e-4)
    for pa, pb in zip(a.adapter_.parameters(), b.adapter_.parameters()):
        np.testing.assert_allclose(pa.detach().numpy(), pb.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_hard_targets_are_exactly_one_hot_at_any_temperature():
    import torch

    from w2sclip.losses import kd_loss
    from w2sclip.methods.base import target_logits

    t = target_logits(np.array([0, 2]), 345, hard_labels=True)
    assert torch.isinf(t).sum() == 2 * 344
    p = torch.softmax(t / 2.0, dim=1)
    assert torch.equal(p, torch.nn.functional.one_hot(torch.tensor([0, 2]), 345).float())
    z = torch.randn(2, 345, requires_grad=True)
    loss = kd_loss(z, t, T=2.0)
    loss.backward()
    want = 4 * -torch.log_softmax(z.detach() / 2.0, 1)[[0, 1], [0, 2]].mean()
    assert torch.isfinite(z.grad).all() and float(loss) == pytest.approx(float(want), rel=1e-5)


def test_cpl_hard_trains_on_exact_one_hot_targets():
    X, y, _, text = _data()
    a = _fit("cpl_hard", X, np.eye(C, dtype=np.float32)[y], text, T=2.0, max_steps=30)
    assert np.isfinite(a.decision_function(X)).all()
    b = _fit("cpl", X, y, text, T=2.0, max_steps=30, hard_labels=True)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), atol=1e-5)


def test_cpl_poe_without_prior_is_cpl_and_prior_pulls_to_zero_shot():
    X, _, probs, text = _data()
    a = _fit("cpl", X, probs, text, selection="fixed", epochs=50, lr=1e-2).predict_proba(X)
    b = _fit("cpl_poe", X, probs, text, selection="fixed", epochs=50, lr=1e-2, beta=0.0).predict_proba(X)
    np.testing.assert_allclose(a, b, atol=1e-5)  # same targets up to float renormalisation
    # wrong, confident weak labels: the zero-shot prior keeps CPL-PoE closer to zero-shot
    wrong = np.roll(np.eye(C, dtype=np.float32)[probs.argmax(1)], 1, axis=1) * 0.6 + 0.4 / C
    zs = get_method("zero_shot").fit(X, text_weights=text, logit_scale=50.0).predict(X)
    cpl = _fit("cpl", X, wrong, text, selection="fixed", epochs=100, lr=1e-2).predict(X)
    poe = _fit("cpl_poe", X, wrong, text, selection="fixed", epochs=100, lr=1e-2).predict(X)
    assert (poe == zs).mean() > (cpl == zs).mean()


def test_cpl_poe_exponents_follow_product_loss_fn():
    """Targets p ∝ p_weak^alpha * p_zero_shot^beta (product_loss_fn's form, zero-shot prior)."""
    import torch
    import torch.nn.functional as F

    from w2sclip.methods.cpl_poe import CPLPoE

    X, _, probs, text = _data()
    v = F.normalize(torch.as_tensor(X[:10]), dim=1)
    w0 = F.normalize(torch.as_tensor(text), dim=1)
    zs = torch.softmax(50.0 * v @ w0.T, 1)
    for a, b in ((1.0, 1.0), (0.5, 2.0), (2.0, 0.0)):
        m = CPLPoE(alpha=a, beta=b)
        got = m._targets(v, probs[:10], w0, 50.0).exp()
        want = torch.as_tensor(probs[:10]) ** a * zs ** b
        torch.testing.assert_close(got, want / want.sum(1, keepdim=True), rtol=1e-4, atol=1e-6)


def test_coop_starts_from_the_template_ensemble():
    """One context per template; at its initialisation CoOp's class features are the
    normalised mean over templates of the normalised text features (the zero-shot prototypes)."""
    import torch
    import torch.nn.functional as F
    from conftest import _tiny_clip, tiny_prompt_encoder

    from w2sclip.models.strong.openclip import PromptEncoder

    templates = ["a photo of a {}.", "a sketch of a {}.", "an origami {} in the dark."]
    model, tok = _tiny_clip(D)
    with torch.no_grad():
        per = [F.normalize(model.encode_text(tok([t.format(c) for c in CLASSNAMES])), dim=1) for t in templates]
    want = F.normalize(torch.stack(per).mean(0), dim=1).numpy()
    enc = PromptEncoder(model, tok, CLASSNAMES, templates)
    X, _, probs, _ = _data()
    m = get_method("coop_ensemble", epochs=0).fit(X, probs, logit_scale=50.0, prompt_encoder=enc)
    assert m.templates_ == templates and len(m.ctx_) == 3 and m.ctx_[0].shape[0] == 4
    np.testing.assert_allclose(m.text_features_.numpy(), want, atol=1e-5)
    simple = get_method("coop", epochs=0).fit(
        X, probs, logit_scale=50.0, prompt_encoder=PromptEncoder(model, tok, CLASSNAMES, templates))
    np.testing.assert_allclose(simple.text_features_.numpy(), per[0].numpy(), atol=1e-5)
    with pytest.warns(UserWarning, match="no dataset templates"):
        get_method("coop_ensemble", epochs=0).fit(X, probs, logit_scale=50.0,
                                             prompt_encoder=tiny_prompt_encoder(CLASSNAMES, D))
    with pytest.raises(ValueError, match="before the class name"):
        PromptEncoder(model, tok, CLASSNAMES, ["{} texture."]).prepare_templates(["{} texture."])


def test_coop_trains_with_sgd_as_coop_configs():
    m = get_method("coop")
    p = m.params
    assert (p["optimizer"], p["lr"], p["momentum"], p["weight_decay"], p["batch_size"]) == ("sgd", 2e-3, 0.9, 5e-4, 32)
    assert (p["schedule"], p["schedule_unit"], p["warmup_epochs"], p["warmup_lr"]) == ("cosine_dassl", "epoch", 1.0, 1e-5)
    assert (p["epochs"], p["selection"], p["templates"]) == (200, "fixed", "simple")
