"""Contract over every registered method: it learns from an informative teacher without collapsing,
records its budget, and validates its hyper-parameters. Adding a method needs no edit here."""

import numpy as np
import pytest
import torch

from w2sclip.methods import METHODS, get_method
from w2sclip.methods import check_params
from w2sclip.methods.training import BUDGET

TRAINED = sorted(n for n, c in METHODS.items() if c.trains)
CLASSES = ["circle", "square", "triangle", "star", "heart", "arrow", "house", "tree"]
D, WIDTH = 32, 48
NOISE, CLUTTER = 1.5, 1.5
def _length(name, steps):
    """Overrides that make a fit ``steps`` optimiser steps long, whatever its recipe's length
    unit (epochs or steps); ``steps=0`` is the untrained start (zero-shot for Tip-Adapter). The
    learning test trains by each recipe's own defaults, length included."""
    if not METHODS[name].trains:
        return {}
    if name == "tip_adapter":  # trains nothing: its search is what it learns
        return {"alpha": 0.0, "search_hp": False} if steps == 0 else {}
    extra = {"alpha": 0.0, "search_hp": False} if steps == 0 and "search_hp" in METHODS[name].defaults else {}
    return {"epochs": None, "max_steps": steps, **extra}


class FakePromptEncoder(torch.nn.Module):
    """A small, deterministic stand-in for CLIP's text tower behind CoOp's prompt-encoder API.

    Words embed at CLIP's token-embedding scale (std 0.017, one fixed random vector per word);
    a prompt ``[context words] <class words>`` is mean-pooled, layer-normalised (as CLIP's
    ln_final, so the output is scale-free in the embeddings, as CLIP's is) and projected to D:
    ``feature = normalize(P . LN(mean(ctx) + mean(class words)))``. Like the real tower it is
    differentiable in the context and its class features are distinct.
    """

    def __init__(self, classnames, templates=None):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.classnames, self.templates = list(classnames), templates
        self.P = torch.randn(D, WIDTH, generator=g) / WIDTH ** 0.5
        self.names = torch.stack([self._words(c).mean(0) for c in self.classnames])
        self.n_ctx = 0

    @staticmethod
    def _words(text):
        rows = []
        for w in text.replace(".", " ").split():
            g = torch.Generator().manual_seed(sum(ord(ch) * 31 ** i for i, ch in enumerate(w)) % 2 ** 31)
            rows.append(0.017 * torch.randn(WIDTH, generator=g))
        return torch.stack(rows)

    def prepare_templates(self, templates):
        ctxs = [self._words(t.split("{}")[0]) for t in templates]
        self.n_ctx = ctxs[0].shape[0]
        return ctxs

    def forward(self, ctxs):
        ctxs = [ctxs] if isinstance(ctxs, torch.Tensor) else list(ctxs)
        feats = []
        for ctx in ctxs:
            h = torch.nn.functional.layer_norm(ctx.mean(0) + self.names, (WIDTH,))
            feats.append(torch.nn.functional.normalize(h @ self.P.T, dim=1))
        return torch.nn.functional.normalize(torch.stack(feats).mean(0), dim=1)


@pytest.fixture(scope="module")
def task():
    """A domain shift the text prototypes do not know: image features are the fake tower's class
    features under another context (a style the zero-shot prompt "a photo of a {}." does not
    match) plus a common clutter direction and noise; the teacher is a sharp nearest-centroid classifier on the features
    themselves (so a head that learns from it can agree with it), clearly better than zero-shot."""
    enc = FakePromptEncoder(CLASSES)
    with torch.no_grad():
        text = enc(enc.prepare_templates(["a photo of a {}."])).numpy()
        shifted = enc(enc.prepare_templates(["an infograph doodle with text of a {}."])).numpy()
    rng = np.random.default_rng(0)
    n = 480
    y = rng.integers(len(CLASSES), size=n)
    clutter = rng.normal(size=D)
    X = shifted[y] + CLUTTER * clutter / np.linalg.norm(clutter) + NOISE * rng.normal(size=(n, D)) / np.sqrt(D)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    centres = np.stack([X[y == c].mean(0) for c in range(len(CLASSES))])
    z = 40.0 * X @ (centres / np.linalg.norm(centres, axis=1, keepdims=True)).T
    p = np.exp(z - z.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True)).astype(np.float32)
    fit, val, test = np.arange(0, 240), np.arange(240, 320), np.arange(320, n)
    return {"X": X, "p": p, "y": y, "text": text, "fit": fit, "val": val, "test": test, "scale": 30.0}


