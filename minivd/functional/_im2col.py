"""Strided windows for the conv ops: argument checks, blocked im2col and its adjoint scatter.

Layout (chosen by measurement; see ``benchmarks/bench_conv.py``). Inside the conv ops the
input lives in a zero-padded, channel-major copy ``xpad (C, N, L)``: image ``(c, n)`` is
flattened row by row (rows of ``Wp`` floats: ``W + 2p``, or at most that when wide, below). The
im2col matrix is stored **transposed**, ``(C·KH·KW, N·H_out·Wq)``: row ``(c, a, e)``
(channel, kernel row, kernel column: the order of ``w.reshape(C_out, -1)``, so kernels need
no copy) holds input pixel ``(i·s + a, j·s + e)`` of channel ``c`` for every output position
``(n, i, j)``. It is one copy of an ``as_strided`` window view of ``xpad``. Products with it
give channel-major outputs ``(C_out, N·H_out·Wq)``.

With stride 1 and an im2col matrix taller than the output (``C_in·KH·KW ≥ C_out``) the
positions are taken **wide**: ``Wq = Wp`` per output row instead of ``W_out``, so for each
example a row of the matrix is a *contiguous* run of the flat padded image (offset
``a·Wp + e``), and the window copy and the scatter move runs of ``H_out·Wp`` floats instead
of ``W_out``. The ``Wq − W_out`` extra positions per row are scratch: the ops never read
their outputs and give them zero gradients, so the scatter adds exact zeros there. They cost
``Wq/W_out`` more matrix-product work, so wide rows **share their padding**: one gap of
``g = max(p, 2p − KW + 1)`` zeros (``Wp = W + g``) is the right padding of one row and the
left padding of the next, and pixel ``(h, w)`` sits at ``p + (h + p)·Wp + w`` (a lead of
``p`` zeros), so the read of kernel entry ``(a, e)`` for output ``(i, j)``, at
``(i + a)·Wp + j + e``, meets pixel ``(i + a − p, j + e − p)``, or a zero where that is
padding (``g ≥ p`` keeps the two sides apart; ``g ≥ 2p − KW + 1`` keeps ``Wq ≥ W_out``). At
3×3 with padding 1 that is one scratch position per row, ``W + 1`` for ``W`` (6% more work at
16×16, 3% at 32×32; ``W + 2p`` columns cost twice that). Images carry extra zeros
(``L = Hp·Wp + max(KW − 1, p)``) so the last wide windows stay in bounds. Otherwise
``Wq = W_out``, rows are ``W + 2p`` long and the windows are ordinary 2-D strided views.

Blocks. The full im2col matrix is ``KH·KW`` times the input, and on this kind of CPU writing
it out and reading it back costs about as much memory traffic as the products that use it.
So the ops never build it whole on NumPy: :class:`ConvBlocks` walks blocks of examples whose
im2col matrix fits in cache (``_BLOCK_ELEMENTS``; see :class:`ConvBlocks`), and each block's copy,
products and elementwise work run back to back on it; the backward pass rebuilds a block's
matrix from ``xpad`` instead of keeping it. The products run on all cores in BLAS; copies and
elementwise work stay on the calling thread (splitting a block's examples over two threads
gained nothing when measured, even with OpenBLAS's idle workers asleep: these copies are
bound by memory, not by a core). On CuPy there is one block.

Arithmetic on strided views is about 3× slower in NumPy than on contiguous arrays (with its
default 8192-float ufunc buffers it copies strided operands through them), while strided
*copies* are not: the ops copy between layouts and compute on contiguous blocks. The strided
adds of the scatter run with small ufunc buffers instead (:func:`_unbuffered`).
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, NamedTuple

import numpy as np

from ._checks import check_float, check_same_dtype, check_shape, xp_of

__all__ = ["ConvGeom", "ConvBlocks", "check_conv_args", "check_noise", "check_stride_padding",
           "conv_geometry", "pad_input", "unpad", "nchw_block"]

_BLOCK_ELEMENTS = 1 << 19  # im2col entries per block (2 MiB of float32)
_BLOCK_COLUMNS = 1 << 10  # and, for kernels of at most _SMALL_KERNEL entries, this many
_SMALL_KERNEL = 1 << 10  # output positions (at least one example)
_UNBUFFERED_RUN = 256  # the scatter drops NumPy's ufunc buffers for runs this long


class ConvGeom(NamedTuple):
    """Sizes of one conv: input ``(n, c, h, w)``, kernel ``(o, c, kh, kw)``, output
    ``(n, o, ho, wo)``, padding ``p``; ``hp`` padded rows of ``wp`` floats, ``wq`` positions
    per output row (``wp`` when wide, else ``wo``) and ``L`` floats per flat padded image, in
    which pixel ``(h, w)`` sits at ``lead + (h + p)·wp + w + col0`` (wide: ``lead = p``,
    ``col0 = 0``; else ``lead = 0``, ``col0 = p``)."""

    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    stride: int
    p: int
    ho: int
    wo: int
    hp: int
    wp: int
    wq: int
    L: int
    lead: int
    col0: int
    wide: bool

    @property
    def m(self) -> int:
        """Positions (im2col columns) per example: ``H_out·Wq``."""
        return self.ho * self.wq

    @property
    def k(self) -> int:
        """``C_in·KH·KW``: rows of the (transposed) im2col matrix, without the ones row."""
        return self.c * self.kh * self.kw

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.o, self.ho, self.wo)


def check_stride_padding(stride: Any, padding: Any) -> tuple[int, int]:
    """``stride ≥ 1`` and ``padding ≥ 0`` must be ints (not bools, not floats)."""
    for name, v, lo in (("stride", stride, 1), ("padding", padding, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {v!r} of type {type(v).__name__}")
        if v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v}")
    return int(stride), int(padding)


def conv_geometry(x_shape: tuple, w_shape: tuple, stride: int, padding: int,
                  w_name: str = "w_mean") -> ConvGeom:
    """Sizes of a conv of ``x_shape (N, C, H, W)`` with ``w_shape (O, C, KH, KW)``."""
    n, c, h, w = (int(v) for v in x_shape)
    o, _, kh, kw = (int(v) for v in w_shape)
    hp, wp = h + 2 * padding, w + 2 * padding
    if kh > hp or kw > wp:
        raise ValueError(
            f"kernel ({kh}, {kw}) of {w_name} is larger than the padded input ({hp}, {wp}) "
            f"(x {tuple(x_shape)}, padding {padding})"
        )
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    # wide rows, sharing their padding, where the im2col matrix outweighs the outputs (see
    # the module docstring)
    gap = max(padding, 2 * padding - kw + 1)
    if stride == 1 and c * kh * kw >= o:
        wp = w + gap  # ≥ wo: Wq − W_out = max(KW − 1 − p, 0) scratch positions per row
        return ConvGeom(n, c, h, w, o, kh, kw, stride, padding, ho, wo, hp, wp, wp,
                        hp * wp + max(kw - 1, padding), padding, 0, True)
    return ConvGeom(n, c, h, w, o, kh, kw, stride, padding, ho, wo, hp, wp, wo, hp * wp, 0,
                    padding, False)


def check_conv_args(x: Any, w_mean: Any, w_var: Any, b: Any, stride: Any, padding: Any,
                    w_name: str = "w_mean") -> tuple[Any, ConvGeom]:
    """Checks of the conv family (the kernel is called ``w_name`` in errors); returns the
    array module and the geometry."""
    xp = xp_of(**{"x": x, w_name: w_mean, "w_var": w_var, "b": b})
    stride, padding = check_stride_padding(stride, padding)
    check_float("x", x, 4)
    check_float(w_name, w_mean, 4)
    if x.shape[1] != w_mean.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} channels but {w_name} expects C_in = {w_mean.shape[1]} "
            f"(x {tuple(x.shape)} is (N, C_in, H, W), {w_name} {tuple(w_mean.shape)} is "
            "(C_out, C_in, KH, KW))"
        )
    if w_var is not None:
        check_float("w_var", w_var)
        check_shape("w_var", w_var, w_mean.shape, f"same as {w_name}")
    if b is not None:
        check_float("b", b)
        check_shape("b", b, (w_mean.shape[0],), "(C_out,)")
    check_same_dtype(**{"x": x, w_name: w_mean, "w_var": w_var, "b": b})
    return xp, conv_geometry(x.shape, w_mean.shape, stride, padding, w_name)


def check_noise(noise: Any, x: Any, shape: tuple, what: str) -> None:
    """``noise`` is a float array of ``shape`` on ``x``'s backend, with ``x``'s dtype."""
    xp_of(x=x, noise=noise)
    check_float("noise", noise)
    check_shape("noise", noise, shape, what)
    check_same_dtype(x=x, noise=noise)


def _as_strided(a: Any, shape: tuple, strides: tuple) -> Any:
    if isinstance(a, np.ndarray):
        return np.lib.stride_tricks.as_strided(a, shape, strides, writeable=False)
    return importlib.import_module("cupy.lib.stride_tricks").as_strided(a, shape, strides)


def _image(buf: Any, g: ConvGeom) -> Any:
    """The ``(C, N, Hp, Wp)`` view of a flat padded buffer ``(C, N, L)`` from its lead on:
    pixel ``(h, w)`` is at ``[h + p, w + col0]``."""
    return buf[:, :, g.lead:g.lead + g.hp * g.wp].reshape(buf.shape[0], buf.shape[1], g.hp,
                                                          g.wp)


def _tap(buf: Any, g: ConvGeom, a: int, e: int) -> Any:
    """``(C, N, H_out, Wq)`` view of the pixels of a flat padded buffer that kernel entry
    ``(a, e)`` meets."""
    if g.wide:  # a contiguous run of each flat image, offset a·Wp + e
        lo = a * g.wp + e
        return buf[:, :, lo:lo + g.m].reshape(buf.shape[0], buf.shape[1], g.ho, g.wq)
    s = g.stride
    return _image(buf, g)[:, :, a:a + s * (g.ho - 1) + 1:s, e:e + s * (g.wo - 1) + 1:s]


def pad_input(x: Any, g: ConvGeom) -> Any:
    """``x (N, C, H, W)`` → the flat zero-padded, channel-major ``xpad (C, N, L)``."""
    xp = xp_of(x=x)
    xpad = xp.zeros((g.c, g.n, g.L), dtype=x.dtype)
    _image(xpad, g)[:, :, g.p:g.p + g.h, g.col0:g.col0 + g.w] = x.transpose(1, 0, 2, 3)
    return xpad


def unpad(dxpad: Any, g: ConvGeom) -> Any:
    """The ``(N, C, H, W)`` interior of a flat padded buffer ``(C, N, L)`` (a new array)."""
    xp = xp_of(dxpad=dxpad)
    dx = xp.empty((g.n, g.c, g.h, g.w), dtype=dxpad.dtype)
    dx.transpose(1, 0, 2, 3)[...] = _image(dxpad, g)[:, :, g.p:g.p + g.h, g.col0:g.col0 + g.w]
    return dx


def nchw_block(y: Any, g: ConvGeom) -> Any:
    """The ``(n, C_out, H_out, W_out)`` view of channel-major outputs ``(C_out, n·H_out·Wq)``
    of a block of ``n`` examples (without the scratch positions)."""
    return y.reshape(y.shape[0], -1, g.ho, g.wq)[:, :, :, :g.wo].transpose(1, 0, 2, 3)


class ConvBlocks:
    """The examples of one conv in blocks, with the im2col matrix of a block built on demand.

    On NumPy a block holds as many examples as keep its im2col matrix within
    ``_BLOCK_ELEMENTS`` floats (at least one example), so the window copy and the products on
    it run in cache; buffers are allocated once per call and reused by every block. On CuPy
    there is one block, the whole batch.

    Small kernels (``C_out·(C_in·KH·KW + 1) ≤ _SMALL_KERNEL``) also keep a block within
    ``_BLOCK_COLUMNS`` positions. Their weight gradient is a product with a tiny result and a
    long inner dimension, which OpenBLAS ran 2.5–3× faster per flop on short blocks here: for
    LeNet-5's first conv, ``(20, 20160) @ (20160, 26)`` took 0.85 ms and thirty
    ``(20, 672) @ (672, 26)`` 0.34 ms, while ``(64, 17408) @ (17408, 28)`` and seventeen
    ``(64, 1024) @ (1024, 28)`` took the same time, and shorter blocks only add per-block
    overhead there (10% on ``bench_conv.py``'s 3-channel layer).

    Parameters
    ----------
    xpad : array (C, N, L)
        From :func:`pad_input`.
    g : ConvGeom
    """

    def __init__(self, xpad: Any, g: ConvGeom) -> None:
        self.xp, self.g, self.xpad = xp_of(xpad=xpad), g, xpad
        sc, sn, sl = xpad.strides
        s = g.stride
        self.windows = _as_strided(  # (C, KH, KW, N, H_out, Wq): no copy
            xpad, (g.c, g.kh, g.kw, g.n, g.ho, g.wq),
            (sc, g.wp * sl, sl, sn, s * g.wp * sl, s * sl))
        self.numpy = isinstance(xpad, np.ndarray)
        nb = max(1, _BLOCK_ELEMENTS // ((g.k + 1) * g.m)) if self.numpy else g.n
        if self.numpy and g.o * (g.k + 1) <= _SMALL_KERNEL:
            nb = max(1, min(nb, _BLOCK_COLUMNS // g.m))
        self.spans = [(i, min(g.n, i + nb)) for i in range(0, g.n, nb)]
        self._size = min(nb, g.n) * g.m  # columns of the largest block
        self._buffers: dict[str, Any] = {}

    def buffer(self, name: str, rows: int, n0: int, n1: int, zeros: bool = False) -> Any:
        """A ``(rows, (n1 − n0)·H_out·Wq)`` scratch matrix, reused across blocks.

        Plain buffers are contiguous (for products' ``out=``). ``zeros`` buffers start at zero
        and keep a fixed row stride, so a column keeps its place in every block: writing only
        the valid positions (:func:`nchw_block`) keeps the scratch positions zero.
        """
        m = (n1 - n0) * self.g.m
        flat = self._buffers.get(name)
        if flat is None:
            alloc = self.xp.zeros if zeros else self.xp.empty
            flat = self._buffers[name] = alloc(rows * self._size, dtype=self.xpad.dtype)
        if zeros:
            return flat.reshape(rows, self._size)[:, :m]
        return flat[:rows * m].reshape(rows, m)

    def array(self, name: str, shape: tuple) -> Any:
        """A contiguous scratch array of ``shape`` (a block's, at most the first block's size),
        reused across blocks."""
        size = int(np.prod(shape))
        flat = self._buffers.get(name)
        if flat is None or flat.size < size:
            flat = self._buffers[name] = self.xp.empty(size, dtype=self.xpad.dtype)
        return flat[:size].reshape(shape)

    def cols(self, n0: int, n1: int, square: bool = False) -> tuple[Any, Any]:
        """``(X_bᵀ, (X_b∘X_b)ᵀ or None)``: the transposed im2col matrix of examples
        ``n0:n1`` with a row of ones appended, ``(C·KH·KW + 1, (n1 − n0)·H_out·Wq)``: one
        copy of the window view (and its square, taken while the block is in cache).

        The ones row lets a product with ``[W | b]`` add the bias, and one with ``G`` sum
        ``G`` over positions (the bias gradient), without passes of their own."""
        g = self.g
        cb = self.buffer("cols", g.k + 1, n0, n1)
        cb[:g.k].reshape(g.c, g.kh, g.kw, n1 - n0, g.ho, g.wq)[...] = self.windows[:, :, :, n0:n1]
        cb[g.k] = 1
        if not square:
            return cb, None
        cb2 = self.buffer("cols2", g.k + 1, n0, n1)
        self.xp.square(cb, out=cb2)
        return cb, cb2

    def rows(self, name: str, y: Any, n0: int, n1: int) -> Any:
        """NCHW ``y[n0:n1]`` as channel-major rows ``(C_out, (n1 − n0)·H_out·Wq)`` with zero
        scratch positions (a copy into a reused ``zeros`` buffer)."""
        r = self.buffer(name, y.shape[1], n0, n1, zeros=True)
        nchw_block(r, self.g)[...] = y[n0:n1]
        return r

    def scatter(self, dcols: Any, n0: int, n1: int, dxpad: Any) -> None:
        """Adjoint of :meth:`cols`: add ``dcols (C·KH·KW, (n1 − n0)·H_out·Wq)`` into
        ``dxpad[:, n0:n1]`` (``dxpad`` shaped like ``xpad``).

        One strided add per kernel offset ``(a, e)``: ``dxpad[c, n, i·s + a, j·s + e] +=
        dcols[(c, a, e), (n, i, j)]``. Within one offset the targets are distinct (no
        duplicate indices, no ``add.at``); scratch columns of ``dcols`` must be zero.
        """
        g = self.g
        d6 = dcols.reshape(g.c, g.kh, g.kw, n1 - n0, g.ho, g.wq)
        block = dxpad[:, n0:n1]
        with _unbuffered(self.numpy and g.wide and g.m >= _UNBUFFERED_RUN, g.m):
            for a in range(g.kh):
                for e in range(g.kw):
                    _tap(block, g, a, e)[...] += d6[:, a, e]


@contextlib.contextmanager
def _unbuffered(numpy: bool, run: int):
    """Ufunc buffers no longer than ``run`` floats, for arithmetic on strided views whose
    contiguous runs have that length.

    With the default 8192, NumPy copies strided operands through buffers to run longer inner
    loops, about 3× slower than working on runs of a few hundred floats in place (short runs
    gain from the buffers, so the scatter keeps them for narrow layouts and for wide runs
    under ``_UNBUFFERED_RUN`` floats: LeNet-5's second conv, 96 floats per run, scattered in
    6.6 ms buffered against 7.8 ms; at 272 floats the two were even, at 1056 unbuffered took
    7.7 ms against 10.3).
    """
    if not numpy:
        yield
        return
    old = np.setbufsize(max(16, min(8192, run) // 16 * 16))  # NumPy wants multiples of 16
    try:
        yield
    finally:
        np.setbufsize(old)
