"""The analytic fast path of the linear heads against autograd, Adam against torch's, and
training from memory-mapped features."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from w2sclip.losses import adaptconf_loss, kd_loss, logconf_coef, logconf_loss, prior_matched_labels
from w2sclip.methods import get_method, linear_head
from w2sclip.methods.linear_head import LinearHeadGrad
from w2sclip.methods.training import SGD, Adam, lr_at

N, D, C = 64, 12, 7


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    teacher = 3 * torch.randn(N, C, generator=g, dtype=torch.float64)
    W = torch.randn(C, D, generator=g, dtype=torch.float64)
    return x, teacher, W


def _prior_labels(z, prior):
    return prior_matched_labels(z, prior)


def _autograd_loss(loss, z, teacher, T, progress):
    if loss == "kd":
        return kd_loss(z, teacher, T=T)
    if loss in ("logconf", "logconf_prior"):
        p = F.log_softmax(teacher, dim=1).exp()
        hard = _prior_labels(z, p.mean(0)) if loss == "logconf_prior" else None
        return logconf_loss(z, p, logconf_coef(progress, 0.5, 0.05), hard_labels=hard)
    return adaptconf_loss(z, teacher, theta=0.5, T=T)


def _step(loss, W, T, **kw):
    """The analytic step of ``loss`` (``logconf_prior``: logconf with prior-matched hardening)."""
    name = "logconf" if loss == "logconf_prior" else loss
    return LinearHeadGrad(W, loss=name, T=T, alpha_fn=lambda p: logconf_coef(p, 0.5, 0.05),
                          matcher=_prior_labels if loss == "logconf_prior" else None, **kw)


@pytest.mark.parametrize("chunk", [2048, 10])  # one block of rows, or several
@pytest.mark.parametrize("full_batch", [True, False])
@pytest.mark.parametrize("loss,T", [("kd", 1.0), ("kd", 2.0), ("logconf", 1.0), ("logconf_prior", 1.0),
                                    ("adaptconf", 1.0), ("adaptconf", 2.0)])
def test_cosine_head_gradients_match_autograd(loss, T, full_batch, chunk, monkeypatch):
    monkeypatch.setattr(linear_head, "BLOCK_ROWS", chunk)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    torch.set_default_dtype(torch.float64)  # compare at double precision: 1e-10, not rounding
    try:
        x, teacher, W0 = _problem()
        v = F.normalize(x, dim=1)
        W = W0.clone().requires_grad_()
        log_s = torch.tensor(np.log(20.0)).requires_grad_()
        z = log_s.exp() * v @ F.normalize(W, dim=1).T
        _autograd_loss(loss, z, teacher, T, 0.1).backward()
        Wf, sf = W0.clone().requires_grad_(), torch.tensor(np.log(20.0)).requires_grad_()
        step = _step(loss, Wf, T, log_scale=sf)
        for _ in range(2):  # the second call uses what a fixed batch caches
            step(v, teacher, 0.1, full_batch)
            torch.testing.assert_close(Wf.grad, W.grad, rtol=1e-8, atol=1e-10)
            torch.testing.assert_close(sf.grad, log_s.grad, rtol=1e-8, atol=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("chunk", [2048, 10])
@pytest.mark.parametrize("full_batch", [True, False])
@pytest.mark.parametrize("loss,T", [("kd", 1.0), ("kd", 3.0), ("logconf", 1.0), ("logconf_prior", 1.0),
                                    ("adaptconf", 1.0)])
def test_linear_head_gradients_match_autograd(loss, T, full_batch, chunk, monkeypatch):
    monkeypatch.setattr(linear_head, "BLOCK_ROWS", chunk)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    torch.set_default_dtype(torch.float64)
    try:
        x, teacher, W0 = _problem(1)
        b0 = torch.randn(C)
        W, b = W0.clone().requires_grad_(), b0.clone().requires_grad_()
        _autograd_loss(loss, x @ W.T + b, teacher, T, 0.5).backward()
        Wf, bf = W0.clone().requires_grad_(), b0.clone().requires_grad_()
        step = _step(loss, Wf, T, bias=bf)
        for _ in range(2):
            step(x, teacher, 0.5, full_batch)
            torch.testing.assert_close(Wf.grad, W.grad, rtol=1e-8, atol=1e-10)
            torch.testing.assert_close(bf.grad, b.grad, rtol=1e-8, atol=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("loss,T", [("kd", 1.0), ("kd", 2.0), ("adaptconf", 2.0), ("logconf_prior", 1.0)])
def test_exact_one_hot_teachers_give_autograd_gradients(loss, T):
    """Hard targets as teacher logits with -inf off-class (base.teacher_logits of one-hot)."""
    torch.set_default_dtype(torch.float64)
    try:
        x, _, W0 = _problem(4)
        v = F.normalize(x, dim=1)
        y = torch.arange(N) % C
        teacher = torch.log(F.one_hot(y, C).double())
        W = W0.clone().requires_grad_()
        loss_value = _autograd_loss(loss, 20.0 * v @ F.normalize(W, dim=1).T, teacher, T, 0.5)
        loss_value.backward()
        assert torch.isfinite(loss_value) and torch.isfinite(W.grad).all()
        Wf = W0.clone().requires_grad_()
        _step(loss, Wf, T, log_scale=torch.tensor(np.log(20.0)))(v, teacher, 0.5, True)
        torch.testing.assert_close(Wf.grad, W.grad, rtol=1e-8, atol=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


def test_adaptconf_relative_theta_is_theta_times_scale():
    torch.set_default_dtype(torch.float64)
    try:
        x, teacher, W0 = _problem(5)
        v = F.normalize(x, dim=1)
        W = W0.clone().requires_grad_()
        adaptconf_loss(30.0 * v @ F.normalize(W, dim=1).T, teacher, theta=0.02 * 30.0).backward()
        Wf = W0.clone().requires_grad_()
        LinearHeadGrad(Wf, log_scale=torch.tensor(np.log(30.0)), loss="adaptconf", theta=0.02,
                       theta_relative=True)(v, teacher, 0.0, False)
        torch.testing.assert_close(Wf.grad, W.grad, rtol=1e-8, atol=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


def test_float32_gradients_agree_with_autograd_to_rounding():
    x, teacher, W0 = (t.float() for t in _problem(2))
    v = F.normalize(x, dim=1)
    W = W0.clone().requires_grad_()
    kd_loss(30.0 * v @ F.normalize(W, dim=1).T, teacher).backward()
    Wf = W0.clone().requires_grad_()
    LinearHeadGrad(Wf, log_scale=torch.tensor(float(np.log(30.0))))(v, teacher, 0.0, True)
    torch.testing.assert_close(Wf.grad, W.grad, rtol=1e-5, atol=1e-6)


def test_unknown_loss_is_clear():
    with pytest.raises(ValueError, match="valid: kd"):
        LinearHeadGrad(torch.zeros(2, 2), loss="mse")


def _optimizers(kind, weight_decay, a, b):
    if kind == "adam":
        return Adam(a, lr=1e-2, weight_decay=weight_decay), torch.optim.Adam(b, lr=1e-2, weight_decay=weight_decay)
    if kind == "adamw":
        return (Adam(a, lr=1e-2, weight_decay=weight_decay, eps=1e-4, decoupled=True),
                torch.optim.AdamW(b, lr=1e-2, weight_decay=weight_decay, eps=1e-4))
    return (SGD(a, lr=2e-3, momentum=0.9, weight_decay=weight_decay),
            torch.optim.SGD(b, lr=2e-3, momentum=0.9, weight_decay=weight_decay))


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_optimizers_are_torch_optimizers_bit_for_bit(kind, weight_decay):
    """Including a step size changed between steps (a schedule), as torch's param_groups lr."""
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(5, 3, generator=g).requires_grad_(), torch.randn(3, generator=g).requires_grad_()]
    b = [p.detach().clone().requires_grad_() for p in a]
    ours, ref = _optimizers(kind, weight_decay, a, b)
    base = ours.lr
    for i in range(20):
        ours.lr = ref.param_groups[0]["lr"] = lr_at(i, base, 20, "cosine_dassl", 2, 1e-5)
        grads = [torch.randn(p.shape, generator=g) for p in a]
        for p, q, gr in zip(a, b, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        ours.step()
        ref.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def test_lr_schedule_cosine_is_torch_cosine_annealing_stepped_per_unit():
    assert [lr_at(i, 0.1, 10) for i in range(3)] == [0.1] * 3
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 8)
    for i in range(8):
        assert lr_at(i, 0.1, 8, "cosine") == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()


