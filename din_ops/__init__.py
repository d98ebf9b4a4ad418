"""din_ops: fused Dynamic Instance Normalization kernels as PyTorch custom operators.

Public API:
    dynamic_instance_norm(x, weight, bias=None, *, stride, padding, dilation, groups, eps, unbiased,
                          backend)
    dynamic_conv2d(x, weight, bias=None, *, stride, padding, dilation, groups, backend)
    instance_norm(x, eps=1e-5, *, unbiased=False, backend=None)
    spatially_adaptive_instance_norm(x, gamma, beta=None, *, eps=1e-5, unbiased=False, backend=None)
    adain(content, style, *, alpha=1.0, eps=1e-5, unbiased=False, backend=None)
    style_stats(style, *, eps=1e-5, unbiased=False, backend=None) -> (mean, std)
    available_backends()
    cpu_capability(), cpu_capabilities()   the CPU kernels' instruction-set level (DIN_OPS_CPU_CAPABILITY)
    reference            pure-PyTorch implementations of every op (the test oracle)
"""
from . import _registrations  # noqa: F401  (fake kernels and autograd of the operators)
from . import reference
from .backends import available_backends, cpu_capabilities, cpu_capability
from .ops import dynamic_conv2d, dynamic_instance_norm, instance_norm
from .ops import adain, spatially_adaptive_instance_norm, style_stats

__version__ = "0.1.0"

__all__ = [
    "adain",
    "available_backends",
    "cpu_capabilities",
    "cpu_capability",
    "dynamic_conv2d",
    "dynamic_instance_norm",
    "instance_norm",
    "reference",
    "spatially_adaptive_instance_norm",
    "style_stats",
    "__version__",
]

# Modules and models on top of the operators, and flop formulas for torch.utils.flop_counter.
from . import flops as _flops  # noqa: E402
from . import nn, models  # noqa: E402,F401

_flops.register()
