# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. SGVB and the variance of its gradient
#
# A Bayesian neural network keeps a distribution over its weights instead of one value.
# Variational inference picks a simple family $q_\phi(w)$ (here a Gaussian per weight) and
# maximises the evidence lower bound (ELBO) over its parameters $\phi$:
#
# $$\mathcal{L}(\phi) = \sum_{(x,y)\in\mathcal{D}} \mathbb{E}_{q_\phi(w)}\big[\log p(y\mid x,w)\big]
#   - \mathrm{KL}\big(q_\phi(w)\,\|\,p(w)\big).$$
#
# The KL term is a known function of $\phi$. The first term is an expectation we cannot
# compute, so we follow a noisy estimate of its gradient. This tutorial is about how noisy
# that estimate is, and why the noise can stop falling as the minibatch grows. Tutorial 2
# fixes it with the local reparameterization trick.

# %%
import os

BACKEND = os.environ.get("MINIVD_BACKEND", "numpy")  # "cupy" runs the same code on a GPU
FAST = os.environ.get("MINIVD_FAST") == "1"  # tiny runs, used by the tests

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # figures go to PNG files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import minivd  # noqa: E402
from minivd.functional import (  # noqa: E402
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from minivd.layers import VariationalDense  # noqa: E402

xp = minivd.resolve_backend(BACKEND)
print("backend:", BACKEND, "| fast:", FAST)

# %% [markdown]
# ## The reparameterization trick
#
# Write the random weight as a deterministic function of $\phi$ and a noise variable that
# does not depend on $\phi$: for $q(w) = \mathcal{N}(\mu, \sigma^2)$,
# $w = f(\varepsilon, \phi) = \mu + \sigma\varepsilon$ with $\varepsilon\sim\mathcal{N}(0,1)$.
# Then $\mathbb{E}_{q}[g(w)] = \mathbb{E}_{\varepsilon}[g(\mu + \sigma\varepsilon)]$ and the
# gradient moves inside the expectation:
#
# $$\nabla_\mu \mathbb{E}_q[g(w)] = \mathbb{E}_\varepsilon[g'(w)], \qquad
#   \nabla_\sigma \mathbb{E}_q[g(w)] = \mathbb{E}_\varepsilon[g'(w)\,\varepsilon].$$
#
# One sample of $\varepsilon$ gives an unbiased gradient that backprop computes. Check it on
# $g(w) = w^2$, where $\mathbb{E}_q[w^2] = \mu^2 + \sigma^2$ has gradients $2\mu$ and
# $2\sigma$. The older score-function estimator $g(w)\,\nabla_\mu \log q(w) =
# g(w)(w-\mu)/\sigma^2$ is unbiased too, but far noisier.

# %%
mu, sigma, S = 1.0, 0.5, 200_000
eps = np.random.default_rng(0).standard_normal(S)
w = mu + sigma * eps
estimators = {"reparam d/dmu": 2 * w, "reparam d/dsigma": 2 * w * eps,
              "score fn d/dmu": w**2 * (w - mu) / sigma**2}
exact = {"reparam d/dmu": 2 * mu, "reparam d/dsigma": 2 * sigma, "score fn d/dmu": 2 * mu}
for name, g in estimators.items():
    se = g.std() / np.sqrt(S)  # standard error of the sample mean
    print(f"{name:17s} mean {g.mean():.4f} ± {se:.4f} (exact {exact[name]}), "
          f"variance {g.var():.2f}")
    assert abs(g.mean() - exact[name]) < 5 * se  # unbiased, within 5 standard errors
ratio = estimators["score fn d/dmu"].var() / estimators["reparam d/dmu"].var()
print(f"score-function / reparameterization variance: {ratio:.1f}x")
assert ratio > 5

# %% [markdown]
# ## The minibatch estimator and its variance
#
# With $N$ training examples and a minibatch of $M$ examples drawn at random, SGVB estimates
# the data term by
#
# $$\mathcal{L}_\mathcal{D} \approx \frac{N}{M}\sum_{i=1}^{M} L_i, \qquad
#   L_i = \log p\big(y_i \mid x_i, w = f(\varepsilon_i, \phi)\big).$$
#
# (In code we minimise the loss per example: the mean cross-entropy of the minibatch plus
# $\mathrm{KL}/N$. Divide the KL by $N$, never by $M$.) Each $L_i$ is random twice over: the
# example is drawn from the data, and $\varepsilon_i$ from the noise. For a mean of $M$
# identically distributed terms with pairwise covariance $\mathrm{Cov}[L_i, L_j]$,
#
# $$\mathrm{Var}\Big[\frac{N}{M}\sum_i L_i\Big]
#   = N^2\Big(\frac{1}{M}\mathrm{Var}[L_i] + \frac{M-1}{M}\,\mathrm{Cov}[L_i, L_j]\Big).$$
#
# The first term falls as $1/M$; the second does not fall at all. If every example gets its
# own noise $\varepsilon_i$ (and examples are drawn independently), $L_i$ and $L_j$ are
# independent and $\mathrm{Cov} = 0$. If one weight sample is shared by the whole minibatch,
# all $L_i$ depend on the same $w$: $\mathrm{Cov} \ne 0$, and beyond some $M$ bigger
# batches stop helping. The same holds for every element of the gradient $\nabla_\phi L_i$,
# which is what SGD actually uses, so that is what we measure.

# %% [markdown]
# ## The library call
#
# `VariationalDense` is a dense layer with a Gaussian posterior per weight,
# $q(w_{ij}) = \mathcal{N}(\theta_{ij}, \alpha\,\theta_{ij}^2)$ (with $\alpha = 1$ here:
# dropout rate $p = 0.5$; tutorial 3 explains why). Its `sampler` chooses how a training
# forward pass draws the weights:
#
# * `"per_example_weights"`: an independent weight matrix for every example ($\mathrm{Cov} = 0$);
# * `"shared_weights"`: one weight matrix for the whole minibatch ($\mathrm{Cov} \ne 0$).
#
# As our model we use one such layer as a softmax regression, $6$ inputs and $3$ classes, on a
# fixed toy training set of $64$ examples with non-negative features (like pixel
# intensities) and random labels, in float64. `minibatch_gradients` draws `R`
# independent minibatches of `M` examples (with replacement, fresh noise each time) and
# returns the `R` gradients of the mean cross-entropy with respect to $\theta$.

# %%
N_DATA, D_IN, D_OUT = 64, 6, 3
data_rng = np.random.default_rng(0)
X = data_rng.uniform(0, 3, (N_DATA, D_IN))
Y = data_rng.integers(0, D_OUT, N_DATA)


def minibatch_gradients(sampler, M, R, seed):
    """(R, D_IN, D_OUT) gradients of the minibatch mean cross-entropy w.r.t. theta."""
    layer = VariationalDense(D_IN, D_OUT, p=0.5, sampler=sampler, seed=0, backend=BACKEND,
                             dtype="float64")
    host, noise_rng = np.random.default_rng(seed), minivd.make_rng(seed, BACKEND)
    out = np.empty((R, D_IN, D_OUT))
    for r in range(R):
        idx = host.integers(0, N_DATA, M)  # M examples, drawn with replacement
        logits = layer.forward(minivd.asarray(X[idx], xp), rng=noise_rng)
        _, cache = softmax_cross_entropy_forward(logits, minivd.asarray(Y[idx], xp))
        layer.backward(softmax_cross_entropy_backward(1.0, cache))
        out[r] = minivd.to_numpy(layer.grads["theta"])
    return out


# %% [markdown]
# We summarise the gradient's variance as in the paper's Table 1: the unbiased sample
# variance of each element over the `R` repeats, averaged over the matrix. Its standard
# error comes from the spread of the per-repeat squared deviations (a mean of `R` nearly
# independent terms), and every tolerance below is a multiple of it.

# %%
def mean_variance(g):
    """Matrix-averaged unbiased variance of R gradient samples, and its standard error."""
    R = len(g)
    d = ((g - g.mean(axis=0)) ** 2).reshape(R, -1).mean(axis=1) * R / (R - 1)
    return d.mean(), d.std(ddof=1) / np.sqrt(R)


def mean_pair_variance(gi, gj):
    """Matrix-averaged variance of one gradient from the 2R samples of R pairs, and its
    standard error: the two members of a pair may be correlated (a shared weight sample), so
    the per-repeat terms are averaged within each pair before taking their spread."""
    R = len(gi)
    m = 0.5 * (gi.mean(axis=0) + gj.mean(axis=0))
    d = [((g - m) ** 2).reshape(R, -1).mean(axis=1) * 2 * R / (2 * R - 1) for g in (gi, gj)]
    pair = 0.5 * (d[0] + d[1])
    return pair.mean(), pair.std(ddof=1) / np.sqrt(R)


def mean_covariance(gi, gj):
    """Matrix-averaged covariance of paired samples (gi[r], gj[r]), and its standard error."""
    m = 0.5 * (gi.mean(axis=0) + gj.mean(axis=0))  # both have the same distribution
    c = ((gi - m) * (gj - m)).reshape(len(gi), -1).mean(axis=1)
    return c.mean(), c.std(ddof=1) / np.sqrt(len(gi))


# %% [markdown]
# ## A check: measure the two terms separately
#
# Take two examples $i, j$ drawn independently, run them through the layer together (so with
# the `shared_weights` sampler they see the same weight sample) and backpropagate each
# example's own loss $L_i$, $L_j$ separately. The spread of $\nabla L_i$ gives
# $\mathrm{Var}[\nabla L_i]$; the products of the paired deviations give
# $\mathrm{Cov}[\nabla L_i, \nabla L_j]$.

# %%
def pair_gradients(sampler, R, seed):
    """R pairs (grad L_i, grad L_j) of two examples that go through one forward pass."""
    layer = VariationalDense(D_IN, D_OUT, p=0.5, sampler=sampler, seed=0, backend=BACKEND,
                             dtype="float64")
    host, noise_rng = np.random.default_rng(seed), minivd.make_rng(seed, BACKEND)
    gi, gj = np.empty((R, D_IN, D_OUT)), np.empty((R, D_IN, D_OUT))
    for r in range(R):
        idx = host.integers(0, N_DATA, 2)
        logits = layer.forward(minivd.asarray(X[idx], xp), rng=noise_rng)
        _, cache = softmax_cross_entropy_forward(logits, minivd.asarray(Y[idx], xp))
        dout = 2 * softmax_cross_entropy_backward(1.0, cache)  # rows: dL_i/dlogits, dL_j/dlogits
        for k, g in ((0, gi), (1, gj)):
            only_k = dout * minivd.asarray(np.eye(2)[k][:, None], xp)
            layer.backward(only_k)  # the same forward pass (same noise), one example's loss
            g[r] = minivd.to_numpy(layer.grads["theta"])
    return gi, gj


R = 3000 if FAST else 20000
terms = {}
for sampler in ("per_example_weights", "shared_weights"):
    gi, gj = pair_gradients(sampler, R, seed=1)
    var1 = mean_pair_variance(gi, gj)
    cov = mean_covariance(gi, gj)
    terms[sampler] = var1, cov
    print(f"{sampler:20s} Var[grad L_i] = {var1[0]:.4f} ± {var1[1]:.4f}   "
          f"Cov[grad L_i, grad L_j] = {cov[0]:.4f} ± {cov[1]:.4f}")

(v_ind, _), (c_ind, c_ind_se) = terms["per_example_weights"]
(v_sh, _), (c_sh, c_sh_se) = terms["shared_weights"]
assert abs(c_ind) < 5 * c_ind_se  # independent noise: no covariance
assert c_sh > 5 * c_sh_se  # one shared weight sample: a clearly positive covariance
var1_se = np.hypot(terms["per_example_weights"][0][1], terms["shared_weights"][0][1])
assert abs(v_sh - v_ind) < 5 * var1_se  # the same Var[grad L_i] for both samplers
print(f"with a shared sample, Cov is {c_sh / v_sh:.0%} of Var: for large M the variance "
      f"levels off near {c_sh:.3f} instead of falling to 0")

# %% [markdown]
# Both samplers give each example the same marginal distribution of weights, so
# $\mathrm{Var}[\nabla L_i]$ agrees between them. Only the covariance differs.
#
# ## The experiment: variance against minibatch size
#
# Now measure the variance of the full minibatch gradient for $M = 1, 2, 4, \dots$ and
# compare it with the prediction $\mathrm{Var}/M + (M-1)/M\cdot\mathrm{Cov}$ from the two
# terms above.

# %%
MS = [1, 2, 4, 8, 16, 32, 64] if FAST else [1, 2, 4, 8, 16, 32, 64, 128, 256]
R_SWEEP = 2000 if FAST else 10000
sweep = {s: [mean_variance(minibatch_gradients(s, M, R_SWEEP, seed=100 + M)) for M in MS]
         for s in ("per_example_weights", "shared_weights")}
for s, rows in sweep.items():
    print(s, " ".join(f"M={M}: {v:.4f}" for M, (v, _) in zip(MS, rows)))


def predicted(M, var1, cov):
    return var1 / M + (M - 1) / M * cov


# %% [markdown]
# Check the numbers. With independent noise the variance falls $16\times$ from $M = 1$ to
# $M = 16$; the tolerance is five standard errors of the measured ratio (for a ratio $a/b$
# the relative errors add in quadrature). With the shared sample, the variance at the
# largest $M$ matches the decomposition's prediction, and is several times larger than with
# independent noise.

# %%
def ratio_and_se(a, b):
    (va, sa), (vb, sb) = a, b
    r = va / vb
    return r, r * np.hypot(sa / va, sb / vb)


ind, sh = sweep["per_example_weights"], sweep["shared_weights"]
r16, se16 = ratio_and_se(ind[MS.index(1)], ind[MS.index(16)])
print(f"independent noise: Var(M=1) / Var(M=16) = {r16:.1f} (expected 16 ± {5 * se16:.1f})")
assert abs(r16 - 16) < 5 * se16

M_BIG = MS[-1]
v_big, se_big = sh[-1]
pred = predicted(M_BIG, v_sh, c_sh)
pred_se = np.hypot(terms["shared_weights"][0][1] / M_BIG, c_sh_se)
print(f"shared sample, M={M_BIG}: measured {v_big:.4f}, predicted {pred:.4f} "
      f"(tolerance {5 * np.hypot(se_big, pred_se):.4f})")
assert abs(v_big - pred) < 5 * np.hypot(se_big, pred_se)

r_big, se_r = ratio_and_se(sh[-1], ind[-1])
print(f"M={M_BIG}: shared / independent variance = {r_big:.1f}x")
assert r_big - 5 * se_r > 2

# %%
fig, ax = plt.subplots(figsize=(6, 4.2))
ms = np.array(MS, dtype=float)
for s, color, label in (("per_example_weights", "tab:blue", "independent noise per example"),
                        ("shared_weights", "tab:red", "one weight sample per minibatch")):
    v, se = np.array(sweep[s]).T
    ax.errorbar(ms, v, yerr=2 * se, fmt="o", color=color, label=f"{label}: measured ± 2 SE")
    var1, cov = (t[0] for t in terms[s])
    if s == "per_example_weights":
        ax.plot(ms, var1 / ms, "-", color=color, alpha=0.6, label="Var/M (Cov = 0)")
    else:
        ax.plot(ms, predicted(ms, var1, cov), "-", color=color, alpha=0.6,
                label="Var/M + (M−1)/M·Cov, measured Cov")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("minibatch size M")
ax.set_ylabel("gradient variance (mean over θ)")
ax.set_title("Shared noise makes the variance level off")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig("01_variance_vs_M.png", dpi=120)
plt.close(fig)

# %% [markdown]
# The blue points fall on a line of slope $-1$; the red ones level off at the covariance.
# A weight sample per example fixes the variance but is expensive: it draws $M\times$ as
# many random numbers as the weight matrix has entries. Tutorial 2 gets the same
# independence for the price of one random number per example and output unit.
