"""CLIP-Adapter: Gao et al. 2021, "CLIP-Adapter: Better Vision-Language Models with Feature
Adapters" (arXiv 2110.04544), the visual adapter of gaopengcuhk/CLIP-Adapter ``clip_adapter.py``
on cached features (PROTOCOL.md section 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from w2sclip.methods.base import Method, as_probs, check_features, hard, teacher_logits, validation_set
from w2sclip.methods.params import UNIT, Interval
from w2sclip.methods.training import constraints_for, optim_kwargs, train_head

DASSL_COOP = {"optimizer": "sgd", "lr": 2e-3, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 32,
              "epochs": 200, "max_steps": 0, "schedule": "cosine_dassl", "schedule_unit": "epoch",
              "warmup_epochs": 1.0, "warmup_lr": 1e-5, "selection": "fixed", "eval_every": 5, "patience": 20, "drop_last": True}
"""CoOp's training recipe, which CLIP-Adapter's README tells to use ("follow CoOp's command"):
KaiyangZhou/CoOp ``configs/trainers/CoOp/rn50.yaml`` (l. 3, 15-22: batch 32, SGD, LR 0.002,
MAX_EPOCH 200, cosine, WARMUP_EPOCH 1 of type "constant" at WARMUP_CONS_LR 1e-5; ``COOP.md`` l.
13-22: ``rn50`` for 8 and 16 shots, the ``*_ep50`` configs for ImageNet, which the ``domainnet``
preset follows with ``epochs: 50``) with Dassl.pytorch's defaults (``dassl/config/defaults.py``
l. 153-154: weight decay 5e-4, momentum 0.9; l. 216: ``TEST.FINAL_MODEL = "last_step"``, the
last epoch is evaluated) and its scheduler (``dassl/optim/lr_scheduler.py`` l. 128-141:
``CosineAnnealingLR(T_max=MAX_EPOCH)`` inside ``ConstantWarmupScheduler``), stepped once per
epoch (CoOp ``trainers/coop.py`` l. 281-282, CLIP-Adapter ``clip_adapter.py`` l. 166-167).
Epochs are passes over hold_fit (1-3x the size of a 16-shot training set on the built-in
benchmark and DomainNet)."""


class CLIPAdapter(Method):
    """A bottleneck MLP on the image feature, mixed residually, against fixed text prototypes.

    As Gao et al.'s code: on the image feature f, ``A(f) = ReLU(ReLU(f W1^T) W2^T)`` with W1
    (D/reduction x D) and W2 (D x D/reduction), no bias (torch's default init);
    ``f' = ratio * A(f) + (1 - ratio) * f``; ``z = s * normalize(f') . W_text^T``. Their f is
    the raw (unnormalised) CLIP feature; the cache holds ``f / |f|``. A bias-free ReLU MLP is
    positively homogeneous (``A(c f) = c A(f)`` for c > 0), so ``normalize(f')`` and hence the
    logits, the loss and every gradient are the same for f and for ``f / |f|``: raw features
    are not needed (``tests/test_methods.py`` checks it). Only the MLP is trained, with
    ``T^2 KL(p_w || softmax(z / T))`` (their ``cross_entropy`` on labels, ``clip_adapter.py``
    l. 158), by CoOp's recipe (``DASSL_COOP``). ``ratio`` 0.2 and ``reduction`` 4 are theirs
    (l. 56-63, 104). ``ratio=0`` is zero-shot.
    """

    name = "clip_adapter"
    description = "CLIP-Adapter: residual bottleneck MLP on image features, fixed text prototypes"
    citation = "Gao et al. 2021, arXiv 2110.04544 (CLIP-Adapter)"
    defaults = {"ratio": 0.2, "reduction": 4, "T": 1.0, **DASSL_COOP, "hard_labels": False, "seed": 0}
    constraints = constraints_for(defaults, ratio=UNIT, reduction=Interval(int, 1, None))
    grid = {"lr": [6e-4, 2e-3, 6e-3]}

    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None) -> "CLIPAdapter":
        p = self.params
        X = check_features(X)
        w, s = self._text(text_weights, logit_scale)
        Y = as_probs(y, w.shape[0])
        if p["hard_labels"]:
            Y = hard(Y)
        self.text_weights_, self.logit_scale_ = w, s
        d = X.shape[1]
        hidden = max(1, d // int(p["reduction"]))
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(p["seed"])
            self.adapter_ = torch.nn.Sequential(
                torch.nn.Linear(d, hidden, bias=False), torch.nn.ReLU(),
                torch.nn.Linear(hidden, d, bias=False), torch.nn.ReLU())
        Xv, Yv = validation_set(X_val, y_val, w.shape[0], p["hard_labels"])
        self.history_ = train_head(list(self.adapter_.parameters()), self._logits, self._loss, X,
                                   teacher_logits(Y), **optim_kwargs(p), X_val=Xv, Y_val=Yv, step_fn=self._grad())
        self.fitted_ = True
        return self

    def _grad(self) -> AdapterGrad:
        """The closed-form step (``None`` would make ``train_head`` backpropagate the loss)."""
        return AdapterGrad(self.adapter_[0].weight, self.adapter_[2].weight, self.text_weights_,
                           self.logit_scale_, float(self.params["ratio"]), float(self.params["T"]))

    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        r = self.params["ratio"]
        f = r * self.adapter_(f) + (1 - r) * f
        return self.logit_scale_ * F.normalize(f, dim=1) @ self.text_weights_.T


class AdapterGrad:
    """``step_fn`` for ``train_head``: the gradient of CLIP-Adapter's KD loss with respect to
    its two weights, written into ``.grad`` in closed form (what autograd computes, without its
    per-step overhead: fits 2.3x faster at the built-in study's shape and batch of 32,
    ``benchmarks/fit_speed.py``; ``tests/test_methods.py`` checks it against autograd).
    Forward: ``a1 = x W1^T``, ``a2 = relu(a1) W2^T``, ``f = r relu(a2) + (1 - r) x``,
    ``g = f / max(|f|, eps)``, ``z = s g W_t^T``; backward:
    ``dz = T (softmax(z / T) - softmax(teacher / T)) / n`` and the chain rule through each."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, text: torch.Tensor, scale: float,
                 ratio: float, T: float) -> None:
        self.w1, self.w2, self.text, self.scale, self.ratio, self.T = w1, w2, text, float(scale), ratio, T

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, teacher: torch.Tensor, progress: float, full_batch: bool) -> None:
        w1, w2, r, T = self.w1, self.w2, self.ratio, self.T
        a1 = x @ w1.T
        h1 = a1.clamp(min=0)
        a2 = h1 @ w2.T
        f = a2.clamp(min=0).mul_(r).add_(x, alpha=1 - r)
        norm = f.norm(dim=1, keepdim=True)
        unclamped = norm > 1e-12  # F.normalize's eps: a clamped norm passes no gradient
        norm = norm.clamp_(min=1e-12)
        g = f.div_(norm)
        z = (g @ self.text.T).mul_(self.scale / T)
        dz = torch.softmax(z, 1).sub_(torch.softmax(teacher / T, 1)).mul_(T / len(x))
        dg = (dz @ self.text).mul_(self.scale)
        da2 = dg.sub_(g * ((g * dg).sum(1, keepdim=True) * unclamped)).div_(norm).mul_(r).mul_(a2 > 0)
        w2.grad = da2.T @ h1
        w1.grad = ((da2 @ w2).mul_(a1 > 0)).T @ x
