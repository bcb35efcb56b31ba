"""Model selection under weak supervision (PROTOCOL.md section 6): criteria and their study.

A criterion scores a candidate (a hyper-parameter setting at a training step) from its logits
on ``hold_val`` and the weak probabilities there; none sees ground truth. The study trains each
method for every value of its learning-rate grid, scores snapshots along the trajectory with
every criterion, and reports the D_test accuracy of each criterion's pick next to an oracle
that picks on D_test labels (an upper bound, never a usable rule).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from w2sclip.data.splits import protocol_splits
from w2sclip.losses import kd_loss_from_probs
from w2sclip.methods import get_method
from w2sclip.pipeline import softmax


def _entropy(z: np.ndarray, p_weak: np.ndarray) -> float:
    p = softmax(z)
    return float(-(p * np.log(np.clip(p, 1e-12, None))).sum(1).mean())


CRITERIA: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "weak_loss": lambda z, pw: float(kd_loss_from_probs(torch.as_tensor(z), torch.as_tensor(pw))),
    "weak_disagreement": lambda z, pw: float((z.argmax(1) != pw.argmax(1)).mean()),
    "entropy": _entropy,
}
"""Name -> score on hold_val (lower is better). No ground truth anywhere."""

SNAPSHOTS = (0, 5, 10, 20, 50, 100, 200, 500, 1000)
"""Optimiser steps at which candidates are scored (full-batch steps)."""


def trajectory(method: str, lr: float, run: dict, steps=SNAPSHOTS) -> list[dict]:
    """Train ``method`` at ``lr`` for max(steps) steps (no early stopping) on one prepared run;
    at each snapshot record every criterion on hold_val and the D_test accuracy."""
    task, feats, seed = run["task"], run["feats"], run["seed"]
    s = protocol_splits(task.test_labels, seed)
    p_weak = softmax(run["weak"])
    fit, val, test = s["hold_fit"], s["hold_val"], s["test"]
    m = get_method(method, seed=seed, lr=lr, epochs=max(steps), selection="fixed")
    rows, wanted = [], set(steps)

    def look(step: int) -> None:
        if step not in wanted:
            return
        m.fitted_ = True
        z_val, z_test = m.decision_function(feats[val]), m.decision_function(feats[test])
        row = {"step": step, "lr": lr, **{c: f(z_val, p_weak[val]) for c, f in CRITERIA.items()}}
        row["test_accuracy"] = float((z_test.argmax(1) == task.test_labels[test]).mean())  # oracle only
        rows.append(row)

    text = run["text"]  # an array, or a callable of the template-set name (as in run_seed)
    text = text(m.params.get("templates", "dataset")) if callable(text) else text
    m.fit(feats[fit], p_weak[fit], text_weights=text, logit_scale=run["logit_scale"], on_step=look)
    return rows


def pick(rows: list[dict], criterion: str) -> dict:
    """The candidate a criterion selects (ties: the earliest step, then the smallest lr)."""
    if criterion == "oracle":
        return max(rows, key=lambda r: (r["test_accuracy"], -r["step"], -r["lr"]))
    return min(rows, key=lambda r: (r[criterion], r["step"], r["lr"]))


RULES = tuple(CRITERIA) + ("default_end", "step0", "oracle")
"""Rules compared: the criteria, the default lr trained to the end, no training, the oracle."""


def select_all(rows: list[dict], default_lr: float) -> dict[str, dict]:
    """Every rule's pick among one method's candidates on one run."""
    picks = {c: pick(rows, c) for c in CRITERIA}
    end = max(r["step"] for r in rows)
    picks["default_end"] = next(r for r in rows if r["lr"] == default_lr and r["step"] == end)
    picks["step0"] = next(r for r in rows if r["step"] == 0)
    picks["oracle"] = pick(rows, "oracle")
    return picks


def selection_study(runs, methods: tuple[str, ...] = ("cpl", "kd_lp", "logconf")) -> list[dict]:
    """One record per (run, method, rule) with the picked lr/step and its D_test accuracy."""
    import inspect

    from w2sclip.methods import METHODS

    usable = [n for n, c in METHODS.items() if "lr" in c.grid and not c.needs_prompt_encoder
              and "on_step" in inspect.signature(c.fit).parameters]
    bad = [m for m in methods if m not in usable]
    if bad:
        raise ValueError(f"selection study cannot run {bad}: it needs an lr grid and a training "
                         f"trajectory; valid: {', '.join(usable)}")
    records = []
    for run in runs:
        for method in methods:
            cls = METHODS[method]
            rows = [r for lr in cls.grid["lr"] for r in trajectory(method, lr, run)]
            for rule, r in select_all(rows, cls.defaults["lr"]).items():
                records.append({"strong": run["strong"], "domain": run["task"].domain,
                                "seed": run["seed"], "method": method, "rule": rule,
                                "lr": r["lr"], "step": r["step"], "accuracy": r["test_accuracy"]})
    return records


def selection_table(records: list[dict]) -> str:
    """Markdown: rows = (method, rule), columns = strong models; mean D_test accuracy (%) over
    domains and seeds, with the std over seeds of the domain average."""
    from w2sclip.eval.metrics import mean_std

    strongs = list(dict.fromkeys(r["strong"] for r in records))
    lines = [f"| method | rule | {' | '.join(strongs)} |", "|---" * (len(strongs) + 2) + "|"]
    for method in dict.fromkeys(r["method"] for r in records):
        for rule in RULES:
            cells = []
            for s in strongs:
                sel = [r for r in records if r["method"] == method and r["rule"] == rule and r["strong"] == s]
                seeds = sorted({r["seed"] for r in sel})
                avg = [np.mean([r["accuracy"] for r in sel if r["seed"] == k]) for k in seeds]
                mean, std, _ = mean_std(avg)
                cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
            name = f"{rule} (upper bound, test labels)" if rule == "oracle" else rule
            lines.append(f"| {method} | {name} | {' | '.join(cells)} |")
    return "\n".join(lines)
