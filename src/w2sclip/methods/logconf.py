"""Auxiliary confidence loss (logconf): Burns et al. 2023, "Weak-to-Strong Generalization:
Eliciting Strong Capabilities With Weak Supervision", as ``logconf_loss_fn`` in
openai/weak-to-strong ``weak_to_strong/loss.py``, generalised to C classes (PROTOCOL.md section 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from w2sclip.losses import PriorMatcher, logconf_coef, logconf_loss
from w2sclip.methods.cpl import CPL
from w2sclip.methods.kd_lp import OPENAI_PROBE
from w2sclip.methods.linear_head import LinearHeadGrad
from w2sclip.methods.params import UNIT, Options
from w2sclip.methods.training import constraints_for

HARDENINGS = ("prior", "argmax")


class LogConf(CPL):
    """CPL's head (text-initialised prototypes, fixed logit scale) trained with logconf.

    target ``(1 - a) * p_w + a * onehot(h)`` (no gradient), loss ``CE(z_s, target)``, with
    ``a = logconf_coef(progress, aux_coef, warmup_frac)`` (their warm-up: ``a`` ramps as the
    step fraction up to ``warmup_frac * aux_coef``, then jumps to ``aux_coef``). ``h`` are the
    student's hardened predictions: with ``hardening="prior"`` (Burns et al.) the argmax of the
    logits plus one bias per class chosen so that the hardened class frequencies of the batch
    match the batch mean of the weak labels (``losses.prior_matched_labels``; with two classes
    exactly their quantile threshold); ``"argmax"`` is the plain argmax. With ``aux_coef=0`` it
    is CPL's KD loss at T = 1 under this recipe.

    Recipe: openai/weak-to-strong's training loop for a head on frozen features
    (``vision/run_weak_strong.py`` ``train_logreg``, ``kd_lp.OPENAI_PROBE``: Adam 1e-3, batch
    100, cosine annealing stepped per step, 4,000 steps, the last step kept) with the loss
    swapped for ``logconf_loss_fn``, whose ``step_frac`` is ``step / nsteps`` of the actual
    training length as in ``weak_to_strong/train.py`` (l. 62, 127). Their batch-level prior
    (``torch.mean(labels, dim=0)``, ``loss.py`` l. 99) is this batch's mean weak label.
    """

    name = "logconf"
    description = "CPL head trained with the auxiliary confidence loss (weak labels + prior-matched own labels)"
    citation = "Burns et al. 2023, Weak-to-Strong Generalization (auxiliary confidence loss)"
    defaults = {**{k: v for k, v in CPL.defaults.items() if k != "T"}, **OPENAI_PROBE,
                "aux_coef": 0.5, "warmup_frac": 0.1, "hardening": "prior"}
    constraints = constraints_for(defaults, aux_coef=UNIT, warmup_frac=UNIT,
                                  hardening=Options(str, HARDENINGS))
    grid = {"lr": [3e-4, 1e-3, 3e-3]}

    def fit(self, X, y, **kwargs) -> "LogConf":
        prior = self.params["hardening"] == "prior"
        # warm-started biases: one matcher for the training batches, one for hold_val
        self._matcher, self._val_matcher = (PriorMatcher(), PriorMatcher()) if prior else (None, None)
        try:
            return super().fit(X, y, **kwargs)
        finally:
            del self._matcher, self._val_matcher

    def _loss(self, logits: torch.Tensor, target_logits: torch.Tensor, progress: float) -> torch.Tensor:
        # train_head hands over log-probabilities; log_softmax(.).exp() is the same teacher
        # distribution kd_loss uses at T = 1, so aux_coef = 0 reproduces CPL bit for bit.
        # Validation calls it with progress 1.0, training steps with progress < 1.
        probs = F.log_softmax(target_logits, dim=1).exp()
        matcher = self._matcher if progress < 1.0 else self._val_matcher
        labels = matcher(logits, probs.mean(0)) if matcher is not None else None
        return logconf_loss(logits, probs, self._alpha(progress), hard_labels=labels)

    def _alpha(self, progress: float) -> float:
        return logconf_coef(progress, self.params["aux_coef"], self.params["warmup_frac"])

    def _grad(self) -> LinearHeadGrad:
        return LinearHeadGrad(self.prototypes_, log_scale=self.log_scale_, loss="logconf",
                              alpha_fn=self._alpha, matcher=self._matcher)
