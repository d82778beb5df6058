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
# # 3. Gaussian dropout is variational inference
#
# Dropout multiplies a layer's inputs by random noise: $B = (A\circ\xi)\,\theta$. It works
# well, but its rate $p$ is a hyper-parameter tuned by hand. This tutorial shows that
# Gaussian dropout is exactly variational inference with a particular prior, so the dropout
# rate becomes a variational parameter that can be *learned* by maximising the ELBO:
# variational dropout.

# %%
import os

BACKEND = os.environ.get("MINIVD_BACKEND", "numpy")  # "cupy" runs the same code on a GPU
FAST = os.environ.get("MINIVD_FAST") == "1"  # tiny runs, used by the tests

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # figures go to PNG files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import integrate  # noqa: E402
from tutorial_data import load_digits  # noqa: E402

import minivd  # noqa: E402
import minivd.functional as F  # noqa: E402
from minivd.kl import K15_C, K15_COEFFS, kl_k15, kl_m17  # noqa: E402
from minivd.layers import Dense, GaussianDropout, VariationalDense, p_to_log_alpha  # noqa: E402
from minivd.model import build_model  # noqa: E402
from minivd.optim import Adam  # noqa: E402

xp = minivd.resolve_backend(BACKEND)
print("backend:", BACKEND, "| fast:", FAST)


def on(a, dtype="float64"):
    """A host array on the tutorial's backend."""
    return minivd.asarray(a, xp, dtype)


def host(a):
    return minivd.to_numpy(a).astype(np.float64)


# %% [markdown]
# ## From Bernoulli to Gaussian noise
#
# Inverted Bernoulli dropout keeps a unit with probability $1-p$ and scales it by
# $1/(1-p)$: $\xi = m/(1-p)$, $m\sim\mathrm{Bernoulli}(1-p)$. So
#
# $$\mathbb{E}[\xi] = 1, \qquad \mathrm{Var}[\xi] = \frac{(1-p)}{(1-p)^2} - 1 = \frac{p}{1-p}.$$
#
# Gaussian dropout replaces this by $\xi\sim\mathcal{N}(1, \alpha)$ with the same mean and
# variance: $\alpha = p/(1-p)$. Note that $\alpha$ is a **variance** (the noise's standard
# deviation is $\sqrt\alpha$): $p = 0.5$ gives $\alpha = 1$, $p = 0.2$ gives $\alpha = 0.25$.
# The mean is 1, so at test time there is nothing to rescale.
#
# The library's ops take the noise as an argument: uniforms `u` for Bernoulli, standard
# normals `eps` for Gaussian ($\xi = 1 + \sqrt\alpha\,\varepsilon$), and `log_alpha`
# rather than $\alpha$. Apply them to a vector of ones to see the multipliers themselves;
# the tolerance is five standard errors of each sample moment.

# %%
assert p_to_log_alpha(0.5) == 0.0 and abs(np.exp(p_to_log_alpha(0.2)) - 0.25) < 1e-12
S = 200_000 if FAST else 2_000_000
rng = np.random.default_rng(0)
ones = on(np.ones(S))
for p in (0.2, 0.5):
    alpha = p / (1 - p)
    bern, _ = F.bernoulli_dropout_forward(ones, p, on(rng.random(S)))
    gauss, _ = F.gaussian_dropout_forward(ones, on(np.full(1, np.log(alpha))),
                                          on(rng.standard_normal(S)))
    for name, xi in (("Bernoulli", host(bern)), ("Gaussian", host(gauss))):
        dev2 = (xi - 1) ** 2
        print(f"p = {p}: {name:9s} mean {xi.mean():.4f}, variance {dev2.mean():.4f} "
              f"(α = p/(1-p) = {alpha:.4f})")
        assert abs(xi.mean() - 1) < 5 * xi.std() / np.sqrt(S)
        assert abs(dev2.mean() - alpha) <= 5 * dev2.std() / np.sqrt(S) + 1e-12

# %% [markdown]
# A unit downstream sums many noisy inputs, $b = \sum_i a_i\xi_i\theta_i$. By the central
# limit theorem its distribution is nearly the same for both noises: Gaussian with mean
# $\sum_i a_i\theta_i$ and variance $\alpha\sum_i a_i^2\theta_i^2$. That is why the two
# dropouts behave alike in practice (the figure at the end of this section).

