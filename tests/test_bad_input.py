"""Bad input to the public numerical API gets a clear error, never a silent wrong result.

Each case here was found by probing the API: before its check it either returned something
plausible and wrong (a perfect error rate, noise shared across the batch, a broadcast gradient,
a float64 result from float32 inputs) or made NaN from finite input, or failed deep inside NumPy
without naming the argument.
"""

from __future__ import annotations

import numpy as np
import pytest

import minivd.functional as F
from minivd import make_rng
from minivd.evaluate import evaluate
from minivd.gradcheck import numerical_vjp
from minivd.kl import kl_k15, kl_k15_grad, kl_m17, kl_m17_grad
from minivd.layers import Dense, GaussianDropout, VariationalDense
from minivd.model import build_model
from minivd.optim import SGD, Adam

f32 = np.float32


def tiny_model():
    return build_model("mlp", "vd-b", width=4, depth=1, in_features=3, n_classes=2, seed=0)


def tiny_split(n=6):
    return np.random.default_rng(0).random((n, 3), dtype=f32), np.arange(n) % 2


# ---- evaluation -----------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [0, -1, 2.0, True])
def test_evaluate_rejects_a_batch_that_would_skip_every_example(batch):
    x, y = tiny_split()
    with pytest.raises(ValueError, match="batch must be an int"):
        evaluate(tiny_model(), x, y, batch=batch)  # batch=-1 used to report error 0.0
    with pytest.raises(ValueError, match="samples must be an int"):  # 2.7 was truncated
        evaluate(tiny_model(), x, y, mode="mc", samples=2.7, rng=make_rng(0))


@pytest.mark.parametrize("mode", ["mean", "mc"])
def test_evaluate_refuses_non_finite_logits(mode):
    model = tiny_model()
    for _, p, _ in model.parameters():
        p[...] = np.nan
    x, y = tiny_split()
    with pytest.raises(ValueError, match="outputs are not finite"):  # argmax(NaN row) = class 0
        evaluate(model, x, np.zeros_like(y), mode=mode, rng=make_rng(0))


# ---- noise shapes, eps, dtypes --------------------------------------------------------------

@pytest.mark.parametrize("eps_shape", [(1, 4), (4,), ()])
def test_gaussian_dropout_refuses_noise_shared_across_the_batch(eps_shape):
    x = np.ones((3, 4), f32)
    with pytest.raises(ValueError, match="rank and batch size"):
        F.gaussian_dropout_forward(x, np.zeros(4, f32), np.ones(eps_shape, f32))
    # one value per example and channel, shared over positions, is type A for conv inputs
    out, _ = F.gaussian_dropout_forward(np.ones((2, 3, 4, 4), f32), np.zeros((3, 1, 1), f32),
                                        np.ones((2, 3, 1, 1), f32))
    assert out.shape == (2, 3, 4, 4)


def lrt_dense(eps):
    x, w = np.ones((2, 3), f32), np.ones((3, 4), f32)
    return F.lrt_dense_forward(x, w, w, None, np.ones((2, 4), f32), eps=eps)


def shared_dense(eps):
    x, w = np.ones((2, 3), f32), np.ones((3, 4), f32)
    return F.shared_weight_dense_forward(x, w, w, None, np.ones((3, 4), f32), eps=eps)


def per_example_dense(eps):
    x, w = np.ones((2, 3), f32), np.ones((3, 4), f32)
    return F.per_example_dense_forward(x, w, w, None, np.ones((2, 3, 4), f32), eps=eps)


def lrt_conv(eps):
    x, w = np.ones((2, 1, 4, 4), f32), np.ones((2, 1, 3, 3), f32)
    return F.lrt_conv2d_forward(x, w, w, None, np.ones((2, 2, 2, 2), f32), eps=eps)


def shared_conv(eps):
    x, w = np.ones((2, 1, 4, 4), f32), np.ones((2, 1, 3, 3), f32)
    return F.shared_weight_conv2d_forward(x, w, w, None, np.ones((2, 1, 3, 3), f32), eps=eps)


OPS_WITH_EPS = [lrt_dense, shared_dense, per_example_dense, lrt_conv, shared_conv]


@pytest.mark.parametrize("op", OPS_WITH_EPS)
@pytest.mark.parametrize("eps", [0.0, -1e-8, np.nan, np.inf, "1e-8", None, True, 1e-50, 1e300,
                                 10**400])  # 1e-50 is 0 in float32, 1e300 inf
def test_eps_must_be_a_finite_positive_number(op, eps):
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        op(eps)


