"""CPL with product-of-experts targets: our extension of CPL (not in Li et al. 2025)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.methods.cpl import CPL


class CPLPoE(CPL):
    """CPL distilled from ``p ∝ p_weak * p_zero_shot^prior_weight`` instead of ``p_weak``.

    The zero-shot distribution of the text-initialised prototypes acts as a prior on the weak
    labels: where the weak supervisor is unsure or contradicts a confident zero-shot prediction,
    the target leans to CLIP's own prior, so the prototypes are not pulled onto weak-label
    errors; where the weak labels are confident and CLIP is unsure, they dominate. Uses no
    information beyond CPL's (weak labels, text prototypes, logit scale). ``prior_weight=0`` is
    exactly ``cpl``.
    """

    name = "cpl_poe"
    description = "CPL distilled from the product of weak labels and the zero-shot prior (ours)"
    citation = "w2sclip extension of Li et al. 2025"
    defaults = {**CPL.defaults, "prior_weight": 1.0}
    grid = {**CPL.grid, "prior_weight": [0.5, 1.0]}

    def _targets(self, v: torch.Tensor, Y: np.ndarray, w0: torch.Tensor, s0: float) -> torch.Tensor:
        weak = super()._targets(v, Y, w0, s0)
        prior = F.log_softmax(s0 * v @ w0.T, dim=1)
        return F.log_softmax(weak + self.params["prior_weight"] * prior, dim=1)
