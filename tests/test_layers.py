"""Layers: finite-difference checks of backward + scale·KL with fixed noise, evaluation maps,
projection at the K15 bound, and bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minivd import make_rng, to_numpy
from minivd.layers import SAMPLERS, Dense, Dropout, GaussianDropout, ReLU, VariationalDense

from .helpers import TOL, away_from_zero, check_layer, on
from .strategies import dense_shapes, seeds

# β/N-like KL weights; a tiny nonzero scale would make KL gradients too small for central
# differences to resolve beside the O(1) data term, so it is 0 or at least 0.1
SCALES = st.one_of(st.just(0.0), st.floats(0.1, 2.0))


@given(shape=dense_shapes, seed=seeds)
def test_dense_relu_dropout_layers(xp, shape, seed):
    n, d_in, d_out = shape
    r = np.random.default_rng(seed)
    be = xp.__name__
    x = on(xp, away_from_zero(r, (n, d_in)))
    for layer in (Dense(d_in, d_out, seed=seed, backend=be, dtype="float64"), ReLU(),
                  Dropout(0.3)):
        errs = check_layer(layer, x, seed=seed)
        assert max(errs.values()) < TOL, (layer, errs)


@pytest.mark.parametrize("alpha_per", ["unit", "layer"])
@pytest.mark.parametrize("conv_input", [False, True])
@given(n=st.integers(1, 4), d=st.integers(1, 5), seed=seeds, scale=SCALES)
def test_gaussian_dropout_layer(xp, alpha_per, conv_input, n, d, seed, scale):
    r = np.random.default_rng(seed)
    x = on(xp, r.standard_normal((n, d, 3, 2) if conv_input else (n, d)))
    for learn in (False, True):
        layer = GaussianDropout(d, p=0.4, learn_alpha=learn, alpha_per=alpha_per,
                                backend=xp.__name__, dtype="float64")
        if learn:  # spread log α, at least 0.1 below the K15 bound
            layer.params["log_alpha"][...] = on(xp, r.uniform(-3, -0.1, layer.log_alpha.shape))
        errs = check_layer(layer, x, seed=seed, scale=scale)
        assert max(errs.values()) < TOL, errs


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("param", ["weight", "unit", "layer", "sparse", "fixed"])
@given(shape=dense_shapes, seed=seeds, scale=SCALES, fused=st.booleans())
def test_variational_dense_layer(xp, sampler, param, shape, seed, scale, fused):
    n, d_in, d_out = shape
    r = np.random.default_rng(seed)
    kw = dict(sparse=True) if param == "sparse" else (
        dict(learn_alpha=False) if param == "fixed" else dict(alpha_per=param))
    layer = VariationalDense(d_in, d_out, p=0.4, sampler=sampler, seed=seed,
                             backend=xp.__name__, dtype="float64", **kw)
    # θ off 0: the weight samplers' sqrt(αθ² + 1e-8) bends sharply at |θ| ~ 1e-4, a kink that
    # central differences (h = 1e-6) cannot resolve, like ReLU's at 0
    layer.params["theta"][...] = on(xp, away_from_zero(r, (d_in, d_out)))
    if "log_alpha" in layer.params:
        layer.params["log_alpha"][...] = on(xp, r.uniform(-3, -0.1, layer.log_alpha.shape))
    if "log_sigma2" in layer.params:
        layer.params["log_sigma2"][...] = on(xp, r.uniform(-4, 0, (d_in, d_out)))
    # x off 0 too: with d_in = 1 the LRT's sqrt(x²σ² + 1e-8) bends on the same scale, and
    # check_layer's h = 1e-5 misses it for |x| < 1e-3 (x = -1.1e-3 gave 6.9e-6)
    x = on(xp, away_from_zero(r, (n, d_in)))
    errs = check_layer(layer, x, seed=seed, scale=scale, fused=fused)
    assert max(errs.values()) < TOL, errs


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("param", ["weight", "unit", "sparse", "fixed"])
def test_backward_with_kl_equals_backward_then_kl_backward(xp, sampler, param, monkeypatch):
    """The fused step (what models train with) gives the same gradients as the two calls, on
    arrays big enough for the blocked pass on two threads (``log α`` above the bound included).
    Per-weight K15 and sparse M17 on NumPy take their one-pass paths (checked); the other
    posteriors run the two calls inside ``backward_with_kl``."""
    from minivd.layers import VariationalConv2D
    from minivd.layers.weight_posterior import WeightPosterior

    monkeypatch.setenv("MINIVD_NUM_THREADS", "2")
    calls = []
    for name in ("_k15_backward_with_kl", "_m17_backward_with_kl"):
        one_pass = getattr(WeightPosterior, name)
        monkeypatch.setattr(WeightPosterior, name,
                            lambda self, *a, f=one_pass: calls.append(1) or f(self, *a))

    kw = dict(sparse=True) if param == "sparse" else (
        dict(learn_alpha=False) if param == "fixed" else dict(alpha_per=param))
    conv_kw = kw | {"alpha_per": "channel"} if param == "unit" else kw
    r = np.random.default_rng(0)
    be = xp.__name__
    for layer, x_shape in ((VariationalDense(600, 300, sampler=sampler, backend=be, **kw),
                            (7, 600)),
                           (VariationalConv2D(128, 128, 3, sampler=sampler, backend=be,
                                              **conv_kw), (2, 128, 4, 5))):
        if "log_alpha" in layer.params:
            la = r.uniform(-4, 0.5, layer.params["log_alpha"].shape)  # some above the bound
            layer.params["log_alpha"][...] = on(xp, la, "float32")
        x, grads = on(xp, r.standard_normal(x_shape), "float32"), []
        for fused in (False, True):
            out = layer.forward(x, rng=make_rng(3, be))
            dout = on(xp, np.random.default_rng(4).standard_normal(out.shape), "float32")
            scale = np.float64(0.37)  # a NumPy scalar, as β/N may be: no dtype promotion
            if fused:
                dx = layer.backward_with_kl(dout, scale)
            else:
                dx = layer.backward(dout)
                layer.kl_backward(scale)
            grads.append({"x": dx} | {k: v.copy() for k, v in layer.grads.items()})
        one_pass_expected = (param in ("weight", "sparse") and sampler != "mean"
                             and xp.__name__ == "numpy")
        assert len(calls) == one_pass_expected, calls
        calls.clear()
        assert grads[0].keys() == grads[1].keys()
        for k in grads[0]:
            np.testing.assert_array_equal(to_numpy(grads[0][k]), to_numpy(grads[1][k]), k)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_need_dx_false_skips_only_dx(xp, sampler):
    """What models ask of their first layer: the same parameter gradients, and no ``dx`` from
    the ops that can skip it (every dense sampler; of the conv ones, LRT only)."""
    from minivd.layers import VariationalConv2D

    r = np.random.default_rng(1)
    be = xp.__name__
    for layer, x_shape in ((VariationalDense(9, 5, sampler=sampler, backend=be), (4, 9)),
                           (VariationalConv2D(3, 4, 3, padding=1, sampler=sampler, backend=be),
                            (2, 3, 5, 6))):
        x, grads, dxs = on(xp, r.standard_normal(x_shape), "float32"), [], []
        for need_dx in (True, False):
            out = layer.forward(x, rng=make_rng(3, be))
            dout = on(xp, np.random.default_rng(4).standard_normal(out.shape), "float32")
            dxs.append(layer.backward_with_kl(dout, 0.1, need_dx=need_dx))
            grads.append({k: to_numpy(v).copy() for k, v in layer.grads.items()})
        skips = sampler in ("lrt",) or isinstance(layer, VariationalDense)
        assert dxs[0] is not None and (dxs[1] is None) == skips
        for k in grads[0]:
            np.testing.assert_array_equal(grads[0][k], grads[1][k], k)


def test_dense_need_dx_false_skips_only_dx(xp):
    from minivd.layers import Dense

    layer, r = Dense(7, 3, backend=xp.__name__), np.random.default_rng(2)
    x = on(xp, r.standard_normal((5, 7)), "float32")
    dout = on(xp, r.standard_normal((5, 3)), "float32")
    grads = []
    for need_dx in (True, False):
        layer.forward(x)
        dx = layer.backward_with_kl(dout, 0.1, need_dx=need_dx)
        assert (dx is None) == (not need_dx)
        grads.append({k: to_numpy(v).copy() for k, v in layer.grads.items()})
    for k in grads[0]:
        np.testing.assert_array_equal(grads[0][k], grads[1][k], k)
    layer.forward(x)
    assert layer.backward(dout) is not None  # backward always gives dx


def test_training_skips_what_is_below_the_first_layer_with_parameters(monkeypatch):
    """LeNet-5 starts with a Reshape: it is not run backward, and the first conv layer is
    asked for no input gradient (its LRT op then skips two products and the scatter)."""
    from minivd.model import build_model

    net = build_model("lenet-5", "vd-b", seed=0)
    seen = []
    for i, layer in enumerate(net.layers):
        def spy(dout, scale, need_dx=True, _i=i, _f=layer.backward_with_kl):
            seen.append((_i, need_dx))
            return _f(dout, scale, need_dx)
        monkeypatch.setattr(layer, "backward_with_kl", spy)
    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    net.loss_and_grads(x, np.array([1, 7]), rng=make_rng(0), kl_scale=1e-3)
    assert type(net.layers[0]).__name__ == "Reshape" and net.layers[1].params
    assert seen == [(i, i > 1) for i in reversed(range(1, len(net.layers)))]


def test_mlp_rates_set_each_layers_noise():
    """p = 0.2 on the input and 0.5 on hidden layers by default (α = p/(1 − p): 0.25 and 1 for
    the B methods, the Bernoulli rates for binary dropout); ``p_input`` and ``p_hidden`` move
    them and nothing else."""
    from minivd.model import build_mlp

    b = build_mlp([5, 4, 4, 3], "gaussian-b", seed=0)
    moved = build_mlp([5, 4, 4, 3], "gaussian-b", seed=0, p_input=0.5, p_hidden=0.2)
    assert [float(b.layers[i].log_alpha.max()) for i in (0, 2, 4)] == pytest.approx(
        [np.log(0.25), 0.0, 0.0])
    assert [float(moved.layers[i].log_alpha.max()) for i in (0, 2, 4)] == pytest.approx(
        [0.0, np.log(0.25), np.log(0.25)])
    for i in (0, 2, 4):  # the same initial weights
        np.testing.assert_array_equal(b.layers[i].params["theta"], moved.layers[i].params["theta"])
    drop = build_mlp([5, 4, 3], "dropout", p_input=0.3)
    assert [drop.layers[i].p_drop for i in (0, 3)] == pytest.approx([0.3, 0.5])
    for bad in (0.0, 1.0, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="p_input must be a number in"):
            build_mlp([5, 4, 3], "vd-b", p_input=bad)
    with pytest.raises(ValueError, match="p_hidden must be a number in"):
        build_mlp([5, 4, 3], "vd-b", p_hidden=1.0)


def test_kl_counts(xp):
    """KL sums over weights (type B) and over noise variables (type A), never averages."""
    from minivd.kl import kl_k15

    la = np.log(0.25)
    k = float(kl_k15(np.array(la)))
    for per in ("weight", "unit", "layer"):
        layer = VariationalDense(6, 4, p=0.2, alpha_per=per, backend=xp.__name__)
        assert np.isclose(float(layer.kl()), 24 * k, rtol=1e-5)
    for per in ("unit", "layer"):
        ga = GaussianDropout(6, p=0.2, learn_alpha=True, alpha_per=per, backend=xp.__name__)
        assert np.isclose(float(ga.kl()), 6 * k, rtol=1e-5)
    assert GaussianDropout(6, p=0.2).kl() == 0.0


def test_evaluation_uses_mean_weights_and_sparse_mask():
    layer = VariationalDense(3, 2, sparse=True, seed=1, dtype="float64")
    theta = layer.params["theta"]
    layer.params["log_sigma2"][...] = np.log(theta**2) + np.array([[4.0, 0.0], [2.9, 3.1],
                                                                   [-5.0, 10.0]])
    x = np.eye(3)
    out = layer.forward(x, train=False)
    mask = np.array([[0, 1], [1, 0], [1, 0]])
    assert np.allclose(out, theta * mask)  # log α ≥ 3 zeroed, bias is 0
    dense = VariationalDense(3, 2, seed=1, dtype="float64")
    assert np.allclose(dense.forward(x, train=False), dense.params["theta"])
    # training passes are stochastic, evaluation passes are not
    a = dense.forward(x, rng=make_rng(0))
    b = dense.forward(x, rng=make_rng(1))
    assert not np.allclose(a, b)


def test_noise_is_independent_across_the_minibatch():
    """LRT noise has shape (N, D_out): identical examples get different outputs."""
    layer = VariationalDense(4, 3, seed=0, dtype="float64")
    out = layer.forward(np.ones((5, 4)), rng=make_rng(0))
    assert np.all(np.std(out, axis=0) > 0)
    layer.sampler = "shared_weights"
    out = layer.forward(np.ones((5, 4)), rng=make_rng(0))
    assert np.allclose(np.std(out, axis=0), 0)


def test_k15_projection_bound_is_not_a_dead_zone():
    """vd-b starts at α = 1 (log α = 0), on the bound: gradients exist there and a parameter
    pushed past the bound is projected back and can move inward again."""
    layer = VariationalDense(3, 2, p=0.5, seed=0, dtype="float64")
    assert np.all(layer.params["log_alpha"] == 0.0)
    x = np.random.default_rng(0).standard_normal((8, 3))
    layer.forward(x, rng=make_rng(0))
    layer.backward(np.zeros((8, 2)))  # no data gradient: only the KL acts
    layer.kl_backward(1.0)
    g = layer.grads["log_alpha"]
    assert np.all(g < -0.4)  # the KL pulls α up (gradient descent raises log α)
    layer.params["log_alpha"] -= 0.1 * g  # steps past the bound ...
    assert np.all(layer.params["log_alpha"] > 0)
    layer.project()
    assert np.all(layer.params["log_alpha"] == 0.0)  # ... and is projected back onto it
    layer.params["log_alpha"] -= 0.1 * np.ones_like(g)  # a data-like push moves it inward
    assert np.all(layer.params["log_alpha"] < 0)


def test_layers_reject_bad_input():
    with pytest.raises(ValueError, match="sampler"):
        VariationalDense(3, 2, sampler="per_weight")
    layer = VariationalDense(3, 2)
    layer.sampler = "bogus"
    with pytest.raises(ValueError, match="sampler"):
        layer.forward(np.zeros((2, 3), np.float32), rng=make_rng(0))
    with pytest.raises(ValueError, match="rng"):
        VariationalDense(3, 2).forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="D_in"):
        VariationalDense(3, 2).forward(np.zeros((2, 4), np.float32), rng=make_rng(0))
    with pytest.raises(TypeError, match="float32 or float64"):
        VariationalDense(3, 2).forward(np.zeros((2, 3), int), rng=make_rng(0))
    with pytest.raises(ValueError, match="alpha_per"):
        VariationalDense(3, 2, alpha_per="row")
    with pytest.raises(ValueError, match="p ≤ 0.5"):
        VariationalDense(3, 2, p=0.7)
    with pytest.raises(ValueError, match="d_in"):
        Dense(0, 2)
    with pytest.raises(ValueError, match="GaussianDropout"):
        GaussianDropout(3).forward(np.zeros((2, 4), np.float32), rng=make_rng(0))
    with pytest.raises(ValueError, match="p_drop"):
        Dropout(1.0)
    with pytest.raises(RuntimeError, match="backward"):
        Dense(3, 2).backward(np.zeros((2, 2), np.float32))