# %%
K_WIDE, S_UNIT = 500, 20_000 if FAST else 200_000
a = rng.uniform(0, 1, K_WIDE)
theta = rng.standard_normal((K_WIDE, 1)) / np.sqrt(K_WIDE)
p, alpha = 0.5, 1.0
A_rep = on(np.tile(a, (S_UNIT, 1)))
units = {
    "Bernoulli": F.bernoulli_dropout_forward(A_rep, p, on(rng.random((S_UNIT, K_WIDE))))[0],
    "Gaussian": F.gaussian_dropout_forward(A_rep, on(np.zeros(1)),
                                           on(rng.standard_normal((S_UNIT, K_WIDE))))[0],
}
mean_b, var_b = float(a @ theta[:, 0]), float(alpha * (a * a) @ (theta[:, 0] ** 2))
for name, noisy in units.items():
    units[name] = b = host(noisy @ on(theta))[:, 0]
    print(f"{name:9s} b: mean {b.mean():+.4f} (exact {mean_b:+.4f}), "
          f"variance {b.var():.4f} (exact {var_b:.4f})")
    assert abs(b.mean() - mean_b) < 5 * np.sqrt(var_b / S_UNIT)
    se_var = np.sqrt(((b - b.mean()) ** 2).var(ddof=1) / S_UNIT)  # sd of a sample variance
    assert abs(b.var(ddof=1) - var_b) < 5 * se_var

# %% [markdown]
# (The last tolerance is 5 standard errors of a sample variance, $\sqrt{(\mu_4 - \sigma^4)/S}$
# with the fourth central moment $\mu_4$ measured from the same draws: right for the Gaussian
# sum and for the Bernoulli one, which is only nearly Gaussian.)
#
# ## Two ways to put the noise on the weights
#
# Multiplying the inputs by noise is the same as multiplying the weights by noise, so
# Gaussian dropout defines a distribution over weights. Two choices (K15 eq. 11 and 10):
#
# * **Type A, correlated weight noise.** One noise variable per *input unit*, shared by its
#   row of weights: $w_{ij} = s_i\theta_{ij}$, $q(s_i) = \mathcal{N}(1, \alpha)$, fresh per
#   example. This is Gaussian dropout on the layer's inputs (Srivastava et al.), the layer
#   `GaussianDropout` placed before a `Dense`.
# * **Type B, independent weight noise.** $q(w_{ij}) = \mathcal{N}(\theta_{ij},
#   \alpha\,\theta_{ij}^2)$ for every weight. By the local reparameterization trick
#   (tutorial 2) the outputs are $\gamma = A\theta$, $\delta = \alpha\,(A\circ A)(\theta\circ
#   \theta)$: `VariationalDense`. With a fixed $\alpha$ this is Wang & Manning's fast dropout.
#
# Both give every output the same mean $\sum_i a_i\theta_{ij}$ and variance
# $\alpha\sum_i a_i^2\theta_{ij}^2$. They differ in the covariance of two outputs
# $j\ne j'$ of the same example: type A shares $s_i$, so
# $\mathrm{Cov}[b_j, b_{j'}] = \alpha\sum_i a_i^2\theta_{ij}\theta_{ij'}$; type B has
# independent weights, so the covariance is 0. Check with the two layers, given the same
# $\theta$ and $\alpha = 1$, on $S$ copies of one input.

# %%
K_IN, S_AB = 50, 20_000 if FAST else 200_000
a = rng.uniform(0, 1, K_IN)
theta = rng.uniform(-0.5, 1.5, (K_IN, 2))  # two columns of mostly positive weights
type_a_noise = GaussianDropout(K_IN, p=0.5, backend=BACKEND, dtype="float64")
type_a_dense = Dense(K_IN, 2, bias=False, backend=BACKEND, dtype="float64")
type_a_dense.params["w"] = on(theta)
type_b = VariationalDense(K_IN, 2, p=0.5, learn_alpha=False, bias=False, backend=BACKEND,
                          dtype="float64")
type_b.params["theta"] = on(theta)

x_rep = on(np.tile(a, (S_AB, 1)))
noise_rng = minivd.make_rng(1, BACKEND)
out = {"A": host(type_a_dense.forward(type_a_noise.forward(x_rep, rng=noise_rng))),
       "B": host(type_b.forward(x_rep, rng=noise_rng))}