def _fit(name, task, **params):
    extra = {}
    if METHODS[name].needs_prompt_encoder:
        extra["prompt_encoder"] = FakePromptEncoder(CLASSES, ["a photo of a {}."])
    X, p, fit, val = task["X"], task["p"], task["fit"], task["val"]
    return get_method(name, **params).fit(X[fit], p[fit], text_weights=task["text"], logit_scale=task["scale"],
                                          X_val=X[val], y_val=p[val], **extra)


def _agreement(m, task):
    X, p, test = task["X"], task["p"], task["test"]
    return float((m.predict(X[test]) == p[test].argmax(1)).mean())


def _class_features(m) -> np.ndarray:
    """The fitted head's class vectors (C, D): whatever the logits are a cosine or dot product with."""
    for attr in ("text_features_", "prototypes_", "coef_", "text_weights_"):
        if hasattr(m, attr):
            w = getattr(m, attr)
            return np.asarray(w.detach() if hasattr(w, "detach") else w, dtype=np.float64)
    raise AssertionError(f"{type(m).__name__}: no class features found")


def _mean_offdiag_cosine(w: np.ndarray) -> float:
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    s = w @ w.T
    return float((s.sum() - np.trace(s)) / (len(s) * (len(s) - 1)))


def test_the_task_is_informative(task):
    X, p, y, test = task["X"], task["p"], task["y"], task["test"]
    zero_shot = (X[test] @ task["text"].T).argmax(1)
    teacher = p[test].argmax(1)
    assert (teacher == y[test]).mean() > (zero_shot == y[test]).mean() + 0.15
    assert (zero_shot == teacher).mean() < 0.8


@pytest.mark.parametrize("name", sorted(METHODS))
def test_learns_from_an_informative_teacher_without_collapse(name, task):
    start = _fit(name, task, **_length(name, 0))
    m = _fit(name, task)  # its own recipe's length
    before, after = _agreement(start, task), _agreement(m, task)
    if METHODS[name].grid:  # trained by gradient
        assert after > before + 0.05, f"{name}: agreement with the teacher {before:.3f} -> {after:.3f}"
    elif METHODS[name].trains:  # searched, not trained (tip_adapter): no worse than its start
        assert after >= before - 0.05, f"{name}: agreement with the teacher {before:.3f} -> {after:.3f}"
    else:
        assert after == before
    # class features stay distinct: no collapse onto one direction
    cos = _mean_offdiag_cosine(_class_features(m))
    assert cos < 0.9, f"{name}: mean off-diagonal cosine of the class features {cos:.3f}"
    probs = m.predict_proba(task["X"][task["test"]])
    assert probs.max(1).mean() > 1.5 / len(CLASSES), f"{name}: predictions are near uniform"
    assert len(np.unique(probs.argmax(1))) >= len(CLASSES) // 2


@pytest.mark.parametrize("name", TRAINED)
def test_history_records_the_budget(name, task):
    m = _fit(name, task, epochs=None, max_steps=40, eval_every=5, patience=2, selection="val_loss")
    h = m.history_
    assert {"stop_step", "best_step", "hit_cap"} <= set(h)
    assert 0 <= h["best_step"] <= h["stop_step"] <= 40 and isinstance(h["hit_cap"], bool)
    assert h["hit_cap"] == (h["stop_step"] == 40)
    m = _fit(name, task, epochs=None, max_steps=12, selection="fixed")
    assert m.history_["stop_step"] == 12 and m.history_["hit_cap"] is True


@pytest.mark.parametrize("name", ["cpl", "cpl_hard", "cpl_poe"])
def test_our_own_recipes_use_the_one_budget(name):
    """The methods whose optimiser is ours stop early by ``BUDGET``; the baselines run their authors'."""
    d = METHODS[name].defaults
    assert d["max_steps"] == BUDGET.max_steps and d["eval_every"] == BUDGET.eval_every
    assert d["patience"] == BUDGET.patience and d["epochs"] is None and d["selection"] == "val_loss"


