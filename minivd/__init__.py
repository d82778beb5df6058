"""minivd: variational dropout and the local reparameterization trick, in NumPy or CuPy.

Importing minivd never imports CuPy; ask for it with ``resolve_backend("cupy")``.
"""

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