@pytest.mark.parametrize("op", OPS_WITH_EPS)
def test_a_float64_eps_scalar_keeps_float32_outputs(op):
    out, _ = op(np.float64(1e-8))  # NumPy 2 would promote float32 arrays by a float64 scalar
    assert out.dtype == f32


def test_float16_is_refused_where_its_rounding_would_make_nan():
    x = np.zeros((2, 3), np.float16)  # sqrt(0 + 1e-8) is 0 in float16: dx = 0/0
    with pytest.raises(TypeError, match="float32 or float64"):
        F.lrt_dense_forward(x, np.ones((3, 4), x.dtype), np.ones((3, 4), x.dtype), None,
                            np.ones((2, 4), x.dtype))
    with pytest.raises(TypeError, match="float32 or float64"):
        Dense(3, 4, seed=0, dtype="float16")


def dense_case():
    x, w = np.ones((2, 3), f32), np.ones((3, 4), f32)
    return F.dense_backward, F.dense_forward(x, w, None)[1], (2, 4)


def lrt_case():
    return F.lrt_dense_backward, lrt_dense(1e-8)[1], (2, 4)


def conv_case():
    x, w = np.ones((2, 1, 4, 4), f32), np.ones((2, 1, 3, 3), f32)
    return F.conv2d_backward, F.conv2d_forward(x, w, None)[1], (2, 2, 2, 2)


def lrt_conv_case():
    return F.lrt_conv2d_backward, lrt_conv(1e-8)[1], (2, 2, 2, 2)


@pytest.mark.parametrize("case", [dense_case, lrt_case, conv_case, lrt_conv_case])
@pytest.mark.parametrize("dtype", [np.float64, np.complex64, np.int32])
def test_backward_refuses_an_upstream_gradient_of_another_dtype(case, dtype):
    backward, cache, shape = case()
    with pytest.raises(TypeError, match="dout"):  # conv used to cast, dense to upcast
        backward(np.ones(shape, dtype), cache)
    with pytest.raises(TypeError, match="dout must be a NumPy or CuPy array"):
        backward([[1.0]], cache)


def test_cross_entropy_backward_needs_a_scalar_and_a_batch():
    logits, labels = np.zeros((3, 4), f32), np.array([0, 1, 2])
    _, cache = F.softmax_cross_entropy_forward(logits, labels)
    for bad in (np.ones(4, f32), np.nan):
        with pytest.raises(ValueError, match="dloss must be a finite scalar"):
            F.softmax_cross_entropy_backward(bad, cache)  # (K,) used to broadcast over classes
    with pytest.raises(ValueError, match="batch is empty"):
        F.softmax_cross_entropy_forward(np.zeros((0, 4), f32), np.zeros(0, int))
    out, cache = F.flatten_forward(np.zeros((0, 2, 3, 3), f32))  # N = 0 flattens
    assert out.shape == (0, 18) and F.flatten_backward(out, cache).shape == (0, 2, 3, 3)


@pytest.mark.parametrize("fn", [kl_k15, kl_k15_grad, kl_m17, kl_m17_grad])
def test_kl_takes_real_floats_and_python_numbers(fn):
    with pytest.raises(TypeError, match="log_alpha must be a float32 or float64"):
        fn(np.array([1j]))
    assert np.isfinite(fn(-1.0)) and np.asarray(fn(-1.0)).shape == ()


# ---- optimisers -----------------------------------------------------------------------------

@pytest.mark.parametrize("opt", [Adam, SGD])
@pytest.mark.parametrize("grad", [np.array([1.0, 2.0, 3.0]), np.array(5.0), np.ones((1, 3)),
                                  np.ones((2, 3), f32), [[1.0] * 3] * 2])
def test_step_refuses_a_gradient_that_is_not_its_parameters_shape_and_dtype(opt, grad):
    p = np.ones((2, 3))
    with pytest.raises(ValueError, match="gradient of p must have its parameter's shape"):
        opt(lr=0.1).step([("p", p, grad)])  # SGD used to broadcast it
    np.testing.assert_array_equal(p, 1.0)


