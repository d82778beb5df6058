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
# # 4. Training on MNIST: seven ways to add noise
#
# K15 compared seven training methods on fully connected ReLU networks for MNIST: no
# dropout, binary dropout, Gaussian dropout A and B (a fixed $\alpha$), and variational
# dropout A, A2 and B (a learned $\alpha$). This tutorial trains all seven in small, shows the
# training loop they share, plots test error and the learned $\alpha$ per layer, and
# compares two ways to predict with a noisy network: the mean weights, and a Monte-Carlo
# average that also says how *uncertain* each prediction is.

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
from minivd.batches import iterate_minibatches  # noqa: E402
from minivd.evaluate import evaluate  # noqa: E402
from minivd.model import build_model  # noqa: E402
from minivd.optim import Adam  # noqa: E402
from minivd.train import TrainConfig, Trainer  # noqa: E402

xp = minivd.resolve_backend(BACKEND)
print("backend:", BACKEND, "| fast:", FAST)

# %% [markdown]
# ## Data and model size
#
# MNIST has 50,000 training, 10,000 validation and 10,000 test images of 28×28 pixels. It is
# used when `minivd.data.load_mnist()` finds it in its cache (`$MINIVD_DATA`) or can fetch
# it; the fast setting takes a small slice of a cached copy and otherwise generated
# seven-segment digits (it never downloads). K15's networks have three hidden layers of up
# to 1250 units and train for hundreds of epochs; ours are smaller and shorter, so expect
# the ranking of the methods to be noisy, especially in the fast setting.

# %%
N_TRAIN, N_VALID, N_TEST = (2000, 500, 1000) if FAST else (50_000, 10_000, 10_000)
WIDTH, DEPTH, EPOCHS = (100, 2, 10) if FAST else (500, 2, 10)
data = load_digits(FAST, N_TRAIN, N_VALID, N_TEST)
print(f"{data.name}: {len(data.x_train)} train, {len(data.x_valid)} valid, "
      f"{len(data.x_test)} test; MLP 784-{'-'.join([str(WIDTH)] * DEPTH)}-10, {EPOCHS} epochs")

# %% [markdown]
# ## The objective and the loop
#
# Per example, the negative ELBO is the minibatch's mean cross-entropy plus the KL divided
# by the training-set size $N$:
#
# $$\ell(\phi) = \frac{1}{M}\sum_{i=1}^{M} -\log p\big(y_i\mid x_i, w = f(\varepsilon_i,
#   \phi)\big) + \frac{\beta}{N}\,\mathrm{KL}\big(q_\phi(w)\,\|\,p(w)\big),$$
#
# which is $-\mathcal{L}/N$ in expectation. ($\beta = 1$ is the ELBO; schedules that ramp
# $\beta$ up from 0 are common, see tutorial 6.) `Sequential.loss_and_grads(x, y, rng=...,
# kl_scale=beta / N)` runs one noisy forward pass, backpropagates the cross-entropy, and adds
# `kl_scale` times the KL's gradient; the optimiser then steps, and `project()` clips every
# learned K15 $\log\alpha$ back to $\le 0$ (the K15 KL is only valid for $\alpha\le 1$).
# Here is the whole loop for variational dropout B:

# %%
def train_by_hand(method, epochs, seed=0):
    model = build_model("mlp", method, width=WIDTH, depth=DEPTH, seed=seed, backend=BACKEND)
    opt = Adam(lr=1e-3)
    order_rng = np.random.default_rng([seed, 1])  # minibatch order, on the host
    noise_rng = minivd.make_rng([seed, 2], BACKEND)  # weight noise, on the backend
    n = len(data.x_train)
    for epoch in range(epochs):
        for xb, yb in iterate_minibatches(data.x_train, data.y_train, 100, order_rng, xp):
            model.loss_and_grads(xb, yb, rng=noise_rng, kl_scale=1.0 / n)
            opt.step(model.parameters())
            model.project()
        err = evaluate(model, data.x_valid, data.y_valid, xp=xp)["error"]
        print(f"epoch {epoch + 1}: KL/N = {float(model.kl()) / n:.3f} nats per example, "
              f"validation error {100 * err:.2f}%")
    return model


vd_b = train_by_hand("vd-b", EPOCHS)

