"""KD+LP: a linear probe on the frozen features trained on the weak soft labels, as the vision
experiment of openai/weak-to-strong (Burns et al. 2023) trains it (``vision/run_weak_strong.py``
``train_logreg``)."""

from __future__ import annotations

import torch

from w2sclip.methods.base import Method, as_tensor, check_features, check_targets, teacher_logits, to_probs
from w2sclip.methods.linear_head import LinearHeadGrad
from w2sclip.methods.training import constraints_for, optim_kwargs, train_head

OPENAI_PROBE = {"lr": 1e-3, "batch_size": 100, "weight_decay": 0.0, "optimizer": "adam", "max_steps": 4000,
                "epochs": None, "schedule": "cosine", "schedule_unit": "step", "selection": "fixed",
                "eval_every": 5, "patience": 20}
"""openai/weak-to-strong ``vision/run_weak_strong.py`` ``train_logreg`` (lines 51-98):
``torch.optim.Adam(lr=1e-3, weight_decay=0.0)`` (l. 56-57, 68), ``batch_size=100`` shuffled (l. 58,
63), ``CosineAnnealingLR(T_max=n_batches * n_epochs)`` stepped after every optimiser step (l.
69-71, 83), the model after the last step returned (l. 96-98: no early stopping). Their 10
epochs over ``n_train=40000`` images (l. 55, 105) are 4,000 optimiser steps; hold_fit is 3-170x
smaller, so the length is their step count (``max_steps=4000``), not their epoch count."""


class KDLinearProbe(Method):
    """Linear head ``z = v W^T + b``, ``torch.nn.Linear``'s default init (seeded), trained with
    ``T^2 KL(p_w || softmax(z/T))`` (= their ``CrossEntropyLoss`` on soft labels up to a
    constant at T = 1) by the openai/weak-to-strong probe recipe (``OPENAI_PROBE``)."""

    name = "kd_lp"
    description = "linear probe trained on weak soft labels (openai/weak-to-strong vision probe)"
    citation = "Burns et al. 2023 (openai/weak-to-strong vision/run_weak_strong.py train_logreg)"
    defaults = {"T": 1.0, **OPENAI_PROBE, "seed": 0}
    constraints = constraints_for(defaults)
    grid = {"lr": [3e-4, 1e-3, 3e-3]}

    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None, on_step=None):
        """Fit on features X (N, D) (a memory map is read one batch at a time when
        ``batch_size`` > 0) and targets y: class indices (N,) or probabilities (N, C)."""
        p = self.params
        X = check_features(X)
        y, c = check_targets(y, text_weights.shape[0] if text_weights is not None else None)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but the targets have {len(y)}")
        with torch.random.fork_rng(devices=[]):  # nn.Linear's init, seeded, global RNG untouched
            torch.manual_seed(p["seed"])
            layer = torch.nn.Linear(X.shape[1], c)
        self.coef_ = torch.nn.Parameter(layer.weight.detach().clone())
        self.intercept_ = torch.nn.Parameter(layer.bias.detach().clone())
        if X_val is not None:
            X_val = check_features(X_val, "X_val")
            y_val, _ = check_targets(y_val, c)

        def batch(X_rows, y_rows) -> tuple[torch.Tensor, torch.Tensor]:
            return as_tensor(X_rows), teacher_logits(to_probs(y_rows, c))

        self.history_ = train_head([self.coef_, self.intercept_], self._logits, self._loss, X, y,
                                   **optim_kwargs(p), X_val=X_val, Y_val=y_val, on_step=on_step,
                                   batch_fn=batch, step_fn=self._grad())
        self.fitted_ = True
        return self

    def _grad(self) -> LinearHeadGrad:
        """The analytic gradient of ``_loss`` (what ``train_head`` steps with)."""
        return LinearHeadGrad(self.coef_, bias=self.intercept_, loss="kd", T=self.params["T"])

    def _logits(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self.coef_.T + self.intercept_
