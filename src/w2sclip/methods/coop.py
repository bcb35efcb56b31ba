"""CoOp: Zhou et al. 2022, "Learning to Prompt for Vision-Language Models" (IJCV), on cached
image features with the weak labels as targets; optimiser as KaiyangZhou/CoOp
``configs/trainers/CoOp/*.yaml`` (with Dassl's defaults) and ``trainers/coop.py``."""

from __future__ import annotations

import warnings

import torch

from w2sclip.methods.base import Method, as_probs, check_features, target_logits, validation_set
from w2sclip.methods.clip_adapter import SGD_AS_COOP
from w2sclip.methods.training import budget_defaults, constraints_for, normalized_batch, optim_kwargs, train_head
from w2sclip.models.strong.openclip import template_set

FALLBACK_TEMPLATES = ["a photo of a {}."]
"""What ``templates="dataset"`` means when the prompt encoder was built without the dataset's
templates (CoOp's own ``ctx_init`` "a photo of a")."""


class CoOp(Method):
    """Learned prompt context shared by all classes, trained through the frozen text encoder.

    One context per prompt template of the ``templates`` set (default the dataset's, the same
    ensemble the other text-initialised heads start from): template ``"<prefix> {}<suffix>"``
    gives the prompt ``[V_1 .. V_M] <class><suffix>`` with V initialised from the prefix's word
    embeddings (CoOp's ``ctx_init``, class token at the end). Class features: per template the
    normalised text features, averaged over the templates, normalised (at initialisation exactly
    the zero-shot prototypes). Logits ``s * normalize(v) . t_c(V)``; loss
    ``T^2 KL(p_w || softmax(z / T))``. Optimiser as CoOp's configs: SGD, lr 0.002, momentum 0.9,
    weight decay 5e-4, batch 32, one warm-up epoch at a constant 1e-5, then cosine annealing
    (over ``training.BUDGET``'s cap, with its stopping rule). Adam at 2e-3 moves every
    coordinate of the context by ~2e-3 per step, about a tenth of the token embeddings' scale
    (std ~0.017 for OpenAI CLIP), and collapsed all class features onto one within tens of steps.

    The only method whose training runs the text encoder (``fit`` needs ``prompt_encoder``, see
    ``StrongModel.prompt_encoder``); after fitting, the class features are stored
    (``text_features_``) and inference needs no text encoder.
    """

    name = "coop"
    description = "CoOp: learned prompt context through the frozen text encoder"
    citation = "Zhou et al. 2022, IJCV (CoOp)"
    needs_prompt_encoder = True
    defaults = {"templates": "dataset", "T": 1.0, "lr": 2e-3, **budget_defaults(), **SGD_AS_COOP,
                "hard_labels": False, "seed": 0}
    constraints = constraints_for(defaults)
    grid = {"lr": [2e-4, 2e-3, 2e-2]}

    def _templates(self, prompt_encoder) -> list[str]:
        dataset = getattr(prompt_encoder, "templates", None)
        if dataset is None:
            if self.params["templates"] == "dataset":
                warnings.warn("coop: the prompt encoder has no dataset templates; starting from "
                              f"{FALLBACK_TEMPLATES} (build it with StrongModel.prompt_encoder("
                              "classnames, templates))", stacklevel=3)
            dataset = FALLBACK_TEMPLATES
        return template_set(self.params["templates"], dataset)

    def fit(self, X, y, *, text_weights=None, logit_scale=None, X_val=None, y_val=None,
            prompt_encoder=None, on_step=None) -> "CoOp":
        p = self.params
        X = check_features(X)
        if prompt_encoder is None:
            raise ValueError("coop needs prompt_encoder=StrongModel.prompt_encoder(classnames, templates): "
                             "it trains context tokens through the CLIP text encoder")
        c = len(prompt_encoder.classnames)
        self.logit_scale_ = float(logit_scale or 100.0)
        self.templates_ = self._templates(prompt_encoder)
        self.ctx_ = [torch.nn.Parameter(t) for t in prompt_encoder.prepare_templates(self.templates_)]
        self._encoder = prompt_encoder
        Xv, Yv = validation_set(X_val, y_val, c, p["hard_labels"])
        self.history_ = train_head(self.ctx_, self._logits_normalized, self._loss, X,
                                   target_logits(as_probs(y, c), c, p["hard_labels"]), **optim_kwargs(p),
                                   X_val=Xv, Y_val=Yv, on_step=on_step, batch_fn=normalized_batch)
        with torch.no_grad():
            # kept on the CPU with the features, whatever device the text tower ran on
            self.text_features_ = prompt_encoder(self.ctx_).detach().float().cpu()
        del self._encoder
        self.fitted_ = True
        return self

    def _logits_normalized(self, v: torch.Tensor) -> torch.Tensor:
        text = self._encoder(self.ctx_) if hasattr(self, "_encoder") else self.text_features_
        return self.logit_scale_ * v @ text.to(v.device, v.dtype).T  # the text tower may sit on a GPU
