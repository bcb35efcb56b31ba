"""The product loss of openai/weak-to-strong (``weak_to_strong/loss.py`` ``product_loss_fn``,
Burns et al. 2023) on CPL's head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from w2sclip.methods.cpl import CPL
from w2sclip.methods.kd_lp import OPENAI_PROBE
from w2sclip.methods.linear_head import LinearHeadGrad
from w2sclip.methods.params import NON_NEGATIVE
from w2sclip.methods.training import constraints_for


class ProductLoss(CPL):
    """CPL's head (text-initialised prototypes, fixed logit scale) trained with ``product_loss_fn``.

    As ``loss.py`` l. 57-68: ``target ∝ softmax(z)^beta * p_w^alpha`` with the student's
    *current* prediction, detached and recomputed every step; loss ``CE(z, target)``; alpha =
    beta = 1 (l. 49-50). Their ``warmup_frac`` is stored but never used (l. 51-55), so it is not
    a parameter here. ``cpl_poe`` is our fixed-prior variant (the prediction at initialisation).
    Recipe: openai/weak-to-strong's loop for a head on frozen features (``kd_lp.OPENAI_PROBE``).
    """

    name = "product_loss"
    description = "CPL head trained with the product of the weak labels and the student's own prediction"
    citation = "Burns et al. 2023 (openai/weak-to-strong weak_to_strong/loss.py product_loss_fn)"
    defaults = {**{k: v for k, v in CPL.defaults.items() if k != "T"}, **OPENAI_PROBE, "alpha": 1.0, "beta": 1.0}
    constraints = constraints_for(defaults, alpha=NON_NEGATIVE, beta=NON_NEGATIVE)
    grid = {"lr": [3e-4, 1e-3, 3e-3]}

    def _loss(self, logits: torch.Tensor, target_logits: torch.Tensor, progress: float) -> torch.Tensor:
        weak = F.log_softmax(target_logits, dim=1).exp()
        target = torch.softmax(logits, 1).detach().pow(self.params["beta"]) * weak.pow(self.params["alpha"])
        target = target / target.sum(1, keepdim=True)
        return -(target * F.log_softmax(logits, 1)).sum(1).mean()

    def _grad(self) -> LinearHeadGrad:
        return LinearHeadGrad(self.prototypes_, log_scale=self.log_scale_, loss="product",
                              exponents=(self.params["alpha"], self.params["beta"]))
