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
# # 2. The local reparameterization trick
#
# Tutorial 1 showed that one weight sample shared by a minibatch makes the gradient's
# variance level off, while an independent weight sample per example makes it fall as
# $1/M$. But a weight sample per example is expensive: a dense layer with $K$ inputs and
# $J$ outputs needs $M\cdot K\cdot J$ random numbers per minibatch, and $M$ separate
# vector-matrix products instead of one matrix product.
#
# The local reparameterization trick (LRT) gets the independence for $M\cdot J$ random
# numbers and two ordinary matrix products, by sampling the layer's *outputs* instead of its
# weights.

# %%
import os

BACKEND = os.environ.get("MINIVD_BACKEND", "numpy")  # "cupy" runs the same code on a GPU
FAST = os.environ.get("MINIVD_FAST") == "1"  # tiny runs, used by the tests

import time  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # figures go to PNG files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tutorial_data import load_digits  # noqa: E402

import minivd  # noqa: E402
import minivd.functional as F  # noqa: E402
from minivd.gradcheck import check_vjp  # noqa: E402
from minivd.layers import VariationalDense  # noqa: E402
from minivd.model import build_mlp  # noqa: E402
from minivd.optim import Adam  # noqa: E402

xp = minivd.resolve_backend(BACKEND)
print("backend:", BACKEND, "| fast:", FAST)

# %% [markdown]
# ## From weight noise to pre-activation noise
#
# A dense layer computes $B = AW$ for an input minibatch $A$ ($M\times K$). Let every weight
# be independent Gaussian, $w_{ij}\sim\mathcal{N}(\mu_{ij}, \sigma^2_{ij})$. For one example
# $m$ and one output $j$,
#
# $$b_{mj} = \sum_i a_{mi}\,w_{ij}$$
#
# is a sum of independent Gaussians, hence Gaussian, with
#
# $$\gamma_{mj} = \mathbb{E}[b_{mj}] = \sum_i a_{mi}\mu_{ij}, \qquad
#   \delta_{mj} = \mathrm{Var}[b_{mj}] = \sum_i a_{mi}^2\sigma^2_{ij},$$
#
# i.e. $\gamma = A\mu$ and $\delta = (A\circ A)\,\sigma^2$. Two outputs $j \ne j'$ use
# disjoint columns of $W$, so they are independent; and if each example has its own weight
# sample, so are two examples. So instead of sampling $W$ we can sample
#
# $$B = \gamma + \sqrt{\delta}\circ\zeta, \qquad \zeta_{mj}\sim\mathcal{N}(0,1)
#   \text{ of shape } (M, J), \text{ fresh for every example.}$$
#
# This has exactly the distribution of "a weight sample per example", at the cost of one
# extra matrix product. The library adds $\epsilon = 10^{-8}$ under the square root: at an
# all-zero input row $\delta = 0$, and $\sqrt{\cdot}$ has an infinite derivative there.
#
# ## The library call
#
# `minivd.functional.lrt_dense_forward(x, w_mean, w_var, b, noise)` computes
# `x @ w_mean + b + sqrt((x*x) @ w_var + eps) * noise` and returns the output and a cache for
# the backward pass. It takes the weight *variance* itself, whatever parameterisation
# produced it; the noise is an argument, so the op is a pure function.

# %%
def on(a):
    """A host array on the tutorial's backend."""
    return minivd.asarray(a, xp)


r = np.random.default_rng(0)
K, J = 5, 3
x2 = r.uniform(0, 1, (2, K))  # two examples
mu = r.standard_normal((K, J))
var = r.uniform(0.1, 0.5, (K, J))
gamma, delta = x2 @ mu, (x2 * x2) @ var  # the exact mean and variance of every output
out, cache = F.lrt_dense_forward(on(x2), on(mu), on(var), None,
                                 on(r.standard_normal((2, J))))
print("one LRT sample of B (2 examples x 3 outputs):\n", minivd.to_numpy(out))

