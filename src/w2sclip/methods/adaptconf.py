"""Adaptive confidence distillation (AdaptConf): Guo et al. 2024, "Vision Superalignment:
Weak-to-Strong Generalization for Vision Foundation Models" (PROTOCOL.md section 4)."""

from __future__ import annotations

import torch

from w2sclip.losses import adaptconf_loss
from w2sclip.methods.cpl import CPL
from w2sclip.methods.linear_head import LinearHeadGrad


class AdaptConf(CPL):
    """CPL's head (text-initialised prototypes, fixed logit scale) trained with AdaptConf.

    Per sample ``a = softmax([ce_self, ce_weak] / theta)[0]`` (no gradient); loss
    ``mean[(1 - a) * T^2 KL(p_w || softmax(z_s / T)) + a * CE(z_s, argmax z_s)]``.
    """

    name = "adaptconf"
    description = "CPL head trained with adaptive confidence distillation (weak KD vs own hard labels)"
    citation = "Guo et al. 2024, Vision Superalignment"
    defaults = {**CPL.defaults, "theta": 0.5}
    grid = {"lr": [1e-4, 3e-4, 1e-3, 3e-3], "theta": [0.25, 0.5, 1.0]}

    def _loss(self, logits: torch.Tensor, target_logits: torch.Tensor, progress: float) -> torch.Tensor:
        return adaptconf_loss(logits, target_logits, theta=self.params["theta"], T=self.params["T"])

    def _grad(self) -> LinearHeadGrad:
        return LinearHeadGrad(self.prototypes_, log_scale=self.log_scale_, loss="adaptconf",
                              T=self.params["T"], theta=self.params["theta"])