mean_exact = a @ theta
var_exact = alpha * (a * a) @ (theta * theta)
cov_a = alpha * np.sum(a * a * theta[:, 0] * theta[:, 1])
rho_exact = {"A": cov_a / np.sqrt(var_exact[0] * var_exact[1]), "B": 0.0}
for t, b in out.items():
    rho = np.corrcoef(b[:, 0], b[:, 1])[0, 1]
    print(f"type {t}: means {np.round(b.mean(0), 3)} (exact {np.round(mean_exact, 3)}), "
          f"variances {np.round(b.var(0), 3)} (exact {np.round(var_exact, 3)}), "
          f"corr(b_0, b_1) = {rho:+.3f} (exact {rho_exact[t]:+.3f})")
    assert np.all(np.abs(b.mean(0) - mean_exact) < 5 * np.sqrt(var_exact / S_AB))
    assert np.all(np.abs(b.var(0, ddof=1) - var_exact) < 5 * var_exact * np.sqrt(2 / S_AB))
    assert abs(rho - rho_exact[t]) < 5 * (1 - rho_exact[t] ** 2) / np.sqrt(S_AB)

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.6))
grid = np.linspace(mean_b - 4 * np.sqrt(var_b), mean_b + 4 * np.sqrt(var_b), 200)
for name, color in (("Bernoulli", "tab:blue"), ("Gaussian", "tab:orange")):
    ax.hist(units[name], bins=80, density=True, histtype="step", color=color,
            label=f"{name} dropout, p = 0.5")
ax.plot(grid, np.exp(-0.5 * (grid - mean_b) ** 2 / var_b) / np.sqrt(2 * np.pi * var_b), "k--",
        lw=1, label="N(Σaθ, αΣa²θ²)")
ax.set_xlabel("pre-activation b of one unit (500 noisy inputs)")
ax.set_ylabel("density")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig("03_bernoulli_vs_gaussian.png", dpi=120)
plt.close(fig)

# %% [markdown]
# ## The prior that makes it variational inference
#
# Gaussian dropout trains $\theta$ by maximising the expected log-likelihood under the
# noise. The ELBO has the same term, plus $-\mathrm{KL}(q\,\|\,p)$. If the KL did not depend
# on $\theta$, training $\theta$ at a fixed $\alpha$ would be *exactly* Gaussian dropout.
# Which prior makes it so? The posterior of a weight is $w = \theta(1 + \sqrt\alpha\,
# \varepsilon)$, so $\log|w| = \log|\theta| + \log|1 + \sqrt\alpha\,\varepsilon|$: changing
# $\theta$ only shifts $\log|w|$. A prior that is flat in $\log|w|$, the **log-uniform
# prior** $p(\log|w|) \propto \text{const}$ (i.e. $p(w)\propto 1/|w|$), is unchanged by
# shifts, and then
#
# $$-\mathrm{KL}(q\,\|\,p) = \tfrac12\log\alpha
#   - \mathbb{E}_{\varepsilon\sim\mathcal{N}(1,\alpha)}\log|\varepsilon| + C$$
#
# depends on $\alpha$ alone. The prior is improper, so $C$ is arbitrary; we pick
# $C = -(\gamma_\text{Euler} + \ln 2)/2$, which makes $\mathrm{KL}\to 0$ as
# $\alpha\to\infty$. The expectation has no closed form; one-dimensional quadrature computes
# it (the log singularity at $\varepsilon = 0$ is integrable and placed at an interval end).

# %%
C = -(np.euler_gamma + np.log(2)) / 2


def true_neg_kl(log_alpha):
    """−KL = ½ log α − E log|1 + √α z| + C, z ~ N(0, 1), by quadrature."""
    sa = np.sqrt(np.exp(log_alpha))
    z0 = -1.0 / sa  # where 1 + √α z = 0

    def f(z):
        return np.log(np.abs(1 + sa * z)) * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)

    pieces = [(-np.inf, z0 - 1), (z0 - 1, z0), (z0, z0 + 1), (z0 + 1, np.inf)]
    e_log = sum(integrate.quad(f, lo, hi, limit=200, epsabs=1e-11)[0] for lo, hi in pieces)
    return 0.5 * log_alpha - e_log + C


# reference values of the true −KL (by quadrature, from the project's paper notes, PAPER.md
# §4, which live beside this repository, not in it) and a Monte Carlo check at log α = 0
for la, ref in ((-4, -2.6258), (-2, -1.5442), (-1, -0.9145), (0, -0.4267), (1, -0.1732),
                (2, -0.0662)):
    assert abs(true_neg_kl(la) - ref) < 1e-3, (la, true_neg_kl(la), ref)
z = rng.standard_normal(S)
logs = np.log(np.abs(1 + z))
mc = -logs.mean() + C
print(f"−KL at α = 1: quadrature {true_neg_kl(0.0):.4f}, Monte Carlo {mc:.4f} "
      f"± {logs.std() / np.sqrt(S):.4f}")
