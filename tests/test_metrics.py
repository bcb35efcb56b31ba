import math

import numpy as np
import pytest

from w2sclip.eval.metrics import (accuracy, agreement, expected_calibration_error, mean_std, pgr,
                                  topk_accuracy)


def test_pgr_values_and_edge_cases():
    assert pgr(0.6, 0.4, 0.8) == pytest.approx(0.5)
    assert pgr(0.4, 0.4, 0.8) == 0.0
    assert pgr(0.8, 0.4, 0.8) == pytest.approx(1.0)
    assert pgr(0.3, 0.4, 0.8) == pytest.approx(-0.25)
    assert pgr(0.5, 0.4, 0.4) is None  # no gap: undefined, never a number
    assert pgr(0.5, 0.6, 0.4) is None
    with pytest.raises(ValueError):
        pgr(math.nan, 0.1, 0.5)


def test_accuracy_topk_agreement():
    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.3, 0.3, 0.4]])
    y = np.array([1, 1, 0])
    assert accuracy(scores, y) == pytest.approx(1 / 3)
    assert accuracy(np.array([1, 0, 2]), y) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, y, 2) == pytest.approx(1.0)
    assert agreement(scores, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        accuracy(np.array([1, 2]), y)


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    # bin of 0.9: acc 0.5, conf 0.9 -> 0.4 * 0.5; bin of 0.6: acc 1, conf 0.6 -> 0.4 * 0.5
    assert expected_calibration_error(probs, y) == pytest.approx(0.4)


def test_mean_std_skips_undefined():
    assert mean_std([0.2, None, 0.4]) == (pytest.approx(0.3), pytest.approx(0.1414, abs=1e-3), 2)
    assert mean_std([None]) == (None, None, 0)
