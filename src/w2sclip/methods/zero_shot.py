"""Zero-shot CLIP (Radford et al. 2021): image features against text prototypes."""

from __future__ import annotations

import numpy as np

from w2sclip.methods.base import Method, check_features
from w2sclip.methods.training import constraints_for


class ZeroShot(Method):
    """Classify by cosine similarity to the prompt-ensemble text embeddings; ``fit`` learns nothing."""

    name = "zero_shot"
    description = "zero-shot CLIP: prompt-ensemble text embeddings as the classifier"
    citation = "Radford et al. 2021, ICML (CLIP)"
    trains = False
    head = "cpl"  # the CPL head at its text initialisation
    defaults = {"templates": "dataset", "seed": 0}
    constraints = constraints_for(defaults)

    def fit(self, X, y=None, *, text_weights=None, logit_scale=None, X_val=None, y_val=None) -> "ZeroShot":
        if X is not None:
            check_features(X)
        w, s = self._text(text_weights, logit_scale)
        self.prototypes_, self.logit_scale_ = w.numpy(), s
        self.fitted_ = True
        return self

    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        X = check_features(X)
        X = X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)
        return self.logit_scale_ * X @ self.prototypes_.T
