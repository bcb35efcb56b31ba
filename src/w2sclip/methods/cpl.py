"""Class prototype learning (CPL): Li et al., "Exploring Weak-to-Strong Generalization for
CLIP-based Classification", arXiv 2511.18396 (TMLR 2025)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.methods.base import Method, as_tensor, check_features, check_targets, hard, teacher_logits, to_probs
from w2sclip.methods.linear_head import LinearHeadGrad
from w2sclip.methods.training import budget_defaults, constraints_for, optim_kwargs, train_head


class CPL(Method):
    """One prototype per class, initialised from CLIP text features, distilled from weak labels.

    Strong logits ``s * v . normalize(W)^T``; loss ``T^2 KL(p_w || softmax(z_s / T))``; only W
    (and s when ``learn_scale``) is trained, with Adam (lr 1e-3: our default; the paper's
    optimiser settings are not published), full batch, within ``training.BUDGET`` and its
    stopping rule. ``epochs=0`` (or ``max_steps=0``) leaves W at its text initialisation.
    """

    name = "cpl"
    head = "cpl"
    description = "class prototype learning: text-initialised prototypes distilled from weak labels"
    citation = "Li et al. 2025, arXiv 2511.18396"
    defaults = {"T": 1.0, "lr": 1e-3, **budget_defaults(), "batch_size": 0, "optimizer": "adam",
                "weight_decay": 0.0, "eps": 1e-8, "schedule": "constant", "schedule_unit": "step",
                "warmup_epochs": 0.0, "warmup_lr": 1e-5, "min_lr": 0.0, "drop_last": False, "keep_start": True, "learn_scale": False,
                "hard_labels": False, "templates": "dataset", "seed": 0}
    constraints = constraints_for(defaults)
    grid = {"lr": [3e-4, 1e-3, 3e-3]}

    def _grad(self) -> LinearHeadGrad:
        """The analytic gradient of ``_loss`` (what ``train_head`` steps with)."""
        return LinearHeadGrad(self.prototypes_, log_scale=self.log_scale_, loss="kd", T=self.params["T"])

    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None, on_step=None) -> "CPL":
        """Fit on features X (N, D) (a memory map is read one batch at a time when
        ``batch_size`` > 0) and targets y: class indices (N,) or probabilities (N, C)."""
        p = self.params
        X = check_features(X)
        w0, s0 = self._text(text_weights, logit_scale)
        y, c = check_targets(y, w0.shape[0])
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but the targets have {len(y)}")
        self.prototypes_ = torch.nn.Parameter(w0.clone())
        self.log_scale_ = torch.nn.Parameter(torch.tensor(float(np.log(s0))),
                                             requires_grad=p["learn_scale"])
        params = [self.prototypes_] + ([self.log_scale_] if p["learn_scale"] else [])
        if X_val is not None:
            X_val = check_features(X_val, "X_val")
            y_val, _ = check_targets(y_val, c)

        def batch(X_rows, y_rows) -> tuple[torch.Tensor, torch.Tensor]:
            v = F.normalize(as_tensor(X_rows), dim=1)
            return v, self._targets(v, to_probs(y_rows, c), w0, s0)

        self.history_ = train_head(params, self._logits_normalized, self._loss, X, y, **optim_kwargs(p),
                                   X_val=X_val, Y_val=y_val, on_step=on_step, batch_fn=batch,
                                   step_fn=self._grad())
        self.fitted_ = True
        return self

    def _targets(self, v: torch.Tensor, Y: np.ndarray, w0: torch.Tensor, s0: float) -> torch.Tensor:
        """Teacher logits the head is distilled from, for normalised features ``v`` (n, D) and
        their targets as probabilities ``Y`` (n, C): log of the (hard) weak labels."""
        return teacher_logits(hard(Y) if self.params["hard_labels"] else Y)

    def _logits_normalized(self, v: torch.Tensor) -> torch.Tensor:
        return self.log_scale_.exp() * v @ F.normalize(self.prototypes_, dim=1).T

    @property
    def logit_scale_(self) -> float:
        return float(self.log_scale_.detach().exp())


class CPLHard(CPL):
    """CPL trained on one-hot argmax weak labels instead of soft ones (exactly one-hot at any T:
    ``base.teacher_logits`` maps zero probabilities to ``-inf``)."""

    name = "cpl_hard"
    description = "CPL with hard (argmax) weak labels"
    defaults = {**CPL.defaults, "hard_labels": True}