# %% [markdown]
# ## The experiment: seven methods
#
# For the comparison we use `minivd.train.Trainer`. It runs the loop above and adds what a
# real run needs: a validation pass per epoch, progress lines, checkpoints that resume
# exactly, learning-rate and $\beta$ schedules, and parameter averaging. `build_model` maps
# K15's method names onto layers (dropout rate $p = 0.2$ on the input, $0.5$ on hidden
# units; $\alpha = p/(1-p)$):
#
# | method | layers | noise on | $\alpha$ |
# |---|---|---|---|
# | `none` | `Dense` | nothing | |
# | `dropout` | `Dropout` + `Dense` | inputs, Bernoulli | fixed |
# | `gaussian-a` | `GaussianDropout` + `Dense` | inputs, $\mathcal{N}(1,\alpha)$ | fixed |
# | `gaussian-b` | `VariationalDense(learn_alpha=False)` | weights (LRT) | fixed |
# | `vd-a` | `GaussianDropout(learn_alpha=True)` + `Dense` | inputs | per unit |
# | `vd-a2` | as `vd-a`, with the KL divided by 3 | inputs | per unit |
# | `vd-b` | `VariationalDense` | weights (LRT) | per weight |

# %%
def trainer(method, epochs, out_dir, seed=0):
    cfg = TrainConfig(model="mlp", width=WIDTH, depth=DEPTH, method=method, epochs=epochs,
                      batch=100, lr=1e-3, seed=seed, backend=BACKEND)
    return Trainer(cfg, data, out_dir, log=io.StringIO())  # log=sys.stdout shows progress


METHODS = ["none", "dropout", "gaussian-a", "gaussian-b", "vd-a", "vd-a2", "vd-b"]
K15_500_UNITS = {"none": 1.21, "dropout": 1.22, "gaussian-a": 1.18, "gaussian-b": 1.27,
                 "vd-a": 1.12, "vd-a2": 1.07, "vd-b": 1.29}  # test error %, K15's figure
results, models = {}, {}
with tempfile.TemporaryDirectory() as tmp:  # the checkpoints go here
    for method in METHODS:
        t = trainer(method, EPOCHS, os.path.join(tmp, method))
        t.fit()
        results[method] = t.evaluate(data.x_test, data.y_test)["error"]
        models[method] = t.model
        print(f"{method:11s} test error {100 * results[method]:5.2f}%")
for method, err in results.items():
    assert err < 0.25, (method, err)  # all far below chance (90%)

# %% [markdown]
# A check that `Trainer` is our loop: it seeds its minibatch order with
# `default_rng([seed, 1])` and its noise with `make_rng([seed, 2])`, as `train_by_hand` did,
# so its `vd-b` run must end at the same weights.

# %%
worst = max(minivd.rel_error(p, q) for (_, p, _), (_, q, _)
            in zip(vd_b.parameters(), models["vd-b"].parameters()))
print(f"largest relative difference between the two runs' parameters: {worst:.1e}")
assert worst < 1e-5

# %% [markdown]
# The learned noise. Every K15 $\log\alpha$ must respect the bound $\log\alpha\le0$ after
# projection. A2 weighs the KL, which pulls $\alpha$ up, by $1/3$, so its learned $\alpha$ end
# lower than A's. In the fast setting, with only 2,000 examples, the KL (summed over every
# noise variable and divided by $N$) outweighs the data term (see `KL/N` above) and pushes
# most hidden $\alpha$ towards the bound.

# %%
def log_alphas(model):
    """{layer name: host array of its log α} for every layer that learns one."""
    return {f"{i}.{type(layer).__name__}": minivd.to_numpy(layer.log_alpha).ravel()
            for i, layer in model.variational_layers() if "log_alpha" in layer.params}


learned = {m: log_alphas(models[m]) for m in ("vd-a", "vd-a2", "vd-b")}
for m, layers in learned.items():
    for name, la in layers.items():
        print(f"{m:6s} {name:20s} mean α {np.exp(la).mean():.3f}, "
              f"range [{np.exp(la).min():.3f}, {np.exp(la).max():.3f}]")
        assert la.max() <= 0.0
# A and A2 start from the same weights and draw the same noise, so compare them unit by unit.
# One seeded run each: the units are coupled through training, not independent samples, so
# this checks the direction (A's α above A2's, on average and for most units), not a
# significance level.
d = (np.concatenate(list(learned["vd-a"].values()))
     - np.concatenate(list(learned["vd-a2"].values())))
print(f"log α of vd-a minus vd-a2, per unit: mean {d.mean():.4f}, "
      f"positive for {(d > 0).mean():.0%} of {len(d)} units")
assert d.mean() > 0 and (d > 0).mean() > 0.5

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
pos = np.arange(len(METHODS))
ax1.bar(pos, [100 * results[m] for m in METHODS], color="tab:blue", label="this run")
ax1.plot(pos, [K15_500_UNITS[m] for m in METHODS], "k_", ms=18, mew=2,
         label="K15, 500 units, long training")