@pytest.mark.parametrize("opt", [Adam, SGD])
def test_step_refuses_repeated_names_and_bad_learning_rates(opt):
    a, b, g = np.ones(3), np.ones(3), np.ones(3)
    with pytest.raises(ValueError, match="names repeat"):  # they would share one state
        opt(lr=0.1).step([("w", a, g), ("w", b, g)])
    for lr in (np.nan, -1.0, True):
        with pytest.raises(ValueError, match="learning rate"):
            opt(lr=0.1).step([("w", a, g)], lr=lr)
    opt(lr=0.1).step([("w", a, g)], lr=0.0)  # a linear decay ends at 0
    np.testing.assert_array_equal(a, 1.0)
    opt(lr=np.float32(0.1))  # a NumPy scalar is a number
    with pytest.raises(ValueError, match="learning rate"):
        opt(lr=True)
    o = opt(lr=0.1)
    o.step([("w", a, g)])
    with pytest.raises(ValueError, match="state was made for"):
        o.step([("w", np.ones(4), np.ones(4))])


@pytest.mark.parametrize("opt", [Adam, SGD])
def test_a_refused_step_changes_nothing(opt):
    a, b = np.ones(3), np.ones(3)
    o = opt(lr=0.1)
    o.step([("a", a, np.ones(3)), ("b", b, np.ones(3))])
    before = (o.t, a.copy(), b.copy())
    for bad in ([("a", a, np.ones(3)), ("b", np.ones(4), np.ones(4))],  # b's state is (3,)
                [("a", a, np.ones(3)), ("b", b, np.ones(2))]):
        with pytest.raises(ValueError):
            o.step(bad)
    with pytest.raises(ValueError, match="learning rate"):
        o.step([("a", a, np.ones(3))], lr=np.nan)
    assert o.t == before[0]  # no step counted, no parameter moved
    np.testing.assert_array_equal(a, before[1])
    np.testing.assert_array_equal(b, before[2])


@pytest.mark.parametrize("eps", [0.0, -1e-8, np.nan])
def test_adam_eps_must_be_positive(eps):
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        Adam(eps=eps)  # eps = 0 with a zero gradient gives 0/0 in every parameter


# ---- gradcheck, layers, models --------------------------------------------------------------

def test_numerical_vjp_checks_douts_and_step():
    a = np.ones(3)
    for f, douts in ((lambda v: (2 * v, 100 * v), [np.ones(3)]),  # one dout for two outputs
                     (lambda v: 2 * v, np.ones(1)), (lambda v: 2 * v, np.ones((3, 3)))):
        with pytest.raises(ValueError, match="douts have shapes"):
            numerical_vjp(f, [a], douts)
    with pytest.raises(ValueError, match="h must be a finite step > 0"):
        numerical_vjp(lambda v: 2 * v, [a], np.ones(3), h=0)
    with pytest.raises(TypeError, match="must be a float64 array"):
        numerical_vjp(lambda v, s: v * s, [a, 2.0], np.ones(3), wrt=[1])
    for wrt in ([5], [1.0], ["0"]):
        with pytest.raises(ValueError, match="not the index of one of the 1 arguments"):
            numerical_vjp(lambda v: 2 * v, [a], np.ones(3), wrt=wrt)


def test_rel_error_takes_real_numbers_only():
    from minivd.gradcheck import rel_error

    assert rel_error([1, 2], [1, 2.5]) == pytest.approx(0.5 / 4.5)
    assert np.isnan(rel_error(np.array([np.nan]), np.array([1.0])))  # fails any tolerance
    with pytest.raises(TypeError, match="a must be real numbers, got dtype complex128"):
        rel_error(1j, 0)  # the imaginary part used to be dropped with a warning


@pytest.mark.parametrize("rng", [0, np.random.RandomState(0), "seed"])
def test_layers_refuse_what_is_not_a_generator(rng):
    x = np.ones((2, 3), f32)
    for layer in (VariationalDense(3, 2, seed=0), GaussianDropout(3)):
        with pytest.raises(TypeError, match="rng must be a NumPy or CuPy Generator"):
            layer.forward(x, rng=rng)


@pytest.mark.parametrize("layer", [GaussianDropout(3, learn_alpha=True),
                                   VariationalDense(3, 2, seed=0),
                                   VariationalDense(3, 2, seed=0, sparse=True)])
def test_kl_backward_before_backward_says_so(layer):
    with pytest.raises(RuntimeError, match="call backward"):
        layer.kl_backward(1.0)


@pytest.mark.parametrize("kw", [dict(width=2.7), dict(depth=1.9), dict(seed=-1), dict(seed=1.5),
                                dict(width=0), dict(n_classes=True)])
def test_build_model_refuses_non_integer_sizes_and_seeds(kw):
    with pytest.raises(ValueError, match="must be an int"):  # width 2.7 was truncated to 2
        build_model("mlp", "vd-b", **kw)


