"""minivd: variational dropout and the local reparameterization trick, in NumPy or CuPy.

Importing minivd never imports CuPy; ask for it with ``resolve_backend("cupy")``.

One process-wide setting: imported *before* NumPy (as ``python -m minivd`` and the benchmark
scripts do), minivd sets ``OPENBLAS_THREAD_TIMEOUT=4`` unless you set it yourself. OpenBLAS's
idle worker threads otherwise busy-wait for about 0.1 s after every matrix product, holding a
core that minivd's elementwise threads (:mod:`minivd._rowwise`) need: on a 2-core machine that
costs a training step about a sixth of its time. It changes no result, only when idle BLAS
threads go to sleep. Import NumPy first, or set the variable, to keep OpenBLAS's default.
"""

import os as _os
import sys as _sys

if "numpy" not in _sys.modules:  # OpenBLAS reads it once, when NumPy loads it
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import functional, kl, layers
from .backend import BackendUnavailableError, asarray, get_xp, resolve_backend, to_numpy
from .gradcheck import check_vjp, numerical_vjp, rel_error
from .random import make_rng

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "asarray",
    "check_vjp",
    "functional",
    "get_xp",
    "kl",
    "layers",
    "make_rng",
    "numerical_vjp",
    "rel_error",
    "resolve_backend",
    "to_numpy",
]
