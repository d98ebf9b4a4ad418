"""din_ops: fused Dynamic Instance Normalization kernels as PyTorch custom operators.

Public API:
    dynamic_instance_norm(x, weight, bias=None, *, eps=1e-5, backend=None)
    instance_norm(x, eps=1e-5, *, backend=None)
    available_backends()
    reference            pure-PyTorch implementations of every op (the test oracle)
"""
from . import _registrations  # noqa: F401  (fake kernels and autograd of the operators)
from . import reference
from .backends import available_backends
from .ops import dynamic_instance_norm, instance_norm

__version__ = "0.1.0"

__all__ = [
    "available_backends",
    "dynamic_instance_norm",
    "instance_norm",
    "reference",
    "__version__",
]
