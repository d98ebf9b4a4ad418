"""Edge cases of the Python layer that the backends must agree on: an empty batch in
din_ops.reference, constant planes in the reference normalizations, any float content dtype in every
nn.DynamicInstanceNorm2d kind, and adain's output layout for every alpha."""
import pytest
import torch

import din_ops
from din_ops import reference
from din_ops.nn import DynamicInstanceNorm2d, supported_kinds

# (weight shape for C = 3, Co = 4, keyword arguments): the convolution variants.
VARIANTS = {
    "1x1": ((4, 3), {}),
    "3x3": ((4, 3, 3, 3), dict(padding=1)),
    "3x3_stride2_dilation2": ((4, 3, 3, 3), dict(stride=2, padding="valid", dilation=2)),
    "grouped": ((6, 1, 2, 2), dict(padding="same", groups=3)),
    "depthwise": ((3, 1, 3, 3), dict(padding=1, groups=3)),
    "deformable": ((4, 3, 3, 3), dict(padding=1, stride=2, offset=(18, 3, 3))),
    "deformable_mask": ((4, 3, 3, 3), dict(padding=1, offset=(18, 5, 5), mask=(9, 5, 5))),
}


def _args(n, name, dtype, requires_grad):
    wshape, kw = VARIANTS[name]
    kw = dict(kw)
    x = torch.randn(n, 3, 5, 5, dtype=dtype)
    w = torch.randn(n, *wshape, dtype=dtype)
    b = torch.randn(n, wshape[0], dtype=dtype)
    for key in ("offset", "mask"):
        if key in kw:
            kw[key] = torch.rand(n, *kw[key], dtype=dtype)
    tensors = [x, w, b] + [kw[k] for k in ("offset", "mask") if k in kw]
    for t in tensors:
        t.requires_grad_(requires_grad)
    return x, w, b, kw, tensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("op", [din_ops.dynamic_instance_norm, din_ops.dynamic_conv2d])
def test_reference_empty_batch_matches_compiled(op, name, dtype):
    results = {}
    for backend in ("cpu", "reference"):
        x, w, b, kw, tensors = _args(0, name, dtype, True)
        y = op(x, w, b, backend=backend, **kw)
        y.sum().backward()
        results[backend] = (y.shape, y.dtype, [t.grad.shape for t in tensors])
        assert y.numel() == 0
        assert all(t.grad.dtype == dtype for t in tensors)
    assert results["reference"] == results["cpu"]


@pytest.mark.parametrize("name", ["1x1", "3x3", "depthwise", "deformable"])
def test_reference_functions_run_an_empty_batch(name):
    x, w, b, kw, _ = _args(0, name, torch.float64, False)
    full_x, full_w, full_b, full_kw, _ = _args(2, name, torch.float64, False)
    offset, mask = kw.pop("offset", None), kw.pop("mask", None)
    if offset is not None:
        expected = reference.deformable_conv2d(full_x, full_w, full_b, full_kw["offset"], **kw).shape[1:]
        y = reference.deformable_conv2d(x, w, b, offset, mask, **kw)
        assert reference.deformable_instance_norm(x, w, b, offset, mask, **kw).shape == (0, *expected)
    else:
        expected = reference.dynamic_conv2d(full_x, full_w, full_b, **kw).shape[1:]
        y = reference.dynamic_conv2d(x, w, b, **kw)
        assert reference.dynamic_instance_norm(x, w, b, **kw).shape == (0, *expected)
    assert y.shape == (0, *expected)


PLANE = 12345.678  # a float32 mean of 20 such values is off by a rounding


def _with_constant_planes(shape=(2, 3, 5, 4), dtype=torch.float32):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype)
    x[0, 1] = PLANE
    x[1, 2] = -0.1
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_reference_constant_plane_normalizes_to_exactly_zero(eps, unbiased, dtype):
    x = _with_constant_planes(dtype=dtype)
    for backend in ("reference", "cpu"):
        y = din_ops.instance_norm(x, eps, unbiased=unbiased, backend=backend)
        assert torch.equal(y[0, 1], torch.zeros_like(y[0, 1])) and torch.equal(y[1, 2], torch.zeros_like(y[1, 2]))
        assert y[0, 0].abs().max() > 0.5  # the other planes are normalized as before
    y = reference.instance_norm(x, eps, unbiased)
    assert torch.equal(y[0, 1], torch.zeros_like(y[0, 1]))
    # Spatially adaptive: gamma * 0 + beta is exactly beta there.
    gamma, beta = torch.randn_like(x), torch.randn_like(x)
    y = din_ops.spatially_adaptive_instance_norm(x, gamma, beta, eps=eps, unbiased=unbiased, backend="reference")
    assert torch.equal(y[0, 1], beta[0, 1]) and torch.equal(y[1, 2], beta[1, 2])
    # Style statistics: the variance of a constant plane is exactly 0, its std sqrt(eps).
    _, std = din_ops.style_stats(x, eps=eps, unbiased=unbiased, backend="reference")
    assert torch.equal(std[0, 1], torch.sqrt(torch.full_like(std[0, 1], eps)))
    # AdaIN: the style mean exactly, for the constant content plane.
    mean_s, std_s = torch.randn(2, 3, 1, 1, dtype=dtype), torch.rand(2, 3, 1, 1, dtype=dtype)
    y = din_ops.adain(x, (mean_s, std_s), eps=eps, unbiased=unbiased, backend="reference")
    assert torch.equal(y[0, 1], mean_s[0, 1].expand(5, 4))


