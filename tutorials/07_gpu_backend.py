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
# # 7. The same code on a GPU
#
# Nothing in `minivd` is written twice for the GPU. Every op asks its input arrays which
# array module they belong to (`xp = minivd.get_xp(x, w, ...)`, NumPy or CuPy) and calls
# `xp.sqrt`, `@`, ... on it; CuPy mirrors NumPy's API, so the same lines run on either. The
# backend is chosen only where arrays are *created*: a model built with `backend="cupy"`
# keeps its parameters on the GPU, `make_rng(seed, "cupy")` draws noise there, and
# `minivd.asarray(x, "cupy")` moves a batch. Mixing the two raises a `TypeError` instead of
# copying silently, and asking for CuPy on a machine without a usable GPU raises
# `minivd.BackendUnavailableError` saying why; there is no silent fallback.
#
# This tutorial runs the same computations on NumPy and, when it can, on CuPy; compares
# their speed; and checks that they compute the same numbers.

# %%
import os

BACKEND = os.environ.get("MINIVD_BACKEND", "numpy")  # backend of the demo run below
FAST = os.environ.get("MINIVD_FAST") == "1"  # tiny runs, used by the tests

import time  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # figures go to PNG files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import minivd  # noqa: E402
import minivd.functional as F  # noqa: E402
from minivd.kl import kl_m17, kl_m17_grad  # noqa: E402
from minivd.model import build_model  # noqa: E402
from minivd.optim import Adam  # noqa: E402
from minivd.random import standard_normal  # noqa: E402

print("demo backend:", BACKEND, "| fast:", FAST)

# %% [markdown]
# ## Is there a GPU?

# %%
try:
    cp = minivd.resolve_backend("cupy")
    GPU = True
    print("CuPy", cp.__version__, "on", cp.cuda.runtime.getDeviceProperties(0)["name"].decode())
except minivd.BackendUnavailableError as exc:
    cp, GPU = None, False
    print("No GPU here, so this run shows the NumPy side only.\nReason:", exc)

# %% [markdown]
# ## The same code on either backend
#
# A few training steps of a small variational-dropout-B network, written once. Only the
# `backend` argument differs between a CPU and a GPU run; the rest is tutorial 4's loop.
# (Run any tutorial with `MINIVD_BACKEND=cupy` to do the same everywhere.)

# %%
def train_steps(backend, steps, width, batch=100, seed=0):
    """Train a 784-width-width-10 vd-b MLP on random inputs; return seconds per step."""
    xp = minivd.resolve_backend(backend)
    model = build_model("mlp", "vd-b", width=width, depth=2, seed=seed, backend=backend)
    opt, rng = Adam(1e-3), minivd.make_rng(seed, backend)
    host = np.random.default_rng(seed)
    x = minivd.asarray(host.random((batch, 784), dtype=np.float32), xp)
    y = minivd.asarray(host.integers(0, 10, batch), xp)
    for step in range(steps + 2):
        if step == 2:  # the first steps compile CuPy kernels: do not time them
            sync(xp)
            t0 = time.perf_counter()
        model.loss_and_grads(x, y, rng=rng, kl_scale=1e-5)
        opt.step(model.parameters())
        model.project()
    sync(xp)
    return (time.perf_counter() - t0) / steps


def sync(xp):
    """Wait for the GPU to finish (CuPy calls return before the work is done)."""
    if xp is not np:
        xp.cuda.Device().synchronize()


try:
    sec = train_steps(BACKEND, steps=5, width=128)
    print(f"{BACKEND}: {1e3 * sec:.1f} ms per training step (width 128)")
except minivd.BackendUnavailableError as exc:  # MINIVD_BACKEND=cupy on a machine without one
    print(f"MINIVD_BACKEND={BACKEND} asked for, but: {exc}")

