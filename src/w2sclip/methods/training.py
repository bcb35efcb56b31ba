"""The training loop shared by the methods that learn a head on cached features.

Adam on the given parameters; full batch when ``batch_size`` is 0 or >= N. Stopping:
``selection="fixed"`` trains all epochs; ``"val_loss"`` keeps the parameters with the lowest
loss on (X_val, y_val) and ``"val_acc"`` those with the highest argmax agreement with y_val:
with weak labels that is the weak-label loss / agreement on ``hold_val``, with ground truth (the
ceilings) the ground-truth loss / accuracy. Evaluation every ``eval_every`` steps; training
stops after ``patience`` evaluations without improvement. No test labels are ever involved.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

SELECTIONS = ("val_loss", "val_acc", "fixed")


def train_head(params: list[torch.Tensor], logits_fn: Callable[[torch.Tensor], torch.Tensor],
               loss_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
               X: np.ndarray, Y: np.ndarray, *, lr: float, epochs: int, batch_size: int, seed: int,
               selection: str = "val_loss", X_val: Optional[np.ndarray] = None,
               Y_val: Optional[np.ndarray] = None, eval_every: int = 5, patience: int = 20,
               weight_decay: float = 0.0, on_step: Optional[Callable[[int], None]] = None) -> dict:
    """Train ``params`` in place; returns a history dict (best step, losses).

    ``on_step(step)``, when given, is called at step 0 and after every optimiser step (used by
    the model-selection study to look at the whole trajectory).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; valid: {', '.join(SELECTIONS)}")
    if selection != "fixed" and X_val is None:
        selection = "fixed"  # nothing to validate on: fall back to the fixed budget
    gen = torch.Generator().manual_seed(seed)
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(Y)
    n = len(Xt)
    bs = n if batch_size <= 0 or batch_size >= n else batch_size
    steps_per_epoch = -(-n // bs)
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    Xv = torch.as_tensor(X_val) if X_val is not None else None
    Yv = torch.as_tensor(Y_val) if Y_val is not None else None

    def val_score() -> float:
        """Lower is better."""
        with torch.no_grad():
            z = logits_fn(Xv)
            if selection == "val_acc":
                return -float((z.argmax(1) == Yv.argmax(1)).float().mean())
            return float(loss_fn(z, Yv, 1.0))

    validate = selection != "fixed"
    best = {"step": 0, "val_score": val_score() if validate else None,
            "state": [p.detach().clone() for p in params]}
    step, bad = 0, 0
    if on_step is not None:
        on_step(0)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen) if bs < n else None
        for i in range(0, n, bs):
            idx = order[i:i + bs] if order is not None else slice(None)
            loss = loss_fn(logits_fn(Xt[idx]), Yt[idx], step / max(total, 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
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
