"""Model selection under weak supervision (PROTOCOL.md section 6): criteria and their study.

A criterion scores a candidate (a learning rate of the method's grid at a training step) from
its logits on ``hold_val`` and the weak probabilities there; none sees ground truth. The study
runs on the runs of any preset (the same data, weak predictions and features as ``w2sclip run``)
and reports, for every rule, the D_test accuracy of its pick. D_test is halved (stratified, fixed
seed): the oracle picks on half A with test labels and every rule is reported on half B, so the
oracle is an honest upper bound rather than a winner's curse over correlated candidates. The
``pipeline`` row is the rule runs actually use: the method's defaults with its early stopping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from w2sclip.data.splits import stratified_split
from w2sclip.eval.metrics import mean_std
from w2sclip.losses import kd_loss_from_probs
from w2sclip.methods import METHODS, get_method
from w2sclip.run.fit import FitInputs, make_splits, softmax


def _entropy(z: np.ndarray, p_weak: np.ndarray) -> float:
    p = softmax(z)
    return float(-(p * np.log(np.clip(p, 1e-12, None))).sum(1).mean())


CRITERIA: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "weak_loss": lambda z, pw: float(kd_loss_from_probs(torch.as_tensor(z), torch.as_tensor(pw))),
    "weak_disagreement": lambda z, pw: float((z.argmax(1) != pw.argmax(1)).mean()),
    "entropy": _entropy,
}
"""Name -> score on hold_val (lower is better). No ground truth anywhere."""

SNAPSHOTS = (0, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
"""Optimiser steps at which candidates are scored."""
RULES = tuple(CRITERIA) + ("default_end", "step0", "pipeline", "oracle")
"""Rules compared: the criteria, the default lr trained to the end, no training, the pipeline's
own rule (default lr, early stopping on the weak-label loss of hold_val), the oracle."""
LABEL_FREE = tuple(r for r in RULES if r != "oracle")


def test_halves(y_test: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions within D_test of half A (the oracle's choice) and half B (every report)."""
    return stratified_split(y_test, 0.5, seed)


def _accuracies(m, x: FitInputs, test: np.ndarray) -> dict:
    """Accuracy of the fitted method ``m`` on half A and on half B of D_test (``test_halves``)."""
    y_test = x.labels[test]
    a, b = test_halves(y_test)
    hit = m.decision_function(x.features[test]).argmax(1) == y_test
    return {"acc_a": float(hit[a].mean()), "acc_b": float(hit[b].mean())}


def _text(x: FitInputs, m) -> np.ndarray:
    return x.text(m.params.get("templates", "dataset"))


def trajectory(method: str, lr: float, x: FitInputs, splits: dict, seed: int, steps=SNAPSHOTS) -> list[dict]:
    """Train ``method`` at ``lr`` for max(steps) steps (no early stopping); at each snapshot record
    every criterion on hold_val and the accuracy on both halves of D_test."""
    fit, val, test = splits["hold_fit"], splits["hold_val"], splits["test"]
    p_weak = softmax(x.weak_logits)
    m = get_method(method, seed=seed, lr=lr, max_steps=max(steps), selection="fixed")
    rows, wanted = [], set(steps)

    def look(step: int) -> None:
        if step not in wanted:
            return
        m.fitted_ = True
        z_val = m.decision_function(x.features[val])
        row = {"step": step, "lr": lr, **{c: f(z_val, p_weak[val]) for c, f in CRITERIA.items()}}
        rows.append({**row, **_accuracies(m, x, test)})  # oracle only

    m.fit(x.features[fit], p_weak[fit], text_weights=_text(x, m), logit_scale=x.logit_scale, on_step=look)
    return rows


def pipeline_row(method: str, x: FitInputs, splits: dict, seed: int) -> dict:
    """The pick of the rule runs use: the method's defaults, fitted exactly as ``w2sclip run`` does."""
    fit, val, test = splits["hold_fit"], splits["hold_val"], splits["test"]
    p_weak = softmax(x.weak_logits)
    m = get_method(method, seed=seed)
    m.fit(x.features[fit], p_weak[fit], text_weights=_text(x, m), logit_scale=x.logit_scale,
          X_val=x.features[val], y_val=p_weak[val])
    return {"step": m.history_.get("best_step"), "lr": m.params["lr"], **_accuracies(m, x, test)}


