"""minivd.random: the Box–Muller normals that every NumPy noise draw uses, and the
version-stable permutation behind the Fashion-MNIST split."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import minivd
from minivd.random import box_muller, stable_permutation, standard_normal


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normals_have_the_standard_normal_law(dtype):
    # n = 400000 draws (above the threaded threshold, so chunks from several child streams).
    # Standard errors: mean 1/sqrt(n) = 0.0016, variance sqrt(2/n) = 0.0022, skewness
    # sqrt(6/n) = 0.0039, excess kurtosis sqrt(24/n) = 0.0077; each is bounded at 5 of them.
    n = 400_000
    z = standard_normal(minivd.make_rng(11), (n,), dtype)
    assert z.dtype == dtype and z.shape == (n,)
    zd = z.astype(np.float64)
    assert abs(zd.mean()) < 5 / np.sqrt(n)
    assert abs(zd.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(zd)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(zd)) < 5 * np.sqrt(24 / n)
    # the whole distribution: Kolmogorov–Smirnov at n = 400000 (a correct sampler fails
    # p < 1e-3 once in 1000 seeds) rejects a wrong shape, or a scale off by about 2% (variance
    # 4.5%); the variance bound above already catches a variance off by 1.1%
    assert stats.kstest(zd, "norm").pvalue > 1e-3
    # tail mass beyond 3: 0.0027 n = 1080 expected, Poisson sd 33: within 5 sd
    tail = int((np.abs(zd) > 3).sum())
    assert abs(tail - 2 * stats.norm.sf(3) * n) < 5 * np.sqrt(2 * stats.norm.sf(3) * n)


def test_cosine_and_sine_halves_are_uncorrelated_and_odd_sizes_fill_every_value():
    # the cosine half and the sine half of one draw share radii: their correlation must be 0
    # (within 5/sqrt(h), h = 50000 pairs) and |z| of a pair must follow the chi law of 2 dofs
    out = box_muller(np.random.default_rng(2), np.empty(100_000, np.float64))
    c, s = out[:50_000], out[50_000:]
    assert abs(np.corrcoef(c, s)[0, 1]) < 5 / np.sqrt(50_000)
    assert stats.kstest(np.hypot(c, s), stats.chi(2).cdf).pvalue > 1e-3
    for n in (1, 2, 3, 7):
        z = box_muller(np.random.default_rng(n), np.full(n, np.nan, np.float32))
        assert np.isfinite(z).all()


class _FixedUniforms:
    """A stand-in generator whose ``random`` repeats the given values."""

    def __init__(self, *values):
        self.values = values

    def random(self, n, dtype):
        return np.resize(np.array(self.values, dtype=dtype), n)


def test_extreme_uniforms_give_radius_zero_and_the_float32_cap():
    # U₁ = 0 (drawn with probability 2⁻²⁴ per pair): 1 − U₁ = 1, radius 0, so the values are 0
    # (a log(U₁) sampler would give inf or NaN here); the largest float32 U₁, 1 − 2⁻²⁴, gives
    # the largest radius sqrt(−2 log 2⁻²⁴) = sqrt(48 log 2) ≈ 5.77 (cos 0 = 1 at U₂ = 0)
    zero = box_muller(_FixedUniforms(0.0), np.empty(6, np.float32))
    np.testing.assert_array_equal(zero, 0)
    top = box_muller(_FixedUniforms(1 - 2.0**-24), np.empty(6, np.float32))
    cap = np.sqrt(48 * np.log(2))
    assert np.isfinite(top).all() and np.abs(top).max() <= cap * (1 + 1e-6)
    # U₁ = 1 − 2⁻²⁴, U₂ = 0: (R cos 0, R sin 0)
    z = box_muller(_FixedUniforms(1 - 2.0**-24, 0.0), np.empty(2, np.float32))
    assert abs(z[0] - cap) <= 1e-6 * cap and z[1] == 0


def test_standard_normal_is_reproducible_and_rejects_other_dtypes():
    a = standard_normal(minivd.make_rng(4), (3, 5), np.float32)
    b = standard_normal(minivd.make_rng(4), (3, 5), np.float32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, standard_normal(minivd.make_rng(5), (3, 5), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        standard_normal(minivd.make_rng(0), (4,), np.float16)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 3000), seed=st.integers(0, 2**63))
def test_stable_permutation_is_numpys_generator_permutation(n, seed):
    # the docstring's claim, on the installed NumPy; should a NumPy release change its shuffle,
    # this fails and the docstring must say so, while stable_permutation stays as it is
    p = stable_permutation(n, seed)
    np.testing.assert_array_equal(p, np.random.default_rng(seed).permutation(n))
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_stable_permutation_pins_the_fashion_mnist_split():
    # the validation indices of Fashion-MNIST (10000 of 60000, seed 2015) that every result on
    # the results page was measured on; this digest must never change
    valid = np.sort(stable_permutation(60_000, 2015)[:10_000])
    np.testing.assert_array_equal(valid[:8], [1, 7, 30, 33, 40, 41, 50, 55])
    digest = hashlib.sha256(valid.astype("<i8").tobytes()).hexdigest()
    assert digest == "ac881aa9dd340a198745c9140f10c2fa5b55b673fe6f0a74b0e327369cd13aef"
    with pytest.raises(ValueError, match="n < 2"):
        stable_permutation(2**32, 0)
    for n, seed in ((-1, 0), (3, None), (3, -1), (2.0, 0)):  # None would draw a fresh seed
        with pytest.raises(ValueError, match="must be an int ≥ 0"):
            stable_permutation(n, seed)


@pytest.mark.parametrize("out", [np.empty((2, 3), np.float32), np.empty(4, np.int32),
                                 [0.0, 0.0]])
def test_box_muller_refuses_an_out_it_cannot_fill(out):
    # a 2-d or integer array, or a list (as a CuPy array would be), is refused by name
    with pytest.raises(TypeError, match="box_muller: out must be a 1-d float32/float64"):
        box_muller(np.random.default_rng(0), out)


def test_a_list_seed_is_a_stream_of_its_own():
    # [seed, k] hashes the list: not the stream of seed + k, which initialises layer k (the
    # trainer's noise is [seed, 2], its Monte-Carlo [seed, 3]), nor of any int below 2³²
    # (SeedSequence reads an int as 32-bit words: [3, 2] is the stream of 3 + 2·2³²)
    draw = lambda s: minivd.make_rng(s).random(8)  # noqa: E731
    np.testing.assert_array_equal(draw([3, 2]), draw([3, 2]))
    np.testing.assert_array_equal(draw([3, 2]), np.random.default_rng([3, 2]).random(8))
    assert not any(np.array_equal(draw([3, 2]), draw(s)) for s in (3, 5, [3, 1], [3, 3], [2, 3]))
    np.testing.assert_array_equal(draw([3]), draw(3))
    np.testing.assert_array_equal(draw([3, 2]), draw(3 + 2 * 2**32))  # why seeds stay < 2³²
    for bad in ([], [1, -1], [1, 2.0], (True,), -1, "3"):
        with pytest.raises(ValueError, match="non-negative int or a non-empty sequence"):
            minivd.make_rng(bad)


def test_the_trainers_noise_shares_no_state_with_the_initialisation(tmp_path):
    import io

    from minivd.train import TrainConfig, Trainer

    from .test_train import xor_data

    t = Trainer(TrainConfig(dataset="xor", width=8, depth=2, method="vd-b", epochs=1),
                xor_data(n=200), tmp_path, log=io.StringIO())
    noise = t.noise_rng.bit_generator.state["state"]["state"]
    inits = {np.random.default_rng(k).bit_generator.state["state"]["state"] for k in range(8)}
    assert noise not in inits
    assert noise == np.random.default_rng([0, 2]).bit_generator.state["state"]["state"]