def test_lr_schedule_cosine_dassl_is_constant_warmup_then_torch_cosine():
    """Dassl's ``ConstantWarmupScheduler(successor=CosineAnnealingLR(T_max=E), warmup_epoch=1)``
    (``dassl/optim/lr_scheduler.py`` l. 10-54): the warm-up epoch at cons_lr; the first
    ``step()`` ends the warm-up and hands over the successor's lr at its own count 0
    (WARMUP_RECOUNT), the full lr; every later ``step()`` steps the successor."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.002)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    expected = [1e-5, opt.param_groups[0]["lr"]]
    for _ in range(8):  # the end of epochs 1..8: the successor steps
        opt.step()
        successor.step()
        expected.append(opt.param_groups[0]["lr"])
    got = [lr_at(e, 0.002, 10, "cosine_dassl", 1, 1e-5) for e in range(10)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_lr_schedule_cosine_timm_is_timms_cosine_lr_scheduler():
    from timm.scheduler import CosineLRScheduler

    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([p], lr=2e-3)
    sched = CosineLRScheduler(opt, t_initial=20, lr_min=1e-6, warmup_t=5, warmup_lr_init=1e-4)
    for e in range(20):
        sched.step(e)
        assert lr_at(e, 2e-3, 20, "cosine_timm", 5, 1e-4, 1e-6) == pytest.approx(opt.param_groups[0]["lr"],
                                                                                  rel=1e-9)


def _data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(C, D))
    y = rng.integers(C, size=300)
    X = (centers[y] + rng.normal(size=(300, D))).astype(np.float32)
    logits = 2 * np.eye(C)[y] + rng.normal(size=(300, C))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    return X, probs, centers.astype(np.float32)


@pytest.mark.parametrize("name", ["cpl", "cpl_poe", "kd_lp", "logconf", "adaptconf"])
def test_minibatch_from_memory_map_equals_in_memory(tmp_path, name):
    X, probs, text = _data()
    for a, f in ((X, "x.npy"), (probs, "p.npy")):
        np.lib.format.open_memmap(tmp_path / f, mode="w+", dtype=np.float32, shape=a.shape)[:] = a
    Xm, Pm = np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "p.npy", mmap_mode="r")
    kw = {"text_weights": text, "logit_scale": 20.0, "X_val": Xm[240:], "y_val": Pm[240:]}
    a = get_method(name, batch_size=64, epochs=3, seed=1).fit(Xm[:240], Pm[:240], **kw)
    b = get_method(name, batch_size=64, epochs=3, seed=1).fit(X[:240], probs[:240], **kw)
    assert a.history_["stop_step"] == (9 if a.params.get("drop_last") else 12)  # 240 = 3 x 64 + 48
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))


@pytest.mark.parametrize("batch_size", [0, 70])
@pytest.mark.parametrize("name", ["cpl", "cpl_hard", "cpl_poe", "kd_lp", "logconf", "adaptconf"])
def test_fast_path_trains_like_autograd(name, batch_size):
    X, probs, text = _data()
    kw = {"text_weights": text, "logit_scale": 20.0, "X_val": X[240:], "y_val": probs[240:]}
    params = {"batch_size": batch_size, "epochs": 30, "lr": 3e-3, "seed": 2}
    fast = get_method(name, **params).fit(X[:240], probs[:240], **kw)
    slow = get_method(name, **params)
    slow._grad = lambda: None  # no step_fn: train_head backpropagates through _loss
    slow.fit(X[:240], probs[:240], **kw)
    assert fast.history_["best_step"] == slow.history_["best_step"]
    assert fast.history_["stop_step"] == slow.history_["stop_step"]
    np.testing.assert_allclose(fast.predict_proba(X), slow.predict_proba(X), atol=1e-4)


def test_check_features_keeps_memory_maps_mapped(tmp_path):
    from w2sclip.methods.base import check_features, check_targets

    X, probs, _ = _data()
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "p.npy", probs)
    Xm, Pm = np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "p.npy", mmap_mode="r")
    assert np.shares_memory(check_features(Xm), Xm)
    assert np.shares_memory(check_targets(Pm, C)[0], Pm)
    with pytest.raises(ValueError, match="classes"):
        check_targets(Pm, C + 1)


def test_wide_logits_stay_out_of_subnormals_and_keep_the_gradient():
    """CLIP's scale 100 spreads cosine logits over 200: the softmax must not produce subnormal
    floats (slow on CPUs) and the gradient must still be autograd's."""
    x, teacher, W0 = (t.float() for t in _problem(3))
    v = F.normalize(x, dim=1)
    v[:, 0] += 3.0  # correlated rows: wide logit spreads
    v = F.normalize(v, dim=1)
    W0[0] = v[0]  # one class right on a sample: its logit is the scale itself
    W = W0.clone().requires_grad_()
    kd_loss(300.0 * v @ F.normalize(W, dim=1).T, teacher).backward()
    Wf = W0.clone().requires_grad_()
    step = LinearHeadGrad(Wf, log_scale=torch.tensor(float(np.log(300.0))))
    step(v, teacher, 0.0, False)
    P = step._buffers["p"]
    tiny = torch.finfo(torch.float32).tiny
    assert not ((P > 0) & (P < tiny)).any()
    z = 300.0 * v @ F.normalize(W0, dim=1).T
    assert (z.amax(1) - z.amin(1)).max() > 100  # the case is really wide
    torch.testing.assert_close(Wf.grad, W.grad, rtol=1e-4, atol=1e-5)
