"""The training loop shared by the methods that learn a head on cached features.

Adam on the given parameters; full batch when ``batch_size`` is 0 or >= N. Stopping:
``selection="fixed"`` trains all epochs; ``"val_loss"`` keeps the parameters with the lowest
loss on (X_val, y_val) and ``"val_acc"`` those with the highest argmax agreement with y_val:
with weak labels that is the weak-label loss / agreement on ``hold_val``, with ground truth (the
ceilings) the ground-truth loss / accuracy. Evaluation every ``eval_every`` steps; training
stops after ``patience`` evaluations without improvement. No test labels are ever involved.

Gradients come from autograd through ``loss_fn(logits_fn(x), y, progress)``, or from a
``step_fn`` that writes them directly (the linear heads, ``linear_head.py``: two matrix
multiplications per step). X and Y may be memory-mapped arrays: in minibatch mode only the rows
of one batch (and one validation block) are read into memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from w2sclip.methods.base import as_tensor

SELECTIONS = ("val_loss", "val_acc", "fixed")


class Adam:
    """``torch.optim.Adam``'s update (single-tensor path, bit for bit) with less per-step overhead.

    The heads here take ~1000 tiny steps per fit, where ``torch.optim.Adam.step`` costs more
    than the arithmetic; ``tests/test_linear_head.py`` checks equality with torch's Adam.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.weight_decay, self.eps = list(params), lr, weight_decay, eps
        self.beta1, self.beta2 = betas
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
            g = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v.sqrt() / bias_correction2_sqrt).add_(self.eps), value=-step_size)


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
               X, Y, *, lr: float, epochs: int, batch_size: int, seed: int,
               selection: str = "val_loss", X_val=None, Y_val=None, eval_every: int = 5,
               patience: int = 20, weight_decay: float = 0.0,
               on_step: Callable[[int], None] | None = None,
               batch_fn: Callable[[Any, Any], tuple] | None = None,
               step_fn: Callable[[Any, Any, float, bool], None] | None = None) -> dict:
    """Train ``params`` in place; returns a history dict (best step, losses).

    ``batch_fn(X_rows, Y_rows) -> (x, y)`` turns rows of X, Y (or of X_val, Y_val) into what
    ``logits_fn`` and ``loss_fn`` take (default: tensors of the rows); it runs once in
    full-batch mode and per minibatch otherwise. ``step_fn(x, y, progress, full_batch)``, when
    given, writes the parameters' ``.grad`` instead of autograd (``full_batch`` says the same
    batch comes back every step, so whatever depends only on it may be cached).
    ``on_step(step)``, when given, is called at step 0 and after every optimiser step (used by
    the model-selection study to look at the whole trajectory).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; valid: {', '.join(SELECTIONS)}")
    if selection != "fixed" and X_val is None:
        selection = "fixed"  # nothing to validate on: fall back to the fixed budget
    batch_fn = batch_fn or _default_batch
    gen = torch.Generator().manual_seed(seed)
    n = len(X)
    bs = n if batch_size <= 0 or batch_size >= n else batch_size
    full = bs == n
    total = epochs * -(-n // bs)
    opt = Adam(params, lr=lr, weight_decay=weight_decay)
    validate = selection != "fixed"
    val_blocks = _ValBlocks(X_val, Y_val, batch_fn, n if full else bs) if validate else None

    def val_score() -> float:
        """Lower is better."""
        return val_blocks.score(logits_fn, loss_fn, selection == "val_acc")

    best = {"step": 0, "val_score": val_score() if validate else None,
            "state": [p.detach().clone() for p in params]}
    step, bad = 0, 0
    fixed_batch = batch_fn(X, Y) if full and epochs > 0 else None
    if on_step is not None:
        on_step(0)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).numpy() if not full else None
        for i in range(0, n, bs):
            x, y = fixed_batch if full else batch_fn(*(take_rows(a, np.sort(order[i:i + bs])) for a in (X, Y)))
            progress = step / max(total, 1)
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
            if validate and (step % eval_every == 0 or step == total):
                v = val_score()
                if v < best["val_score"] - 1e-6:
                    best = {"step": step, "val_score": v, "state": [p.detach().clone() for p in params]}
                    bad = 0
                else:
                    bad += 1
                if bad >= patience:
                    break
        else:
            continue
        break
    if validate:
        with torch.no_grad():
            for p, s in zip(params, best["state"]):
                p.copy_(s)
    else:
        best = {"step": step, "val_score": None}
    return {"steps_run": step, "best_step": best["step"], "val_score": best["val_score"],
            "selection": selection}


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
