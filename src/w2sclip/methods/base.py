"""The estimator shape every method follows (scikit-learn style, PROTOCOL.md sections 3-4).

``__init__`` only stores keyword hyper-parameters (unknown names raise, listing the valid ones);
``fit(X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None)`` takes image
features X (N, D) and targets y as class indices (N,) or probabilities (N, C); learned state
ends in ``_``; ``predict_proba`` (N, C) and ``predict`` (N,).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Optional

import numpy as np
import torch


class NotFittedError(RuntimeError):
    """A method was used for prediction before ``fit``."""


def as_probs(y, num_classes: Optional[int] = None) -> np.ndarray:
    """Class indices (N,) -> one-hot (N, C); probabilities (N, C) are checked and returned."""
    y = np.asarray(y)
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"hard labels must be integers, got dtype {y.dtype}")
        c = num_classes if num_classes is not None else int(y.max()) + 1
        if y.min() < 0 or y.max() >= c:
            raise ValueError(f"labels must lie in [0, {c}), got range [{y.min()}, {y.max()}]")
        return np.eye(c, dtype=np.float32)[y]
    if y.ndim != 2:
        raise ValueError(f"targets must be class indices (N,) or probabilities (N, C), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("targets contain NaN or infinite values; check the weak model's outputs")
    if (y < -1e-6).any() or not np.allclose(y.sum(1), 1.0, atol=1e-3):
        raise ValueError("soft targets must be probabilities: non-negative rows summing to 1 "
                         "(apply softmax to logits first)")
    return y.astype(np.float32)


def hard(Y: np.ndarray) -> np.ndarray:
    """One-hot of the argmax of probabilities (N, C)."""
    return np.eye(Y.shape[1], dtype=np.float32)[Y.argmax(1)]


def teacher_logits(probs: np.ndarray) -> torch.Tensor:
    """Log-probabilities: logits whose softmax is ``probs`` (zeros clamped at 1e-8)."""
    return torch.log(torch.as_tensor(probs).clamp_min(1e-8))


def target_logits(y, num_classes: int, hard_labels: bool = False) -> torch.Tensor:
    """Teacher logits (N, C) to distil from: targets as in ``as_probs``, one-hot when ``hard_labels``."""
    Y = as_probs(y, num_classes)
    return teacher_logits(hard(Y) if hard_labels else Y)


def check_features(X, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{name} must be features of shape (N, D), got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinite values; re-extract the features "
                         f"(delete the cache entry) and check the model's precision")
    return X


class Method:
    """Base class: hyper-parameter handling, fitted-state check, probability outputs."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    needs_text: ClassVar[bool] = False
    needs_prompt_encoder: ClassVar[bool] = False
    """True for methods whose ``fit`` runs the text encoder (takes ``prompt_encoder=``)."""
    defaults: ClassVar[dict[str, Any]] = {}
    grid: ClassVar[dict[str, list]] = {}
    """Hyper-parameter values model selection may try (PROTOCOL.md section 6)."""
    # A ``templates`` hyper-parameter (methods initialised from text) names the prompt-template
    # set the caller builds ``text_weights`` from (``models.strong.openclip.TEMPLATE_SETS``).

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown hyper-parameter(s) {unknown}; "
                             f"valid: {sorted(self.defaults)}")
        self.params = {**self.defaults, **params}

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def clone(self, **params: Any) -> "Method":
        return type(self)(**{**self.params, **params})

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if self.defaults.get(k) != v}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # -- to implement -------------------------------------------------------------------------
    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None) -> "Method":
        raise NotImplementedError

    def decision_function(self, X) -> np.ndarray:
        """Logits (N, C)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X, y) first")

    def _text(self, text_weights, logit_scale) -> tuple[torch.Tensor, float]:
        if text_weights is None:
            raise ValueError(f"{self.name} needs text_weights (C, D): the CLIP text embeddings of "
                             f"the class prompts (w2sclip.models.strong.text_weights)")
        w = torch.as_tensor(np.asarray(text_weights, dtype=np.float32))
        return torch.nn.functional.normalize(w, dim=1), float(logit_scale or 100.0)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, C)."""
        z = torch.as_tensor(self.decision_function(X))
        return torch.softmax(z.double(), dim=1).float().numpy()

    def predict(self, X) -> np.ndarray:
        """Class indices (N,)."""
        return np.asarray(self.decision_function(X)).argmax(1)

    def copy(self) -> "Method":
        return copy.deepcopy(self)
