import numpy as np
import pytest

from w2sclip.run.fit import FitInputs, make_splits
from w2sclip.selection import CRITERIA, RULES, pick, pipeline_row, select_all, selection_table, trajectory


def test_pick_lowest_score_earliest_on_ties_and_oracle_on_half_a():
    rows = [{"step": 0, "lr": 1e-3, "weak_loss": 1.0, "acc_a": 0.5, "acc_b": 0.6},
            {"step": 5, "lr": 1e-3, "weak_loss": 0.5, "acc_a": 0.4, "acc_b": 0.9},
            {"step": 10, "lr": 1e-3, "weak_loss": 0.5, "acc_a": 0.7, "acc_b": 0.5}]
    assert pick(rows, "weak_loss")["step"] == 5
    assert pick(rows, "oracle")["step"] == 10  # chosen on half A, whatever half B says


def test_criteria_scores_on_hand_values():
    z = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    pw = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert CRITERIA["weak_disagreement"](z, pw) == pytest.approx(0.5)  # argmax of row 0 is 0
    ent = -(2 * 0.5 * np.log(0.5) + 0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / 2
    assert CRITERIA["entropy"](z, pw) == pytest.approx(ent, rel=1e-6)
    assert CRITERIA["weak_loss"](z, pw) == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 2, rel=1e-5)


def test_trajectory_and_rules_on_a_toy_run():
    rng = np.random.default_rng(0)
    c, d, n = 3, 6, 120
    labels = np.repeat(np.arange(c), n // c)
    centers = rng.normal(size=(c, d))
    feats = (centers[labels] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    x = FitInputs(feats, 2 * np.eye(c, dtype=np.float32)[labels], labels, lambda name: centers.astype(np.float32), 10.0)
    splits = make_splits(x, 0)
    rows = trajectory("cpl", 1e-2, x, splits, 0, steps=(0, 5, 20))
    assert [r["step"] for r in rows] == [0, 5, 20]
    picks = select_all(rows, 1e-2, pipeline_row("cpl", x, splits, 0))
    assert set(picks) == set(RULES)
    assert picks["step0"]["step"] == 0 and picks["default_end"]["step"] == 20
    assert picks["oracle"]["acc_a"] == max(r["acc_a"] for r in rows)
    records = [{"strong": "s", "domain": "d", "seed": 0, "method": "cpl", "rule": rule, "accuracy": r["acc_b"]}
               for rule, r in picks.items()]
    table = selection_table(records)
    assert table.count("**") >= 2 and "upper bound" in table  # one bold label-free winner