def test_evaluate_refuses_labels_the_model_has_no_class_for():
    x, y = tiny_split()
    with pytest.raises(ValueError, match="out of range for a model of 2 classes"):
        evaluate(tiny_model(), x, y + 1)  # label 2 would silently count as an error


@pytest.mark.parametrize("kl_scale", [np.nan, -1.0, np.inf, None])
def test_loss_and_grads_needs_a_finite_kl_scale(kl_scale):
    x, y = tiny_split()
    with pytest.raises(ValueError, match="kl_scale"):
        tiny_model().loss_and_grads(x, y, rng=make_rng(0), kl_scale=kl_scale)


@pytest.mark.parametrize("missing", ["w_var", "noise"])
@pytest.mark.parametrize("op", OPS_WITH_EPS)
def test_weight_noise_ops_name_a_missing_variance_or_noise(op, missing):
    # lrt_dense_forward(w_var=None) used to fail inside a matmul, the conv op in a reshape
    x = np.ones((2, 3), f32) if "dense" in op.__name__ else np.ones((2, 1, 4, 4), f32)
    w = np.ones((3, 4) if x.ndim == 2 else (2, 1, 3, 3), f32)
    fn = {lrt_dense: F.lrt_dense_forward, shared_dense: F.shared_weight_dense_forward,
          per_example_dense: F.per_example_dense_forward, lrt_conv: F.lrt_conv2d_forward,
          shared_conv: F.shared_weight_conv2d_forward}[op]
    args = dict(x=x, w_mean=w, w_var=w, b=None, noise=np.ones((2, 4), f32))
    args[missing] = None
    with pytest.raises(TypeError, match=f"{missing} must be a NumPy or CuPy array"):
        fn(**args)


# ---- layer construction and the KL scale (found by probing, session 9) ------------------
@pytest.mark.parametrize("kw, match", [
    (dict(sparse=True, learn_alpha=False), "it takes no learn_alpha=False"),
    (dict(sparse=True, alpha_per="unit"), "it takes no shared alpha_per, got 'unit'"),
    (dict(d_in=1, sparse=True, alpha_per="unit"), "it takes no shared alpha_per"),
    (dict(sparse=True, log_sigma2_init=np.nan), "log_sigma2_init must be a finite number"),
    (dict(sparse=True, log_sigma2_init=np.inf), "log_sigma2_init must be a finite number")])
def test_sparse_layers_refuse_settings_they_would_ignore(kw, match):
    from minivd.layers import VariationalConv2D

    kw = {"d_in": 3, **kw}
    with pytest.raises(ValueError, match=match):
        VariationalDense(kw.pop("d_in"), 2, **kw)
    if "alpha_per" in kw:  # the conv layer's shared kinds are "channel" and "layer"
        kw["alpha_per"] = "channel"
        match = match.replace("'unit'", "'channel'")
    with pytest.raises(ValueError, match=match):
        VariationalConv2D(1, 2, 1, **kw)


@pytest.mark.parametrize("layer", [lambda: VariationalDense(3, 2, seed=0),
                                   lambda: VariationalDense(3, 2, sparse=True, seed=0),
                                   lambda: GaussianDropout(3, learn_alpha=True)])
@pytest.mark.parametrize("scale", [np.nan, np.inf, -np.inf, None, "1"])
def test_layers_refuse_a_kl_scale_that_is_not_a_finite_number(layer, scale):
    lay = layer()
    x = np.random.default_rng(0).random((4, 3), dtype=f32)
    out = lay.forward(x, rng=make_rng(0))
    lay.backward_with_kl(np.ones_like(out), 1e-3)  # gradients exist: a refused call keeps them
    before = {k: v.copy() for k, v in lay.grads.items()}
    out = lay.forward(x, rng=make_rng(1))
    for call in (lambda: lay.kl_backward(scale),
                 lambda: lay.backward_with_kl(np.ones_like(out), scale)):
        with pytest.raises(ValueError, match="the KL scale must be a finite number"):
            call()
    assert before and all(np.array_equal(v, before[k]) for k, v in lay.grads.items())


def test_m17_backward_refuses_an_upstream_gradient_of_another_dtype():
    theta = np.random.default_rng(0).standard_normal((3, 2)).astype(f32)
    _, cache = F.m17_variance_forward(theta, np.full((3, 2), -4.0, f32))
    for name, args in (("dvar", (np.ones((3, 2)), None)), ("dlog_alpha", (None, np.ones((3, 2)))),
                       ("dvar", (np.ones((3, 2), np.int32), None))):
        with pytest.raises(TypeError, match=name):
            F.m17_variance_backward(*args, cache)
