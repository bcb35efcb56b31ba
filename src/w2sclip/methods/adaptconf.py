"""Adaptive confidence distillation (AdaptConf): Guo et al. 2024, "Vision Superalignment:
Weak-to-Strong Generalization for Vision Foundation Models", as ``AdaptConf`` in
ggjy/vision_weak_to_strong ``classification/distillers/adaptconf.py`` (PROTOCOL.md section 4)."""

from __future__ import annotations

import torch

from w2sclip.losses import adaptconf_loss
from w2sclip.methods.cpl import CPL
from w2sclip.methods.linear_head import LinearHeadGrad
from w2sclip.methods.params import POSITIVE
from w2sclip.methods.training import constraints_for

TIMM_FINETUNE = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "batch_size": 1024, "epochs": 100,
                 "schedule": "cosine_timm", "schedule_unit": "epoch", "warmup_epochs": 5.0, "warmup_lr": 1e-4,
                 "min_lr": 1e-6, "selection": "val_acc", "eval_every": 0, "patience": 0, "drop_last": True,
                 "keep_start": False}
"""ggjy/vision_weak_to_strong's recipe for a pretrained strong model (``classification/configs/
imagenet_mae.yaml`` l. 1-10: AdamW, lr 2e-3, weight decay 0.05, batch 128 per process, 100
epochs, cosine, 5 warm-up epochs from 1e-4, min lr 1e-6), launched on 8 processes (README l. 86,
``--nproc_per_node=8``; ``train.py`` l. 598-601 gives each its own loader of ``batch_size``), so
one optimiser step averages 8 x 128 = 1024 images: batch 1024 here (the whole of hold_fit when
it is smaller); timm's ``train.py`` (``create_scheduler``, l. 565, stepped once per epoch, l.
743; ``--cooldown-epochs`` 0, l. 208), the trained epoch with the best evaluation kept
(``CheckpointSaver`` on ``--eval-metric top1``, l. 328, 662-717; never the untrained start). Their top-1 is
on labelled data; here the evaluation is the argmax agreement with hold_val's weak labels (the
label-free rule of docs/methods.md), or hold_val's ground truth for a ceiling."""


class AdaptConf(CPL):
    """CPL's head (text-initialised prototypes, fixed logit scale) trained with AdaptConf.

    Per sample ``a = softmax([ce_self, ce_weak] / theta)[0]`` (no gradient); loss
    ``mean[(1 - a) * T^2 KL(p_w || softmax(z_s / T))  + a * CE(z_s, argmax z_s)]``.
    ``a = sigmoid((z_weak - z_max) / theta)`` depends on logit differences, and cosine logits are
    ``s * cos``, so the temperature is relative to the logit scale: ``theta = theta_rel * s``,
    i.e. ``a = sigmoid((cos_weak - cos_max) / theta_rel)`` whatever s is (Guo et al.'s
    ``superalignment_threshold`` 0.5 acts on the logits of trained linear heads, whose scale is
    not CLIP's 100). Default ``theta_rel = 0.04``: their ``--superalignment-threshold 4.0`` of the
    ViT fine-tuning command (README l. 86) at OpenAI CLIP's s = 100. Their ground-truth term
    (``loss_gt``, ``adaptconf.py`` l. 57) is dropped: the student sees no ground truth.
    Recipe: ``TIMM_FINETUNE``.
    """

    name = "adaptconf"
    description = "CPL head trained with adaptive confidence distillation (weak KD vs own hard labels)"
    citation = "Guo et al. 2024, Vision Superalignment"
    defaults = {**CPL.defaults, **TIMM_FINETUNE, "theta_rel": 0.04}
    constraints = constraints_for(defaults, theta_rel=POSITIVE)
    grid = {"lr": [6e-4, 2e-3, 6e-3]}

    def _theta(self) -> float:
        return self.params["theta_rel"] * float(self.log_scale_.detach().exp())

    def _loss(self, logits: torch.Tensor, target_logits: torch.Tensor, progress: float) -> torch.Tensor:
        return adaptconf_loss(logits, target_logits, theta=self._theta(), T=self.params["T"])

    def _grad(self) -> LinearHeadGrad:
        return LinearHeadGrad(self.prototypes_, log_scale=self.log_scale_, loss="adaptconf",
                              T=self.params["T"], theta=self.params["theta_rel"], theta_relative=True)