# %% [markdown]
# ## A check: the marginals match, the correlations do not
#
# Draw $S$ samples of $B$ for the same two examples three ways: LRT; a weight sample per
# example (`per_example_dense_forward`, noise of shape $(M, K, J)$); and one weight sample
# shared by both examples (`shared_weight_dense_forward`, noise $(K, J)$). All three must
# give every output the mean $\gamma$ and variance $\delta$. The tolerances are five
# standard errors: $\sqrt{\delta/S}$ for a sample mean, and $\delta\sqrt{2/(S-1)}$ for the
# sample variance of Gaussian draws.
#
# The shared sample also correlates the two examples' outputs: their covariance is
# $\sum_i a_{0i}a_{1i}\sigma^2_{ij}$. LRT and per-example sampling leave them uncorrelated.
# A sample correlation has standard error about $(1-\rho^2)/\sqrt{S}$.

# %%
S = 20_000 if FAST else 200_000
noise_rng = np.random.default_rng(1)
xs = np.tile(x2, (S, 1))  # S copies of the two examples, stacked as one big batch
samples = {
    "lrt": F.lrt_dense_forward(on(xs), on(mu), on(var), None,
                               on(noise_rng.standard_normal((2 * S, J))))[0],
    "per_example": F.per_example_dense_forward(on(xs), on(mu), on(var), None,
                                               on(noise_rng.standard_normal((2 * S, K, J))))[0],
}
n_shared = S // 4 if FAST else S  # one call per weight sample: slower, so fewer draws
samples["shared"] = np.stack([minivd.to_numpy(F.shared_weight_dense_forward(
    on(x2), on(mu), on(var), None, on(noise_rng.standard_normal((K, J))))[0])
    for _ in range(n_shared)]).reshape(-1, J)

rho_shared = ((x2[0] * x2[1]) @ var) / np.sqrt(delta[0] * delta[1])  # exact, per output j
for name, b in samples.items():
    b = minivd.to_numpy(b).reshape(-1, 2, J)  # (draws, example, output)
    n = len(b)
    mean, variance = b.mean(0), b.var(0, ddof=1)
    rho = np.array([np.corrcoef(b[:, 0, j], b[:, 1, j])[0, 1] for j in range(J)])
    rho_expected = rho_shared if name == "shared" else np.zeros(J)
    z_mean = np.max(np.abs(mean - gamma) / np.sqrt(delta / n))
    print(f"{name:12s} max |mean-γ|/√(δ/S) = {z_mean:.2f}"
          f"   max |var/δ - 1| = {np.max(np.abs(variance / delta - 1)):.3f}"
          f"   corr(example 0, example 1) = {np.round(rho, 3)} (exact {np.round(rho_expected, 3)})")
    assert np.all(np.abs(mean - gamma) < 5 * np.sqrt(delta / n))
    assert np.all(np.abs(variance - delta) < 5 * delta * np.sqrt(2 / (n - 1)))
    assert np.all(np.abs(rho - rho_expected) < 5 * (1 - rho_expected**2) / np.sqrt(n) + 1e-9)

# %% [markdown]
# ## The backward pass, line by line
#
# Let $G = \partial L/\partial B$ be the upstream gradient. Walk the forward pass backwards;
# each gradient sits beside the forward line it comes from. (Gradients that reach the same
# variable twice, like $dA$, add.)
#
# ```
# forward                  backward (read from the bottom up)
# γ = A μ + b              dA += dγ μᵀ             dμ  = Aᵀ dγ          db = Σ_m dγ
# δ = (A∘A) σ²             dA += 2A ∘ (dδ σ²ᵀ)     dσ² = (A∘A)ᵀ dδ
# s = sqrt(δ + ε)          dδ = ds / (2s)
# B = γ + s∘ζ              dγ = G                  ds  = G∘ζ
# ```
#
# The noise $\zeta$ is a constant during the backward pass, which is why the forward keeps it
# in the cache. The forward pass costs two matrix products ($A\mu$ and $(A\circ A)\sigma^2$),
# the backward four ($dA$ twice, $d\mu$, $d\sigma^2$). Here are the same lines as code,
# compared with the library's `lrt_dense_backward`:

# %%
A = r.uniform(-1, 1, (4, K))
b0, zeta, G = r.standard_normal(J), r.standard_normal((4, J)), r.standard_normal((4, J))
out, cache = F.lrt_dense_forward(on(A), on(mu), on(var), on(b0), on(zeta))