@pytest.mark.parametrize("name", TRAINED)
def test_every_trained_method_has_the_same_size_of_grid_centred_on_its_published_lr(name):
    grid = METHODS[name].grid
    if name == "tip_adapter":  # trains nothing: no learning rate to tune, its own search only
        assert grid == {}
        return
    assert list(grid) == ["lr"] and len(grid["lr"]) == 3
    lo, mid, hi = grid["lr"]
    assert mid == METHODS[name].defaults["lr"] and lo == pytest.approx(mid * 0.3, rel=0.12)
    assert hi == pytest.approx(mid * 3)


# -- hyper-parameter constraints ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_default_key_has_a_constraint_its_default_and_grid_satisfy(name):
    cls = METHODS[name]
    assert set(cls.constraints) == set(cls.defaults)
    check_params(name, cls.defaults)
    for key, values in cls.grid.items():
        for v in values:
            check_params(name, {key: v})


def _bad_value(constraint_list):
    """A value no constraint of a key accepts, and what its message should mention."""
    kinds = {type(c).__name__ for c in (constraint_list if isinstance(constraint_list, list) else [constraint_list])}
    return "ten" if kinds & {"Interval", "Options"} else 3.5


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_wrong_type_fails_naming_method_and_key(name):
    cls = METHODS[name]
    for key, cons in cls.constraints.items():
        bad = _bad_value(cons)
        with pytest.raises(ValueError, match=rf"^method_params\.{name}\.{key}: must be .*got"):
            check_params(name, {key: bad})
        with pytest.raises(ValueError, match=rf"{name}\.{key}: must be"):
            get_method(name, **{key: bad})


@pytest.mark.parametrize("key,value,message", [
    ("lr", -1, r"method_params\.cpl\.lr: must be a float in \(0, inf\), got -1$"),
    ("lr", 0.0, r"got 0\.0$"),
    ("epochs", "ten", r"method_params\.cpl\.epochs: must be None or an int in \[0, inf\), got 'ten' \(str\)"),
    ("max_steps", True, r"max_steps: must be an int in \[0, inf\), got True \(bool\)"),
    ("max_steps", 10.0, r"max_steps: must be an int"),
    ("seed", -5, r"seed: must be an int in \[0, 4294967295\]"),
    ("seed", 2 ** 67, r"seed: must be an int in \[0, 4294967295\]"),
    ("selection", "best", r"selection: must be one of 'val_loss', 'val_acc', 'fixed', got 'best'"),
    ("learn_scale", 1, r"learn_scale: must be a bool, got 1"),
    ("T", float("nan"), r"T: must be a float in \(0, inf\)"),
    ("templates", "imagenet", r"templates: must be one of 'dataset'"),
])
def test_check_params_messages(key, value, message):
    with pytest.raises(ValueError, match=message):
        check_params("cpl", {key: value})


def test_check_params_accepts_ints_for_floats_and_fills_defaults():
    out = check_params("cpl", {"lr": 1, "epochs": 5})
    assert out["lr"] == 1 and out["epochs"] == 5 and out["T"] == METHODS["cpl"].defaults["T"]
    import numpy

    check_params("cpl", {"lr": numpy.float32(0.1), "max_steps": numpy.int64(3)})


def test_check_params_unknown_method_and_key():
    with pytest.raises(ValueError, match="unknown method 'cpll'; valid: .*cpl"):
        check_params("cpll", {})
    with pytest.raises(ValueError, match=r"method_params\.cpl: unknown hyper-parameter\(s\) \['lrr'\]; valid: .*lr"):
        check_params("cpl", {"lrr": 1.0})
    with pytest.raises(ValueError, match=r"method_params\.cpl: must be a mapping"):
        check_params("cpl", [1, 2])


@pytest.mark.parametrize("name,key,value", [
    ("clip_adapter", "ratio", 1.5), ("clip_adapter", "reduction", 0), ("logconf", "aux_coef", -0.1),
    ("logconf", "hardening", "softmax"), ("adaptconf", "theta_rel", 0.0), ("cpl_poe", "beta", -1.0),
    ("tip_adapter_f", "optimizer", "lbfgs"), ("coop", "momentum", 1.0), ("coop", "batch_size", -1),
])
def test_out_of_range_values_fail(name, key, value):
    with pytest.raises(ValueError, match=rf"method_params\.{name}\.{key}: must be"):
        check_params(name, {key: value})
