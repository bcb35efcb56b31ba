"""Losses of the weak-to-strong methods (PROTOCOL.md sections 3-4). Each returns the batch mean.

Shapes: ``student_logits`` (N, C); ``teacher_logits`` (N, C); ``teacher_probs`` (N, C) rows
summing to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c target_c * log softmax(student)_c."""
    return -(target_probs * F.log_softmax(student_logits, dim=1)).sum(1).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0
            ) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): ``T^2 * KL(p_teacher || p_student)``.

    ``p = softmax(logits / T)`` for both; mean over the batch.
    """
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    return (T * T) * (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()


def kd_loss_from_probs(student_logits: torch.Tensor, teacher_probs: torch.Tensor, T: float = 1.0
                       ) -> torch.Tensor:
    """``kd_loss`` when the teacher is given as probabilities already at temperature ``T``."""
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    p = teacher_probs
    return (T * T) * (torch.xlogy(p, p) - p * log_p_s).sum(1).mean()


def logconf_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, alpha: float
                 ) -> torch.Tensor:
    """Auxiliary confidence loss (Burns et al. 2023), multi-class form.

    target = (1 - alpha) * teacher_probs + alpha * onehot(argmax student) (no gradient through
    the target); loss = CE(student, target).
    """
    hard = F.one_hot(student_logits.detach().argmax(1), student_logits.shape[1]).to(teacher_probs)
    return soft_cross_entropy(student_logits, (1 - alpha) * teacher_probs + alpha * hard)


def adaptconf_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, theta: float = 0.5,
                   T: float = 1.0) -> torch.Tensor:
    """Adaptive confidence distillation (Guo et al. 2024, "Vision Superalignment").

    Per sample, ce_self = CE(z_s, argmax z_s), ce_weak = CE(z_s, argmax z_w),
    a = exp(ce_self/theta) / (exp(ce_self/theta) + exp(ce_weak/theta)) (no gradient);
    loss = mean[(1 - a) * T^2 * KL(p_w || softmax(z_s/T)) + a * ce_self].
    """
    log_p_s = F.log_softmax(student_logits, dim=1)
    ce_self = -log_p_s.gather(1, student_logits.detach().argmax(1, keepdim=True)).squeeze(1)
    ce_weak = -log_p_s.gather(1, teacher_logits.argmax(1, keepdim=True)).squeeze(1)
    a = torch.softmax(torch.stack([ce_self, ce_weak], 1).detach() / theta, dim=1)[:, 0]
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    kl = (T * T) * (log_p_t.exp() * (log_p_t - F.log_softmax(student_logits / T, dim=1))).sum(1)
    return ((1 - a) * kl + a * ce_self).mean()