# %% [markdown]
# ## Parity: the same numbers on both backends
#
# NumPy's and CuPy's random generators give different streams for the same seed, so two
# training runs can only agree in distribution. To compare the *arithmetic*, inject the same
# noise: draw every input and noise array once on the host in float32, give copies to both
# backends' functional ops, and compare the outputs and gradients. The two sides sum in
# different orders (OpenBLAS vs cuBLAS), so they agree to float32 rounding: a relative error
# (`minivd.rel_error`: $\max|a-b| / \max(|a|+|b|)$) below $10^{-5}$.

# %%
r = np.random.default_rng(0)
f32 = np.float32
n, d_in, d_out = 64, 96, 40
inputs = {
    "x": r.standard_normal((n, d_in)).astype(f32),
    "w_mean": r.standard_normal((d_in, d_out)).astype(f32),
    "w_var": r.uniform(0.01, 1, (d_in, d_out)).astype(f32),
    "b": r.standard_normal(d_out).astype(f32),
    "dout": r.standard_normal((n, d_out)).astype(f32),
    "noise_lrt": r.standard_normal((n, d_out)).astype(f32),
    "noise_per_example": r.standard_normal((n, d_in, d_out)).astype(f32),
    "log_alpha": r.uniform(-8, 8, (d_in, d_out)).astype(f32),
}


def lrt(a):
    out, c = F.lrt_dense_forward(a["x"], a["w_mean"], a["w_var"], a["b"], a["noise_lrt"])
    return (out, *F.lrt_dense_backward(a["dout"], c))


def per_example(a):
    out, c = F.per_example_dense_forward(a["x"], a["w_mean"], a["w_var"], a["b"],
                                         a["noise_per_example"])
    return (out, *F.per_example_dense_backward(a["dout"], c))


def m17_kl(a):
    return kl_m17(a["log_alpha"]), kl_m17_grad(a["log_alpha"])


def mlp_mean_logits(backend):
    """A whole network: the same seed gives the same initial weights on every backend."""
    model = build_model("mlp", "vd-b", width=64, depth=2, seed=3, backend=backend)
    x = np.tile(inputs["x"], (1, 9))[:, :784]
    return (model.predict_logits(minivd.asarray(x, backend)),)  # mean weights, no noise


checks = {"lrt_dense forward + backward": lrt,
          "per_example_dense forward + backward": per_example,
          "M17 KL and its derivative": m17_kl}
parity = {}
if GPU:
    on_gpu = {k: cp.asarray(v) for k, v in inputs.items()}
    runs = [(name, fn(inputs), fn(on_gpu)) for name, fn in checks.items()]
    runs.append(("vd-b MLP, mean-weight logits", mlp_mean_logits("numpy"),
                 mlp_mean_logits("cupy")))
    for name, cpu_out, gpu_out in runs:
        parity[name] = max(minivd.rel_error(a, b) for a, b in zip(cpu_out, gpu_out)
                           if a is not None)
        print(f"{name:38s} max rel. error {parity[name]:.1e}")
        assert all(minivd.get_xp(b) is cp for b in gpu_out if b is not None)  # stayed on GPU
        assert parity[name] < 1e-5
else:
    for name, fn in checks.items():
        out = fn(inputs)
        assert all(np.all(np.isfinite(o)) for o in out if o is not None)
        print(f"would compare on CuPy: {name} ({len(out)} arrays)")
    print("would compare on CuPy: vd-b MLP, mean-weight logits")

# %% [markdown]
# ## Speed: CPU against GPU
#
# Time the hot spots: an LRT dense layer's forward and backward pass at a small and a large
# size, the per-example weight sampler that LRT replaces (tutorial 2), and a whole training
# step. Each layer time is the best of three runs after a warm-up; the training step is the
# mean over 3–5 steps after two untimed ones; the GPU is synchronised before the clock stops.
# The CPU times depend on your cores (this tutorial's tests run on 2).

# %%
SIZES = ({"small": (100, 784, 256), "large": (500, 1024, 1024), "per_example": (32, 196, 64),
          "mlp_width": 256, "repeat": 3} if FAST else
         {"small": (100, 784, 1024), "large": (1000, 2048, 2048), "per_example": (100, 784, 256),
          "mlp_width": 1024, "repeat": 5})