s = np.sqrt((A * A) @ var + 1e-8)  # forward: s = sqrt(δ + ε)
dgamma, ds = G, G * zeta  # B = γ + s∘ζ
ddelta = ds / (2 * s)  # s = sqrt(δ + ε)
dA = 2 * A * (ddelta @ var.T)  # δ = (A∘A) σ²
dvar = (A * A).T @ ddelta
dA += dgamma @ mu.T  # γ = A μ + b
dmu, db = A.T @ dgamma, dgamma.sum(0)

lib = F.lrt_dense_backward(on(G), cache)
for name, mine in (("dx", dA), ("dw_mean", dmu), ("dw_var", dvar), ("db", db)):
    err = minivd.rel_error(mine, getattr(lib, name))
    print(f"{name:8s} by hand vs library: rel. error {err:.1e}")
    assert err < 1e-12

# %% [markdown]
# Agreeing with ourselves proves little. `minivd.gradcheck.check_vjp` compares the library's
# backward with central finite differences of the forward, in float64, for a random
# upstream gradient; a correct backward agrees to about $10^{-9}$.

# %%
def forward(x, w_mean, w_var, b):
    return F.lrt_dense_forward(x, w_mean, w_var, b, on(zeta))[0]


def backward(dout, x, w_mean, w_var, b):
    _, c = F.lrt_dense_forward(x, w_mean, w_var, b, on(zeta))
    return list(F.lrt_dense_backward(on(dout), c))


errors = check_vjp(forward, backward, [on(A), on(mu), on(var), on(b0)])
for name, err in zip(("dx", "dw_mean", "dw_var", "db"), errors):
    print(f"{name:8s} analytic vs finite differences: rel. error {err:.1e}")
assert max(errors) < 1e-6

# %% [markdown]
# ## The experiment: Table 1 in small
#
# The paper's Table 1 compares the gradient variance of three estimators on a network trained
# with variational dropout: LRT, a separate weight sample per example, and one weight sample
# per minibatch. We rebuild it on a small network (14×14 digit images, two hidden layers
# of 100 units, or 64 in the fast setting; variational dropout B: a learned $\alpha$ per
# weight), trained briefly and then frozen.
#
# How we measure (it matters: a public replication could not match the paper's magnitudes,
# and the protocol is rarely spelled out): draw $K$ independent minibatches of $M$ examples
# (with replacement, fresh noise), compute the gradient of the data term for each, take the
# unbiased variance of every weight's $K$ gradient values, and average over the matrix. We
# report the bottom (input → hidden) and top (hidden → output) weight matrices. The KL's
# gradient is exact, so it adds no variance and is left out. The covariance term grows in
# relative importance with $M$, so the paper used a large $M$ (1000; 100 in the fast
# setting).

# %%
N_TRAIN = 2000 if FAST else 50_000
HIDDEN = 64 if FAST else 100
data = load_digits(FAST, n_train=N_TRAIN, n_valid=0, n_test=0)


def downsample(x):
    """28×28 → 14×14 by averaging 2×2 blocks (keeps the per-example sampler affordable)."""
    return x.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(x), -1)


Xd, Yd = downsample(data.x_train), data.y_train
model = build_mlp([196, HIDDEN, HIDDEN, 10], "vd-b", seed=0, backend=BACKEND)
weight_layers = [layer for layer in model.layers if isinstance(layer, VariationalDense)]
opt, noise_rng, host = Adam(1e-3), minivd.make_rng(0, BACKEND), np.random.default_rng(0)
for _ in range(300 if FAST else 2000):  # brief training, then the net is frozen
    idx = host.integers(0, len(Xd), 100)
    model.loss_and_grads(on(Xd[idx]), on(Yd[idx]), rng=noise_rng, kl_scale=1 / len(Xd))
    opt.step(model.parameters())
    model.project()  # keep log α ≤ 0, where the K15 KL is valid


def sync():
    if BACKEND == "cupy":
        xp.cuda.Device().synchronize()


