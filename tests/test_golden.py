"""Golden outputs: every method's probabilities on a fixed small problem at a fixed seed.

A change that moves any method's numbers fails here. If the change is intended, regenerate
with ``W2SCLIP_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py`` and say why in the commit.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from w2sclip.methods import METHODS, get_method

GOLDEN = Path(__file__).parent / "golden" / "methods.json"
N, D, C = 80, 12, 4


def _problem():
    rng = np.random.default_rng(1234)
    centers = rng.normal(size=(C, D))
    y = rng.integers(C, size=N)
    X = centers[y] + 0.9 * rng.normal(size=(N, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    text = centers + 0.7 * rng.normal(size=(C, D))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    noisy = np.where(rng.random(N) < 0.3, rng.integers(C, size=N), y)  # a 70 %-accurate weak teacher
    logits = 2.5 * np.eye(C)[noisy] + 0.5 * rng.normal(size=(N, C))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return X.astype(np.float32), probs.astype(np.float32), text.astype(np.float32)


def _outputs(name):
    X, probs, text = _problem()
    extra = {}
    if METHODS[name].needs_prompt_encoder:
        from conftest import tiny_prompt_encoder

        extra["prompt_encoder"] = tiny_prompt_encoder(["cat", "dog", "car", "tree"], D)
    m = get_method(name, seed=7).fit(X[:50], probs[:50], text_weights=text, logit_scale=30.0,
                                     X_val=X[50:60], y_val=probs[50:60], **extra)
    return np.round(m.predict_proba(X[60:]).astype(np.float64), 6)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_golden_outputs(name):
    stored = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    out = _outputs(name)
    if os.environ.get("W2SCLIP_UPDATE_GOLDEN"):
        stored[name] = out.tolist()
        GOLDEN.write_text(json.dumps(stored, indent=0, sort_keys=True))
        return
    if name not in stored:
        pytest.fail(f"no golden output for {name!r}; create it with W2SCLIP_UPDATE_GOLDEN=1 "
                    f"python -m pytest tests/test_golden.py")
    want = np.asarray(stored[name])
    # logconf hardens the student's own predictions (argmax plus prior-matching biases) at every
    # step: a float rounding that differs between CPUs (AVX2 vs AVX-512 kernels) can flip one
    # hardened label and move its probabilities by ~1e-3 (1.4e-3 on an AMD EPYC, 2026-12-05);
    # its predictions must still be the same
    np.testing.assert_allclose(out, want, atol=LOOSER.get(name, 2e-4))
    assert np.array_equal(out.argmax(1), want.argmax(1))


LOOSER = {"logconf": 5e-3}
"""Methods whose golden outputs move across CPUs by more than 2e-4 (see test_golden_outputs)."""