@pytest.mark.parametrize("name", ["1x1", "3x3", "depthwise", "deformable"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_reference_conv_of_a_constant_plane_is_its_bias(name, unbiased):
    # With every plane constant the normalized input is exactly 0, so each output is its bias.
    x, w, b, kw, _ = _args(2, name, torch.float32, False)
    x = torch.full_like(x, PLANE)
    x[1] = -0.1
    y = din_ops.dynamic_instance_norm(x, w, b, unbiased=unbiased, backend="reference", **kw)
    assert torch.equal(y, b[:, :, None, None].expand_as(y))
    if "offset" in kw and not unbiased:  # (reference.deformable_instance_norm has no unbiased)
        y = reference.deformable_instance_norm(x, w, b, kw["offset"], padding=1, stride=2)
        assert torch.equal(y, b[:, :, None, None].expand_as(y))


@pytest.mark.parametrize("unbiased", [False, True])
def test_reference_constant_plane_gradient_is_the_formula(unbiased):
    # The zero is exact in value only: the gradient is that of (x - mean) / sqrt(var + eps), as the
    # compiled kernels compute it.
    x = _with_constant_planes(dtype=torch.float64)
    gy = torch.randn_like(x)
    grads = []
    for backend in ("reference", "cpu"):
        xx = x.clone().requires_grad_()
        din_ops.instance_norm(xx, 1e-3, unbiased=unbiased, backend=backend).backward(gy)
        grads.append(xx.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-9)
    assert grads[0][0, 1].abs().max() > 1  # (gy - mean(gy)) / sqrt(eps), not 0
    x = x.clone().requires_grad_()
    torch.autograd.gradcheck(lambda t: reference.instance_norm(t, 1e-3, unbiased), (x,))


def test_reference_inf_and_nan_planes_stay_nan():
    x = _with_constant_planes()
    x[0, 0] = float("inf")
    x[1, 0, 0, 0] = float("nan")
    y = reference.instance_norm(x)
    assert y[0, 0].isnan().all() and y[1, 0].isnan().all()
    assert not y[0, 2].isnan().any()


@pytest.mark.skipif("deformable" not in supported_kinds(), reason="no deformable kernels in this build")
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["conv", "spatially_adaptive", "deformable"])
def test_nn_every_kind_takes_any_float_content_dtype(kind, dtype):
    torch.manual_seed(0)
    kw = {} if kind == "spatially_adaptive" else dict(kernel_size=3)
    layer = DynamicInstanceNorm2d(4, 5, kind=kind, **kw)
    if kind == "deformable":
        torch.nn.init.normal_(layer.offset_net.weight, std=0.1)  # offsets that matter
    content, style = torch.randn(2, 4, 6, 6), torch.randn(2, 5, 8, 8)
    expected = layer(content.double(), style)
    content = content.to(dtype).requires_grad_()
    y = layer(content, style)
    assert y.dtype == dtype and y.shape == content.shape
    tol = 1e-6 if dtype == torch.float64 else 0.1
    torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol)
    y.float().sum().backward()
    assert content.grad.dtype == dtype
    if kind == "deformable":
        assert layer.offset_net.weight.grad is not None and layer.offset_net.weight.grad.dtype == torch.float32


def _layout(t):
    if t.is_contiguous():
        return "contiguous"
    return "channels_last" if t.is_contiguous(memory_format=torch.channels_last) else "other"


@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("style_kind", ["features", "stats"])
@pytest.mark.parametrize("content_layout", ["contiguous", "channels_last", "transposed", "strided"])
def test_adain_layout_does_not_depend_on_alpha(content_layout, style_kind, backend):
    torch.manual_seed(0)
    base = torch.randn(2, 6, 7, 5)
    content = {
        "contiguous": base,
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3).contiguous().transpose(2, 3),
        "strided": torch.cat([base, base], dim=3)[..., ::2],
    }[content_layout]
    style = torch.randn(2, 6, 4, 4)
    if style_kind == "stats":
        style = din_ops.style_stats(style)
    full = din_ops.adain(content, style, backend=backend)
    for alpha in (0.0, 0.3, 1.0):
        y = din_ops.adain(content, style, alpha=alpha, backend=backend)
        assert y.stride() == full.stride(), (alpha, y.stride(), full.stride())
        torch.testing.assert_close(y, torch.lerp(content, full, alpha), rtol=1e-6, atol=1e-6)
    if backend is None:
        expected = "channels_last" if content_layout == "channels_last" else "contiguous"
        assert _layout(full) == expected


def test_adain_blend_layout_keeps_gradients():
    content = torch.randn(2, 3, 6, 5).transpose(2, 3).requires_grad_()
    style = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = din_ops.adain(content, style, alpha=0.25)
    assert y.is_contiguous()
    gy = torch.randn_like(y)
    y.backward(gy)
    c2, s2 = content.detach().contiguous().requires_grad_(), style.detach().clone().requires_grad_()
    din_ops.adain(c2, s2, alpha=0.25).backward(gy)
    torch.testing.assert_close(content.grad, c2.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(style.grad, s2.grad, rtol=1e-6, atol=1e-6)
