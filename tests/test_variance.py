"""Statistical properties of the gradient estimators (K15 section 2 and Table 1).

Every test is seeded; each tolerance is derived from its number of repeats R in a comment.
"""

import numpy as np
import pytest

from minivd import make_rng
from minivd.functional import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minivd.layers import VariationalDense
from minivd.layers.variational_dense import _OPS


def grad_samples(layer, X, Y, M, R, seed, identical=False):
    """R minibatch gradients (mean CE, data term) of every parameter of ``layer``, plus the
    sampled op's own ``dw_mean`` (the gradient through the mean path alone).

    Examples are drawn i.i.d. with replacement from (X, Y) (or the first example M times when
    ``identical``), with fresh noise for every minibatch.
    """
    host = np.random.default_rng(seed)
    rng = make_rng(seed + 1)
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


def mean_var(g):
    """Unbiased sample variance over the R repeats, averaged over the parameter's elements."""
    return float(np.var(g, axis=0, ddof=1).mean())


def rel_se(g):
    """Relative standard error of ``mean_var(g)``.

    For one element the sample variance of R draws has relative standard error
    sqrt((kurtosis − 1)/R); averaging over elements cannot make it worse, so the largest
    kurtosis over the elements gives a conservative bound.
    """
    c = g - g.mean(axis=0)
    kurt = (c**4).mean(axis=0) / np.maximum((c**2).mean(axis=0) ** 2, 1e-300)
    return float(np.sqrt((kurt.max() - 1) / g.shape[0]))


def data(seed, n=64, d_in=6, d_out=3):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, d_in)), r.integers(0, d_out, n)


def slope(ms, vs):
    return float(np.polyfit(np.log(ms), np.log(vs), 1)[0])


MS = [1, 2, 4, 8, 16, 32, 64]


def test_lrt_variance_falls_as_one_over_m():
    """With LRT the per-example terms are independent, so Var ∝ 1/M: slope −1.

    R = 1500 per M: each variance has relative error ≲ sqrt((κ−1)/R) ≈ 5% for κ ≈ 5, and the
    least-squares slope over ln M ∈ [0, 4.2] (Σ(ln M − mean)² = 13.4) has standard error
    ≈ 0.05/sqrt(13.4) ≈ 0.014: the band [−1.1, −0.9] is about 7 standard errors wide each side.
    """
    X, Y = data(0)
    layer = VariationalDense(6, 3, p=0.5, seed=0, dtype="float64")
    vs = [mean_var(grad_samples(layer, X, Y, M, 1500, seed=M)["theta"]) for M in MS]
    s = slope(MS, vs)
    assert -1.1 <= s <= -0.9, (s, vs)


def test_shared_weight_sample_variance_does_not_fall_on_identical_examples():
    """One weight sample for the minibatch and M copies of one example: every per-example
    gradient is the same, so Cov = Var and Var[mean] stays flat (slope 0; R = 1500 gives the
    same ~0.014 slope standard error as above, so > −0.3 is far outside the noise)."""
    X, Y = data(1)
    layer = VariationalDense(6, 3, p=0.5, seed=0, dtype="float64", sampler="shared_weights")
    vs = [mean_var(grad_samples(layer, X, Y, M, 1500, seed=M, identical=True)["dw_mean"])
          for M in MS]
    assert slope(MS, vs) > -0.3, vs
    # and LRT on the same identical examples still falls as 1/M
    layer.sampler = "lrt"
    vs = [mean_var(grad_samples(layer, X, Y, M, 1500, seed=M, identical=True)["dw_mean"])
          for M in MS]
    assert -1.1 <= slope(MS, vs) <= -0.9, vs


@pytest.fixture(scope="module")
def lrt_vs_per_example():
    """R = 8000 minibatch gradients (M = 8) of one top layer under LRT and per-example
    weights, α = 1, D_in = 6."""
    X, Y = data(2)
    out = {}
    for sampler in ("lrt", "per_example_weights"):
        layer = VariationalDense(6, 3, p=0.5, seed=0, dtype="float64", sampler=sampler)
        out[sampler] = grad_samples(layer, X, Y, 8, 8000, seed=7)
    return out


def test_lrt_and_per_example_w_mean_gradients_have_the_same_variance(lrt_vs_per_example):
    """Same law of the pre-activations ⇒ same law of dL/dμ (= x.T @ dout through γ).

    The ratio of two independent variance estimates has relative standard error
    sqrt(se₁² + se₂²) (see rel_se, from R = 8000); we allow 5 of them.
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
