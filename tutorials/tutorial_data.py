"""Data for the tutorials: MNIST when it is cached (or can be fetched), else generated digits.

Not a tutorial (the tests run only the numbered files). Under the fast setting this never
downloads: it uses the cached ``$MINIVD_DATA/mnist.npz`` if it is there, else generated digits.
"""

from __future__ import annotations

import numpy as np

from minivd.data import DataError, Dataset, data_dir, load_mnist

__all__ = ["load_digits", "generated_digits"]

# seven-segment digits: which of the segments a b c d e f g each class lights
_SEGMENTS = {0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd", 6: "afgedc",
             7: "abc", 8: "abcdefg", 9: "abcdfg"}
# segment end points (x, y) in a unit box, y pointing down
_ENDS = {"a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 0.5)), "c": ((1, 0.5), (1, 1)),
         "d": ((0, 1), (1, 1)), "e": ((0, 0.5), (0, 1)), "f": ((0, 0), (0, 0.5)),
         "g": ((0, 0.5), (1, 0.5))}


def generated_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28×28 seven-segment digits with random size, slant, shift, stroke width, jittered
    ends and an occasional missing stroke; ``float32`` pixels ``k/256`` in [0, 1) like MNIST
    (the border stays blank, as in MNIST), flattened to ``(n, 784)``."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 10, n)
    yy, xx = np.mgrid[0:28, 0:28]
    px, py = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)  # (784,) each
    w, h = r.uniform(8, 13, n), r.uniform(14, 19, n)  # box width and height
    slant = r.uniform(-0.25, 0.25, n)
    cx, cy = 14 + r.uniform(-2, 2, n), 14 + r.uniform(-1.5, 1.5, n)
    half_width = r.uniform(0.5, 1.2, n)
    dist2 = np.full((n, 784), np.inf)  # squared distance to the nearest lit segment
    for s, ends in _ENDS.items():
        lit = np.array([s in _SEGMENTS[int(c)] for c in y]) & (r.random(n) > 0.04)
        (ax, ay), (bx, by) = ((e[0] - 0.5, e[1] - 0.5) for e in ends)  # centred unit box
        x0, x1 = (w[:, None] * ex - slant[:, None] * h[:, None] * ey + cx[:, None]
                  + r.normal(0, 0.6, (n, 1)) for ex, ey in ((ax, ay), (bx, by)))
        y0, y1 = (h[:, None] * ey + cy[:, None] + r.normal(0, 0.6, (n, 1)) for ey in (ay, by))
        vx, vy = x1 - x0, y1 - y0  # (n, 1)
        t = np.clip(((px - x0) * vx + (py - y0) * vy) / (vx * vx + vy * vy), 0, 1)  # (n, 784)
        d2 = (px - x0 - t * vx) ** 2 + (py - y0 - t * vy) ** 2
        dist2 = np.where(lit[:, None], np.minimum(dist2, d2), dist2)
    dist = np.sqrt(dist2)
    x = np.clip(1.0 + half_width[:, None] - dist, 0, 1)
    x *= r.uniform(0.7, 1.0, x.shape) ** (x < 1)  # uneven ink on the stroke edges
    x = np.minimum(x, 255 / 256)
    return (np.floor(x * 256) / 256).astype(np.float32), y.astype(np.int64)


def load_digits(fast: bool, n_train: int, n_valid: int, n_test: int, seed: int = 0) -> Dataset:
    """The first ``n_train/n_valid/n_test`` examples of MNIST's splits, or generated digits.

    MNIST is read from ``$MINIVD_DATA`` (``minivd.data.load_mnist``). With ``fast`` it is used
    only if ``mnist.npz`` is already cached there (nothing is fetched); otherwise a failed load
    (:class:`minivd.data.DataError`, e.g. offline) falls back to generated digits too.
    """
    if fast and not (data_dir() / "mnist.npz").exists():
        print("MNIST is not cached in", data_dir(), "(fast setting: no download):",
              "using generated digits")
    else:
        try:
            d = load_mnist()
            return Dataset(d.x_train[:n_train], d.y_train[:n_train], d.x_valid[:n_valid],
                           d.y_valid[:n_valid], d.x_test[:n_test], d.y_test[:n_test], "mnist",
                           n_classes=10)
        except DataError as exc:
            print(f"MNIST unavailable ({str(exc).splitlines()[0]}): using generated digits")
    xs, ys = generated_digits(n_train + n_valid + n_test, seed)
    a, b = n_train, n_train + n_valid
    return Dataset(xs[:a], ys[:a], xs[a:b], ys[a:b], xs[b:], ys[b:], "generated digits")
