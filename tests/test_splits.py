import numpy as np
from hypothesis import given, settings, strategies as st

from w2sclip.data.splits import protocol_splits, stratified_split, subsample_per_class


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=200), st.integers(0, 10_000))
def test_protocol_splits_disjoint_cover_and_reproducible(pairs, seed):
    labels, weak = map(np.array, zip(*pairs))
    s = protocol_splits(labels, weak, seed)
    hold, test = set(s["hold"]), set(s["test"])
    assert not hold & test and hold | test == set(range(len(labels)))
    assert set(s["hold_fit"]) | set(s["hold_val"]) == hold
    assert not set(s["hold_fit"]) & set(s["hold_val"])
    s2 = protocol_splits(labels, weak, seed)
    assert all(np.array_equal(s[k], s2[k]) for k in s)
    other = protocol_splits(labels, weak, seed + 1)  # D_test is fixed whatever the run seed
    assert np.array_equal(s["test"], other["test"]) and np.array_equal(s["hold"], other["hold"])


def test_hold_fit_is_stratified_by_the_weak_prediction_not_the_label():
    rng = np.random.default_rng(0)
    labels, weak = rng.integers(0, 3, 300), rng.integers(0, 5, 300)  # unrelated, as for a poor supervisor
    s = protocol_splits(labels, weak, seed=3)
    for c in range(5):  # each predicted class splits 80/20 (stratified_split's rounding) ...
        n = int((weak[s["hold"]] == c).sum())
        assert int((weak[s["hold_val"]] == c).sum()) == n - max(1, round(0.8 * n))
    by_label = [int((labels[s["hold_val"]] == c).sum()) for c in range(3)]
    expected = [int((labels[s["hold"]] == c).sum()) - max(1, round(0.8 * (labels[s["hold"]] == c).sum()))
                for c in range(3)]
    assert by_label != expected  # ... while the true classes do not (their labels are not read)


def test_stratified_half_split_per_class():
    labels = np.repeat(np.arange(4), 10)
    a, b = stratified_split(labels, 0.5, seed=0)
    assert all((labels[a] == c).sum() == 5 for c in range(4))
    a2, _ = stratified_split(labels, 0.5, seed=1)
    assert not np.array_equal(a, a2)


def test_subsample_per_class_budget():
    labels = np.repeat(np.arange(3), [5, 2, 9])
    idx = subsample_per_class(labels, 3, seed=0)
    assert [int((labels[idx] == c).sum()) for c in range(3)] == [3, 2, 3]
