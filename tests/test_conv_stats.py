"""Statistics of the conv samplers: LRT marginals, the covariance LRT drops, and how the
minibatch gradient variance falls with M (K15 section 2, PAPER.md §2).

Every test is seeded; each tolerance is derived from its number of samples R in a comment.
"""

import numpy as np
import pytest

import minivd.functional as F
from minivd import make_rng
from minivd.functional import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minivd.layers import VariationalConv2D
from minivd.layers.conv import _OPS

from .helpers import slope_with_se

R = 20000


def _samples(x, wm, wv, b, padding, seed):
    """R outputs of example ``x`` under LRT and under per-example kernels (float64)."""
    r = np.random.default_rng(seed)
    xs = np.repeat(x, R, axis=0)
    ho, wo = (x.shape[2] + 2 * padding - wm.shape[2] + 1, x.shape[3] + 2 * padding
              - wm.shape[3] + 1)
    lrt, _ = F.lrt_conv2d_forward(xs, wm, wv, b, r.standard_normal((R, wm.shape[0], ho, wo)),
                                  1, padding)
    per_ex, _ = F.per_example_conv2d_forward(xs, wm, wv, b, r.standard_normal((R,) + wm.shape),
                                             1, padding)
    return lrt, per_ex


def test_lrt_marginals_match_per_example_kernels():
    """Mean and variance of every output (channel, position, padded borders included).

    R = 20000 draws per method: the sample mean has standard error sd/sqrt(R) and the sample
    variance of Gaussian outputs relative error sqrt(2/(R−1)) (1%); we allow 5 of each.
    """
    r = np.random.default_rng(3)
    x = r.standard_normal((1, 2, 4, 5))
    wm, wv = r.standard_normal((2, 2, 3, 2)), r.uniform(0.1, 1.0, (2, 2, 3, 2))
    b = r.standard_normal(2)
    mean_th, _ = F.conv2d_forward(x, wm, b, 1, 1)
    var_th, _ = F.conv2d_forward(x * x, wv + 1e-8, None, 1, 1)  # std = sqrt(σ² + eps)
    for samples in _samples(x, wm, wv, b, 1, seed=4):
        sd = np.sqrt(var_th[0])
        assert np.all(np.abs(samples.mean(0) - mean_th[0]) < 5 * sd / np.sqrt(R))
        assert np.all(np.abs(samples.var(0, ddof=1) / var_th[0] - 1) < 5 * np.sqrt(2 / (R - 1)))


def test_what_lrt_drops_the_covariance_of_overlapping_patches():
    """Outputs p = (0, 0) and q = (0, 1) of one channel share 6 of their 9 input pixels per
    channel. On non-negative inputs one kernel sample per example makes them covary,
    Cov = Σ_k σ²_k x_{p+k} x_{q+k} (k over kernel entries); LRT's noise makes it 0.

    For R pairs of jointly Gaussian outputs the sample covariance has standard error
    sqrt((v_p v_q + Cov²)/(R−1)); the bound is 5 of them (with the per-example Cov, so it is
    conservative for LRT). The dropped covariance is many bounds wide.
    """
    r = np.random.default_rng(5)
    x = r.uniform(0.2, 1.0, (1, 2, 4, 4))  # after a ReLU: non-negative
    wm, wv = r.standard_normal((2, 2, 3, 3)), r.uniform(0.1, 1.0, (2, 2, 3, 3))
    var = wv[0] + 1e-8
    xp_, xq = x[0, :, 0:3, 0:3], x[0, :, 0:3, 1:4]  # the two patches
    cov_th = float(np.sum(var * xp_ * xq))
    vp, vq = float(np.sum(var * xp_**2)), float(np.sum(var * xq**2))
    bound = 5 * np.sqrt((vp * vq + cov_th**2) / (R - 1))
    lrt, per_ex = _samples(x, wm, wv, None, 0, seed=6)

    def cov(s):
        return float(np.cov(s[:, 0, 0, 0], s[:, 0, 0, 1])[0, 1])

    assert abs(cov(per_ex) - cov_th) < bound, (cov(per_ex), cov_th, bound)
    assert abs(cov(lrt)) < bound, (cov(lrt), bound)
    assert cov_th > 10 * bound  # the two estimators are far apart


def _data(seed, n=64):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, 2, 4, 4)), r.integers(0, 8, n)


def _grad_samples(layer, X, Y, M, reps, seed, identical=False):
    """``reps`` minibatch gradients of ``w_mean`` (the sampled op's ``dw_mean``; mean CE over
    the 8 flattened outputs as logits): examples i.i.d. with replacement, or the first example
    M times when ``identical``; fresh noise for every minibatch. Distinct seeds give disjoint
    streams (examples from ``2·seed``, noise from ``2·seed + 1``)."""
    host = np.random.default_rng(2 * seed)
    rng = make_rng(2 * seed + 1)
    out = []
    for _ in range(reps):
        idx = np.zeros(M, int) if identical else host.integers(0, len(X), M)
        logits = layer.forward(X[idx], rng=rng)
        _, cache = softmax_cross_entropy_forward(logits.reshape(M, -1), Y[idx])
        dout = softmax_cross_entropy_backward(1.0, cache).reshape(logits.shape)
        sampler, op_cache, _ = layer._cache
        out.append(_OPS[sampler][1](dout, op_cache).dw_mean)
    return np.array(out)


MS = [1, 2, 4, 8, 16, 32, 64]
REPS = 1500


@pytest.fixture(scope="module")
def layer():
    """2 → 2 channels, 3×3, 4×4 inputs: 8 outputs, α = 1."""
    return VariationalConv2D(2, 2, 3, p=0.5, seed=0, dtype="float64")


def test_lrt_conv_gradient_variance_falls_as_one_over_m(layer):
    """With LRT every output's noise is independent across examples, so Var ∝ 1/M: slope −1.

    REPS = 1500 per M; 5 slope standard errors, estimated from the repeats' spread
    (tests.helpers.slope_with_se; ≈ 0.003 here). Noise shared across the minibatch gives a
    slope near −0.97, about ten of them away; one kernel sample for it, −0.84.
    """
    X, Y = _data(0)
    layer.sampler = "lrt"
    s, se = slope_with_se(MS, [_grad_samples(layer, X, Y, M, REPS, seed=M) for M in MS])
    assert abs(s + 1) < 5 * se, (s, se)


def test_shared_kernel_variance_does_not_fall_on_identical_examples(layer):
    """One kernel sample for the minibatch and M copies of one example: every per-example
    gradient is the same, so the minibatch gradient has one law for every M (slope 0); LRT on
    the same copies still falls as 1/M. 5 slope standard errors each (slope_with_se)."""
    X, Y = _data(1)
    layer.sampler = "shared_weights"
    s, se = slope_with_se(MS, [_grad_samples(layer, X, Y, M, REPS, seed=M, identical=True)
                               for M in MS])
    assert abs(s) < 5 * se, (s, se)
    layer.sampler = "lrt"
    s, se = slope_with_se(MS, [_grad_samples(layer, X, Y, M, REPS, seed=100 + M, identical=True)
                               for M in MS])
    assert abs(s + 1) < 5 * se, (s, se)
