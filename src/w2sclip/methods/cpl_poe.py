"""CPL with product-of-experts targets: our extension of CPL (not in Li et al. 2025), a fixed-prior
variant of ``product_loss_fn`` in openai/weak-to-strong ``weak_to_strong/loss.py``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.methods.cpl import CPL
from w2sclip.methods.params import NON_NEGATIVE
from w2sclip.methods.training import constraints_for


class CPLPoE(CPL):
    """CPL distilled from ``p ∝ p_weak^alpha * p_zero_shot^beta`` instead of ``p_weak``.

    openai/weak-to-strong's ``product_loss_fn`` trains on ``p ∝ p_strong^beta * p_weak^alpha``
    where ``p_strong`` is the student's *current* prediction (detached, recomputed every step;
    alpha = beta = 1 there). Here ``p_strong`` is the student's prediction *at its
    initialisation*, i.e. the zero-shot distribution of the text-initialised prototypes, fixed
    for the whole fit: the targets do not drift with the student, so the fit converges to a
    fixed target (with the current prediction, beta = 1 makes any confident prediction a fixed
    point of its own target). The zero-shot term is a prior on the weak labels: where the weak
    supervisor is unsure or contradicts a confident zero-shot prediction the target leans to
    CLIP, where the weak labels are confident and CLIP is unsure they dominate. Uses no
    information beyond CPL's (weak labels, text prototypes, logit scale). ``beta=0, alpha=1`` is
    exactly ``cpl``.
    """

    name = "cpl_poe"
    description = "CPL distilled from the product of weak labels and the zero-shot prior (ours)"
    citation = "w2sclip extension of Li et al. 2025; cf. product_loss_fn, Burns et al. 2023 code"
    defaults = {**CPL.defaults, "alpha": 1.0, "beta": 1.0}
    constraints = constraints_for(defaults, alpha=NON_NEGATIVE, beta=NON_NEGATIVE)
    grid = CPL.grid

    def _targets(self, v: torch.Tensor, Y: np.ndarray, w0: torch.Tensor, s0: float) -> torch.Tensor:
        weak = super()._targets(v, Y, w0, s0)
        prior = F.log_softmax(s0 * v @ w0.T, dim=1)
        a, b = self.params["alpha"], self.params["beta"]
        # 0 * log 0 = 0: a zero weak probability stays zero for alpha > 0 and drops out at alpha = 0
        weak = torch.where(torch.isinf(weak), weak if a > 0 else torch.zeros_like(weak), a * weak)
        return F.log_softmax(weak + b * prior, dim=1)
