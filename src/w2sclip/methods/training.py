"""The training loop shared by the methods that learn a head on cached features.

One budget and one stopping rule for every trained method (PROTOCOL.md section 5): at most
``BUDGET.max_steps`` optimiser steps; every ``BUDGET.eval_every`` steps the loss against the
targets of the validation set (``hold_val``'s weak labels; the ground truth only for the
ceilings) is computed; training stops after ``BUDGET.patience`` evaluations without an
improvement of more than ``BUDGET.min_delta`` (relative), and the parameters of the best
evaluation are restored. Each method's defaults take these numbers from ``BUDGET``, so the
budget is changed in one place. ``selection="val_acc"`` scores argmax agreement instead of the
loss, ``"fixed"`` trains the whole budget. No test labels are ever involved.

The optimiser, its step size and schedule are part of each method (its authors' recipe,
docs/methods.md): ``optimizer="adam"`` (``torch.optim.Adam``), ``"adamw"`` (``torch.optim.AdamW``,
decoupled weight decay) or ``"sgd"`` (``torch.optim.SGD`` with momentum); ``schedule`` is one of
``SCHEDULES`` (``lr_at``), stepped once per optimiser step or once per epoch
(``schedule_unit``), over the fit's own length (``epochs`` passes, or ``max_steps`` steps).
``eval_every=0`` evaluates once per epoch; ``patience=0`` never stops early (the whole schedule
runs and the best evaluation is kept).

Gradients come from autograd through ``loss_fn(logits_fn(x), y, progress)``, or from a
``step_fn`` that writes them directly (the linear heads, ``linear_head.py``: two matrix
multiplications per step). X and Y may be memory-mapped arrays: in minibatch mode only the rows
of one batch (and one validation block) are read into memory at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from w2sclip.methods.base import as_tensor
from w2sclip.methods.params import BOOL, NON_NEGATIVE, NONE, POSITIVE, SEED, Interval, Options
from w2sclip.models.strong.openclip import TEMPLATE_SETS

SELECTIONS = ("val_loss", "val_acc", "fixed")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "cosine_dassl", "cosine_timm")
SCHEDULE_UNITS = ("step", "epoch")


@dataclass(frozen=True)
class Budget:
    """The training budget and stopping rule every trained method uses by default."""

    max_steps: int = 6000
    """Cap on optimiser steps (full-batch steps for the linear heads)."""
    eval_every: int = 5
    """Steps between two evaluations on the validation set."""
    patience: int = 20
    """Evaluations without improvement before training stops."""
    min_delta: float = 1e-4
    """An evaluation improves when its loss is below ``best * (1 - min_delta)`` (relative)."""


BUDGET = Budget()


def budget_defaults() -> dict[str, Any]:
    """The budget keys of a trained method's ``defaults``."""
    return {"max_steps": BUDGET.max_steps, "epochs": None, "eval_every": BUDGET.eval_every,
            "patience": BUDGET.patience, "selection": "val_loss"}


TRAINING_CONSTRAINTS: dict[str, Any] = {
    "lr": POSITIVE, "T": POSITIVE, "weight_decay": NON_NEGATIVE, "momentum": Interval(float, 0, 1, "left"),
    "max_steps": Interval(int, 0, None), "epochs": [NONE, Interval(int, 0, None)],
    "eval_every": Interval(int, 0, None), "patience": Interval(int, 0, None),
    "batch_size": Interval(int, 0, None), "selection": Options(str, SELECTIONS),
    "optimizer": Options(str, OPTIMIZERS), "schedule": Options(str, SCHEDULES),
    "warmup_epochs": Interval(float, 0, None, "left"), "warmup_lr": POSITIVE, "eps": POSITIVE,
    "min_lr": NON_NEGATIVE, "schedule_unit": Options(str, SCHEDULE_UNITS), "drop_last": BOOL, "keep_start": BOOL,
    "hard_labels": BOOL, "learn_scale": BOOL, "seed": SEED, "templates": Options(str, TEMPLATE_SETS),
}
"""Constraints of the keys methods share (``w2sclip.methods.params``)."""


def constraints_for(defaults: dict[str, Any], **specific: Any) -> dict[str, Any]:
    """A method's ``constraints``: the shared ones of its default keys, plus ``specific``."""
    return {**{k: TRAINING_CONSTRAINTS[k] for k in defaults if k in TRAINING_CONSTRAINTS}, **specific}


