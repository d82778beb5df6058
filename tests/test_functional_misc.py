"""ReLU, cross-entropy, Bernoulli/Gaussian dropout, posterior maps: gradients, input checks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minivd import check_vjp
from minivd.backend import to_numpy
from minivd.functional import (
    bernoulli_dropout_backward,
    bernoulli_dropout_forward,
    gaussian_dropout_backward,
    gaussian_dropout_forward,
    k15_variance_backward,
    k15_variance_forward,
    m17_variance_backward,
    m17_variance_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

from .helpers import TOL, away_from_zero, on
from .strategies import dense_shapes, dims, seeds


@given(shape=dense_shapes, seed=seeds)
def test_relu_gradcheck(xp, shape, seed):
    x = on(xp, away_from_zero(np.random.default_rng(seed), shape[:2]))
    errs = check_vjp(lambda x: relu_forward(x)[0],
                     lambda d, x: [relu_backward(on(xp, d), relu_forward(x)[1])], [x], seed=seed)
    assert errs[0] < TOL


@given(n=st.integers(1, 6), k=st.integers(2, 7), seed=seeds)
def test_cross_entropy_gradcheck(xp, n, k, seed):
    # Logits within [-4, 4]. Central differences of a float64 loss carry a rounding floor of
    # ~eps / (2h) = 5.5e-11 in absolute terms; relative to the largest gradient entry, which
    # is at least ~e^-8 = 3.4e-4 here, that is <= 1.7e-7 < TOL. Wider logits broke this: a
    # random hypothesis run hit n=1, k=2, logits (6.1, -7.7) with the label on the larger, a
    # gradient of 1e-6 and a 4.2e-5 FD error (the analytic value right). Confident logits and
    # the dust flush have their own tests below.
    r = np.random.default_rng(seed)
    z = on(xp, r.uniform(-4.0, 4.0, (n, k)))
    y = on(xp, r.integers(0, k, n), dtype=np.int64)
    errs = check_vjp(
        lambda z: softmax_cross_entropy_forward(z, y)[0],
        lambda d, z: [softmax_cross_entropy_backward(float(d),
                                                     softmax_cross_entropy_forward(z, y)[1])],
        [z], seed=seed)
    assert errs[0] < TOL


@given(n=st.integers(1, 6), k=st.integers(2, 7), seed=seeds, scale=st.sampled_from([3.0, 30.0]))
def test_cross_entropy_gradient_at_confident_logits_matches_scipy(xp, n, k, seed, scale):
    """Where finite differences cannot resolve the gradient (logit spreads of 10-200 give
    probabilities down to e^-200), compare with the closed form ``(p - onehot) / N`` built on
    scipy's softmax, which computes ``exp(z - max) / sum`` as ours does. Off-label entries
    agree to a few ulps of themselves (each side rounds the same few operations), or are
    exactly 0 where the probability is dust; label entries ``p_y - 1`` agree to a few ulps
    of 1/N (p_y near 1 rounds on the scale of 1)."""
    from scipy.special import softmax

    from minivd.functional import dust_threshold

    r = np.random.default_rng(seed)
    z = scale * r.standard_normal((n, k))
    y = r.integers(0, k, n)
    _, cache = softmax_cross_entropy_forward(on(xp, z), on(xp, y, dtype=np.int64))
    got = np.asarray(to_numpy(softmax_cross_entropy_backward(1.0, cache)))
    p = softmax(z, axis=1)
    want = p.copy()
    want[np.arange(n), y] -= 1
    want /= n
    eps, thr = np.finfo(np.float64).eps, dust_threshold(np.float64)
    label = np.zeros((n, k), bool)
    label[np.arange(n), y] = True
    assert np.all(np.abs(got - want)[label] <= 4 * eps / n)
    kept, dust = ~label & (p >= 2 * thr), ~label & (p < thr / 2)
    assert np.all(np.abs(got - want)[kept] <= 8 * eps * np.abs(want)[kept])
    assert np.all(got[dust] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_gradient_flushes_dust_below_the_threshold_only(dtype):
    """Probabilities below eps² (here: ones that underflow toward the subnormals, and one just
    under the threshold) give exact zeros in the gradient; every other entry is the formula's,
    bit for bit."""
    from minivd.functional import dust_threshold

    tiny = np.finfo(dtype).tiny
    gap = -np.log(tiny) + 5.0  # e^-gap: a subnormal probability
    z = np.array([[0.0, -gap, -0.5 * gap, 1.0], [2.0, 0.0, -1.0, -gap - 20]], dtype)
    y = np.array([0, 1])
    _, cache = softmax_cross_entropy_forward(z, y)
    probs = cache.probs
    assert 0 < probs[0, 1] < tiny  # the forward's probability is subnormal...
    d = softmax_cross_entropy_backward(1.0, cache)
    assert d[0, 1] == 0  # ...its gradient entry is exactly 0
    assert d[1, 1] == dtype((probs[1, 1] - 1) / 2)  # the label's entry keeps its -1
    small = np.abs(d) < tiny
    assert not np.any(small & (d != 0)), "a subnormal survived"
    thr = dust_threshold(dtype)
    keep = probs >= thr
    expected = probs.copy()
    expected[np.arange(2), y] -= 1
    expected *= dtype(0.5)
    np.testing.assert_array_equal(d[keep], expected[keep])  # untouched above the threshold
    assert np.all(d[~keep & (np.arange(4) != y[:, None])] == 0)
    assert thr == (2.0**-46 if dtype == np.float32 else 2.0**-104)
    from minivd.functional.losses import CECache

    t = dtype(thr)
    edge = np.array([[0.5, t, np.nextafter(t, dtype(0)), 0.5]], dtype)
    d = softmax_cross_entropy_backward(1.0, CECache(edge, np.array([0])))
    np.testing.assert_array_equal(d, np.array([[-0.5, t, 0, 0.5]], dtype))  # the boundary
    z[0, 2] = np.nan
    _, cache = softmax_cross_entropy_forward(z, y)
    assert np.isnan(softmax_cross_entropy_backward(1.0, cache)[0]).all()  # NaN stays NaN


def test_cross_entropy_is_stable_and_correct():
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    y = np.array([0, 2])
    loss, cache = softmax_cross_entropy_forward(z, y)
    assert np.isclose(float(loss), (0.0 + np.log(3)) / 2)
    assert np.all(np.isfinite(softmax_cross_entropy_backward(1.0, cache)))
    with pytest.raises(ValueError, match="labels must lie"):
        softmax_cross_entropy_forward(z, np.array([0, 3]))
    with pytest.raises(TypeError, match="labels must be an integer"):
        softmax_cross_entropy_forward(z, np.array([0.0, 1.0]))


@given(shape=dense_shapes, seed=seeds, p=st.floats(0.0, 0.9))
def test_bernoulli_dropout_gradcheck_and_scaling(xp, shape, seed, p):
    r = np.random.default_rng(seed)
    x = on(xp, r.standard_normal(shape[:2]))
    u = on(xp, r.random(shape[:2]))
    out, cache = bernoulli_dropout_forward(x, p, u)
    keep = np.asarray(u.get() if hasattr(u, "get") else u) >= p
    expect = np.where(keep, np.asarray(x.get() if hasattr(x, "get") else x) / (1 - p), 0.0)
    assert np.allclose(out.get() if hasattr(out, "get") else out, expect)
    errs = check_vjp(lambda x: bernoulli_dropout_forward(x, p, u)[0],
                     lambda d, x: [bernoulli_dropout_backward(
                         on(xp, d), bernoulli_dropout_forward(x, p, u)[1])],
                     [x], seed=seed)
    assert errs[0] < TOL


@pytest.mark.parametrize("layout", ["unit", "layer", "conv_channel", "conv_layer"])
@given(n=st.integers(1, 4), d=dims, seed=seeds)
def test_gaussian_dropout_gradcheck(xp, layout, n, d, seed):
    # ε off 0: ∂/∂log α = ½√α x ε dout, so a tiny ε (6.5e-6 failed with n = d = 1) puts the
    # gradient under central differences' rounding floor (~eps·|x|/h), like a small logit gap
    r = np.random.default_rng(seed)
    if layout.startswith("conv"):
        x = r.standard_normal((n, d, 3, 2))
        eps = away_from_zero(r, (n, d, 1, 1))
        la = r.uniform(-3, 1, (d, 1, 1) if layout == "conv_channel" else ())
    else:
        x = r.standard_normal((n, d))
        eps = away_from_zero(r, (n, d))
        la = r.uniform(-3, 1, (d,) if layout == "unit" else (1,))
    x, eps, la = on(xp, x), on(xp, eps), on(xp, la)

    def vjp(dout, x, la):
        return gaussian_dropout_backward(on(xp, dout), gaussian_dropout_forward(x, la, eps)[1])

    errs = check_vjp(lambda x, la: gaussian_dropout_forward(x, la, eps)[0], vjp, [x, la], seed=seed)
    assert max(errs) < TOL


def test_gaussian_dropout_noise_has_variance_alpha():
    """x·(1+√α ε) with α = p/(1−p) = 1/4: the multiplier's variance is α, not √α.

    R = 200000 draws: the sample mean has standard error √α/√R = 0.5/√R (the multiplier's sd
    is √α = 0.5) and the sample variance relative standard error sqrt(2/R) = 0.3%; we allow 5
    of each.
    """
    R = 200000
    r = np.random.default_rng(0)
    x = np.ones((R, 1))
    out, _ = gaussian_dropout_forward(x, np.array([np.log(0.25)]), r.standard_normal((R, 1)))
    assert abs(out.mean() - 1) < 5 * 0.5 / np.sqrt(R)
    assert abs(out.var() / 0.25 - 1) < 5 * np.sqrt(2 / R)


def test_gaussian_dropout_bad_broadcast():
    with pytest.raises(ValueError, match="broadcast"):
        gaussian_dropout_forward(np.zeros((2, 3)), np.zeros(4), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="broadcast"):
        gaussian_dropout_forward(np.zeros((2, 3)), np.zeros(3), np.zeros((5, 3)))


@pytest.mark.parametrize("per", ["weight", "unit", "layer"])
@given(shape=dense_shapes, seed=seeds)
def test_k15_map_gradcheck(xp, per, shape, seed):
    _, d_in, d_out = shape
    r = np.random.default_rng(seed)
    la_shape = {"weight": (d_in, d_out), "unit": (1, d_out), "layer": (1, 1)}[per]
    theta = on(xp, r.standard_normal((d_in, d_out)))
    la = on(xp, r.uniform(-4, -0.1, la_shape))
    var, _ = k15_variance_forward(theta, la)
    assert float(abs(var - xp.exp(la) * theta**2).max()) < 1e-12
    errs = check_vjp(lambda t, la: k15_variance_forward(t, la)[0],
                     lambda d, t, la: k15_variance_backward(
                         on(xp, d), k15_variance_forward(t, la)[1]),
                     [theta, la], seed=seed)
    assert max(errs) < TOL


@given(shape=dense_shapes, seed=seeds)
def test_m17_map_gradcheck(xp, shape, seed):
    _, d_in, d_out = shape
    r = np.random.default_rng(seed)
    # θ at least 0.1 from zero: log(θ² + 1e-8) bends on a ~1e-4 scale, where central
    # differences lose accuracy (|θ| = 8.8e-5 gave 1.2e-5); θ = 0 has its own test below
    theta = on(xp, away_from_zero(r, (d_in, d_out)))
    ls2 = on(xp, r.uniform(-6, 1, (d_in, d_out)))

    def vjp(douts, t, ls2):
        return m17_variance_backward(on(xp, douts[0]), on(xp, douts[1]),
                                     m17_variance_forward(t, ls2)[1])

    errs = check_vjp(lambda t, ls2: m17_variance_forward(t, ls2)[0], vjp, [theta, ls2], seed=seed)
    assert max(errs) < TOL


def test_m17_map_values_and_theta_zero():
    theta = np.array([[0.0, 0.5]])
    (var, la), cache = m17_variance_forward(theta, np.array([[-10.0, -2.0]]))
    assert np.allclose(var, np.exp([[-10.0, -2.0]]))
    assert np.allclose(la, [[-10.0 - np.log(1e-8), -2.0 - np.log(0.25 + 1e-8)]])
    dt, dls = m17_variance_backward(np.ones((1, 2)), np.ones((1, 2)), cache)
    assert np.all(np.isfinite(dt)) and np.all(np.isfinite(dls))


def test_posterior_maps_reject_bad_shapes():
    with pytest.raises(ValueError, match="log_alpha"):
        k15_variance_forward(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="log_sigma2"):
        m17_variance_forward(np.zeros((3, 2)), np.zeros((1, 2)))
    with pytest.raises(TypeError, match="theta"):
        k15_variance_forward(np.zeros((3, 2), dtype=int), np.zeros((3, 2)))
