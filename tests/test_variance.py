"""Statistical properties of the gradient estimators (K15 section 2 and Table 1).

Every test is seeded; each tolerance is 5 standard errors, estimated from the spread of its R
repeats (``tests.helpers.rel_se``: the delta method over the per-repeat squared deviations).
"""

import numpy as np
import pytest

from minivd import make_rng
from minivd.functional import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minivd.layers import VariationalDense
from minivd.layers.variational_dense import _OPS

from .helpers import mean_var, rel_se, slope_with_se


def grad_samples(layer, X, Y, M, R, seed, identical=False):
    """R minibatch gradients (mean CE, data term) of every parameter of ``layer``, plus the
    sampled op's own ``dw_mean`` (the gradient through the mean path alone).

    Examples are drawn i.i.d. with replacement from (X, Y) (or the first example M times when
    ``identical``), with fresh noise for every minibatch. Distinct seeds give disjoint streams
    (examples from ``2·seed``, noise from ``2·seed + 1``), so runs are independent.
    """
    host = np.random.default_rng(2 * seed)
    rng = make_rng(2 * seed + 1)
    out = {k: [] for k in [*layer.params, "dw_mean"]}
    for _ in range(R):
        idx = np.zeros(M, int) if identical else host.integers(0, len(X), M)
        logits = layer.forward(X[idx], rng=rng)
        _, cache = softmax_cross_entropy_forward(logits, Y[idx])
        dout = softmax_cross_entropy_backward(1.0, cache)
        sampler, op_cache, _ = layer._cache
        out["dw_mean"].append(_OPS[sampler][1](dout, op_cache).dw_mean)
        layer.backward(dout)
        for k in layer.params:
            out[k].append(layer.grads[k].copy())
    return {k: np.array(v) for k, v in out.items()}


def data(seed, n=64, d_in=6, d_out=3):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, d_in)), r.integers(0, d_out, n)


MS = [1, 2, 4, 8, 16, 32, 64]


def test_lrt_variance_falls_as_one_over_m():
    """With LRT the per-example terms are independent, so Var ∝ 1/M exactly: slope −1.

    R = 1500 per M; the slope's standard error comes from each M's rel_se (slope_with_se; it
    measures ≈ 0.007 here), and we allow 5 of them. Noise shared across the minibatch, or one
    weight sample for it, gives slopes near −0.7: dozens of standard errors away.
    """
    X, Y = data(0)
    layer = VariationalDense(6, 3, p=0.5, seed=0, dtype="float64")
    s, se = slope_with_se(MS, [grad_samples(layer, X, Y, M, 1500, seed=M)["theta"] for M in MS])
    assert abs(s + 1) < 5 * se, (s, se)


def test_shared_weight_sample_variance_does_not_fall_on_identical_examples():
    """One weight sample for the minibatch and M copies of one example: every per-example
    gradient is the same, so the minibatch gradient has one law for every M (slope 0); LRT on
    the same copies still falls as 1/M (slope −1). R = 1500 per M, 5 slope standard errors
    (slope_with_se) each."""
    X, Y = data(1)
    layer = VariationalDense(6, 3, p=0.5, seed=0, dtype="float64", sampler="shared_weights")
    s, se = slope_with_se(MS, [grad_samples(layer, X, Y, M, 1500, seed=M, identical=True)
                               ["dw_mean"] for M in MS])
    assert abs(s) < 5 * se, (s, se)
    layer.sampler = "lrt"
    s, se = slope_with_se(MS, [grad_samples(layer, X, Y, M, 1500, seed=100 + M, identical=True)
                               ["dw_mean"] for M in MS])
    assert abs(s + 1) < 5 * se, (s, se)


@pytest.fixture(scope="module")
def lrt_vs_per_example():
    """R = 8000 minibatch gradients (M = 8 copies of one example, so only the noise varies)
    of one top layer under LRT and per-example weights, α = 1, D_in = 6; independent runs
    (different seeds), so the two variance estimates are independent."""
    X, Y = data(2)
    out = {}
    for seed, sampler in ((7, "lrt"), (1007, "per_example_weights")):
        layer = VariationalDense(6, 3, p=0.5, seed=0, dtype="float64", sampler=sampler)
        out[sampler] = grad_samples(layer, X, Y, 8, 8000, seed=seed, identical=True)
    return out


