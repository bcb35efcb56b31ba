"""CoOp: Zhou et al. 2022, "Learning to Prompt for Vision-Language Models" (IJCV), on cached
image features with the weak labels as targets."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from w2sclip.losses import kd_loss
from w2sclip.methods.base import Method, as_probs, as_tensor, check_features, target_logits
from w2sclip.methods.training import normalized_batch, train_head


class CoOp(Method):
    """Learned context tokens shared by all classes, trained through the frozen text encoder.

    Prompts ``[V_1 .. V_M] <class>.`` start from the embeddings of ``ctx_init``; logits
    ``s * normalize(v) . t_c(V)``; loss ``T^2 KL(p_w || softmax(z / T))``. The only method whose
    training runs the text encoder (``fit`` needs ``prompt_encoder``, see
    ``StrongModel.prompt_encoder``); after fitting, the class features are stored
    (``text_features_``) and inference needs no text encoder.
    """

    name = "coop"
    description = "CoOp: learned prompt context through the frozen text encoder"
    citation = "Zhou et al. 2022, IJCV (CoOp)"
    needs_prompt_encoder = True
    defaults = {"ctx_init": "a photo of a", "T": 1.0, "lr": 2e-3, "epochs": 200, "batch_size": 0,
                "selection": "val_loss", "hard_labels": False, "seed": 0}
    grid = {"lr": [5e-4, 2e-3, 5e-3]}

    def _loss(self, logits, targets, progress):
        return kd_loss(logits, targets, T=self.params["T"])

    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None,
            prompt_encoder=None, on_step=None) -> "CoOp":
        p = self.params
        X = check_features(X)
        if prompt_encoder is None:
            raise ValueError("coop needs prompt_encoder=StrongModel.prompt_encoder(classnames): it "
                             "trains context tokens through the CLIP text encoder")
        c = len(prompt_encoder.classnames)
        self.logit_scale_ = float(logit_scale or 100.0)
        self.ctx_ = torch.nn.Parameter(prompt_encoder.prepare(p["ctx_init"]))
        self._encoder = prompt_encoder
        Xv = check_features(X_val, "X_val") if X_val is not None else None
        Yv = target_logits(y_val, c, p["hard_labels"]) if X_val is not None else None
        self.history_ = train_head([self.ctx_], self._logits_normalized, self._loss, X,
                                   target_logits(as_probs(y, c), c, p["hard_labels"]),
                                   lr=p["lr"], epochs=p["epochs"], batch_size=p["batch_size"],
                                   seed=p["seed"], selection=p["selection"], X_val=Xv, Y_val=Yv,
                                   on_step=on_step, batch_fn=normalized_batch)
        with torch.no_grad():
            # kept on the CPU with the features, whatever device the text tower ran on
            self.text_features_ = prompt_encoder(self.ctx_).detach().float().cpu()
        del self._encoder
        self.fitted_ = True
        return self

    def _logits(self, X: torch.Tensor) -> torch.Tensor:
        return self._logits_normalized(F.normalize(X, dim=1))

    def _logits_normalized(self, v: torch.Tensor) -> torch.Tensor:
        text = self._encoder(self.ctx_) if hasattr(self, "_encoder") else self.text_features_
        return self.logit_scale_ * v @ text.to(v.device, v.dtype).T  # the text tower may sit on a GPU

    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        with torch.no_grad():
            return self._logits(as_tensor(check_features(X))).numpy()
