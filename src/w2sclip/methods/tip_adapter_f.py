"""Tip-Adapter and Tip-Adapter-F: Zhang et al. 2022, "Tip-Adapter: Training-free Adaption of CLIP
for Few-shot Classification" (ECCV), with the weak labels as cache values (docs/protocol.md);
training and hyper-parameter search as gaopengcuhk/Tip-Adapter ``main.py`` and ``utils.py``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.methods.base import Method, as_probs, as_tensor, check_features, hard, teacher_logits, validation_set
from w2sclip.methods.params import BOOL, NON_NEGATIVE, POSITIVE, Interval, PairOf
from w2sclip.methods.training import constraints_for, normalized_batch, optim_kwargs, train_head

_CHUNK = 4096  # rows per block at prediction: the affinity matrix is (rows, N_cache)

TIP_RECIPE = {"alpha": 1.17, "beta": 1.0, "lr": 1e-3, "optimizer": "adamw", "eps": 1e-4, "weight_decay": 0.01,
              "batch_size": 256, "epochs": 20, "max_steps": 0, "schedule": "cosine", "schedule_unit": "step",
              "selection": "val_acc", "eval_every": 0, "patience": 0, "keep_start": False,
              "search_hp": True, "search_scale": [7.0, 3.0], "search_step": [200, 20]}
"""gaopengcuhk/Tip-Adapter: ``configs/imagenet.yaml`` (l. 14-31: ``search_hp`` True,
``search_scale [7, 3]``, ``search_step [200, 20]``, ``init_beta 1``, ``init_alpha 1.17``, lr
0.001, ``train_epoch`` 20; ImageNet's is the config for a large, general label set),
``main.py`` ``run_tip_adapter_F`` (l. 66-141: ``AdamW(lr, eps=1e-4)`` with torch's default
weight decay 0.01, l. 72; ``CosineAnnealingLR(T_max=train_epoch * len(loader))`` stepped per
step, l. 73, 106; batch 256, l. 181; the trained epoch with the best evaluation kept, l.
114-126, never the untrained cache; then
``search_hp`` on the trained keys, l. 132) and ``utils.py`` ``search_hp`` (l. 99-129: beta and
alpha on a grid, the first best kept). Their evaluation is accuracy on labelled val/test data;
here it is the argmax agreement with hold_val's weak labels (``val_acc`` on the weak targets),
or hold_val's ground truth for a ceiling."""


class TipAdapterF(Method):
    """Zero-shot logits plus a key-value cache of the training set, keys fine-tuned.

    ``z = s * v . W_text^T + alpha * exp(-beta * (1 - v . keys^T)) . values`` (``main.py`` l.
    91-94); keys (N, D) start as the L2-normalised training features and are the only trained
    parameters; values (N, C) are the training targets as probabilities (weak soft labels, or
    one-hot for hard labels and ground truth), fixed. Loss ``T^2 KL(p_w || softmax(z / T))``
    (their ``cross_entropy`` on one-hot labels, l. 96, with the weak soft labels). Training with
    the initial (alpha, beta), the best epoch kept; then ``search_hp`` picks (alpha, beta) on
    hold_val (``TIP_RECIPE``). ``s`` is the model's own logit scale (their 100 is OpenAI CLIP's).
    ``epochs=0`` is the training-free Tip-Adapter (``tip_adapter``); ``alpha=0`` is zero-shot.
    """

    name = "tip_adapter_f"
    head = "tip_adapter_f"
    description = "Tip-Adapter-F: zero-shot plus a fine-tuned feature cache whose values are the weak labels"
    citation = "Zhang et al. 2022, ECCV (Tip-Adapter); gaopengcuhk/Tip-Adapter main.py run_tip_adapter_F"
    defaults = {**TIP_RECIPE, "T": 1.0, "hard_labels": False, "seed": 0}
    constraints = constraints_for(defaults, alpha=NON_NEGATIVE, beta=NON_NEGATIVE, search_hp=BOOL,
                                  search_scale=PairOf(Interval(float, 0.1, None, "neither")),
                                  search_step=PairOf(Interval(int, 1, None)))
    grid = {"lr": [3e-4, 1e-3, 3e-3]}

    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None) -> "TipAdapterF":
        p = self.params
        X = check_features(X)
        w, s = self._text(text_weights, logit_scale)
        Y = as_probs(y, w.shape[0])
        if len(Y) != len(X):
            raise ValueError(f"X has {len(X)} rows but the targets have {len(Y)}")
        if p["hard_labels"]:
            Y = hard(Y)
        self.text_weights_, self.logit_scale_ = w, s
        self.keys_ = torch.nn.Parameter(F.normalize(torch.as_tensor(X), dim=1).clone())
        self.values_ = torch.as_tensor(Y)
        self.alpha_, self.beta_ = float(p["alpha"]), float(p["beta"])
        Xv, Yv = validation_set(X_val, y_val, w.shape[0], p["hard_labels"])
        self.history_ = train_head([self.keys_], self._logits_normalized, self._loss, X, teacher_logits(Y),
                                   **optim_kwargs(p), X_val=Xv, Y_val=Yv, batch_fn=normalized_batch)
        if p["search_hp"] and Xv is not None:
            self.alpha_, self.beta_ = self._search(F.normalize(torch.as_tensor(Xv), dim=1), Yv.argmax(1))
        self.history_ = {**self.history_, "alpha": self.alpha_, "beta": self.beta_}
        self.fitted_ = True
        return self

    @torch.no_grad()
    def _search(self, v: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        """``utils.search_hp``: beta over ``[0.1, search_scale[0])`` in ``search_step[0]`` steps,
        alpha likewise, scored by the argmax agreement with ``target``; the first best is kept
        (strictly better replaces, l. 121). Returns (alpha, beta); (0, 0) if nothing beats 0 %."""
        (sb, sa), (nb, na) = self.params["search_scale"], self.params["search_step"]
        betas = [i * (sb - 0.1) / nb + 0.1 for i in range(int(nb))]
        alphas = [i * (sa - 0.1) / na + 0.1 for i in range(int(na))]
        zero_shot = self.logit_scale_ * v @ self.text_weights_.T
        affinity = v @ self.keys_.T
        best, best_alpha, best_beta = 0.0, 0.0, 0.0
        for beta in betas:
            cache = torch.exp(-beta * (1 - affinity)) @ self.values_
            for alpha in alphas:
                acc = float((torch.argmax(zero_shot + alpha * cache, 1) == target).float().mean())
                if acc > best:
                    best, best_alpha, best_beta = acc, alpha, beta
        return best_alpha, best_beta

    def _logits_normalized(self, v: torch.Tensor) -> torch.Tensor:
        zero_shot = self.logit_scale_ * v @ self.text_weights_.T
        affinity = torch.exp(-self.beta_ * (1 - v @ self.keys_.T))
        return zero_shot + self.alpha_ * affinity @ self.values_

    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        X = as_tensor(check_features(X))
        with torch.no_grad():
            return torch.cat([self._logits(X[i:i + _CHUNK]) for i in range(0, len(X), _CHUNK)]
                             or [torch.zeros(0, self.values_.shape[1])]).numpy()


class TipAdapter(TipAdapterF):
    """The training-free Tip-Adapter (``main.py`` ``run_tip_adapter``, l. 27-63): the untrained
    cache of the weak labels with ``search_hp``'s (alpha, beta) on hold_val; Tip-Adapter-F's
    starting point."""

    name = "tip_adapter"
    description = "Tip-Adapter: zero-shot plus the untrained cache of the weak labels, alpha/beta searched"
    citation = "Zhang et al. 2022, ECCV (Tip-Adapter); gaopengcuhk/Tip-Adapter main.py run_tip_adapter"
    defaults = {**TipAdapterF.defaults, "epochs": 0}
    grid = {}