def test_lrt_and_per_example_w_mean_gradients_have_the_same_variance(lrt_vs_per_example):
    """Same law of the pre-activations ⇒ same law of dL/dμ (= x.T @ dout through γ).

    The ratio of two independent variance estimates has relative standard error
    sqrt(se₁² + se₂²) (rel_se, R = 8000); we allow 5 of them. On identical examples only the
    noise varies, so an LRT whose variance is off by 30%, or whose noise is shared across the
    minibatch, is many standard errors out (with examples drawn at random, their spread would
    swamp the noise and hide both).
    """
    a, b = (lrt_vs_per_example[s]["dw_mean"] for s in ("lrt", "per_example_weights"))
    bound = 5 * np.hypot(rel_se(a), rel_se(b))
    assert abs(mean_var(b) / mean_var(a) - 1) < bound, (mean_var(a), mean_var(b), bound)


@pytest.mark.parametrize("name", ["log_alpha", "theta"])
def test_per_example_variance_gradients_are_noisier_than_lrt(lrt_vs_per_example, name):
    """LRT's gradient w.r.t. σ² (hence log α, and θ through σ² = αθ²) is the per-example
    estimator's conditional expectation given the pre-activations, so by the law of total
    variance it is strictly less noisy when D_in ≥ 2 (at D_in = 1 they coincide).

    Bound: per-example must exceed LRT by more than 5 combined relative standard errors
    (rel_se, R = 8000).
    """
    a = lrt_vs_per_example["lrt"][name]
    b = lrt_vs_per_example["per_example_weights"][name]
    bound = 5 * np.hypot(rel_se(a), rel_se(b))
    assert mean_var(b) / mean_var(a) > 1 + bound, (mean_var(a), mean_var(b), bound)


def test_shared_minus_per_example_variance_is_the_noise_variance_of_the_full_gradient():
    """Law of total variance over the examples n (drawn with replacement) and the weight
    sample ξ, with G(n, ξ) one example's gradient and ḡ(ξ) = E_n G(n, ξ) the full-data
    gradient at one weight sample:

    Var_per-example = Var(G)/M,  Var_shared = E_ξ Var_n(G)/M + Var_ξ(ḡ),  Var(G) = E_ξ Var_n(G)
    + Var_ξ(ḡ), so Var_shared − Var_per-example = (1 − 1/M)·Var_ξ(ḡ) ≥ 0 exactly: one weight
    sample for the minibatch is never less noisy in expectation (the Table 1 section of
    benchmarks/README.md uses this). Three independent estimates (R = 4000 each, distinct
    seeds); the tolerance is 5 combined standard errors (rel_se). The gap, measured and
    predicted, must be more than 5 of them above 0, so a shared sampler that drew per-example
    noise would fail.
    """
    X, Y = data(3)
    M, R = 8, 4000
    v, se = {}, {}
    for seed, sampler in ((11, "shared_weights"), (12, "per_example_weights")):
        layer = VariationalDense(6, 3, p=0.5, seed=0, dtype="float64", sampler=sampler)
        g = grad_samples(layer, X, Y, M, R, seed=seed)["theta"]
        v[sampler], se[sampler] = mean_var(g), mean_var(g) * rel_se(g)
    layer = VariationalDense(6, 3, p=0.5, seed=0, dtype="float64", sampler="shared_weights")
    rng, full = make_rng(13), []
    for _ in range(R):  # ḡ(ξ): every example, one weight sample
        logits = layer.forward(X, rng=rng)
        _, cache = softmax_cross_entropy_forward(logits, Y)
        layer.backward(softmax_cross_entropy_backward(1.0, cache))
        full.append(layer.grads["theta"].copy())
    full = np.array(full)
    predicted = (1 - 1 / M) * mean_var(full)
    bound = 5 * np.sqrt(se["shared_weights"] ** 2 + se["per_example_weights"] ** 2
                        + (predicted * rel_se(full)) ** 2)
    gap = v["shared_weights"] - v["per_example_weights"]
    assert abs(gap - predicted) < bound, (gap, predicted, bound)
    assert predicted > bound and gap > bound, (predicted, gap, bound)
