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
    with pytest.raises(RuntimeError, match="no kernels for meta tensors; pass backend='reference'"):
        din_ops.instance_norm(torch.empty(1, 2, 3, 3, device="meta"))
    # The reference runs anywhere PyTorch does.
    assert din_ops.instance_norm(torch.empty(1, 2, 3, 3, device="meta"), backend="reference").device.type == "meta"


def test_the_public_api():
    assert set(din_ops.__all__) >= {"dynamic_instance_norm", "instance_norm", "available_backends", "reference"}
