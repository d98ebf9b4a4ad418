"""Backend discovery and selection."""
import pytest
import torch

import din_ops
from din_ops import backends


def test_cpu_and_reference_are_available():
    available = din_ops.available_backends()
    assert "cpu" in available and available[-1] == "reference"


def test_default_backend_for_cpu_tensors_is_the_compiled_one():
    assert backends.resolve(None, torch.device("cpu")) == "cpu"
    assert backends.resolve("reference", torch.device("cpu")) == "reference"


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'triton2'; expected one of reference, cpu, cuda"):
        din_ops.instance_norm(torch.randn(1, 2, 3, 3), backend="triton2")


def test_backend_for_another_device():
    with pytest.raises(ValueError, match="backend 'cuda' runs on cuda tensors, but the inputs are on cpu"):
        din_ops.instance_norm(torch.randn(1, 2, 3, 3), backend="cuda")


@pytest.mark.skipif("cuda" in din_ops.available_backends(), reason="this build has CUDA kernels")
def test_missing_cuda_build_says_how_to_get_it():
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available: .*(without CUDA|is_available)"):
        backends.resolve(None, torch.device("cuda"))


def test_device_without_kernels_suggests_reference():
    with pytest.raises(RuntimeError, match="no kernels for mps tensors; pass backend='reference'"):
        backends.resolve(None, torch.device("mps"))
    # The reference runs anywhere PyTorch does.
    assert din_ops.instance_norm(torch.empty(1, 2, 3, 3, device="meta"), backend="reference").device.type == "meta"


def test_meta_tensors_run_the_fake_kernels():
    assert backends.resolve(None, torch.device("meta")) == "meta"
    with pytest.raises(ValueError, match="backend 'cpu' runs on cpu tensors, but the inputs are on meta"):
        din_ops.instance_norm(torch.empty(1, 2, 3, 3, device="meta"), backend="cpu")


def _meta_cases():
    x = torch.randn(2, 8, 6, 6)
    xc = x.contiguous(memory_format=torch.channels_last)
    w3 = torch.randn(2, 8, 8, 3, 3)
    b = torch.randn(2, 8)
    return {
        "instance_norm": (lambda x: din_ops.instance_norm(x), [x]),
        "instance_norm channels_last": (lambda x: din_ops.instance_norm(x), [xc]),
        "instance_norm unbiased channels_last": (lambda x: din_ops.instance_norm(x, unbiased=True), [xc]),
        "din 1x1": (lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b), [x, torch.randn(2, 8, 8), b]),
        "din 1x1 batch-1 weight": (
            lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b), [x, torch.randn(1, 8, 8), b[:1]]),
        "din diagonal": (lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b), [x, torch.randn(2, 8), b]),
        "din 3x3 grouped strided": (
            lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, stride=2, padding=1, groups=2),
            [x, torch.randn(2, 8, 4, 3, 3), b]),
        "din 3x3 channels_last": (
            lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, padding=1), [xc, w3, b]),
        "din deformable": (
            lambda x, w, b, o: din_ops.dynamic_instance_norm(x, w, b, padding=1, offset=o),
            [x, w3, b, torch.randn(2, 18, 6, 6)]),
        "dynamic_conv2d": (lambda x, w: din_ops.dynamic_conv2d(x, w, padding=1), [x, w3]),
        "spatially_adaptive": (
            lambda x, g, b: din_ops.spatially_adaptive_instance_norm(x, g, b),
            [x, torch.randn(2, 8, 6, 6), torch.randn(2, 8, 1, 1)]),
        "adain batch-1 style": (
            lambda x, s: din_ops.adain(x, s, unbiased=True, alpha=0.5), [x, torch.randn(1, 8, 5, 5)]),
        "adain": (lambda x, s: din_ops.adain(x, s), [x, torch.randn(2, 8, 6, 6)]),
        "style_stats": (lambda s: din_ops.style_stats(s)[1], [torch.randn(2, 8, 5, 5)]),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(_meta_cases()))
def test_meta_output_and_gradients_match_the_cpu_ones(case, dtype):
    """On meta tensors the public functions give what the CPU kernels give, but for the values:
    shape, dtype and strides of the output and of every input's gradient."""
    fn, args = _meta_cases()[case]
    cpu = [a.to(dtype).requires_grad_() for a in args]
    meta = [a.detach().to(dtype).to("meta").requires_grad_() for a in args]
    y, y_meta = fn(*cpu), fn(*meta)
    assert y_meta.device.type == "meta"
    assert (y_meta.shape, y_meta.dtype, y_meta.stride()) == (y.shape, y.dtype, y.stride())
    grads = torch.autograd.grad(y.sum(), cpu)
    grads_meta = torch.autograd.grad(y_meta.sum(), meta)
    for g, g_meta in zip(grads, grads_meta):
        assert g_meta.device.type == "meta"
        assert (g_meta.shape, g_meta.dtype, g_meta.stride()) == (g.shape, g.dtype, g.stride())


def test_a_model_builds_and_runs_on_meta():
    from din_ops.models import DINStyleNet

    with torch.device("meta"):
        net = DINStyleNet()
        y = net(torch.empty(1, 3, 64, 64), torch.empty(1, 3, 64, 64))
    assert y.device.type == "meta" and y.shape == (1, 3, 64, 64)


def test_the_public_api():
    assert set(din_ops.__all__) >= {"dynamic_instance_norm", "instance_norm", "available_backends", "reference"}
