"""CoOp: Zhou et al. 2022, "Learning to Prompt for Vision-Language Models" (IJCV), on cached
image features with the weak labels as targets; prompts as KaiyangZhou/CoOp ``trainers/coop.py``
and training as its ``configs/trainers/CoOp/rn50.yaml`` with Dassl's defaults."""

from __future__ import annotations

import warnings

import torch

from w2sclip.methods.base import Method, as_probs, check_features, target_logits, validation_set
from w2sclip.methods.clip_adapter import DASSL_COOP
from w2sclip.methods.training import constraints_for, normalized_batch, optim_kwargs, train_head
from w2sclip.models.strong.openclip import template_set

FALLBACK_TEMPLATES = ["a photo of a {}."]
"""What ``templates="dataset"`` means when the prompt encoder was built without the dataset's
templates (CoOp's own ``ctx_init`` "a photo of a")."""


class CoOp(Method):
    """Learned prompt context shared by all classes, trained through the frozen text encoder.

    As CoOp's code: one context ``[V_1 .. V_M]`` shared by all classes (``CSC False``,
    CoOp ``train.py`` l. 92), initialised from the word embeddings of "a photo of a"
    (``ctx_init``, l. 72-80; ``configs/trainers/CoOp/rn50_ctxv1.yaml`` l. 33), prompt ``[SOS] V_1..V_M <class> . [EOS]``
    (class token at the "end", l. 100, 126-134); logits ``s * normalize(v) . normalize(t_c(V))``
    with the model's logit scale (l. 202-206); loss ``T^2 KL(p_w || softmax(z / T))`` (their
    ``cross_entropy`` on labels, l. 273, with the weak soft labels). Training as
    ``clip_adapter.DASSL_COOP`` (SGD 0.002, batch 32, 200 epochs, one constant warm-up epoch,
    cosine per epoch, the last epoch kept). ``templates="simple"`` is that one prompt;
    ``coop_ensemble`` (``templates="dataset"``) learns one context per template of the dataset's
    ensemble instead, our variant.

    The only methods whose training runs the text encoder (``fit`` needs ``prompt_encoder``, see
    ``StrongModel.prompt_encoder``); after fitting, the class features are stored
    (``text_features_``) and inference needs no text encoder.
    """

    name = "coop"
    description = "CoOp: learned prompt context through the frozen text encoder"
    citation = "Zhou et al. 2022, IJCV (CoOp)"
    needs_prompt_encoder = True
    defaults = {"templates": "simple", "T": 1.0, **DASSL_COOP, "hard_labels": False, "seed": 0}
    constraints = constraints_for(defaults)
    grid = {"lr": [6e-4, 2e-3, 6e-3]}

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


class CoOpEnsemble(CoOp):
    """CoOp with one learned context per prompt template of the dataset's ensemble (ours): template
    ``"<prefix> {}<suffix>"`` gives ``[V_1 .. V_M] <class><suffix>`` with V initialised from the
    prefix's words; class features = per template the normalised text features, averaged,
    normalised, so it starts from exactly the zero-shot prototypes of the other text-initialised
    heads. Training as ``coop``."""

    name = "coop_ensemble"
    description = "CoOp with one learned context per template of the dataset's prompt ensemble (ours)"
    citation = "w2sclip variant of Zhou et al. 2022 (CoOp)"
    defaults = {**CoOp.defaults, "templates": "dataset"}
