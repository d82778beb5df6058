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
# # 6. Sparse variational dropout
#
# Variational dropout learns a noise level $\alpha$ for every weight, but K15 capped it at
# $\alpha\le 1$ (dropout rate $p\le 0.5$). Molchanov, Ashukha & Vetrov (2017, "M17") removed
# the cap. A weight whose $\alpha$ grows without bound is pure noise: its posterior
# $\mathcal{N}(\theta, \alpha\theta^2)$ carries no information about its sign or size, and
# the network does best by not relying on it. Such weights can be set to zero at test time.
# On MNIST this drops 98-99% of the weights of a fully connected network at almost no cost
# in accuracy. Two things must change to get there; then we train a sparse network and
# measure what is left.

# %%
import os

BACKEND = os.environ.get("MINIVD_BACKEND", "numpy")  # "cupy" runs the same code on a GPU
FAST = os.environ.get("MINIVD_FAST") == "1"  # tiny runs, used by the tests

import io  # noqa: E402
import tempfile  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # figures go to PNG files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tutorial_data import load_digits  # noqa: E402

import minivd  # noqa: E402
from minivd.evaluate import evaluate, sparsity_report  # noqa: E402
from minivd.functional import (  # noqa: E402
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from minivd.layers import SPARSE_LOG_ALPHA_THRESHOLD, VariationalDense  # noqa: E402
from minivd.plots import plot_log_alpha  # noqa: E402
from minivd.train import TrainConfig, Trainer  # noqa: E402

xp = minivd.resolve_backend(BACKEND)
print("backend:", BACKEND, "| fast:", FAST)

# %% [markdown]
# ## Change 1: a KL that is valid for every $\alpha$
#
# The K15 polynomial diverges above $\alpha = 1$ (tutorial 3). M17's sigmoid approximation,
# $-\mathrm{KL}\approx k_1\,\mathrm{sigmoid}(k_2 + k_3\log\alpha) - \tfrac12\log(1+1/\alpha) -
# k_1$, is within 0.01 nats of the true KL for every $\alpha$ and tends to 0 as
# $\alpha\to\infty$: an infinitely noisy weight costs nothing. `minivd` does not clip
# $\log\alpha$ inside this KL (M17's code clips to $[-8, 8]$, which would give zero gradient
# outside that range).
#
# ## Change 2: the additive reparameterization
#
# With $w = \theta\,(1 + \sqrt\alpha\,\varepsilon)$, the gradient with respect to $\theta$
# flows through $\partial w/\partial\theta = 1 + \sqrt\alpha\,\varepsilon$, and for large
# $\alpha$ that factor is mostly noise. M17 write the *same* posterior as
#
# $$w = \theta + \sigma\,\varepsilon, \qquad \varepsilon\sim\mathcal{N}(0, 1), \qquad
#   \log\alpha = \log\sigma^2 - \log\theta^2,$$
#
# and learn $(\theta, \log\sigma^2)$ instead of $(\theta, \log\alpha)$. Now
# $\partial w/\partial\theta = 1$: the noise no longer multiplies $\theta$'s gradient. The KL
# still depends only on $\log\alpha$, which becomes a function of both parameters.
# `VariationalDense(..., sparse=True)` uses this parameterisation (`minivd.functional.
# m17_variance_forward` maps $(\theta, \log\sigma^2)$ to $\sigma^2$ and $\log\alpha$; the
# default layer uses `k15_variance_forward`, $\sigma^2 = \alpha\theta^2$).
#
# ## A check: the same posterior, two gradients
#
# Give a K15 layer and a sparse (M17) layer the *same* posterior, i.e. the same $\theta$
# and $\sigma^2 = \alpha\theta^2$, and measure the variance of their minibatch gradients with
# respect to $\theta$, as in tutorial 1 (toy softmax regression, $R$ minibatches, variance
# per weight averaged over the matrix, standard errors from the per-repeat spread). For small
# $\alpha$ the two agree; as $\alpha$ grows the multiplicative parameterisation's gradient
# gets noisier and noisier.

# %%
N_TOY, K_IN, J_OUT, M_TOY = 256, 20, 5, 32
R = 400 if FAST else 4000
toy = np.random.default_rng(0)
X_toy, Y_toy = toy.uniform(0, 1, (N_TOY, K_IN)), toy.integers(0, J_OUT, N_TOY)
theta0 = 0.5 * toy.standard_normal((K_IN, J_OUT))


def theta_gradient_variance(layer, seed=1):
    host, noise_rng = np.random.default_rng(seed), minivd.make_rng(seed, BACKEND)
    g = np.empty((R, K_IN, J_OUT))
    for r in range(R):
        idx = host.integers(0, N_TOY, M_TOY)
        logits = layer.forward(minivd.asarray(X_toy[idx], xp), rng=noise_rng)
        _, cache = softmax_cross_entropy_forward(logits, minivd.asarray(Y_toy[idx], xp))
        layer.backward(softmax_cross_entropy_backward(1.0, cache))
        g[r] = minivd.to_numpy(layer.grads["theta"])
    return ((g - g.mean(0)) ** 2).reshape(R, -1).mean(1) * R / (R - 1)  # per repeat; mean = Var


def variance_ratio(dm, da):
    """Var_m / Var_a and its standard error. Both runs use the same minibatches and noise
    (seed 1), so the per-repeat terms are paired: by the delta method the ratio's relative
    error is sd(dm/Var_m − da/Var_a)/√R, far smaller than for independent runs."""
    ratio = dm.mean() / da.mean()
    return ratio, ratio * (dm / dm.mean() - da / da.mean()).std(ddof=1) / np.sqrt(R)


LOG_ALPHAS = [-8, -4, -2, 0, 2, 4]
ratios = []
for la in LOG_ALPHAS:
    multiplicative = VariationalDense(K_IN, J_OUT, p=0.5, backend=BACKEND, dtype="float64")
    multiplicative.params["theta"][...] = minivd.asarray(theta0, xp)
    multiplicative.params["log_alpha"][...] = la  # σ² = α θ²
    additive = VariationalDense(K_IN, J_OUT, sparse=True, backend=BACKEND, dtype="float64")
    additive.params["theta"][...] = minivd.asarray(theta0, xp)
    additive.params["log_sigma2"][...] = minivd.asarray(la + np.log(theta0**2), xp)  # same σ²
    dm, da = theta_gradient_variance(multiplicative), theta_gradient_variance(additive)
    ratios.append(variance_ratio(dm, da))
    print(f"log α = {la:+d}: Var[dθ] multiplicative {dm.mean():.2e}, additive {da.mean():.2e}, "
          f"ratio {ratios[-1][0]:.4f} ± {ratios[-1][1]:.4f}")
# At α → 0 the two gradients coincide; the multiplicative one carries an extra
# 2αθ·∂L/∂σ² term, so the ratio exceeds 1 by O(α): at log α = −4 that gap (≈ 0.2%) is already
# many paired standard errors (the gap grows as α and the paired error as √α, so their ratio
# as √(αR)); at log α = −8 (α = 3·10⁻⁴) it is about one with R = 4000, well inside 5.
assert abs(ratios[0][0] - 1) < 5 * ratios[0][1]  # tiny α: the same gradient noise
assert ratios[-1][0] - 5 * ratios[-1][1] > 2  # log α = 4: several times noisier

# %% [markdown]
# ## Training a sparse network
#
# `build_model(..., method="sparse-vd")` (and so `TrainConfig(method="sparse-vd")`) makes
# every weight layer a `VariationalDense(sparse=True)` (in a LeNet-5 the conv layers become
# `VariationalConv2D(sparse=True)`): one $(\theta, \log\sigma^2)$ per
# weight, $\log\sigma^2$ initialised at $-10$ (almost no noise), the M17 KL, no bound on
# $\alpha$. M17's recipe for LeNet-300-100 (784-300-100-10): Adam, batch 100, learning rate
# $10^{-3}$ decayed linearly to 0 after epoch 100 of 200, and a KL weight $\beta$ that is 0
# for 5 epochs and then rises linearly to 1 by epoch 20 (so the network first learns to fit
# the data). The full run below keeps the shape of the recipe and shortens it; the fast
# setting drops the delay and the decay.
#
# At test time a weight with $\log\alpha\ge 3$ ($\alpha\approx 20$, a dropout rate of about
# $0.95$) is set to zero, and the rest use their means $\theta$.

# %%
N_TRAIN, N_VALID, N_TEST = (2000, 500, 1000) if FAST else (50_000, 10_000, 10_000)
data = load_digits(FAST, N_TRAIN, N_VALID, N_TEST)
if FAST:
    cfg = TrainConfig(model="lenet-300-100", method="sparse-vd", epochs=10, batch=100,
                      lr=3e-3, kl_delay=0, kl_warmup=2, seed=0, backend=BACKEND)
else:
    cfg = TrainConfig(model="lenet-300-100", method="sparse-vd", epochs=40, batch=100,
                      lr=1e-3, lr_schedule="linear", lr_decay_start=20, kl_delay=5,
                      kl_warmup=15, seed=0, backend=BACKEND)
with tempfile.TemporaryDirectory() as tmp:
    trainer = Trainer(cfg, data, tmp, log=io.StringIO())  # log=sys.stdout shows progress
    history = trainer.fit()
model = trainer.model
for h in history[-3:]:
    print(f"epoch {h['epoch']}: train CE {h['train_ce']:.3f}, KL {h['kl']:.0f}, "
          f"validation error {100 * h['valid_error']:.2f}%")

# %% [markdown]
# ## What is left
#
# `sparsity_report` counts, per variational layer, the fraction of weights with
# $\log\alpha\ge3$, and the compression ratio: all weights over kept weights (biases
# excluded, as M17 count). Check it against a count by hand.

# %%
report = sparsity_report(model)
total = kept = 0
for i, layer in model.variational_layers():
    la = minivd.to_numpy(layer.log_alpha)
    dropped = int((la >= SPARSE_LOG_ALPHA_THRESHOLD).sum())
    total, kept = total + la.size, kept + la.size - dropped
    name = f"{i}.{type(layer).__name__}"
    print(f"{name:20s} {la.shape[0]:4d} x {la.shape[1]:3d}: {100 * dropped / la.size:6.2f}% "
          f"of the weights dropped")
    assert abs(report["sparsity"][name] - dropped / la.size) < 1e-12
print(f"compression: {report['compression']:.1f}x ({kept} of {total} weights kept)")
assert abs(report["compression"] - total / kept) < 1e-9

first = report["sparsity"]["0.VariationalDense"]
assert first > 0.9  # most input weights go: many pixels carry nothing
assert report["compression"] > 10

# %% [markdown]
# Pruning must not hurt: the dropped weights are either near zero or so noisy that the
# network learned to ignore them. Compare the pruned mean network (`evaluate`, which masks)
# with the unpruned means (switching each layer's sampler to `"mean"` makes a training-mode
# pass use $\theta$ without noise or mask), test example by test example. Let $b$ count the
# digits only the pruned network gets wrong and $c$ those only the unpruned one gets wrong.
# If pruning changed nothing systematic, $b - c$ would be a sum of $b + c$ random $\pm1$s,
# so we assert $b - c < 5\sqrt{b + c} + 1$ (McNemar's test, five standard deviations).

# %%
x_test = minivd.asarray(data.x_test, xp)
pred_pruned = minivd.to_numpy(model.predict_logits(x_test)).argmax(1)
for _, layer in model.variational_layers():
    layer.sampler = "mean"
pred_all = minivd.to_numpy(model.predict_logits(x_test, train=True)).argmax(1)
for _, layer in model.variational_layers():
    layer.sampler = "lrt"
wrong_pruned, wrong_all = pred_pruned != data.y_test, pred_all != data.y_test
b, c = int((wrong_pruned & ~wrong_all).sum()), int((wrong_all & ~wrong_pruned).sum())
print(f"test error: pruned {100 * wrong_pruned.mean():.2f}%, all weights "
      f"{100 * wrong_all.mean():.2f}% ({report['compression']:.0f}x fewer weights); "
      f"b = {b}, c = {c}")
assert abs(evaluate(model, data.x_test, data.y_test, xp=xp)["error"] - wrong_pruned.mean()) < 1e-12
assert b - c < 5 * np.sqrt(b + c) + 1

# %% [markdown]
# The pictures: the histogram of $\log\alpha$ per layer (`minivd.plots.plot_log_alpha`, with
# the threshold in red) is bimodal: kept weights on the left, dropped ones piled up far to
# the right. For the first layer, count how many of its kept weights leave each input
# pixel: the network stops looking at the border.

# %%
plot_log_alpha(model, "06_log_alpha.png")
kept_per_pixel = (minivd.to_numpy(model.layers[0].log_alpha) < SPARSE_LOG_ALPHA_THRESHOLD).sum(1)
theta = minivd.to_numpy(model.layers[0].params["theta"]).ravel()
la0 = minivd.to_numpy(model.layers[0].log_alpha).ravel()
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
im = ax1.imshow(kept_per_pixel.reshape(28, 28), cmap="viridis")
ax1.set_title("kept first-layer weights per input pixel", fontsize=9)
ax1.axis("off")
fig.colorbar(im, ax=ax1)
sel = np.random.default_rng(0).choice(len(theta), min(20_000, len(theta)), replace=False)
ax2.scatter(theta[sel], la0[sel], s=1, alpha=0.3)
ax2.axhline(SPARSE_LOG_ALPHA_THRESHOLD, color="tab:red", ls="--", lw=1)
ax2.set_xlabel("θ")
ax2.set_ylabel("log α")
ax2.set_title("first layer: dropped weights (above the line)", fontsize=9)
fig.tight_layout()
fig.savefig("06_first_layer.png", dpi=120)
plt.close(fig)
blank = (data.x_train > 0).mean(0) == 0
print(f"kept weights per pixel: {kept_per_pixel[blank].mean():.2f} on the {blank.sum()} blank "
      f"pixels, {kept_per_pixel[~blank].mean():.2f} on the others")
assert kept_per_pixel[blank].max() == 0  # a pixel that is always 0 keeps no weight

# %% [markdown]
# A blank pixel is the clearest case: its weights get no gradient from the data, so only the
# KL acts on them, and it drives $\alpha\to\infty$. In the fast setting (2,000 examples) the
# KL is summed over 266,000 weights and divided by a small $N$, so it prunes harder than on
# full MNIST, where M17 report 98.9%, 97.2% and 62.0% sparsity per layer (68x compression) at
# 1.92% test error.