def pick(rows: list[dict], rule: str) -> dict:
    """The candidate a criterion selects (ties: the earliest step, then the smallest lr); the
    oracle maximises accuracy on half A of D_test."""
    if rule == "oracle":
        return max(rows, key=lambda r: (r["acc_a"], -r["step"], -r["lr"]))
    return min(rows, key=lambda r: (r[rule], r["step"], r["lr"]))


def select_all(rows: list[dict], default_lr: float, pipeline: dict | None = None) -> dict[str, dict]:
    """Every rule's pick among one method's candidates on one run."""
    picks = {c: pick(rows, c) for c in CRITERIA}
    end = max(r["step"] for r in rows)
    picks["default_end"] = next(r for r in rows if r["lr"] == default_lr and r["step"] == end)
    picks["step0"] = next(r for r in rows if r["step"] == 0)
    if pipeline is not None:
        picks["pipeline"] = pipeline
    picks["oracle"] = pick(rows, "oracle")
    return picks


def study_methods() -> list[str]:
    """Methods the study can run: an lr grid, a training trajectory, no text encoder in the loop."""
    return [n for n, c in METHODS.items() if "lr" in c.grid and not c.needs_prompt_encoder]


def selection_study(runs: Iterable, methods: tuple[str, ...] = ("cpl", "kd_lp", "logconf")) -> list[dict]:
    """One record per (run, method, rule): the picked lr/step and its accuracy on half B of D_test.

    ``runs`` yields ``(RunConfig, Prepared)`` pairs (``w2sclip.run.prepare``)."""
    usable = study_methods()
    bad = [m for m in methods if m not in usable]
    if bad:
        raise ValueError(f"selection study cannot run {bad}: it needs an lr grid and a training "
                         f"trajectory; valid: {', '.join(usable)}")
    records = []
    for cfg, prepared in runs:
        x = prepared.inputs
        splits = make_splits(x, cfg.seed, (cfg.hold_fraction, cfg.fit_fraction))
        for method in methods:
            cls = METHODS[method]
            rows = [r for lr in cls.grid["lr"] for r in trajectory(method, lr, x, splits, cfg.seed)]
            picks = select_all(rows, cls.defaults["lr"], pipeline_row(method, x, splits, cfg.seed))
            for rule, r in picks.items():
                records.append({"dataset": cfg.dataset, "strong": cfg.strong, "domain": cfg.domain,
                                "seed": cfg.seed, "method": method, "rule": rule, "lr": r["lr"],
                                "step": r["step"], "accuracy": r["acc_b"], "oracle_half_accuracy": r["acc_a"]})
    return records


def selection_table(records: list[dict]) -> str:
    """Markdown: rows = (method, rule), columns = strong models; mean accuracy (%) on half B of
    D_test over domains and seeds, with the std over seeds of the domain average. The best
    label-free rule of each method is in bold."""
    strongs = list(dict.fromkeys(r["strong"] for r in records))
    lines = [f"| method | rule | {' | '.join(strongs)} | avg |", "|---" * (len(strongs) + 3) + "|"]
    for method in dict.fromkeys(r["method"] for r in records):
        table = {}
        for rule in RULES:
            cells = []
            for s in strongs:
                sel = [r for r in records if r["method"] == method and r["rule"] == rule and r["strong"] == s]
                seeds = sorted({r["seed"] for r in sel})
                cells.append(mean_std([np.mean([r["accuracy"] for r in sel if r["seed"] == k]) for k in seeds]))
            table[rule] = cells
        avg = {rule: np.mean([c[0] for c in cells if c[0] is not None]) for rule, cells in table.items()}
        best = max(LABEL_FREE, key=lambda rule: avg[rule])
        for rule, cells in table.items():
            name = f"{rule} (upper bound: picked on half A of D_test)" if rule == "oracle" else rule
            text = [f"{100 * m:.1f} ± {100 * s:.1f}" if m is not None else "–" for m, s, _ in cells]
            text.append(f"{100 * avg[rule]:.1f}")
            if rule == best:
                name, text = f"**{name}**", [f"**{t}**" for t in text]
            lines.append(f"| {method} | {name} | {' | '.join(text)} |")
    return "\n".join(lines)
