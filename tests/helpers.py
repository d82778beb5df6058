"""Test helpers: seeded arrays on a backend, and a finite-difference check of a whole layer."""

from __future__ import annotations

import numpy as np

from minivd import check_vjp, make_rng
from minivd.backend import backend_name

TOL = 1e-6  # relative error bound of every float64 finite-difference check


def on(xp, a, dtype="float64"):
    """Host array ``a`` on backend ``xp``."""
    a = np.asarray(a, dtype=dtype)
    return a if backend_name(xp) == "numpy" else xp.asarray(a)


def away_from_zero(rng, shape, margin=0.1):
    """Normals pushed at least ``margin`` away from 0 (keeps ReLU off its kink)."""
    z = rng.standard_normal(shape)
    return np.sign(z) * (np.abs(z) + margin)


def check_layer(layer, x, *, seed=0, scale=0.0, dout_seed=1, fused=False):
    """Finite-difference check of ``layer.backward`` + ``layer.kl_backward(scale)`` (or, with
    ``fused``, of ``layer.backward_with_kl(dout, scale)``, the path models train with).

    The noise is fixed by drawing it from ``make_rng(seed)`` in every evaluation. Returns
    ``{name: rel_error}`` for ``x`` and every parameter.
    """
    xp = __import__("minivd").get_xp(x)
    names = list(layer.params)
    be = backend_name(xp)

    def run(x_, ps):
        for n, p in zip(names, ps):
            layer.params[n] = p
        return layer.forward(x_, rng=make_rng(seed, be), train=True)

    def f(x_, *ps):
        out = run(x_, ps)
        return out, xp.asarray(layer.kl()) * scale

    def vjp(douts, x_, *ps):
        dout, dkl = douts
        run(x_, ps)
        if fused:
            dx = layer.backward_with_kl(on(xp, dout), scale * float(dkl))
        else:
            dx = layer.backward(on(xp, dout))
            layer.kl_backward(scale * float(dkl))
        return [dx] + [layer.grads[n] for n in names]

    params = [layer.params[n].copy() for n in names]
    # h = 1e-5, near the float64 optimum (eps^(1/3) ~ 6e-6) of central differences: a layer
    # sums many terms into shared parameters (log α per channel or per layer), and such a
    # gradient can be small next to the loss by cancellation; at h = 1e-6 the round-off,
    # ~1e-16·|loss|/h, was then 7e-6 of a -8.2e-5 gradient (whose analytic value agreed with
    # h = 1e-5 differences to 7e-7)
    errs = check_vjp(f, vjp, [x] + params, seed=dout_seed, h=1e-5)
    return dict(zip(["x"] + names, errs))


# ---- variance of gradient estimators: estimates and their standard errors --------------------

def mean_var(g):
    """Unbiased sample variance over the R repeats (axis 0), averaged over the elements."""
    return float(np.var(g, axis=0, ddof=1).mean())


def rel_se(g):
    """Relative standard error of :func:`mean_var` from the spread of the repeats.

    ``mean_var(g) = R/(R−1) · mean_r d_r`` with ``d_r`` the squared deviation of repeat ``r``
    averaged over the elements. The ``d_r`` are (nearly) independent over repeats, so the delta
    method gives ``sd(d)/(√R · mean(d))``. It accounts for the elements' kurtosis and for their
    correlation (an average over correlated elements is worth fewer independent ones), which a
    per-element formula such as ``sqrt((κ − 1)/R)`` does not.
    """
    d = ((g - g.mean(axis=0)) ** 2).reshape(len(g), -1).mean(axis=1)
    return float(d.std(ddof=1) / (np.sqrt(len(d)) * d.mean()))


def slope_with_se(ms, samples):
    """Least-squares slope of ``ln mean_var`` against ``ln M``, and its standard error.

    The slope is ``Σ_k w_k ln v_k`` with ``w_k = (ln M_k − mean ln M)/Σ_j (ln M_j − mean)²``;
    the ``v_k`` come from independent runs and ``ln v_k`` has standard error ``rel_se``, so the
    slope's standard error is ``sqrt(Σ_k w_k² rel_se_k²)``.
    """
    x = np.log(np.asarray(ms, float))
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    y = np.log([mean_var(g) for g in samples])
    se = np.array([rel_se(g) for g in samples])
    return float(w @ y), float(np.sqrt((w**2) @ (se**2)))