assert abs(mc - true_neg_kl(0.0)) < 5 * logs.std() / np.sqrt(S)

# %% [markdown]
# ## Two approximations of the KL
#
# Training needs the KL and its derivative at every step, so both papers fit cheap
# functions to it:
#
# * **K15**: $-\mathrm{KL} \approx C_{15} + \tfrac12\log\alpha + c_1\alpha + c_2\alpha^2 +
#   c_3\alpha^3$ with $c_1 = 1.16145124$, $c_2 = -1.50204118$, $c_3 = 0.58629921$, **valid
#   for $\alpha\le 1$ only** (K15 constrains $\alpha\le1$ during training). The paper does not
#   pin $C_{15}$; `minivd` uses $-0.661$, the minimax fit on $\alpha\in[e^{-4}, 1]$.
# * **M17**: $-\mathrm{KL} \approx k_1\,\mathrm{sigmoid}(k_2 + k_3\log\alpha) -
#   \tfrac12\log(1 + 1/\alpha) - k_1$ with $k_1 = 0.63576$, $k_2 = 1.87320$,
#   $k_3 = 1.48695$, valid for every $\alpha$.
#
# `minivd.kl.kl_k15` and `kl_m17` return $\mathrm{KL}(q\,\|\,p)\ge 0$ elementwise, and the
# training loss **adds** it (scaled by $1/N$ per example). The KL falls as $\alpha$ grows:
# on its own it would push every weight towards pure noise; the data term pushes back.
# `kl_k15` clips $\log\alpha$ at 0; to show why, we also evaluate the bare polynomial above
# $\alpha = 1$.

# %%
grid = np.linspace(-8, 8, 81 if FAST else 321)
true_kl = -np.array([true_neg_kl(v) for v in grid])
m17 = host(kl_m17(on(grid)))
k15_range = grid <= 0
k15 = host(kl_k15(on(grid[k15_range])))


def k15_polynomial(alpha):
    c1, c2, c3 = K15_COEFFS
    return -(K15_C + 0.5 * np.log(alpha) + c1 * alpha + c2 * alpha**2 + c3 * alpha**3)


fit = (grid >= -4) & k15_range
err_k15 = np.abs(k15[grid[k15_range] >= -4] - true_kl[fit]).max()
err_m17 = np.abs(m17 - true_kl).max()
print(f"max |error| of K15 on log α ∈ [-4, 0]: {err_k15:.4f}")
print(f"max |error| of M17 on log α ∈ [-8, 8]: {err_m17:.4f}")
print(f"the bare K15 polynomial at α = 7.4: −KL ≈ {-k15_polynomial(7.4):.0f} (must be ≤ 0)")
assert err_k15 < 0.0146  # the pinned constant's minimax error is 0.0145
assert err_m17 < 0.012
assert abs(-k15_polynomial(7.4) - 164) < 1
assert np.all(m17 > 0) and np.all(np.diff(m17) < 0)  # KL ≥ 0, decreasing in α
assert np.all(k15 > 0) and np.all(np.diff(k15) < 0)

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ext = np.linspace(0, 1.2, 30)
ax1.plot(grid, true_kl, "k-", lw=2.5, alpha=0.4, label="true KL (quadrature)")
ax1.plot(grid[k15_range], k15, "tab:blue", label="K15, C = −0.661 (α ≤ 1)")
ax1.plot(ext, k15_polynomial(np.exp(ext)), "tab:blue", ls=":", label="K15 polynomial beyond α = 1")
ax1.plot(grid, m17, "tab:red", ls="--", label="M17")
ax1.set_ylim(-0.5, 4.5)
ax1.set_xlabel("log α")
ax1.set_ylabel("KL(q ‖ p)")
ax1.legend(fontsize=8)
ax2.plot(grid[fit], k15[grid[k15_range] >= -4] - true_kl[fit], "tab:blue", label="K15 − true")
ax2.plot(grid, m17 - true_kl, "tab:red", ls="--", label="M17 − true")
ax2.axhline(0, color="k", lw=0.5)
ax2.set_xlabel("log α")
ax2.set_ylabel("approximation error (nats)")
ax2.legend(fontsize=8)
fig.tight_layout()
fig.savefig("03_kl_approximations.png", dpi=120)
plt.close(fig)

