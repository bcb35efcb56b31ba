"""Tip-Adapter-F: Zhang et al. 2022, "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification" (ECCV), with the weak labels as cache values (PROTOCOL.md section 4); training as
``run_tip_adapter_F`` in gaopengcuhk/Tip-Adapter ``main.py``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.methods.base import Method, as_probs, as_tensor, check_features, hard, teacher_logits, validation_set
from w2sclip.methods.params import NON_NEGATIVE
from w2sclip.methods.training import budget_defaults, constraints_for, normalized_batch, optim_kwargs, train_head

_CHUNK = 4096  # rows per block at prediction: the affinity matrix is (rows, N_cache)


class TipAdapterF(Method):
    """Zero-shot logits plus a key-value cache of the training set, keys fine-tuned.

    ``z = s * v . W_text^T + alpha * A(v) . values`` with ``A = exp(-beta * (1 - v . keys^T))``;
    keys (N, D) start as the L2-normalised training features and are the only trained
    parameters; values (N, C) are the training targets as probabilities (weak soft labels, or
    one-hot for hard labels), fixed. Loss ``T^2 KL(p_w || softmax(z / T))``. Optimiser as their
    code: AdamW (lr 1e-3, eps 1e-4, torch's default weight decay 0.01), cosine schedule, batch
    256; the budget and stopping rule are ``training.BUDGET``'s (their 20 epochs are not).
    ``epochs=0`` is the training-free Tip-Adapter; ``alpha=0`` is zero-shot.
    """

    name = "tip_adapter_f"
    description = "Tip-Adapter-F: zero-shot plus a fine-tuned feature cache whose values are the weak labels"
    citation = "Zhang et al. 2022, ECCV (Tip-Adapter)"
    defaults = {"alpha": 1.0, "beta": 5.5, "T": 1.0, "lr": 1e-3, **budget_defaults(), "batch_size": 256,
                "optimizer": "adamw", "weight_decay": 0.01, "eps": 1e-4, "schedule": "cosine",
                "hard_labels": False, "seed": 0}
    constraints = constraints_for(defaults, alpha=NON_NEGATIVE, beta=NON_NEGATIVE)
    grid = {"alpha": [0.5, 1.0, 2.0], "beta": [1.0, 5.5]}

    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None) -> "TipAdapterF":
        p = self.params
        X = check_features(X)
        w, s = self._text(text_weights, logit_scale)
        Y = as_probs(y, w.shape[0])
        if len(Y) != len(X):
            raise ValueError(f"X has {len(X)} rows but the targets have {len(Y)}")
        if p["hard_labels"]:
            Y = hard(Y)
        self.text_weights_, self.logit_scale_ = w, s
        self.keys_ = torch.nn.Parameter(F.normalize(torch.as_tensor(X), dim=1).clone())
        self.values_ = torch.as_tensor(Y)
        Xv, Yv = validation_set(X_val, y_val, w.shape[0], p["hard_labels"])
        self.history_ = train_head([self.keys_], self._logits_normalized, self._loss, X, teacher_logits(Y),
                                   **optim_kwargs(p), X_val=Xv, Y_val=Yv, batch_fn=normalized_batch)
        self.fitted_ = True
        return self

    def _logits_normalized(self, v: torch.Tensor) -> torch.Tensor:
        zero_shot = self.logit_scale_ * v @ self.text_weights_.T
        affinity = torch.exp(-self.params["beta"] * (1 - v @ self.keys_.T))
        return zero_shot + self.params["alpha"] * affinity @ self.values_

    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        X = as_tensor(check_features(X))
        with torch.no_grad():
            return torch.cat([self._logits(X[i:i + _CHUNK]) for i in range(0, len(X), _CHUNK)]
                             or [torch.zeros(0, self.values_.shape[1])]).numpy()