def best_time(fn, xp, repeat=SIZES["repeat"]):
    fn()
    sync(xp)  # warm-up: allocations, CuPy kernel compilation
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        sync(xp)
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def layer_workload(size, op):
    """A function of the backend that times one layer's forward + backward at SIZES[size]."""
    return lambda backend: time_layer(backend, SIZES[size], op)


def time_layer(backend, shape, op):
    xp = minivd.resolve_backend(backend)
    m, k, j = shape
    g = np.random.default_rng(1)
    x, wm = (minivd.asarray(g.standard_normal(s, dtype=f32), xp) for s in ((m, k), (k, j)))
    wv = minivd.asarray(g.uniform(0.01, 0.1, (k, j)).astype(f32), xp)
    dout = minivd.asarray(g.standard_normal((m, j), dtype=f32), xp)
    rng = minivd.make_rng(2, backend)
    if op == "lrt":
        fwd, bwd, noise_shape = F.lrt_dense_forward, F.lrt_dense_backward, (m, j)
    else:
        fwd, bwd, noise_shape = (F.per_example_dense_forward, F.per_example_dense_backward,
                                 (m, k, j))

    def step():  # noise drawn fresh every time, by the sampler the layers use in training
        out, c = fwd(x, wm, wv, None, standard_normal(rng, noise_shape, f32))
        return bwd(dout, c)

    return best_time(step, xp)


def label(kind, shape):
    return "{} {}x{}->{}".format(kind, *shape)


workloads = {
    label("LRT layer", SIZES["small"]): layer_workload("small", "lrt"),
    label("LRT layer", SIZES["large"]): layer_workload("large", "lrt"),
    label("per-example weights", SIZES["per_example"]): layer_workload("per_example",
                                                                       "per_example"),
    f"vd-b MLP training step, width {SIZES['mlp_width']}":
        lambda backend: train_steps(backend, steps=SIZES["repeat"], width=SIZES["mlp_width"]),
}
timings = {}
for name, run in workloads.items():
    timings[name] = {"numpy": run("numpy"), "cupy": run("cupy") if GPU else None}
    t = timings[name]
    gpu_txt = f"{1e3 * t['cupy']:9.2f} ms  ({t['numpy'] / t['cupy']:5.1f}x)" if GPU else \
        "   (would run on CuPy)"
    print(f"{name:42s} CPU {1e3 * t['numpy']:9.2f} ms   GPU {gpu_txt}")
    assert t["numpy"] > 0
if GPU:  # the large layer is where a GPU must win, and win by more than on the small one
    small, large = label("LRT layer", SIZES["small"]), label("LRT layer", SIZES["large"])
    speedup = {k: timings[k]["numpy"] / timings[k]["cupy"] for k in (small, large)}
    assert speedup[large] > 1 and speedup[large] > speedup[small]

# %%
fig, ax = plt.subplots(figsize=(8, 3.8))
names = list(timings)
pos = np.arange(len(names))
ax.bar(pos - 0.2, [1e3 * timings[k]["numpy"] for k in names], 0.4, label="NumPy (CPU)")
if GPU:
    ax.bar(pos + 0.2, [1e3 * timings[k]["cupy"] for k in names], 0.4, label="CuPy (GPU)")
ax.set_xticks(pos, [k.replace(" ", "\n", 2) for k in names], fontsize=7)
ax.set_yscale("log")
ax.set_ylabel("ms per call (layers: best of 3; step: mean)")
ax.set_title("CPU vs GPU" if GPU else "CPU only: no GPU on this machine")
ax.legend()
fig.tight_layout()
fig.savefig("07_cpu_vs_gpu.png", dpi=120)
plt.close(fig)

# %% [markdown]
# Small layers gain less on a GPU: each op is a kernel launch of a few microseconds, too
# little work to fill the device. Large layers, and the per-example sampler's
# $M\cdot K\cdot J$ random numbers, are where the GPU pays off most. To run every
# tutorial on the GPU: `pip install -e ".[gpu]"` (CuPy for CUDA 12) and
# `MINIVD_BACKEND=cupy python tutorials/04_training_mnist.py`.
