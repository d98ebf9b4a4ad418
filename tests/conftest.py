"""Shared axes and helpers for the din_ops test suite.

Every test compares a compiled backend with din_ops.reference computed in float64. The suite is
parametrized by device: CUDA cases run where a CUDA build of din_ops and a GPU are present and are
skipped (with the reason shown by -ra) elsewhere.
"""
from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the Triton kernels run under the Triton interpreter (CI); the variable must be set
# before din_ops, and with it every @triton.jit kernel, is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import din_ops

HAS_CUDA = "cuda" in din_ops.available_backends()

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA build of din_ops or no GPU")),
]

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LOW_PRECISION = (torch.bfloat16, torch.float16)

# Memory layouts of the inputs: the kernels run contiguous and channels_last natively and copy
# any other strides once.
LAYOUTS = ["contiguous", "channels_last", "strided"]

# (N, C, H, W): single pixels, odd, prime and non-square sizes, C from 1 to 64.
SHAPES = [
    (1, 1, 1, 1),
    (2, 3, 5, 7),
    (3, 16, 1, 1),
    (1, 8, 13, 1),
    (4, 64, 8, 8),
    (2, 5, 9, 17),
    (4, 32, 16, 12),
    (1, 1, 31, 29),
]


def layout(x: torch.Tensor, name: str) -> torch.Tensor:
    """x (same values) in the given memory layout."""
    if name == "contiguous":
        return x.contiguous()
    if name == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if name == "strided":
        # Every other element of a wider tensor: neither contiguous nor channels_last.
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        view = wide[..., ::2]
        assert not view.is_contiguous() or x.shape[-1] == 1
        return view
    raise ValueError(name)


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0


def assert_close_to_reference(actual: torch.Tensor, expected64: torch.Tensor, dtype: torch.dtype,
                              lowp_baseline: torch.Tensor | None = None) -> None:
    """Compare a kernel's output with the float64 reference.

    float32/float64: absolute error relative to the output's scale. float16/bfloat16: the kernel's
    error must be at most about twice PyTorch's own error on the same low-precision input
    (`lowp_baseline`: the plain-PyTorch computation in that dtype), plus half an ulp of the scale.
    """
    assert actual.dtype == dtype
    assert actual.shape == expected64.shape
    scale = max(1.0, expected64.abs().max().item()) if expected64.numel() else 1.0
    err = max_error(actual, expected64)
    if dtype == torch.float64:
        assert err <= 1e-10 * scale, err
    elif dtype == torch.float32:
        assert err <= 2e-5 * scale, err
    else:
        assert lowp_baseline is not None
        ulp = torch.finfo(dtype).eps
        torch_err = max_error(lowp_baseline, expected64)
        assert err <= 2 * torch_err + 0.5 * ulp * scale, (err, torch_err)


GPU_FILES = ("test_cuda.py", "test_triton.py")


def runs_on_gpu(item: pytest.Item) -> bool:
    """A case of a device-parametrized test on "cuda", or a test of the CUDA or Triton files (which
    run on the GPU where there is one)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(str(v) == "cuda" for v in params.values()) or item.path.name in GPU_FILES


def pytest_collection_modifyitems(config, items):
    # `pytest -m gpu` selects what a short GPU run needs (.ci/gpu_run.sh): the cuda cases and the
    # CUDA/Triton files, not the CPU cases it would otherwise repeat.
    for item in items:
        if runs_on_gpu(item):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Runs a test on one thread. For tiny tensors one thread is as fast, and does not slow to a
    crawl when the machine's cores are oversubscribed (OpenMP threads waiting for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Hypothesis profiles for the property-based tests (tests/test_properties.py). "ci" (the default) is
# bounded and reproducible: a fixed number of examples per test, drawn deterministically. "long"
# explores far more, randomly, for local runs before a release:
#   DIN_OPS_HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

_HYPOTHESIS_COMMON = dict(
    deadline=None,
    print_blob=True,
    # The autouse seed fixture above is harmless here: every example seeds its own generator.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", max_examples=12, derandomize=True, database=None, **_HYPOTHESIS_COMMON)
settings.register_profile("long", max_examples=1000, **_HYPOTHESIS_COMMON)
settings.load_profile(os.environ.get("DIN_OPS_HYPOTHESIS_PROFILE", "ci"))


def assert_batch1_broadcast(fn, x: torch.Tensor, batch1: dict, tol: float = 1e-10) -> None:
    """fn(x, **batch1), where the tensors in ``batch1`` have batch 1, equals fn with them expanded to
    x's batch (values), and the gradients agree: a batch-1 operand's gradient is the sum over the
    batch (what autograd gives the expand). float64 inputs; None values are passed through."""
    n = x.shape[0]
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in batch1.items()}
    xa = x.detach().clone().requires_grad_()
    ya = fn(xa, **leaves)
    twins = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in batch1.items()}
    xb = x.detach().clone().requires_grad_()
    expanded = {k: (v.expand(n, *v.shape[1:]) if v is not None else None) for k, v in twins.items()}
    yb = fn(xb, **expanded)
    assert ya.shape == yb.shape
    torch.testing.assert_close(ya, yb, rtol=tol, atol=tol)
    gy = torch.randn_like(ya)
    ya.backward(gy)
    yb.backward(gy)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=tol, atol=tol)
    for k, v in leaves.items():
        if v is None:
            continue
        assert v.grad.shape == v.shape, (k, v.grad.shape)
        torch.testing.assert_close(v.grad, twins[k].grad, rtol=tol, atol=tol)