def optim_kwargs(p: dict[str, Any]) -> dict[str, Any]:
    """``train_head`` keyword arguments of the budget and optimiser keys of a method's params."""
    keys = ("lr", "max_steps", "epochs", "eval_every", "patience", "batch_size", "seed", "selection",
            "weight_decay", "optimizer", "momentum", "eps", "schedule", "schedule_unit", "warmup_epochs",
            "warmup_lr", "min_lr", "drop_last", "keep_start")
    return {k: p[k] for k in keys if k in p}


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimiser steps of one pass over n rows in batches of ``batch_size`` (0: full batch); with
    ``drop_last`` the last, smaller batch is dropped (as a ``DataLoader(drop_last=True)``)."""
    bs = n if batch_size <= 0 or batch_size >= n else batch_size
    return max(1, n // bs if drop_last else -(-n // max(bs, 1)))


def total_steps(n: int, batch_size: int, max_steps: int, epochs: int | None, drop_last: bool = False) -> int:
    """Steps a fit takes at most: ``epochs`` passes over n rows when given, else ``max_steps``."""
    return max_steps if epochs is None else epochs * steps_per_epoch(n, batch_size, drop_last)


class Adam:
    """``torch.optim.Adam``'s update (single-tensor path, bit for bit) with less per-step overhead;
    with ``decoupled=True`` ``torch.optim.AdamW``'s (weight decay ``p *= 1 - lr * wd`` first).

    The heads here take ~1000 tiny steps per fit, where ``torch.optim.Adam.step`` costs more
    than the arithmetic; ``tests/test_linear_head.py`` checks equality with torch's optimisers.
    ``lr`` may be changed between steps (schedules).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, decoupled: bool = False) -> None:
        self.params, self.lr, self.weight_decay, self.eps = list(params), lr, weight_decay, eps
        self.beta1, self.beta2 = betas
        self.decoupled = decoupled
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        b1, b2, t = self.beta1, self.beta2, float(self.steps)
        step_size = self.lr / (1 - b1 ** t)
        bias_correction2_sqrt = (1 - b2 ** t) ** 0.5
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay != 0:
                if self.decoupled:
                    p.mul_(1 - self.lr * self.weight_decay)
                else:
                    g = g.add(p, alpha=self.weight_decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v.sqrt() / bias_correction2_sqrt).add_(self.eps), value=-step_size)


class SGD:
    """``torch.optim.SGD``'s update with momentum (no dampening, not Nesterov), bit for bit:
    ``g += wd * p``; ``buf = g`` at the first step, else ``buf = momentum * buf + g``;
    ``p -= lr * buf``. ``lr`` may be changed between steps (schedules)."""

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        self.params, self.lr, self.momentum, self.weight_decay = list(params), lr, momentum, weight_decay
        self.buf: list[torch.Tensor | None] = [None] * len(self.params)
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                if self.buf[i] is None:
                    self.buf[i] = torch.clone(g).detach()
                else:
                    self.buf[i].mul_(self.momentum).add_(g)
                g = self.buf[i]
            p.add_(g, alpha=-self.lr)


def make_optimizer(params: list[torch.Tensor], name: str, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9, eps: float = 1e-8):
    """``adam`` | ``adamw`` | ``sgd`` (see the module docstring)."""
    if name == "sgd":
        return SGD(params, lr, momentum=momentum, weight_decay=weight_decay)
    if name in ("adam", "adamw"):
        return Adam(params, lr, weight_decay=weight_decay, eps=eps, decoupled=name == "adamw")
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def lr_at(t: int, lr: float, total: int, schedule: str = "constant", warmup: float = 0,
          warmup_lr: float = 1e-5, min_lr: float = 0.0) -> float:
    """Step size at time ``t`` (0-based, in steps or epochs: the schedule's unit) of ``total``.

    - ``constant``: ``lr``.
    - ``cosine``: ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total, eta_min=min_lr)``
      stepped once per unit: ``min_lr + (lr - min_lr) (1 + cos(pi t / total)) / 2`` (as
      openai/weak-to-strong and Tip-Adapter step it, once per optimiser step).
    - ``cosine_dassl``: Dassl's ``ConstantWarmupScheduler`` around ``CosineAnnealingLR(T_max=
      total)`` (``WARMUP_RECOUNT``: the cosine's count starts after the warm-up): ``warmup_lr``
      for ``t < warmup``, then the cosine at ``t - warmup`` (CoOp, CLIP-Adapter; per epoch).
    - ``cosine_timm``: timm's ``CosineLRScheduler(t_initial=total, warmup_t=warmup,
      warmup_lr_init=warmup_lr, lr_min=min_lr)``: linear from ``warmup_lr`` to ``lr`` over the
      warm-up, then the cosine at ``t`` itself (ggjy/vision_weak_to_strong; per epoch).
    """
    if schedule == "constant":
        return lr
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    total = max(total, 1)
    if schedule == "cosine_dassl":
        if t < warmup:
            return warmup_lr
        t = t - int(math.ceil(warmup))
    elif schedule == "cosine_timm" and t < warmup:
        return warmup_lr + t * (lr - warmup_lr) / warmup
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t / total)) / 2


