"""KL approximations: against quadrature of the true KL, monotone, finite, and their derivatives."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate

from minivd import check_vjp
from minivd.kl import kl_k15, kl_k15_grad, kl_m17, kl_m17_grad

from .helpers import TOL, on

C = -(np.euler_gamma + np.log(2)) / 2  # E log|N(0,1)| = −0.6352: makes −KL → 0 as α → ∞


def true_neg_kl(log_alpha: float) -> float:
    """−KL = ½ log α − E_{ε~N(1,α)} log|ε| + C, by quadrature.

    Written with ε = 1 + √α z, z ~ N(0,1); the log singularity at z = −1/√α is integrable and
    is put on an interval end so QUADPACK's extrapolation handles it.
    """
    sa = np.sqrt(np.exp(log_alpha))
    z0 = -1.0 / sa

    def f(z):
        return np.log(np.abs(1 + sa * z)) * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)

    pieces = [(-np.inf, z0 - 1), (z0 - 1, z0), (z0, z0 + 1), (z0 + 1, np.inf)]
    e_log = sum(integrate.quad(f, a, b, limit=200, epsabs=1e-11)[0] for a, b in pieces)
    return 0.5 * log_alpha - e_log + C


@pytest.mark.parametrize("la, ref", [(-4, -2.6258), (-2, -1.5442), (-1, -0.9145), (0, -0.4267),
                                     (1, -0.1732), (2, -0.0662)])
def test_quadrature_matches_reference_values(la, ref):
    # reference values of the project's paper notes (../shared/PAPER.md §4, outside this
    # repository), given to 4 decimals; the Monte-Carlo test below checks the same quadrature
    assert abs(true_neg_kl(la) - ref) < 1e-3


@pytest.mark.parametrize("la", [-4, -2, -1, 0, 1, 2])
def test_quadrature_matches_monte_carlo(la):
    """E log|1 + √α z| by 10⁶ seeded normal draws; its standard error is the sample sd / 10³
    (log|·| has a finite variance despite its singularity), and we allow 5 of them."""
    z = np.random.default_rng(100 + la).standard_normal(1_000_000)
    v = np.log(np.abs(1 + np.sqrt(np.exp(la)) * z))
    mc = 0.5 * la - v.mean() + C
    assert abs(true_neg_kl(la) - mc) < 5 * v.std(ddof=1) / np.sqrt(len(v)), (la, mc)


def test_m17_within_fit_error_of_true_kl():
    grid = np.linspace(-8, 8, 161)
    err = np.abs(kl_m17(grid) + np.array([true_neg_kl(v) for v in grid]))
    assert err.max() < 0.012, err.max()


def test_k15_with_pinned_constant_within_fit_error():
    grid = np.linspace(-4, 0, 81)
    err = np.abs(kl_k15(grid) + np.array([true_neg_kl(v) for v in grid]))
    assert err.max() < 0.02, err.max()


def test_both_monotone_decreasing_in_alpha_and_nonnegative():
    grid = np.linspace(-8, 8, 801)
    assert np.all(np.diff(kl_m17(grid)) < 0) and np.all(kl_m17(grid) > 0)
    k = kl_k15(np.linspace(-8, 0, 401))
    assert np.all(np.diff(k) < 0) and np.all(k > 0)
    assert np.all(kl_k15_grad(np.linspace(-8, 0, 401)) < 0)
    assert np.all(kl_m17_grad(grid) < 0)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 8))
def test_kl_derivatives_gradcheck(xp, seed, n):
    r = np.random.default_rng(seed)
    la15 = on(xp, r.uniform(-6, -0.1, n))  # at least 0.1 from the K15 bound
    # M17 well past the authors' clip at 8: at log α = 30 the gradient is ~5e-14, which
    # central differences still resolve because kl_m17 has no cancellation (written as
    # k1 − k1·sigmoid, n = 1 at log α = 9.8 failed: a ~1e-16 rounding floor over 2h)
    la17 = on(xp, r.uniform(-10, 30, n))
    for fn, grad, la in ((kl_k15, kl_k15_grad, la15), (kl_m17, kl_m17_grad, la17)):
        errs = check_vjp(fn, lambda d, la, grad=grad: [on(xp, d) * grad(la)], [la], seed=seed)
        assert errs[0] < TOL


def test_m17_float32_is_accurate_where_sigmoid_saturates():
    """float32 KL and gradient within 4 float32 ulps (4·eps = 4.8e-7; measured 2.0e-7) of
    float64 on log α in [-10, 25]. Written as k1 − k1·sigmoid(u) and s(1 − s), both lost
    every digit of the sigmoid term by log α ≈ 10 and were off by up to 0.15% and 0.23%."""
    la = np.linspace(-10, 25, 2001)
    for f in (kl_m17, kl_m17_grad):
        got = f(la.astype(np.float32)).astype(np.float64)
        # the float32 input itself is rounded: compare with float64 at the rounded points
        ref = f(la.astype(np.float32).astype(np.float64))
        np.testing.assert_allclose(got, ref, rtol=4 * np.finfo(np.float32).eps, atol=0)
        for x in (np.array(-2.0), np.float32(1.0), 1.0):  # 0-d and scalar inputs too
            np.testing.assert_allclose(f(x), f(np.array([x], np.float64))[0], rtol=1e-6)


def test_k15_bound_has_no_dead_zone():
    # at α = 1 exactly (vd-b's start) the derivative is the polynomial's one-sided one
    g0 = float(kl_k15_grad(np.array(0.0)))
    assert np.isclose(g0, -0.5 - (1.16145124 - 2 * 1.50204118 + 3 * 0.58629921))
    assert g0 < -0.4
    # just inside the bound the derivative is continuous with the bound's
    assert abs(float(kl_k15_grad(np.array(-1e-6))) - g0) < 1e-5


def test_extreme_log_alpha_finite():
    la = np.array([-20.0, 20.0, -800.0, 800.0])
    for f in (kl_k15, kl_k15_grad, kl_m17, kl_m17_grad):
        assert np.all(np.isfinite(f(la)))


def test_m17_without_clip_differs_little_above_8():
    # the authors clip log α to [−8, 8]; we don't (no dead zone). Above 8 the two differ by
    # at most KL(8) itself:
    assert kl_m17(np.array(8.0)) < 3e-4
