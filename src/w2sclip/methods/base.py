"""The estimator shape every method follows (scikit-learn style, PROTOCOL.md sections 3-4).

``__init__`` only stores keyword hyper-parameters (unknown names raise, listing the valid ones);
``fit(X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None)`` takes image
features X (N, D) and targets y as class indices (N,) or probabilities (N, C); learned state
ends in ``_``; ``predict_proba`` (N, C) and ``predict`` (N,).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.losses import kd_loss
from w2sclip.methods.params import validate


class NotFittedError(RuntimeError):
    """A method was used for prediction before ``fit``."""


BLOCK_ELEMENTS = 1 << 22
"""Elements per block (16 MB of float32) when checking arrays that may be memory-mapped."""


def _blocks(a: np.ndarray):
    rows = max(1, BLOCK_ELEMENTS // max(1, int(np.prod(a.shape[1:]))))
    return (a[i:i + rows] for i in range(0, len(a), rows))


def check_targets(y, num_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Validate targets without copying them; returns ``(y, C)``.

    ``y`` is class indices (N,) or probabilities (N, C) (float32 and memory-mapped arrays are
    returned as they are; checks run block by block). ``C`` is ``num_classes``, else inferred.
    """
    y = np.asarray(y)
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"hard labels must be integers, got dtype {y.dtype}")
        lo, hi = (int(y.min()), int(y.max())) if len(y) else (0, -1)
        c = num_classes if num_classes is not None else hi + 1
        if lo < 0 or hi >= c:
            raise ValueError(f"labels must lie in [0, {c}), got range [{lo}, {hi}]")
        return y, c
    if y.ndim != 2:
        raise ValueError(f"targets must be class indices (N,) or probabilities (N, C), got shape {y.shape}")
    if num_classes is not None and y.shape[1] != num_classes:
        raise ValueError(f"soft targets have {y.shape[1]} classes but the text weights have "
                         f"{num_classes}; pass targets over the same class list")
    for block in _blocks(y):
        sums = block.sum(1)  # NaN or infinite entries make their row's sum non-finite
        if not np.isfinite(sums).all():
            raise ValueError("targets contain NaN or infinite values; check the weak model's outputs")
        if (len(block) and block.min() < -1e-6) or not np.allclose(sums, 1.0, atol=1e-3):
            raise ValueError("soft targets must be probabilities: non-negative rows summing to 1 "
                             "(apply softmax to logits first)")
    return (y if y.dtype == np.float32 else y.astype(np.float32)), y.shape[1]


def to_probs(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Targets already checked by ``check_targets`` as (N, C) float32 probabilities (one-hot for
    class indices); float32 probabilities are returned as they are, not copied."""
    return np.eye(num_classes, dtype=np.float32)[y] if y.ndim == 1 else np.asarray(y, dtype=np.float32)


def as_probs(y, num_classes: Optional[int] = None) -> np.ndarray:
    """Class indices (N,) -> one-hot (N, C); probabilities (N, C) are checked and returned (a copy)."""
    y, c = check_targets(y, num_classes)
    return np.array(to_probs(y, c))


def hard(Y: np.ndarray) -> np.ndarray:
    """One-hot of the argmax of probabilities (N, C)."""
    return np.eye(Y.shape[1], dtype=np.float32)[Y.argmax(1)]


def as_tensor(a) -> torch.Tensor:
    """A tensor over ``a`` (numpy arrays are shared; read-only ones, such as memory maps, copied)."""
    if isinstance(a, torch.Tensor):
        return a
    a = np.asarray(a)
    return torch.from_numpy(a if a.flags.writeable and a.flags.c_contiguous else np.array(a))


def teacher_logits(probs: np.ndarray) -> torch.Tensor:
    """Log-probabilities: logits whose softmax is ``probs``, at any temperature ``T``.

    Zero probabilities become ``-inf``, so one-hot targets stay exactly one-hot when re-tempered
    (``softmax(log p / T)``); the losses treat ``0 * log 0`` as 0 (``losses.kd_loss``). A clamp
    at 1e-8 would leave ``(C - 1) * 1e-8^(1/T)`` off-class mass: 3.3 % at T = 2, C = 345.
    """
    return torch.log(as_tensor(probs))


def target_logits(y, num_classes: int, hard_labels: bool = False) -> torch.Tensor:
    """Teacher logits (N, C) to distil from: targets as in ``as_probs``, one-hot when ``hard_labels``."""
    Y = as_probs(y, num_classes)
    return teacher_logits(hard(Y) if hard_labels else Y)


def validation_set(X_val, y_val, num_classes: int, hard_labels: bool = False) -> tuple:
    """``(features, teacher logits)`` of a validation set for ``train_head``; ``(None, None)`` without one."""
    if X_val is None:
        return None, None
    return check_features(X_val, "X_val"), target_logits(y_val, num_classes, hard_labels)


def check_features(X, name: str = "X") -> np.ndarray:
    """Features (N, D) as float32, not copied when they already are (memory maps stay mapped)."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{name} must be features of shape (N, D), got {X.shape}")
    if not all(np.isfinite(block).all() for block in _blocks(X)):
        raise ValueError(f"{name} contains NaN or infinite values; re-extract the features "
                         f"(delete the cache entry) and check the model's precision")
    return X


class Method:
    """Base class: hyper-parameter handling, fitted-state check, probability outputs."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    needs_prompt_encoder: ClassVar[bool] = False
    """True for methods whose ``fit`` runs the text encoder (takes ``prompt_encoder=``)."""
    trains: ClassVar[bool] = True
    """False for methods whose ``fit`` learns nothing from the targets (zero-shot)."""
    head: ClassVar[str | None] = None
    """The method whose head this one trains (None: its own). Its PGR is measured against
    ``ceiling_<head>``: that method fitted on ground truth (e.g. logconf trains CPL's head)."""
    defaults: ClassVar[dict[str, Any]] = {}
    constraints: ClassVar[dict[str, Any]] = {}
    """Key -> constraint(s) of its value (``w2sclip.methods.params``); every default key has one."""
    grid: ClassVar[dict[str, list]] = {}
    """Hyper-parameter values model selection may try (PROTOCOL.md section 6)."""
    # A ``templates`` hyper-parameter (methods initialised from text) names the prompt-template
    # set the caller builds ``text_weights`` from (``models.strong.openclip.TEMPLATE_SETS``).

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown hyper-parameter(s) {unknown}; "
                             f"valid: {sorted(self.defaults)}")
        validate(params, self.constraints, self.name or type(self).__name__)
        self.params = {**self.defaults, **params}

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if self.defaults.get(k) != v}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # -- to implement -------------------------------------------------------------------------
    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None) -> "Method":
        raise NotImplementedError

    def _logits_normalized(self, v: torch.Tensor) -> torch.Tensor:
        """Logits (n, C) of L2-normalised features ``v`` (n, D), differentiable in the parameters."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        """Logits (N, C)."""
        self._check_fitted()
        with torch.no_grad():
            return self._logits(as_tensor(check_features(X))).numpy()

    def _logits(self, X: torch.Tensor) -> torch.Tensor:
        """Logits of features as stored (``_logits_normalized`` of the L2-normalised rows)."""
        return self._logits_normalized(F.normalize(X, dim=1))

    def _loss(self, logits: torch.Tensor, target_logits: torch.Tensor, progress: float) -> torch.Tensor:
        """What ``train_head`` minimises: ``T^2 KL(p_w || softmax(z / T))`` (``losses.kd_loss``)."""
        return kd_loss(logits, target_logits, T=self.params["T"])

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