def take_rows(a, idx) -> Any:
    """Rows ``idx`` (sorted indices, or a slice) of an array or tensor, read into memory."""
    if isinstance(a, torch.Tensor):
        return a[torch.as_tensor(idx)] if not isinstance(idx, slice) else a[idx]
    return np.asarray(a[idx])


def _default_batch(X_rows, Y_rows) -> tuple[torch.Tensor, torch.Tensor]:
    return as_tensor(X_rows), as_tensor(Y_rows)


def normalized_batch(X_rows, Y_rows) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``batch_fn`` for heads on L2-normalised features: normalised once, not every step."""
    return torch.nn.functional.normalize(as_tensor(X_rows), dim=1), as_tensor(Y_rows)


def train_head(params: list[torch.Tensor], logits_fn: Callable[[Any], torch.Tensor],
               loss_fn: Callable[[torch.Tensor, Any, float], torch.Tensor],
               X, Y, *, lr: float, batch_size: int, seed: int,
               max_steps: int = BUDGET.max_steps, epochs: int | None = None,
               selection: str = "val_loss", X_val=None, Y_val=None, eval_every: int = BUDGET.eval_every,
               patience: int = BUDGET.patience, min_delta: float = BUDGET.min_delta,
               weight_decay: float = 0.0, optimizer: str = "adam", momentum: float = 0.9,
               eps: float = 1e-8, schedule: str = "constant", schedule_unit: str = "step",
               warmup_epochs: float = 0, warmup_lr: float = 1e-5, min_lr: float = 0.0, drop_last: bool = False,
               keep_start: bool = True,
               on_step: Callable[[int], None] | None = None,
               batch_fn: Callable[[Any, Any], tuple] | None = None,
               step_fn: Callable[[Any, Any, float, bool], None] | None = None) -> dict:
    """Train ``params`` in place; returns the history (see below).

    At most ``max_steps`` steps, or exactly ``epochs`` passes over X when ``epochs`` is given
    (``total_steps``); each epoch visits the rows in a new random order (``seed``), in batches
    of ``batch_size`` (0: full batch), the last one smaller (or dropped, ``drop_last``), as a
    shuffled ``DataLoader``.
    The step size follows ``lr_at(t, lr, total, schedule, warmup_epochs, warmup_lr, min_lr)``
    with t and total counted in steps or in epochs (``schedule_unit``; a warm-up is given in
    epochs and converted to steps for per-step schedules).

    ``batch_fn(X_rows, Y_rows) -> (x, y)`` turns rows of X, Y (or of X_val, Y_val) into what
    ``logits_fn`` and ``loss_fn`` take (default: tensors of the rows); it runs once in full-batch
    mode and per minibatch otherwise. ``step_fn(x, y, progress, full_batch)``, when given,
    writes the parameters' ``.grad`` instead of autograd (``full_batch`` says the same batch
    comes back every step, so whatever depends only on it may be cached). ``progress`` is the
    step's fraction of the fit's length (``step / total``). ``on_step(step)``, when given, is
    called at step 0 and after every optimiser step.

    Validation (``selection`` ``val_loss`` or ``val_acc``) every ``eval_every`` steps, or at the
    end of every epoch when ``eval_every`` is 0: ``val_loss`` scores ``loss_fn(logits_fn(x), y,
    1.0)`` (the method's own objective against hold_val's targets), ``val_acc`` the argmax
    agreement with the targets' argmax (hold_val's weak labels for a student, its ground truth
    for a ceiling). Training stops after ``patience`` evaluations without an improvement of more
    than ``min_delta`` (relative; ``patience=0``: never), and the best evaluation's parameters
    are restored; with ``keep_start=False`` the untrained parameters are never kept (the loops of
    Tip-Adapter and timm evaluate after each epoch only). ``selection="fixed"`` trains the whole
    length and keeps the last parameters.

    History: ``stop_step`` (the step training ended at), ``best_step`` (the step whose
    parameters were kept), ``hit_cap`` (True when training ran to the end rather than stopping
    early), ``max_steps`` (the fit's length in steps), ``val_score`` (the kept evaluation's
    score), ``selection``, and ``steps_run`` (= ``stop_step``).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; valid: {', '.join(SELECTIONS)}")
    if schedule_unit not in SCHEDULE_UNITS:
        raise ValueError(f"unknown schedule_unit {schedule_unit!r}; valid: {', '.join(SCHEDULE_UNITS)}")
    if selection != "fixed" and X_val is None:
        selection = "fixed"  # nothing to validate on: fall back to the fixed budget
    batch_fn = batch_fn or _default_batch
    gen = torch.Generator().manual_seed(seed)
    n = len(X)
    bs = n if batch_size <= 0 or batch_size >= n else batch_size
    full = bs == n
    per_epoch = steps_per_epoch(n, batch_size, drop_last)
    total = total_steps(n, batch_size, max_steps, epochs, drop_last)
    per_epoch_schedule = schedule_unit == "epoch"
    sched_total = -(-total // per_epoch) if per_epoch_schedule else total
    warmup = warmup_epochs if per_epoch_schedule else warmup_epochs * per_epoch
    opt = make_optimizer(params, optimizer, lr, weight_decay=weight_decay, momentum=momentum, eps=eps)
    validate = selection != "fixed"
    val_blocks = _ValBlocks(X_val, Y_val, batch_fn, n if full else bs) if validate else None

    def val_score() -> float:
        """Lower is better."""
        return val_blocks.score(logits_fn, loss_fn, selection == "val_acc")

    best = {"step": 0, "val_score": (val_score() if keep_start or total == 0 else math.inf) if validate else None,
            "state": [p.detach().clone() for p in params]}
    step, bad, early = 0, 0, False
    fixed_batch = batch_fn(X, Y) if full and total > 0 else None
    if on_step is not None:
        on_step(0)
    while step < total and not early:
        order = torch.randperm(n, generator=gen).numpy() if not full else None
        for i in range(0, per_epoch * bs if not full else n, bs):
            x, y = fixed_batch if full else batch_fn(*(take_rows(a, np.sort(order[i:i + bs])) for a in (X, Y)))
            progress = step / max(total, 1)
            t = step // per_epoch if per_epoch_schedule else step
            opt.lr = lr_at(t, lr, sched_total, schedule, warmup, warmup_lr, min_lr)
            if step_fn is not None:
                step_fn(x, y, progress, full)
            else:
                for p in params:
                    p.grad = None
                loss_fn(logits_fn(x), y, progress).backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step)
            due = step % per_epoch == 0 if eval_every == 0 else step % eval_every == 0
            if validate and (due or step == total):
                v = val_score()
                if best["val_score"] == math.inf or v < best["val_score"] - min_delta * abs(best["val_score"]):
                    best = {"step": step, "val_score": v, "state": [p.detach().clone() for p in params]}
                    bad = 0
                else:
                    bad += 1
                early = patience > 0 and bad >= patience and step < total
            if early or step >= total:
                break
    if validate:
        with torch.no_grad():
            for p, s in zip(params, best["state"]):
                p.copy_(s)
    else:
        best = {"step": step, "val_score": None}
    return {"stop_step": step, "best_step": best["step"], "hit_cap": not early, "max_steps": total,
            "val_score": best["val_score"], "selection": selection, "steps_run": step}


class _ValBlocks:
    """Validation data in blocks of ``rows`` (one block, prepared once, when it fits)."""

    def __init__(self, X_val, Y_val, batch_fn: Callable, rows: int) -> None:
        self.X, self.Y, self.batch_fn, self.n = X_val, Y_val, batch_fn, len(X_val)
        self.rows = max(1, rows)
        self.once = batch_fn(X_val, Y_val) if self.n <= self.rows else None

    def __iter__(self):
        if self.once is not None:
            yield self.once
            return
        for i in range(0, self.n, self.rows):
            yield self.batch_fn(take_rows(self.X, slice(i, i + self.rows)),
                                take_rows(self.Y, slice(i, i + self.rows)))

    @torch.no_grad()
    def score(self, logits_fn: Callable, loss_fn: Callable, accuracy: bool) -> float:
        """Mean loss, or minus the argmax agreement (lower is better)."""
        total = 0.0
        for x, y in self:
            z = logits_fn(x)
            if accuracy:
                total -= float((z.argmax(1) == torch.as_tensor(y).argmax(1)).sum())
            else:
                total += float(loss_fn(z, y, 1.0)) * len(z)
        return total / max(self.n, 1)
