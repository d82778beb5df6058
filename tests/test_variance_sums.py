"""The running sums behind Table 1's estimates (``benchmarks/paper/_variance.py``): the mean
variance they give, its standard error, and saving and continuing them."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "paper"))
from _variance import VarianceSums  # noqa: E402


def samples(rng, k, p=30, shared=1.0):
    """K samples of a P-vector whose elements move together (a common normal factor times
    ``shared``, plus independent exponential noise): correlated and skewed."""
    common = rng.standard_normal((k, 1)) * shared
    return common * np.linspace(0.5, 1.5, p) + rng.exponential(1.0, (k, p))


def test_variance_is_the_mean_unbiased_variance_and_the_increments_add_up_to_it():
    g = samples(np.random.default_rng(0), 50) + 1e6  # a large offset: the shift keeps float64
    acc = VarianceSums(2)
    for a in g:
        acc.add([a, 2 * a[:7]])
    v = acc.variance()
    np.testing.assert_allclose(v, [np.var(g, axis=0, ddof=1).mean(),
                                   np.var(2 * g[:, :7], axis=0, ddof=1).mean()], rtol=1e-9)
    # step 2 of the module docstring: the K - 1 increments sum to (K - 1)·V exactly
    np.testing.assert_allclose([sum(i) / 49 for i in acc.increments], v, rtol=1e-9)


def test_standard_error_matches_the_spread_of_repeated_estimates():
    """R = 1000 repeats of an estimate from K = 40 correlated, skewed samples: the mean of
    se² must match the variance of the R estimates. Tolerance: 5 combined relative standard
    errors of the two (each from its own R values: sd/(mean·√R) for the mean of se², and
    sqrt((kurtosis − 1)/R) for a sample variance). A per-element error bar,
    V·sqrt(2/(K−1)/P), which ignores the elements' correlation, is far outside it."""
    rng = np.random.default_rng(1)
    k, r, p = 40, 1000, 30
    est, se2 = [], []
    for _ in range(r):
        acc = VarianceSums(1)
        for a in samples(rng, k, p):
            acc.add([a])
        est.append(acc.variance()[0])
        se2.append(acc.standard_error()[0] ** 2)
    est, se2 = np.array(est), np.array(se2)
    var_est = est.var(ddof=1)
    kurt = np.mean((est - est.mean()) ** 4) / est.var() ** 2
    tol = 5 * np.hypot(se2.std() / (se2.mean() * np.sqrt(r)), np.sqrt((kurt - 1) / r))
    assert abs(se2.mean() / var_est - 1) < tol, (se2.mean(), var_est, tol)
    naive = np.mean(est * np.sqrt(2 / (k - 1) / p)) ** 2
    assert abs(naive / var_est - 1) > 3 * tol, (naive, var_est)


def test_saved_sums_continue_bit_for_bit_and_refuse_a_wrong_count():
    g = samples(np.random.default_rng(2), 9)
    whole, part = VarianceSums(1), VarianceSums(1)
    for a in g:
        whole.add([a])
    for a in g[:4]:
        part.add([a])
    cont = VarianceSums.from_arrays(part.arrays(), 1, 4, np)
    for a in g[4:]:
        cont.add([a])
    assert cont.variance() == whole.variance()
    assert cont.standard_error() == whole.standard_error()
    with pytest.raises(ValueError, match="increments"):
        VarianceSums.from_arrays(part.arrays(), 1, 5, np)
    with pytest.raises(KeyError):
        VarianceSums.from_arrays({}, 1, 4, np)
    saved = part.arrays()
    before = saved["sums/0"].copy()
    VarianceSums.from_arrays(saved, 1, 4, np).add([g[4]])
    assert np.array_equal(saved["sums/0"], before)  # restored sums are copies
    saved["sumsq/0"] = saved["sumsq/0"][:5]
    with pytest.raises(ValueError, match="shapes"):
        VarianceSums.from_arrays(saved, 1, 4, np)


def test_too_few_samples():
    acc = VarianceSums(1)
    acc.add([np.ones(3)])
    with pytest.raises(ValueError, match="at least 2"):
        acc.variance()
    acc.add([np.zeros(3)])
    assert acc.variance() == [0.5] and acc.standard_error() == [None]
    with pytest.raises(ValueError, match="expected 1 arrays"):
        acc.add([np.ones(3), np.ones(3)])