# %% [markdown]
# ## Where the KL is counted: types A, B, and A2
#
# The KL is a sum over the posterior's noise variables. Type B has one per weight, type A
# one per input unit (the row of weights shares it), so for the same layer type A counts
# $K$ terms and type B $K\cdot J$. (For type A this is `minivd`'s reading of K15's eq. 11,
# whose posterior has one free $\alpha$ per input unit.) The models built by `build_model`
# (methods `vd-a`, `vd-a2`, `vd-b`; dropout rates $0.2$ on the input and $0.5$ on hidden
# units, so $\alpha = 0.25$ and $1$ at initialisation) report exactly these sums.
#
# K15 found that variational dropout A with the full KL underfits, and that dividing the
# KL by 3 helped; that variant is **A2** (`vd-a2`: the same layers, `kl_factor = 1/3`).

# %%
W = 100
models = {m: build_model("mlp", m, width=W, depth=2, backend=BACKEND) for m in
          ("vd-a", "vd-a2", "vd-b")}
kl = {m: float(model.kl()) for m, model in models.items()}
kl_in, kl_hid = (float(host(kl_k15(on(np.array([np.log(a_)]))))[0]) for a_ in (0.25, 1.0))
expected = {"vd-a": 784 * kl_in + 2 * W * kl_hid,  # one term per input unit
            "vd-a2": (784 * kl_in + 2 * W * kl_hid) / 3,
            "vd-b": 784 * W * kl_in + (W * W + W * 10) * kl_hid}  # one term per weight
for m in models:
    print(f"{m:6s} KL at initialisation: {kl[m]:10.2f} (expected {expected[m]:10.2f})")
    assert abs(kl[m] / expected[m] - 1) < 1e-5
assert abs(kl["vd-a2"] / kl["vd-a"] - 1 / 3) < 1e-6

# %% [markdown]
# ## The experiment: learning a dropout rate per pixel
#
# Variational dropout A learns one $\alpha$ per input unit. On the input layer that is one
# dropout rate per pixel. The KL pulls every $\alpha$ up (towards the bound $\alpha = 1$,
# where the K15 approximation ends; `project()` keeps $\log\alpha\le 0$ after each step);
# the data term resists wherever noise on the pixel hurts the fit. A pixel that is blank in
# every training image gets no gradient from the data, so its $\alpha$ should end at the
# bound, while pixels the digits use keep a lower noise level. Train a small `vd-a` net
# with the ELBO per example, $\text{mean CE} + \mathrm{KL}/N$, and look.

# %%
N_TRAIN = 2000 if FAST else 50_000
STEPS = 600 if FAST else 5000
data = load_digits(FAST, n_train=N_TRAIN, n_valid=0, n_test=0)
net = build_model("mlp", "vd-a", width=100, depth=1, backend=BACKEND, seed=0)
opt, noise_rng, order = Adam(3e-3), minivd.make_rng(0, BACKEND), np.random.default_rng(0)
for _ in range(STEPS):
    idx = order.integers(0, N_TRAIN, 100)
    net.loss_and_grads(on(data.x_train[idx], "float32"), on(data.y_train[idx], "int64"),
                       rng=noise_rng, kl_scale=1.0 / N_TRAIN)
    opt.step(net.parameters())
    net.project()
pixel_log_alpha = host(net.layers[0].log_alpha)
use = (data.x_train > 0).mean(axis=0)  # how often each pixel is inked
blank, busiest = use == 0, np.argsort(use)[-100:]
print(f"{blank.sum()} blank pixels: log α in [{pixel_log_alpha[blank].min():.3f}, "
      f"{pixel_log_alpha[blank].max():.3f}]")
print(f"100 most used pixels: median log α {np.median(pixel_log_alpha[busiest]):.2f} "
      f"(started at log 0.25 = {np.log(0.25):.2f})")
assert pixel_log_alpha[blank].min() > -1e-3  # at the bound α = 1
assert np.median(pixel_log_alpha[busiest]) < -0.5

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.5, 3.4))
im = ax1.imshow(np.exp(pixel_log_alpha).reshape(28, 28), cmap="magma", vmin=0, vmax=1)
ax1.set_title("learned α per input pixel")
fig.colorbar(im, ax=ax1)
im = ax2.imshow(use.reshape(28, 28), cmap="gray")
ax2.set_title("how often each pixel is inked")
fig.colorbar(im, ax=ax2)
for ax in (ax1, ax2):
    ax.axis("off")
fig.tight_layout()
fig.savefig("03_learned_alpha_per_pixel.png", dpi=120)
plt.close(fig)

# %% [markdown]
# The dropout rate is no longer a hyper-parameter: each input found its own. Tutorial 4
# trains all of K15's methods on MNIST and compares them; tutorial 6 removes the bound
# $\alpha\le 1$ (with the M17 KL) and lets $\alpha\to\infty$ switch weights off entirely.
