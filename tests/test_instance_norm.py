"""din_ops.instance_norm against the float64 reference: values, gradients, layouts, numerics."""
import pytest
import torch
import torch.nn.functional as F

import din_ops
from din_ops import reference

from conftest import DEVICES, DTYPES, LAYOUTS, LOW_PRECISION, SHAPES, assert_close_to_reference, layout


def torch_lowp(x):
    """Plain PyTorch in x's own dtype: the low-precision error the kernels are held to."""
    return F.instance_norm(x) if x.shape[2] * x.shape[3] > 1 else reference.instance_norm(x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(device, dtype, shape):
    x = (torch.randn(*shape, dtype=torch.float64) * 2 + 0.5).to(device, dtype)
    y = din_ops.instance_norm(x)
    baseline = torch_lowp(x) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, reference.instance_norm(x.double()), dtype, baseline)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layouts(device, name, dtype):
    x = layout(torch.randn(3, 24, 7, 10, device=device).to(dtype), name)
    y = din_ops.instance_norm(x)
    if name == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    else:
        assert y.is_contiguous()
    baseline = torch_lowp(x) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, reference.instance_norm(x.double()), dtype, baseline)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (2, 16, 6, 4)])
def test_gradcheck(device, name, shape):
    x = layout(torch.randn(*shape, dtype=torch.float64, device=device), name).requires_grad_()
    assert torch.autograd.gradcheck(din_ops.instance_norm, (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_reference(device, dtype):
    x = torch.randn(2, 12, 9, 11, dtype=torch.float64).to(device, dtype)
    gy = torch.randn(2, 12, 9, 11, dtype=torch.float64).to(device, dtype)
    x1 = x.clone().requires_grad_()
    din_ops.instance_norm(x1).backward(gy)
    x64 = x.double().requires_grad_()
    reference.instance_norm(x64).backward(gy.double())
    baseline = None
    if dtype in LOW_PRECISION:
        x2 = x.clone().requires_grad_()
        F.instance_norm(x2).backward(gy)
        baseline = x2.grad
    assert_close_to_reference(x1.grad, x64.grad, dtype, baseline)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mean", [1e4, 1e6])
def test_large_mean_keeps_its_variance(device, name, mean):
    # float32 x = mean + unit noise: the output must match the exact instance norm of that same
    # float32 input. F.instance_norm loses most digits at 1e6; shifted sums keep them.
    x = layout((mean + torch.randn(2, 8, 32, 32, dtype=torch.float64)).float().to(device), name)
    y = din_ops.instance_norm(x)
    exact = reference.instance_norm(x.double())
    assert (y.double() - exact).abs().max().item() < 1e-4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (2, 3, 4, 5)])
def test_constant_planes_are_zero_not_nan(device, dtype, shape):
    x = torch.full(shape, 3.25, device=device, dtype=dtype, requires_grad=True)
    y = din_ops.instance_norm(x)
    assert torch.equal(y, torch.zeros_like(y))
    y.backward(torch.randn_like(y))
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_outputs_streamed_match_the_cached_path(dtype):
    # y and gx of 8 MiB and more are written with non-temporal stores (csrc/cpu/common.h:
    # stream_output); planes of 129 x 127 values start at every alignment. Each plane's values and
    # gradient depend on that plane only: the streamed results equal, bit for bit, those of a few
    # planes computed alone (small outputs, plain stores).
    C = 130 if dtype == torch.float32 else 66
    x = (torch.randn(1, C, 129, 127, dtype=torch.float64) * 2 + 0.5).to(dtype)
    assert x.numel() * x.element_size() >= 8 << 20
    gy = torch.randn_like(x)
    part = slice(7, 15)
    big, small = x.clone().requires_grad_(), x[:, part].clone().requires_grad_()
    y = din_ops.instance_norm(big)
    y.backward(gy)
    y_small = din_ops.instance_norm(small)
    y_small.backward(gy[:, part])
    assert torch.equal(y[:, part], y_small)
    assert torch.equal(big.grad[:, part], small.grad)
    assert_close_to_reference(y, reference.instance_norm(x.double()), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_channels_last_outputs_streamed_match_the_cached_path(dtype):
    # Channels-last outputs of 8 MiB and more are streamed too; with an odd C the rows of one pixel's
    # channels start at every alignment. A sample's results depend on that sample only (its chunks
    # are fixed by its shape): the second sample of a streamed batch equals, bit for bit, that
    # sample computed alone (half the size, plain stores).
    C = 129 if dtype == torch.float32 else 65
    x = (torch.randn(2, C, 91, 91, dtype=torch.float64) * 2 + 0.5).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    assert x.numel() * x.element_size() >= 8 << 20 > x[1:].numel() * x.element_size()
    gy = torch.randn_like(x)
    big, small = x.clone().requires_grad_(), x[1:].clone().requires_grad_()
    y = din_ops.instance_norm(big)
    y.backward(gy)
    y_small = din_ops.instance_norm(small)
    y_small.backward(gy[1:])
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y[1:], y_small)
    assert torch.equal(big.grad[1:], small.grad)
    assert_close_to_reference(y, reference.instance_norm(x.double()), dtype)
    # The statistics' backward (style_stats) is an elementwise pass over x too.
    (g_stats,) = torch.autograd.grad([s.sum() for s in din_ops.style_stats(big)], big)
    (g_stats_small,) = torch.autograd.grad([s.sum() for s in din_ops.style_stats(small)], small)
    assert torch.equal(g_stats[1:], g_stats_small)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    x = torch.randn(0, 3, 4, 4, device=device, requires_grad=True)
    y = din_ops.instance_norm(x)
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_eps_is_used():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    for eps in (0.0, 1e-3, 10.0):
        torch.testing.assert_close(din_ops.instance_norm(x, eps), reference.instance_norm(x, eps))


def test_reference_backend_is_selectable():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(din_ops.instance_norm(x, backend="reference"), reference.instance_norm(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
def test_opcheck(device, name):
    x = layout(torch.randn(2, 5, 6, 7, dtype=torch.float64, device=device), name).requires_grad_()
    torch.library.opcheck(torch.ops.din_ops.instance_norm, (x, 1e-5))
    y, mean, rstd = torch.ops.din_ops.instance_norm(x.detach(), 1e-5)
    torch.library.opcheck(torch.ops.din_ops.instance_norm_backward, (torch.randn_like(y), x.detach(), mean, rstd))


def test_double_backward_raises_clearly():
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(din_ops.instance_norm(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()
