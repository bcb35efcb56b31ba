"""Losses of the weak-to-strong methods (PROTOCOL.md sections 3-4). Each returns the batch mean.

Shapes: ``student_logits`` (N, C); ``teacher_logits`` (N, C); ``teacher_probs`` (N, C) rows
summing to one. Teacher logits may hold ``-inf`` (log of an exact zero probability, e.g. one-hot
targets): ``0 * log 0`` counts as 0, so hard targets stay exactly one-hot at any temperature.
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
    return (T * T) * _kl_rows(teacher_logits, student_logits, T).mean()


def _kl_rows(teacher_logits: torch.Tensor, student_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Per row ``KL(softmax(teacher / T) || softmax(student / T))``, with 0 log 0 = 0."""
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    p_t = log_p_t.exp()
    return torch.where(p_t > 0, p_t * (log_p_t - log_p_s), torch.zeros_like(p_t)).sum(1)


def kd_loss_from_probs(student_logits: torch.Tensor, teacher_probs: torch.Tensor, T: float = 1.0
                       ) -> torch.Tensor:
    """``kd_loss`` when the teacher is given as probabilities already at temperature ``T``."""
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    p = teacher_probs
    return (T * T) * (torch.xlogy(p, p) - p * log_p_s).sum(1).mean()


def logconf_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, alpha: float,
                 hard_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Auxiliary confidence loss (Burns et al. 2023), multi-class form.

    target = (1 - alpha) * teacher_probs + alpha * onehot(hard_labels) (no gradient through
    the target); loss = CE(student, target). ``hard_labels`` (N,) are the student's hardened
    predictions; None means ``argmax student`` (the plain form). Burns et al. harden at the
    weak labels' class prior: ``prior_matched_labels(student_logits, teacher_probs.mean(0))``.
    """
    if hard_labels is None:
        hard_labels = student_logits.detach().argmax(1)
    hard = F.one_hot(hard_labels, student_logits.shape[1]).to(teacher_probs)
    return soft_cross_entropy(student_logits, (1 - alpha) * teacher_probs + alpha * hard)


def logconf_coef(step_frac: float, aux_coef: float = 0.5, warmup_frac: float = 0.1) -> float:
    """Weight of the hardened strong labels at ``step_frac`` (fraction of the training steps),
    exactly as ``logconf_loss_fn`` of openai/weak-to-strong ``weak_to_strong/loss.py``:
    ``(step_frac if step_frac <= warmup_frac else 1) * aux_coef`` (a ramp from 0 to
    ``warmup_frac * aux_coef``, then a jump to ``aux_coef``)."""
    return float((step_frac if step_frac <= warmup_frac else 1.0) * aux_coef)


def prior_counts(prior: torch.Tensor, n: int) -> torch.Tensor:
    """Integer class counts (C,) summing to n closest to ``n * prior`` (largest remainders)."""
    want = prior.double().clamp_min(0) * (n / max(float(prior.double().clamp_min(0).sum()), 1e-300))
    counts = want.floor().long()
    short = n - int(counts.sum())
    if short > 0:
        counts[torch.argsort(want - counts, descending=True, stable=True)[:short]] += 1
    return counts


@torch.no_grad()
def prior_bias(student_logits: torch.Tensor, prior: torch.Tensor, bias: torch.Tensor | None = None,
               sweeps: int = 10) -> torch.Tensor:
    """Per-class biases b (C,) such that ``argmax_c (z_ic + b_c)`` has the class counts
    ``prior_counts(prior, N)`` (see ``prior_matched_labels``), starting from ``bias``."""
    z = student_logits.detach().float()
    n, c = z.shape
    b = torch.zeros(c, dtype=z.dtype, device=z.device) if bias is None else bias.to(z).clone()
    if n < 2 or c < 2:
        return b
    k = prior_counts(prior.to(z.device), n).to(z.device)
    rows = torch.arange(n, device=z.device)
    depth = min(int(k.max()) + 1, n)  # margins needed per class: the k_c-th and (k_c+1)-th largest
    kk = k.clamp(1, n - 1)
    for _ in range(sweeps):
        a = z + b
        top2, idx2 = a.topk(2, dim=1)
        if torch.equal(torch.bincount(idx2[:, 0], minlength=c), k):
            break
        margin = a - top2[:, :1]  # z_ic + b_c - max_{c' != c}(z_ic' + b_c') ...
        margin[rows, idx2[:, 0]] = top2[:, 0] - top2[:, 1]  # ... where c is the row's best
        best = margin.t().contiguous().topk(depth, dim=1).values  # (C, depth), descending
        hi = best.gather(1, (kk - 1).unsqueeze(1)).squeeze(1)
        lo = best.gather(1, kk.clamp(max=depth - 1).unsqueeze(1)).squeeze(1)
        target = torch.where(k == 0, best[:, 0] + 1.0, (hi + lo) / 2)  # exactly k_c rows pick c
        if bool((k == n).any()):
            target = torch.where(k == n, margin.min(0).values - 1.0, target)
        b -= target / 2
    return b


def prior_matched_labels(student_logits: torch.Tensor, prior: torch.Tensor,
                         bias: torch.Tensor | None = None, sweeps: int = 10) -> torch.Tensor:
    """Hard labels (N,) of the student whose class frequencies match ``prior`` (C,).

    ``argmax_c (z_ic + b_c)`` with one bias per class: Burns et al.'s prior-matched hardening
    (``logconf_loss_fn`` of openai/weak-to-strong thresholds the binary strong prediction at the
    batch quantile given by the weak labels' mean) generalised to C classes. The target counts
    are ``prior_counts(prior, N)``; the biases come from damped Jacobi sweeps (``prior_bias``):
    every class's bias moves half way to the value at which exactly k_c rows would pick it against
    their current best other class (the midpoint of the k_c-th and (k_c+1)-th largest margin
    ``z_ic + b_c - max_{c' != c} (z_ic' + b_c')``), until the counts match or ``sweeps`` run out.
    With C = 2 one sweep is exact from any start: the relative bias becomes the threshold on
    ``z_1 - z_0`` (monotone in p_0) at which k_1 rows are class 1, i.e. ``logconf_loss_fn``'s
    quantile threshold. For C > 2 the counts come close (within 0.5 % of the rows after 10 cold
    sweeps on 8000 x 345 random logits); ``PriorMatcher`` warm-starts from the previous step.
    """
    return (student_logits.detach().float() + prior_bias(student_logits, prior, bias, sweeps)).argmax(1)


class PriorMatcher:
    """``prior_matched_labels`` warm-started from the biases of its previous call (the logits
    move little between training steps, so one or two sweeps usually suffice)."""

    def __init__(self, sweeps: int = 10) -> None:
        self.sweeps, self.bias = sweeps, None

    def __call__(self, student_logits: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        if self.bias is not None and self.bias.shape[0] != student_logits.shape[1]:
            self.bias = None
        self.bias = prior_bias(student_logits, prior, self.bias, self.sweeps)
        return (student_logits.detach().float() + self.bias).argmax(1)


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
    kl = (T * T) * _kl_rows(teacher_logits, student_logits, T)
    return ((1 - a) * kl + a * ce_self).mean()
