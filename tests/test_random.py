"""minivd.random: the Box–Muller normals that every NumPy noise draw uses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import minivd
from minivd.random import box_muller, standard_normal


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normals_have_the_standard_normal_law(dtype):
    # n = 400000 draws (above the threaded threshold, so chunks from several child streams).
    # Standard errors: mean 1/sqrt(n) = 0.0016, variance sqrt(2/n) = 0.0022, skewness
    # sqrt(6/n) = 0.0039, excess kurtosis sqrt(24/n) = 0.0077; each is bounded at 5 of them.
    n = 400_000
    z = standard_normal(minivd.make_rng(11), (n,), dtype)
    assert z.dtype == dtype and z.shape == (n,)
    zd = z.astype(np.float64)
    assert abs(zd.mean()) < 5 / np.sqrt(n)
    assert abs(zd.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(zd)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(zd)) < 5 * np.sqrt(24 / n)
    # the whole distribution: Kolmogorov–Smirnov at n = 400000 rejects a wrong law at once
    # (a variance off by 1% gives p ~ 1e-9); a correct sampler fails p < 1e-3 once in 1000 seeds
    assert stats.kstest(zd, "norm").pvalue > 1e-3
    # tail mass beyond 3: 0.0027 n = 1080 expected, Poisson sd 33: within 5 sd
    tail = int((np.abs(zd) > 3).sum())
    assert abs(tail - 2 * stats.norm.sf(3) * n) < 5 * np.sqrt(2 * stats.norm.sf(3) * n)


def test_cosine_and_sine_halves_are_uncorrelated_and_odd_sizes_fill_every_value():
    # the cosine half and the sine half of one draw share radii: their correlation must be 0
    # (within 5/sqrt(h), h = 50000 pairs) and |z| of a pair must follow the chi law of 2 dofs
    out = box_muller(np.random.default_rng(2), np.empty(100_000, np.float64))
    c, s = out[:50_000], out[50_000:]
    assert abs(np.corrcoef(c, s)[0, 1]) < 5 / np.sqrt(50_000)
    assert stats.kstest(np.hypot(c, s), stats.chi(2).cdf).pvalue > 1e-3
    for n in (1, 2, 3, 7):
        z = box_muller(np.random.default_rng(n), np.full(n, np.nan, np.float32))
        assert np.isfinite(z).all()


def test_float32_normals_are_capped_at_the_uniforms_resolution():
    # 1 − U ≥ 2⁻²⁴ in float32, so |z| ≤ sqrt(−2 log 2⁻²⁴) ≈ 5.77: finite, never inf or NaN
    z = standard_normal(minivd.make_rng(0), (2_000_000,), np.float32)
    assert np.isfinite(z).all() and np.abs(z).max() <= np.sqrt(48 * np.log(2)) + 1e-5


def test_standard_normal_is_reproducible_and_rejects_other_dtypes():
    a = standard_normal(minivd.make_rng(4), (3, 5), np.float32)
    b = standard_normal(minivd.make_rng(4), (3, 5), np.float32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, standard_normal(minivd.make_rng(5), (3, 5), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        standard_normal(minivd.make_rng(0), (4,), np.float16)
