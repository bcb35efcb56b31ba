"""CLIP-Adapter: Gao et al. 2021, "CLIP-Adapter: Better Vision-Language Models with Feature
Adapters" (arXiv 2110.04544), visual adapter on cached features (PROTOCOL.md section 4)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.losses import kd_loss
from w2sclip.methods.base import Method, as_probs, as_tensor, check_features, hard, target_logits, teacher_logits
from w2sclip.methods.training import normalized_batch, train_head


class CLIPAdapter(Method):
    """A bottleneck MLP on the image feature, mixed residually, against fixed text prototypes.

    On the L2-normalised feature f, ``A(f) = ReLU(ReLU(f W1^T) W2^T)`` with W1 (D/reduction x D)
    and W2 (D x D/reduction), no bias; ``f' = ratio * A(f) + (1 - ratio) * f``;
    ``z = s * normalize(f') . W_text^T``. Only the MLP is trained, with
    ``T^2 KL(p_w || softmax(z / T))``. ``ratio=0`` is zero-shot.
    """

    name = "clip_adapter"
    description = "CLIP-Adapter: residual bottleneck MLP on image features, fixed text prototypes"
    citation = "Gao et al. 2021, arXiv 2110.04544 (CLIP-Adapter)"
    needs_text = True
    defaults = {"ratio": 0.2, "reduction": 4, "T": 1.0, "lr": 1e-3, "epochs": 1000, "batch_size": 0,
                "weight_decay": 0.0, "selection": "val_loss", "hard_labels": False, "seed": 0}
    grid = {"lr": [1e-4, 1e-3, 1e-2], "ratio": [0.2, 0.6]}

    def _loss(self, logits, target_logits, progress):
        return kd_loss(logits, target_logits, T=self.params["T"])

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
        Xv = Yv = None
        if X_val is not None:
            Xv = check_features(X_val, "X_val")
            Yv = target_logits(y_val, w.shape[0], p["hard_labels"])
        self.history_ = train_head(list(self.adapter_.parameters()), self._logits_normalized, self._loss, X,
                                   teacher_logits(Y), lr=p["lr"], epochs=p["epochs"],
                                   batch_size=p["batch_size"], seed=p["seed"], selection=p["selection"],
                                   X_val=Xv, Y_val=Yv, weight_decay=p["weight_decay"],
                                   batch_fn=normalized_batch)
        self.fitted_ = True
        return self

    def _logits(self, X: torch.Tensor) -> torch.Tensor:
        return self._logits_normalized(F.normalize(X, dim=1))

    def _logits_normalized(self, v: torch.Tensor) -> torch.Tensor:
        r = self.params["ratio"]
        f = r * self.adapter_(v) + (1 - r) * v
        return self.logit_scale_ * F.normalize(f, dim=1) @ self.text_weights_.T

    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        with torch.no_grad():
            return self._logits(as_tensor(check_features(X))).numpy()
