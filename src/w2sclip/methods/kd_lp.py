"""KD+LP: a linear probe distilled from the weak labels (the paper's KD+LP baseline)."""

from __future__ import annotations

import torch

from w2sclip.methods.base import Method, as_tensor, check_features, check_targets, teacher_logits, to_probs
from w2sclip.methods.linear_head import LinearHeadGrad
from w2sclip.methods.training import budget_defaults, constraints_for, optim_kwargs, train_head


class KDLinearProbe(Method):
    """Linear head ``z = v W^T + b`` from zero init, trained with ``T^2 KL(p_w || softmax(z/T))``
    (Adam, lr 1e-2, full batch; ``training.BUDGET`` and its stopping rule)."""

    name = "kd_lp"
    description = "linear probe from zero init trained by distillation on weak labels"
    citation = "Hinton et al. 2015 (KD); linear probe as in Radford et al. 2021"
    defaults = {"T": 1.0, "lr": 1e-2, **budget_defaults(), "batch_size": 0, "weight_decay": 0.0, "seed": 0}
    constraints = constraints_for(defaults)
    grid = {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "weight_decay": [0.0, 1e-4]}

    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None, on_step=None):
        """Fit on features X (N, D) (a memory map is read one batch at a time when
        ``batch_size`` > 0) and targets y: class indices (N,) or probabilities (N, C)."""
        p = self.params
        X = check_features(X)
        y, c = check_targets(y, text_weights.shape[0] if text_weights is not None else None)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but the targets have {len(y)}")
        self.coef_ = torch.nn.Parameter(torch.zeros(c, X.shape[1]))
        self.intercept_ = torch.nn.Parameter(torch.zeros(c))
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