ax1.set_xticks(pos, METHODS, rotation=30, fontsize=8)
ax1.set_ylabel("test error (%)")
ax1.set_title(f"{data.name}, {EPOCHS} epochs, width {WIDTH}")
ax1.legend(fontsize=8)
labels, values = [], []
for m, layers in learned.items():
    for name, la in layers.items():
        labels.append(f"{m}\nlayer {name.split('.')[0]}")
        values.append(np.exp(la))
ax2.boxplot(values, showfliers=False)
ax2.set_xticks(np.arange(1, len(labels) + 1), labels, fontsize=7)
ax2.set_ylabel("learned α (variance of the multiplicative noise)")
ax2.axhline(1.0, color="tab:red", ls=":", lw=1)
ax2.set_title("α per layer (red: the K15 bound α = 1)")
fig.tight_layout()
fig.savefig("04_methods.png", dpi=120)
plt.close(fig)

# %% [markdown]
# ## Two ways to predict
#
# A trained variational network defines a predictive distribution
# $p(y\mid x) = \mathbb{E}_{q(w)}[p(y\mid x, w)]$. Two ways to use it:
#
# * **mean weights** (`evaluate(..., mode="mean")`): one deterministic pass with
#   $w = \theta$ (no noise, and for Gaussian noise no rescaling, since its mean is 1). Fast,
#   and what K15 reports.
# * **Monte Carlo** (`mode="mc"`): average the softmax of $S$ noisy passes,
#   $\hat p(y\mid x) = \frac1S\sum_s p(y\mid x, w_s)$. It costs $S$ passes but also gives the
#   predictive entropy $H = -\sum_k \hat p_k\log\hat p_k$, which is high where the network
#   is unsure.
#
# First check that `evaluate`'s Monte-Carlo entropy is exactly this formula, by computing it
# ourselves with the same noise (same generator, same order of passes).

# %%
S = 20 if FAST else 50


def mc_predictive(model, x, samples, rng, batch=1000):
    """Per-example MC predictive probabilities, drawn in evaluate's order."""
    out = []
    for lo in range(0, len(x), batch):
        xb = minivd.asarray(x[lo:lo + batch], xp)
        probs = 0
        for _ in range(samples):
            z = model.predict_logits(xb, rng=rng, train=True)
            e = xp.exp(z - z.max(axis=1, keepdims=True))
            probs = probs + e / e.sum(axis=1, keepdims=True)
        out.append(minivd.to_numpy(probs / samples))
    return np.concatenate(out)


mean_err = evaluate(vd_b, data.x_test, data.y_test, xp=xp)["error"]
mc = evaluate(vd_b, data.x_test, data.y_test, xp=xp, mode="mc", samples=S,
              rng=minivd.make_rng(7, BACKEND))
probs = mc_predictive(vd_b, data.x_test, S, minivd.make_rng(7, BACKEND))
entropy = -(probs * np.log(np.maximum(probs, 1e-30))).sum(axis=1)
pred = probs.argmax(axis=1)
print(f"vd-b test error: mean weights {100 * mean_err:.2f}%, MC (S = {S}) "
      f"{100 * mc['error']:.2f}%; mean predictive entropy {mc['entropy']:.4f} nats")
assert abs(entropy.mean() - mc["entropy"]) < 1e-5
assert abs((pred != data.y_test).mean() - mc["error"]) < 1e-12

# %% [markdown]
# The entropy is useful: the digits the network gets wrong are the ones it is unsure about.
# The difference of the mean entropies must exceed five of its standard errors.

# %%
wrong = pred != data.y_test
diff = entropy[wrong].mean() - entropy[~wrong].mean()
se = np.hypot(entropy[wrong].std() / np.sqrt(wrong.sum()),
              entropy[~wrong].std() / np.sqrt((~wrong).sum()))
print(f"mean entropy: {entropy[wrong].mean():.3f} nats on the {wrong.sum()} misclassified "
      f"digits, {entropy[~wrong].mean():.3f} on the {(~wrong).sum()} correct ones "
      f"(difference {diff:.3f} ± {se:.3f})")
assert diff > 5 * se

most_unsure = np.argsort(entropy)[::-1][:8]
fig, axes = plt.subplots(1, 8, figsize=(12, 2.2))
for ax, i in zip(axes, most_unsure):
    ax.imshow(data.x_test[i].reshape(28, 28), cmap="gray_r")
    ax.set_title(f"label {data.y_test[i]}, pred {pred[i]}\nH = {entropy[i]:.2f}", fontsize=8)
    ax.axis("off")
fig.suptitle("The test digits with the highest predictive entropy (variational dropout B)",
             fontsize=9)
fig.tight_layout()
fig.savefig("04_uncertain_digits.png", dpi=120)
plt.close(fig)

# %% [markdown]
# Next: tutorial 5 carries all of this over to convolutional layers, and tutorial 6 lets
# $\alpha$ grow without bound to prune most of the weights.
