"""Auxiliary confidence loss (logconf): Burns et al. 2023, "Weak-to-Strong Generalization:
Eliciting Strong Capabilities With Weak Supervision", multi-class form (PROTOCOL.md section 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from w2sclip.losses import logconf_loss
from w2sclip.methods.cpl import CPL
from w2sclip.methods.linear_head import LinearHeadGrad


def logconf_alpha(progress: float, alpha_max: float = 0.5, warmup: float = 0.2) -> float:
    """Weight of the student's own hard label at ``progress`` in [0, 1] of the training steps.

    Ramps linearly from 0 to ``alpha_max`` over the first ``warmup`` fraction, then stays there.
    """
    if warmup <= 0:
        return float(alpha_max)
    return float(alpha_max) * min(1.0, max(0.0, progress) / warmup)


class LogConf(CPL):
    """CPL's head (text-initialised prototypes, fixed logit scale) trained with logconf.

    target ``(1 - a) * p_w + a * onehot(argmax z_s)`` (no gradient), loss ``CE(z_s, target)``;
    ``a = logconf_alpha(progress, alpha_max, warmup)``. The validation loss (early stopping)
    uses ``a = alpha_max``. With ``alpha_max=0`` it trains exactly like ``cpl`` with T = 1.
    """

    name = "logconf"
    description = "CPL head trained with the auxiliary confidence loss (weak labels + own hard labels)"
    citation = "Burns et al. 2023, Weak-to-Strong Generalization (auxiliary confidence loss)"
    defaults = {**{k: v for k, v in CPL.defaults.items() if k != "T"},
                "alpha_max": 0.5, "warmup": 0.2}
    grid = {"lr": [1e-4, 3e-4, 1e-3, 3e-3], "alpha_max": [0.25, 0.5, 0.75]}

    def _loss(self, logits: torch.Tensor, target_logits: torch.Tensor, progress: float) -> torch.Tensor:
        # train_head hands over log-probabilities; log_softmax(.).exp() is the same teacher
        # distribution kd_loss uses at T = 1, so alpha_max = 0 reproduces CPL bit for bit.
        probs = F.log_softmax(target_logits, dim=1).exp()
        return logconf_loss(logits, probs, self._alpha(progress))

    def _alpha(self, progress: float) -> float:
        return logconf_alpha(progress, self.params["alpha_max"], self.params["warmup"])

    def _grad(self) -> LinearHeadGrad:
        return LinearHeadGrad(self.prototypes_, log_scale=self.log_scale_, loss="logconf",
                              alpha_fn=self._alpha)
