"""Hypothesis strategies: shapes (batch and width 1 included), hyper-parameters and a seed.

Values never come from hypothesis: they come from ``numpy.random.default_rng(seed)``, so the
checked points stay off ReLU kinks and clip bounds by construction.
"""

from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)
dims = st.integers(1, 6)
dense_shapes = st.tuples(st.integers(1, 5), dims, dims)  # (N, D_in, D_out)
