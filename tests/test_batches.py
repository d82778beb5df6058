"""Minibatches: shuffled on the host by a seeded generator, moved to the model's backend."""

from __future__ import annotations

import numpy as np
import pytest

from minivd.batches import iterate_minibatches


@pytest.mark.parametrize("drop_last", [False, True])
def test_minibatches_cover_each_example_once(drop_last):
    x, y = np.arange(23.0)[:, None] * np.ones(3), np.arange(23)
    batches = list(iterate_minibatches(x, y, 5, np.random.default_rng(1), drop_last=drop_last))
    assert [len(b[1]) for b in batches] == ([5] * 4 if drop_last else [5] * 4 + [3])
    seen = np.concatenate([yb for _, yb in batches])
    assert len(np.unique(seen)) == len(seen) == (20 if drop_last else 23)
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb)
    assert not np.array_equal(seen, np.arange(len(seen)))  # shuffled


def test_minibatches_reproducible_from_seed_and_unshuffled_order():
    x, y = np.zeros((10, 2)), np.arange(10)

    def order(rng, shuffle=True):
        return np.concatenate([yb for _, yb in iterate_minibatches(x, y, 3, rng, shuffle=shuffle)])
    assert np.array_equal(order(np.random.default_rng(7)), order(np.random.default_rng(7)))
    assert not np.array_equal(order(np.random.default_rng(7)), order(np.random.default_rng(8)))
    np.testing.assert_array_equal(order(None, shuffle=False), y)


def test_minibatches_on_backend(xp):
    x, y = np.ones((4, 3), np.float32), np.arange(4)
    xb, yb = next(iterate_minibatches(x, y, 4, np.random.default_rng(0), xp=xp))
    assert isinstance(xb, xp.ndarray) and isinstance(yb, xp.ndarray) and xb.dtype == np.float32


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "4", None])
def test_minibatches_reject_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        iterate_minibatches(np.zeros((4, 1)), np.zeros(4), bad, np.random.default_rng(0))


def test_minibatches_reject_mismatch_and_missing_rng():
    with pytest.raises(ValueError, match="differ in length"):
        iterate_minibatches(np.zeros((4, 1)), np.zeros(3), 2, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        iterate_minibatches(np.zeros((4, 1)), np.zeros(4), 2, None)
