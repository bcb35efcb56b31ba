import numpy as np
from hypothesis import given, settings, strategies as st

from w2sclip.data.splits import protocol_splits, stratified_split, subsample_per_class


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=200), st.integers(0, 10_000))
def test_protocol_splits_disjoint_cover_and_reproducible(labels, seed):
    s = protocol_splits(labels, seed)
    hold, test = set(s["hold"]), set(s["test"])
    assert not hold & test and hold | test == set(range(len(labels)))
    assert set(s["hold_fit"]) | set(s["hold_val"]) == hold
    assert not set(s["hold_fit"]) & set(s["hold_val"])
    s2 = protocol_splits(labels, seed)
    assert all(np.array_equal(s[k], s2[k]) for k in s)


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
