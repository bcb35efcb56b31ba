"""Adaptive confidence distillation (AdaptConf): Guo et al. 2024, "Vision Superalignment:
Weak-to-Strong Generalization for Vision Foundation Models", as ``AdaptConf`` in
ggjy/vision_weak_to_strong ``classification/distillers/adaptconf.py`` (PROTOCOL.md section 4)."""

from __future__ import annotations

import torch

from w2sclip.losses import adaptconf_loss
from w2sclip.methods.cpl import CPL
from w2sclip.methods.linear_head import LinearHeadGrad
from w2sclip.methods.params import POSITIVE
from w2sclip.methods.training import constraints_for


class AdaptConf(CPL):
    """CPL's head (text-initialised prototypes, fixed logit scale) trained with AdaptConf.

    Per sample ``a = softmax([ce_self, ce_weak] / theta)[0]`` (no gradient); loss
    ``mean[(1 - a) * T^2 KL(p_w || softmax(z_s / T))  + a * CE(z_s, argmax z_s)]``.
    ``a = sigmoid((z_weak - z_max) / theta)`` depends on logit differences, and cosine logits are
    ``s * cos``, so the temperature is relative to the logit scale: ``theta = theta_rel * s``,
    i.e. ``a = sigmoid((cos_weak - cos_max) / theta_rel)`` whatever s is (Guo et al.'s
    ``superalignment_threshold`` 0.5 acts on the logits of trained linear heads, whose scale is
    not CLIP's 100: 0.5 at s = 100 would be theta_rel = 0.005, which gates most samples to
    a < 0.01 at the start).
    """

    name = "adaptconf"
    description = "CPL head trained with adaptive confidence distillation (weak KD vs own hard labels)"
    citation = "Guo et al. 2024, Vision Superalignment"
    defaults = {**CPL.defaults, "theta_rel": 0.02}
    constraints = constraints_for(defaults, theta_rel=POSITIVE)
    grid = {"lr": [1e-4, 3e-4, 1e-3, 3e-3], "theta_rel": [0.005, 0.02, 0.05]}

    def _theta(self) -> float:
        return self.params["theta_rel"] * float(self.log_scale_.detach().exp())

    def _loss(self, logits: torch.Tensor, target_logits: torch.Tensor, progress: float) -> torch.Tensor:
        return adaptconf_loss(logits, target_logits, theta=self._theta(), T=self.params["T"])

    def _grad(self) -> LinearHeadGrad:
        return LinearHeadGrad(self.prototypes_, log_scale=self.log_scale_, loss="adaptconf",
                              T=self.params["T"], theta=self.params["theta_rel"], theta_relative=True)
