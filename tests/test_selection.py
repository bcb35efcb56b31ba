import numpy as np
import pytest

from w2sclip.data.manifest import ImageDataset
from w2sclip.pipeline import Task
from w2sclip.selection import CRITERIA, RULES, pick, select_all, trajectory


def test_pick_lowest_score_earliest_on_ties_and_oracle_on_test():
    rows = [{"step": 0, "lr": 1e-3, "weak_loss": 1.0, "test_accuracy": 0.5},
            {"step": 5, "lr": 1e-3, "weak_loss": 0.5, "test_accuracy": 0.4},
            {"step": 10, "lr": 1e-3, "weak_loss": 0.5, "test_accuracy": 0.7}]
    assert pick(rows, "weak_loss")["step"] == 5
    assert pick(rows, "oracle")["step"] == 10


def test_criteria_scores_on_hand_values():
    z = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    pw = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert CRITERIA["weak_disagreement"](z, pw) == pytest.approx(0.5)  # argmax of row 0 is 0
    ent = -(2 * 0.5 * np.log(0.5) + 0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / 2
    assert CRITERIA["entropy"](z, pw) == pytest.approx(ent, rel=1e-6)
    assert CRITERIA["weak_loss"](z, pw) == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 2, rel=1e-5)


def test_trajectory_and_rules_on_a_toy_run():
    rng = np.random.default_rng(0)
    c, d, n = 3, 6, 60
    labels = np.repeat(np.arange(c), n // c)
    samples = [(f"{i}.png", int(y)) for i, y in enumerate(labels)]
    ds = ImageDataset("toy", ["a", "b", "c"], ["{}"], samples, "real", "test")
    centers = rng.normal(size=(c, d))
    feats = (centers[labels] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    run = {"task": Task("toy", "real", ds, ds), "feats": feats, "text": centers.astype(np.float32),
           "logit_scale": 10.0, "weak": 2 * np.eye(c, dtype=np.float32)[labels], "seed": 0}
    rows = trajectory("cpl", 1e-2, run, steps=(0, 5, 20))
    assert [r["step"] for r in rows] == [0, 5, 20]
    picks = select_all(rows, 1e-2)
    assert set(picks) == set(RULES)
    assert picks["step0"]["step"] == 0 and picks["default_end"]["step"] == 20
    assert picks["oracle"]["test_accuracy"] == max(r["test_accuracy"] for r in rows)