def gradient_variance(sampler, M, K_batches, seed=1):
    """Mean variance (and its standard error) of the bottom/top θ gradients; s per step."""
    for layer in weight_layers:
        layer.sampler = sampler
    host, noise_rng = np.random.default_rng(seed), minivd.make_rng(seed, BACKEND)
    grads = {"bottom": [], "top": []}
    seconds = 0.0
    for _ in range(K_batches):
        idx = host.integers(0, len(Xd), M)
        xb, yb = on(Xd[idx]), on(Yd[idx])
        sync()
        t0 = time.perf_counter()
        model.loss_and_grads(xb, yb, rng=noise_rng, kl_scale=0.0)
        sync()
        seconds += time.perf_counter() - t0
        grads["bottom"].append(minivd.to_numpy(weight_layers[0].grads["theta"]))
        grads["top"].append(minivd.to_numpy(weight_layers[-1].grads["theta"]))
    out = {}
    for k, g in grads.items():
        g = np.array(g, dtype=np.float64)
        d = ((g - g.mean(0)) ** 2).reshape(len(g), -1).mean(1) * len(g) / (len(g) - 1)
        out[k] = (d.mean(), d.std(ddof=1) / np.sqrt(len(g)))
    return out, seconds / K_batches


M_TABLE, K_TABLE = (100, 60) if FAST else (1000, 200)
table = {}
for sampler in ("lrt", "per_example_weights", "shared_weights"):
    table[sampler] = gradient_variance(sampler, M_TABLE, K_TABLE)
for layer in weight_layers:
    layer.sampler = "lrt"

print(f"M = {M_TABLE}, K = {K_TABLE} minibatches")
print(f"{'estimator':22s}{'bottom':>12s}{'top':>12s}{'ms / step':>11s}")
for sampler, (v, sec) in table.items():
    print(f"{sampler:22s}{v['bottom'][0]:12.3e}{v['top'][0]:12.3e}{1e3 * sec:11.1f}")

# %% [markdown]
# The check. Per-example samples and LRT give every pre-activation the same distribution,
# but LRT's gradient is the per-example estimator's average over the weight noise *given*
# the pre-activations, so (law of total variance) it can only be less noisy. The shared
# sample adds the covariance term. We assert both orderings with a margin of five standard
# errors of the ratio, and that drawing a weight matrix per example is much slower.

# %%
for sampler in ("per_example_weights", "shared_weights"):
    for where in ("bottom", "top"):
        (v, se), (v0, se0) = table[sampler][0][where], table["lrt"][0][where]
        ratio, ratio_se = v / v0, v / v0 * np.hypot(se / v, se0 / v0)
        print(f"{sampler:20s} / lrt, {where:6s}: {ratio:5.2f} ± {ratio_se:.2f}")
        assert ratio - 5 * ratio_se > 1
slowdown = table["per_example_weights"][1] / table["lrt"][1]
print(f"a weight sample per example is {slowdown:.0f}x slower per step than LRT")
assert slowdown > 3

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
names = list(table)
pos = np.arange(len(names))
for k, (where, color) in enumerate((("bottom", "tab:blue"), ("top", "tab:orange"))):
    v = [table[n][0][where][0] for n in names]
    se = [2 * table[n][0][where][1] for n in names]
    ax1.bar(pos + 0.38 * (k - 0.5), v, 0.38, yerr=se, color=color, label=f"{where} weights")
ax1.set_xticks(pos, names, fontsize=8)
ax1.set_yscale("log")
ax1.set_ylabel("gradient variance (mean over matrix)")
ax1.set_title(f"Table 1 in small (M = {M_TABLE})")
ax1.legend()
ax2.bar(pos, [1e3 * table[n][1] for n in names], color="tab:gray")
ax2.set_xticks(pos, names, fontsize=8)
ax2.set_ylabel("ms per forward + backward")
ax2.set_title(f"time per step ({BACKEND})")
fig.tight_layout()
fig.savefig("02_table1.png", dpi=120)
plt.close(fig)

# %% [markdown]
# LRT is both the least noisy and (with the shared sample) the cheapest. The shared sample
# is cheap but noisy; the per-example sample is unbiased and uncorrelated but noisier than
# LRT and far slower. This is why every variational layer in `minivd` trains with
# `sampler="lrt"` by default; the other two are kept for comparisons like this one.
